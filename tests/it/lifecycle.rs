//! Replicas leaving: a `docker stop` under continuous load fails no request;
//! one that comes back is in rotation again at once.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::harness::{
    api, docker, eventually, failures, free_port, replicas, replicas_seen, until_in_backend, Berth,
    Env, HttpClient, Load, HTTP_CHECK, TOKEN,
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
    until_in_backend(&a, Duration::from_secs(10)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_and_started_again_is_back_at_once_every_time() {
    let r = replicas("flap", 2, &HTTP_CHECK, "").await;
    let (env, host, port) = (&r.env, r.host.clone(), r.port);
    let a = r.ids[0].clone();
    let load = Load::start(port, &host, 4);
    load.wait_count(50, "the load to run").await;
    let client = HttpClient::new();
    let mut slowest = Duration::ZERO;
    for round in 1..=5 {
        docker(&["stop", "-t", "5", &env.container_name("web-1")]).await;
        docker(&["start", &env.container_name("web-1")]).await;
        let started = Instant::now();
        eventually(
            Duration::from_secs(10),
            &format!("web-1 back in rotation (round {round})"),
            || async {
                let seen = replicas_seen(&client, port, &host, 6).await;
                seen.iter().any(|b| b.starts_with(&a[..12])).then_some(())
            },
        )
        .await;
        slowest = slowest.max(started.elapsed());
    }
    let (log, rate) = load.finish().await;
    println!(
        "5 stop/start rounds: back in rotation within {:.0} ms at worst; {} requests at {rate:.0}/s, {} failed",
        slowest.as_secs_f64() * 1000.0,
        log.len(),
        failures(&log).len()
    );
    assert!(failures(&log).is_empty(), "{:?}", failures(&log));
    // One check interval (300 ms) plus the engine's start; a connect-failure
    // mark held for its 5 s cool-down would break this.
    assert!(slowest < Duration::from_secs(3), "{slowest:?}");
}
