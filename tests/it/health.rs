//! Active HTTP checks (`berth.health.*`): a replica that fails its check leaves
//! rotation within one interval and comes back when it passes; a new one gets
//! no request before its first pass.

use std::time::{Duration, Instant};

use crate::harness::{
    docker, eventually, free_port, replicas, replicas_seen, Berth, Env, HttpClient, HTTP_CHECK,
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
