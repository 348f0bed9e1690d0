//! Replicas leaving: a `docker stop` under continuous load fails no request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::{docker, eventually, free_port, Berth, Env, HttpClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_stop_under_load_fails_no_request() {
    let env = Env::new("stop").await;
    let host = env.host("web");
    let label = format!("berth.host={host}");
    let _a = env.run("web-1", &["--label", &label]).await;
    let b = env.run("web-2", &["--label", &label]).await;
    let port = free_port();
    let _berth = Berth::start(&env.config(port, ""), port).await;
    let client = HttpClient::new();
    eventually(
        Duration::from_secs(10),
        "both replicas in rotation",
        || async {
            let mut seen = std::collections::HashSet::new();
            for _ in 0..4 {
                seen.insert(client.get(port, &host, "/").await.ok()?.body);
            }
            (seen.len() == 2).then_some(())
        },
    )
    .await;

    // Four clients, each with its own keep-alive connections, back to back.
    let stop = Arc::new(AtomicBool::new(false));
    let log: Arc<Mutex<Vec<Result<String, String>>>> = Arc::default();
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (stop, log, host) = (stop.clone(), log.clone(), host.clone());
        workers.push(tokio::spawn(async move {
            let client = HttpClient::new();
            while !stop.load(Ordering::Relaxed) {
                let r = match client.get(port, &host, "/").await {
                    Ok(r) if r.status == 200 => Ok(r.body),
                    Ok(r) => Err(format!("status {}: {}", r.status, r.body)),
                    Err(e) => Err(e),
                };
                log.lock().unwrap().push(r);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_stop = log.lock().unwrap().len();
    docker(&["stop", "-t", "10", &env.container_name("web-1")]).await;
    let at_stop = log.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    let log = log.lock().unwrap();
    let failed: Vec<&String> = log.iter().filter_map(|r| r.as_ref().err()).collect();
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
