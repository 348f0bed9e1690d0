//! Canary releases: `berth rollout SERVICE --image NEW --canary 10%` starts
//! the new image beside the old, that share of requests goes to it (each
//! client kept on one side by a cookie), `promote` and `abort` end it with
//! no failed request, and `--auto` judges it by berth's own counters.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;

use crate::harness::{
    admin_ready, api, cli, eventually, free_port, Berth, Env, HttpClient, Load, IMAGE, IMAGE_500,
    IMAGE_V2, TOKEN,
};

/// The version (`v1`, `v2`, `v3`) a test backend's answer names.
fn version(body: &str) -> String {
    body.split_whitespace()
        .find_map(|w| w.strip_prefix("version=").map(str::to_string))
        .or_else(|| body.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_default()
}

async fn versions(client: &HttpClient, http: u16, host: &str, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let r = client.get(http, host, "/").await.expect("request");
        assert_eq!(r.status, 200, "{}", r.body);
        *seen.entry(version(&r.body)).or_default() += 1;
    }
    seen
}

/// Two replicas of `web` (v1) behind a berth with its admin API.
async fn two_replicas(env: &Env) -> (Berth, u16, String, String) {
    let host = env.host("web");
    let mut labels = env.service_labels("web");
    labels.extend(["--label".into(), format!("berth.host={host}")]);
    let args: Vec<&str> = labels.iter().map(String::as_str).collect();
    env.run("web-1", &args).await;
    env.run("web-2", &args).await;
    let http = free_port();
    let admin_port = free_port();
    let admin = format!("127.0.0.1:{admin_port}");
    let berth = Berth::start(&env.config_admin(http, admin_port, ""), http).await;
    admin_ready(&admin).await;
    let client = HttpClient::new();
    eventually(Duration::from_secs(15), "both replicas", || async {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..4 {
            seen.insert(client.get(http, &host, "/").await.ok()?.body);
        }
        (seen.len() == 2).then_some(())
    })
    .await;
    (berth, http, host, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_share_cookie_promote_and_abort_without_a_failed_request() {
    let env = Env::new("canary").await;
    let (_berth, http, host, admin) = two_replicas(&env).await;
    let client = HttpClient::new();

    let (code, out, err) = cli(
        &admin,
        &["rollout", "web", "--image", IMAGE_V2, "--canary", "10%"],
    )
    .await;
    println!("{out}{err}");
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = cli(&admin, &["rollout", "web", "--image", IMAGE_V2]).await;
    assert_ne!(code, 0, "no other rollout during a canary");
    assert!(
        format!("{out}{err}").contains("promote|abort"),
        "{out}{err}"
    );

    let seen = versions(&client, http, &host, 2000).await;
    let share = seen.get("v2").copied().unwrap_or(0) as f64 / 2000.0 * 100.0;
    println!("2,000 requests without a cookie: {seen:?} ({share:.1} % on the canary)");
    assert!((7.0..=13.0).contains(&share), "{share:.1} %");

    // A client with the cookie stays on its side.
    let first = client.get(http, &host, "/").await.unwrap();
    let cookie = first
        .headers
        .get("set-cookie")
        .expect("a canary cookie for a client without one")
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    // `berth_canary=<side>-<canary id>`: both sides of this canary, and one
    // of an earlier canary that counts for nothing.
    let generation = cookie.split_once('-').unwrap().1.to_string();
    let canary_side = format!("berth_canary=1-{generation}");
    let stable_side = format!("berth_canary=0-{generation}");
    for side in [cookie.as_str(), canary_side.as_str(), stable_side.as_str()] {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for _ in 0..50 {
            let req = http::Request::get(format!("http://127.0.0.1:{http}/"))
                .header("host", &host)
                .header("cookie", side)
                .body(Empty::<Bytes>::new())
                .unwrap();
            let r = client.send(req).await.unwrap();
            assert!(r.headers.get("set-cookie").is_none());
            *seen.entry(version(&r.body)).or_default() += 1;
        }
        println!("50 requests with {side}: {seen:?}");
        assert_eq!(seen.len(), 1, "{side}: {seen:?}");
        if side == canary_side {
            assert!(seen.contains_key("v2"));
        }
    }
    let req = http::Request::get(format!("http://127.0.0.1:{http}/"))
        .header("host", &host)
        .header("cookie", "berth_canary=1-00000000")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let r = client.send(req).await.unwrap();
    assert!(
        r.headers.get("set-cookie").is_some(),
        "a stale cookie is replaced"
    );

    // Promote under load: only v2 afterwards, no failed request.
    let load = Load::start(http, &host, 4);
    load.wait_count(100, "load before the promotion").await;
    let (code, out, err) = cli(&admin, &["rollout", "promote", "web"]).await;
    println!("{out}{err}");
    assert_eq!(code, 0, "{out}{err}");
    let seen_after = load.count();
    load.wait_count(seen_after + 100, "load after the promotion")
        .await;
    let (log, rate) = load.finish().await;
    let failed = crate::harness::failures(&log);
    println!(
        "promotion under load: {} requests at {rate:.0}/s, {} failed",
        log.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "{failed:?}");
    let seen = versions(&client, http, &host, 50).await;
    assert_eq!(seen.keys().collect::<Vec<_>>(), vec!["v2"], "{seen:?}");
    let run_label = format!("label=berth-test.run={}", env.id);
    let images =
        crate::harness::docker(&["ps", "--filter", &run_label, "--format", "{{.Image}}"]).await;
    let mut images: Vec<&str> = images.lines().collect();
    images.sort();
    assert_eq!(
        images,
        vec![IMAGE_V2, IMAGE_V2],
        "two v2 replicas, nothing else runs"
    );

    // A canary of v1 over v2, aborted under load: only v2 again.
    let (code, out, err) = cli(
        &admin,
        &["rollout", "web", "--image", IMAGE, "--canary", "50%"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let seen = versions(&client, http, &host, 100).await;
    assert_eq!(seen.get("v1"), Some(&50), "{seen:?}");
    let load = Load::start(http, &host, 4);
    load.wait_count(100, "load before the abort").await;
    let (code, out, err) = cli(&admin, &["rollout", "abort", "web"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let seen_after = load.count();
    load.wait_count(seen_after + 100, "load after the abort")
        .await;
    let (log, _) = load.finish().await;
    let failed = crate::harness::failures(&log);
    assert!(failed.is_empty(), "{failed:?}");
    let seen = versions(&client, http, &host, 50).await;
    assert_eq!(seen.keys().collect::<Vec<_>>(), vec!["v2"], "{seen:?}");
    let (code, out, err) = cli(&admin, &["rollout", "abort", "web"]).await;
    assert_ne!(code, 0);
    assert!(format!("{out}{err}").contains("no canary"), "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_aborts_a_canary_that_answers_500_and_says_why() {
    let env = Env::new("autocanary").await;
    let (_berth, http, host, admin) = two_replicas(&env).await;
    let (code, out, err) = cli(
        &admin,
        &[
            "rollout", "web", "--image", IMAGE_500, "--canary", "50%", "--auto", "--window", "4s",
        ],
    )
    .await;
    println!("{out}{err}");
    assert_eq!(code, 0, "{out}{err}");
    // Requests without cookies during the window: half meet the canary.
    let client = HttpClient::new();
    let statuses: std::sync::Mutex<HashMap<u16, usize>> = Default::default();
    let verdict = eventually(Duration::from_secs(30), "the verdict", || async {
        for _ in 0..20 {
            if let Ok(r) = client.get(http, &host, "/cgi-bin/who").await {
                *statuses.lock().unwrap().entry(r.status).or_default() += 1;
            }
        }
        let (_, body) = api(&admin, "GET", "/api/rollouts", Some(TOKEN)).await;
        let runs: serde_json::Value = serde_json::from_str(&body).ok()?;
        runs.as_array()?
            .iter()
            .find(|r| r["kind"] == "abort" && r["status"] == "completed")
            .map(|r| r["steps"].to_string())
    })
    .await;
    let statuses = statuses.into_inner().unwrap();
    println!("during the window: {statuses:?}\nthe abort run: {verdict}");
    assert!(statuses.get(&500).copied().unwrap_or(0) > 0);
    assert!(
        verdict.contains("--auto: aborting: 5xx rate: canary"),
        "{verdict}"
    );
    for _ in 0..50 {
        let r = client.get(http, &host, "/cgi-bin/who").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.contains("version=v1"), "{}", r.body);
    }
}
