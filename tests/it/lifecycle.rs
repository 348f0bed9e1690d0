//! Replicas leaving: a `docker stop` under continuous load fails no request.

use std::sync::Mutex;
use std::time::Duration;

use crate::harness::{
    api, docker, docker_ok, eventually, failures, free_port, replicas, Berth, Env, HttpClient,
    Load, TOKEN,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_stop_under_load_fails_no_request() {
    let r = replicas("stop", 2, &[], "").await;
    let (env, host, port, b) = (&r.env, r.host.clone(), r.port, r.ids[1].clone());

    let load = Load::start(port, &host, 4);
    load.wait_count(50, "the load to run before the stop").await;
    let before_stop = load.count();
    docker(&["stop", "-t", "10", &env.container_name("web-1")]).await;
    let at_stop = load.count();
    // Enough requests after the stop that "only the other replica" means something.
    load.wait_count(at_stop + 200, "requests served after the stop")
        .await;
    let (log, _) = load.finish().await;
    let failed = failures(&log);
    println!(
        "requests: {} total, {} while `docker stop` ran, {} failed",
        log.len(),
        at_stop - before_stop,
        failed.len()
    );
    assert!(
        log.len() > 200,
        "too little load to mean anything: {}",
        log.len()
    );
    assert!(
        failed.is_empty(),
        "failed requests: {:?}",
        &failed[..failed.len().min(5)]
    );
    // Once stopped, only the other replica answers.
    for r in log.iter().skip(at_stop + 8) {
        let body = r.as_ref().unwrap();
        assert!(
            body.starts_with(&b[..12]),
            "stopped replica still served: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_gates_rotation_until_healthy() {
    let env = Env::new("gate").await;
    let host = env.host("slow");
    let port = free_port();
    let _berth = Berth::synced(&env, port).await;
    let client = HttpClient::new();
    // The app listens only after 2 s; its HEALTHCHECK fails until then.
    let id = env
        .run(
            "slow",
            &[
                "--label",
                &format!("berth.host={host}"),
                "-e",
                "START_DELAY=2",
                "--health-cmd",
                "wget -qO- http://127.0.0.1:8080/health",
                "--health-interval",
                "500ms",
                "--health-retries",
                "1",
            ],
        )
        .await;
    let statuses = Mutex::new(Vec::new());
    let r = eventually(
        Duration::from_secs(15),
        "the container to pass its health check",
        || async {
            let r = client.get(port, &host, "/").await.ok()?;
            statuses.lock().unwrap().push(r.status);
            (r.status == 200).then_some(r)
        },
    )
    .await;
    let statuses = statuses.into_inner().unwrap();
    assert!(
        statuses.contains(&503),
        "the route is known while the container starts: {statuses:?}"
    );
    // A 404 may come first, in the few ms before berth has seen the create event.
    assert!(
        statuses
            .iter()
            .skip_while(|s| **s == 404)
            .all(|s| *s == 503 || *s == 200),
        "no request may reach the container before it is healthy: {statuses:?}"
    );
    let health = docker(&["inspect", "-f", "{{.State.Health.Status}}", &id]).await;
    assert_eq!(health, "healthy");
    assert!(r.body.starts_with(&id[..12]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_finishes_while_its_replica_stops_and_no_new_one_reaches_it() {
    let r = replicas("drain", 2, &[], "").await;
    let (env, host, port) = (&r.env, r.host.clone(), r.port);
    let (a, b) = (r.ids[0].clone(), r.ids[1].clone());
    let client = HttpClient::new();

    // Two slow requests: round robin puts one on each replica.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let (client, host) = (HttpClient::new(), host.clone());
            tokio::spawn(async move { client.get(port, &host, "/cgi-bin/who?sleep=3").await })
        })
        .collect();
    // The stop must catch a slow request in hand: wait until one runs in a
    // (its CGI's `sleep` is the only one in the container).
    eventually(
        Duration::from_secs(10),
        "a slow request running inside the replica to stop",
        || async {
            docker_ok(&["exec", &a, "pidof", "sleep"])
                .await
                .then_some(())
        },
    )
    .await;
    let stop_a = env.container_name("web-1");
    let stopping = tokio::spawn(async move { docker(&["stop", "-t", "20", &stop_a]).await });
    // Once berth has applied the kill event (the API shows a out of the ready
    // state), everything new must go to b.
    eventually(
        Duration::from_secs(10),
        "berth to take the stopping replica out of rotation",
        || async {
            let (_, body) = api(&r.admin, "GET", "/api/backends", Some(TOKEN)).await;
            let list: serde_json::Value = serde_json::from_str(&body).ok()?;
            let state = list.as_array()?.iter().find(|v| v["id"] == a.as_str())?["state"]
                .as_str()?
                .to_string();
            (state == "draining" || state == "stopped").then_some(())
        },
    )
    .await;
    let mut after_kill = 0;
    while !stopping.is_finished() {
        let r = client
            .get(port, &host, "/")
            .await
            .expect("request during the stop");
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            r.body.starts_with(&b[..12]),
            "a new request reached the stopping replica: {}",
            r.body
        );
        after_kill += 1;
    }
    stopping.await.unwrap();
    let mut served = Vec::new();
    for s in slow {
        let r = s.await.unwrap().expect("slow request");
        assert_eq!(r.status, 200, "the in-flight request completed: {}", r.body);
        served.push(r.body);
    }
    assert!(
        served
            .iter()
            .any(|body| body.contains(&format!("host={}", &a[..12]))),
        "one slow request was on the stopped replica: {served:?}"
    );
    println!("{after_kill} requests during the stop, all on the other replica");
    assert!(after_kill > 10);
}
