//! Rollouts, scaling and autoheal through the CLI and the admin API, under
//! continuous load; their history across a restart of berth.

use std::time::Duration;

use crate::harness::{
    api, assert_all_served, cli, docker, eventually, replicas, replicas_seen, Berth, Env,
    HttpClient, Load, LogFollower, TempDir, HTTP_CHECK, IMAGE_BROKEN, IMAGE_V2, TOKEN,
};

async fn running(env: &Env) -> Vec<String> {
    let out = docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=berth-test.run={}", env.id),
    ])
    .await;
    out.lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_to_a_new_image_under_load_fails_no_request() {
    let r = replicas("roll", 2, &HTTP_CHECK, "").await;
    let (env, host, port, admin) = (&r.env, r.host.clone(), r.port, r.admin.clone());
    let before = running(env).await;
    let load = Load::start(port, &host, 4);
    load.wait_count(50, "the load to run before the rollout")
        .await;
    let (code, out, err) = cli(&admin, &["rollout", "web", "--image", IMAGE_V2]).await;
    println!("berth rollout printed:\n{out}{err}");
    let done = load.count();
    load.wait_count(done + 50, "requests served after the rollout")
        .await;
    let (log, rate) = load.finish().await;
    assert_eq!(code, 0, "rollout did not complete");
    for status in [
        "queued",
        "starting",
        "waiting_healthy",
        "draining",
        "completed",
    ] {
        assert!(out.contains(status), "no {status} line in:\n{out}");
    }
    assert_all_served(&log, rate, "during the rollout", Some(100.0));

    let after = running(env).await;
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|id| !before.contains(id)),
        "old containers are gone"
    );
    let client = HttpClient::new();
    for _ in 0..10 {
        let r = client.get(port, &host, "/").await.unwrap();
        assert!(
            r.body.trim_end().ends_with("v2"),
            "served by the old image: {}",
            r.body
        );
    }
    let (code, out, _) = cli(&admin, &["rollouts"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("completed") && out.contains(&format!("{}/web", env.id)),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_to_an_image_that_never_gets_healthy_is_rolled_back() {
    let r = replicas("broken", 2, &HTTP_CHECK, "").await;
    let (env, host, port, admin) = (&r.env, r.host.clone(), r.port, r.admin.clone());
    let before = running(env).await;
    let load = Load::start(port, &host, 4);
    let (code, out, err) = cli(
        &admin,
        &[
            "rollout",
            "web",
            "--image",
            IMAGE_BROKEN,
            "--health-timeout",
            "3s",
        ],
    )
    .await;
    println!("berth rollout printed:\n{out}{err}");
    let (log, rate) = load.finish().await;
    assert_eq!(code, 1, "a rolled back rollout exits 1");
    let last = out.lines().last().unwrap_or_default();
    assert!(last.contains("rolled_back"), "{out}");
    assert!(
        last.contains("not ready after 3s") && last.contains("HTTP 404"),
        "the reason is shown: {last}"
    );
    assert_all_served(&log, rate, "during the run", None);
    let mut after = running(env).await;
    let mut before = before;
    after.sort();
    before.sort();
    assert_eq!(
        after, before,
        "the old replicas still run and the new one is gone"
    );
    let client = HttpClient::new();
    assert!(client
        .get(port, &host, "/")
        .await
        .unwrap()
        .body
        .trim_end()
        .ends_with("v1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_up_to_three_and_down_to_one_under_load() {
    let r = replicas("scale", 1, &HTTP_CHECK, "").await;
    let (env, host, port, admin) = (&r.env, r.host.clone(), r.port, r.admin.clone());
    let load = Load::start(port, &host, 4);
    let (code, out, err) = cli(&admin, &["scale", "web=3"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(running(env).await.len(), 3);
    let client = HttpClient::new();
    let seen = replicas_seen(&client, port, &host, 12).await;
    assert_eq!(seen.len(), 3, "traffic spreads over three: {seen:?}");

    let (code, out, err) = cli(&admin, &["scale", "web=1"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (log, rate) = load.finish().await;
    assert_eq!(running(env).await.len(), 1);
    let seen = replicas_seen(&client, port, &host, 6).await;
    assert_eq!(seen.len(), 1, "one replica left: {seen:?}");
    assert_all_served(&log, rate, "while scaling", None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_container_is_restarted_by_autoheal() {
    let extra = "deploy:\n  autoheal_grace: 1s\n";
    let r = replicas("heal", 1, &HTTP_CHECK, extra).await;
    let (env, host, port, admin) = (&r.env, r.host.clone(), r.port, r.admin.clone());
    let berth = &r.berth;
    let id = running(env).await.remove(0);
    let started = docker(&["inspect", "-f", "{{.State.StartedAt}}", &id]).await;
    docker(&["exec", &id, "rm", "/www/health"]).await;
    berth
        .wait_log(
            "autoheal: restarting an unhealthy container",
            Duration::from_secs(10),
        )
        .await;
    // Restarted: a new run, whose start script writes /health again.
    eventually(
        Duration::from_secs(15),
        "the container to be restarted and serve again",
        || async {
            let now = docker(&["inspect", "-f", "{{.State.StartedAt}}", &id]).await;
            let r = HttpClient::new().get(port, &host, "/").await.ok()?;
            (now != started && r.status == 200).then_some(())
        },
    )
    .await;
    let (code, backends) = api(&admin, "GET", "/api/backends", Some(TOKEN)).await;
    assert_eq!(code, 200, "{backends}");
    assert!(
        backends.contains("\"restarts\":1"),
        "the restart is counted: {backends}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deploy_history_survives_a_restart_of_berth() {
    let dir = TempDir::new();
    let extra = format!("state_dir: {}\n", dir.path().display());
    let r = replicas("hist", 1, &HTTP_CHECK, &extra).await;
    let (code, out, err) = cli(&r.admin, &["scale", "web=2"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.lines().any(|l| l.starts_with("[1] ")), "{out}");
    let admin_port: u16 = r.admin.rsplit(':').next().unwrap().parse().unwrap();
    let crate::harness::Replicas {
        berth,
        env,
        port,
        admin,
        ..
    } = r;
    drop(berth);
    let _berth = Berth::start(&env.config_admin(port, admin_port, &extra), port).await;
    let (code, runs, _) = cli(&admin, &["rollouts"]).await;
    assert_eq!(code, 0);
    let first = runs
        .lines()
        .find(|l| l.split_whitespace().next() == Some("1"))
        .unwrap_or_else(|| panic!("run 1 is still listed:\n{runs}"));
    assert!(
        first.contains("scale") && first.contains("completed"),
        "{runs}"
    );
    let (code, out, err) = cli(&admin, &["scale", "web=1"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.lines().all(|l| l.starts_with("[2] ")),
        "ids go on from the saved history: {out}"
    );
    let saved = std::fs::read_to_string(dir.path().join("history.json")).unwrap();
    assert!(saved.contains("\"kind\": \"scale\""), "{saved}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_a_service_across_a_rollout() {
    let r = replicas("logsf", 1, &HTTP_CHECK, "").await;
    let mut follow = LogFollower::start(&r.admin, "web");
    let before = running(&r.env).await;
    let (code, out, err) = cli(&r.admin, &["rollout", "web", "--image", IMAGE_V2]).await;
    assert_eq!(code, 0, "{out}{err}");
    let new: Vec<String> = running(&r.env)
        .await
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    assert_eq!(new.len(), 1, "{new:?}");
    let name = docker(&["inspect", "-f", "{{.Name}}", &new[0]]).await;
    let name = name.trim_start_matches('/');
    let marker = format!("from-the-new-replica-{}", r.env.id);
    docker(&[
        "exec",
        &new[0],
        "sh",
        "-c",
        &format!("echo {marker} > /proc/1/fd/1"),
    ])
    .await;
    eventually(
        Duration::from_secs(10),
        "the new replica's line through the same berth logs -f",
        || async {
            let text = follow.text();
            text.lines()
                .any(|l| l.starts_with(name) && l.ends_with(&marker))
                .then_some(())
        },
    )
    .await;
    assert!(
        follow.running(),
        "the follower did not end with the old replica"
    );
}
