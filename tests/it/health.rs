//! Active HTTP checks (`berth.health.*`): a replica that fails its check leaves
//! rotation within one interval and comes back when it passes; a new one gets
//! no request before its first pass; one that never passes is a problem.

use std::time::{Duration, Instant};

use crate::harness::{
    berth_cli, cli, docker, eventually, free_port, replicas, replicas_seen, Berth, Env, HttpClient,
    TempDir, HTTP_CHECK,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_check_leaves_rotation_within_one_interval_and_returns() {
    let r = replicas("check", 2, &HTTP_CHECK, "").await;
    let (host, port) = (r.host.clone(), r.port);
    let (a, b) = (r.ids[0].clone(), r.ids[1].clone());
    let client = HttpClient::new();
    let both = || async {
        let seen = replicas_seen(&client, port, &host, 4).await;
        (seen.len() == 2).then_some(())
    };

    docker(&["exec", &a, "rm", "/www/health"]).await;
    let failed_at = Instant::now();
    eventually(
        Duration::from_secs(5),
        "the failing replica to leave",
        || async {
            for _ in 0..4 {
                let r = client.get(port, &host, "/").await.ok()?;
                if !r.body.starts_with(&b[..12]) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    let left_after = failed_at.elapsed();
    println!(
        "left rotation {:.0} ms after its health endpoint broke (interval 300 ms, timeout 300 ms)",
        left_after.as_secs_f64() * 1000.0
    );
    // Nominally within one interval plus the check's own timeout (600 ms).
    // The bound is 5x that, as a busy two-core machine delays `docker exec`,
    // the check and this client; a berth that ignored its active check (and
    // waited for the engine or the 30 s resync) still breaks it.
    assert!(left_after < Duration::from_secs(3), "took {left_after:?}");

    docker(&["exec", &a, "sh", "-c", "echo ok > /www/health"]).await;
    eventually(Duration::from_secs(5), "the replica to come back", both).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_that_needs_three_seconds_gets_no_request_before_ready() {
    let env = Env::new("warm").await;
    let host = env.host("web");
    let port = free_port();
    let _berth = Berth::synced(&env, port).await;
    let client = HttpClient::new();
    let host_label = format!("berth.host={host}");
    let mut args = vec!["--label", host_label.as_str()];
    for l in HTTP_CHECK {
        args.extend(["--label", l]);
    }
    args.extend(["-e", "START_DELAY=3"]);
    let started = Instant::now();
    env.run("web", &args).await;
    let mut statuses = Vec::new();
    loop {
        let r = client.get(port, &host, "/").await.unwrap();
        statuses.push(r.status);
        if r.status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "never became ready: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready_after = started.elapsed();
    println!("ready after {:.1} s", ready_after.as_secs_f64());
    assert!(
        ready_after >= Duration::from_secs(3),
        "routed before the app could answer"
    );
    assert!(
        statuses
            .iter()
            .skip_while(|s| **s == 404)
            .all(|s| *s == 503 || *s == 200),
        "a request reached the app before it was ready: {statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_port_is_a_problem_with_the_connect_error() {
    let env = Env::new("port").await;
    let host = env.host("web");
    env.run(
        "web",
        &[
            "--label",
            &format!("berth.host={host}"),
            "--label",
            "berth.port=9999",
        ],
    )
    .await;
    let (http, admin) = (free_port(), free_port());
    let config = env.config_admin(http, admin, "");
    let berth = Berth::start(&config, http).await;
    berth
        .wait_log("resynced with the Docker engine", Duration::from_secs(10))
        .await;
    let synced = Instant::now();
    let admin = format!("127.0.0.1:{admin}");
    let out = eventually(
        Duration::from_secs(10),
        "the wrong port in berth problems",
        || async {
            let (code, out, _) = cli(&admin, &["problems"]).await;
            (code == 1 && out.contains("berth.port") && out.contains("9999")).then_some(out)
        },
    )
    .await;
    let seen = synced.elapsed();
    println!(
        "wrong port reported {:.0} ms after the first sync",
        seen.as_secs_f64() * 1000.0
    );
    assert!(out.contains("refused"), "the connect error is named: {out}");
    // The first checks come every 50 ms: 20 refusals take about a second;
    // 5 s (2.5 default check intervals) is only broken by a regression.
    assert!(seen < Duration::from_secs(5), "{seen:?}");
    let (code, table, _) = cli(&admin, &["backends"]).await;
    assert_eq!(code, 0);
    assert!(
        table.contains("starting") && table.contains("refused"),
        "{table}"
    );
    drop(berth);

    // `berth check` says the same, from one look at the engine.
    let dir = TempDir::new();
    let cfg = dir.path().join("berth.yaml");
    std::fs::write(&cfg, config).unwrap();
    let (code, out, err) = berth_cli(&["check", "--config", cfg.to_str().unwrap()]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("berth.port=\"9999\"") && out.contains("refused"),
        "{out}"
    );
}
