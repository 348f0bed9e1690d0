//! berth asked to stop: requests in flight are answered to the end, nothing
//! new is accepted, it exits as soon as it is done; a second signal is
//! obeyed at once.

use std::time::{Duration, Instant};

use crate::harness::{eventually, serve_web, until_in_backend, Berth, Env, HttpClient};

/// A berth with this shutdown grace routing one test container.
async fn serving(env: &Env, grace: &str) -> (Berth, u16, String, String) {
    let s = serve_web(env, &format!("shutdown:\n  grace: {grace}\n")).await;
    (s.berth, s.port, s.host, s.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_the_request_in_flight_then_exits() {
    let env = Env::new("term").await;
    let (mut berth, port, host, id) = serving(&env, "20s").await;
    let slow = {
        let host = host.clone();
        tokio::spawn(async move {
            HttpClient::new()
                // Headers and body after 4 s: the response starts after the signal.
                .get(port, &host, "/cgi-bin/who?wait=4")
                .await
        })
    };
    until_in_backend(&id, Duration::from_secs(5)).await;
    berth.signal("TERM");
    eventually(Duration::from_secs(3), "the listener to close", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
            .then_some(())
    })
    .await;
    let r = slow
        .await
        .unwrap()
        .expect("the request in flight is answered");
    let answered = Instant::now();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.headers.get("connection").map(|v| v.to_str().unwrap()),
        Some("close"),
        "the client is told not to send another request"
    );
    let code = berth.exited(Duration::from_secs(10)).await;
    let after = answered.elapsed();
    println!(
        "berth exited {:.0} ms after the last answer",
        after.as_secs_f64() * 1000.0
    );
    assert_eq!(code, Some(0), "{}", berth.log());
    // It exits when it is done, not at the end of the 20 s grace.
    assert!(after < Duration::from_secs(5), "{after:?}");
    assert!(berth.log().contains("no request in flight: exiting"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let env = Env::new("term2").await;
    let (mut berth, port, host, id) = serving(&env, "60s").await;
    let slow = tokio::spawn(async move {
        HttpClient::new()
            .get(port, &host, "/cgi-bin/who?sleep=30")
            .await
    });
    until_in_backend(&id, Duration::from_secs(5)).await;
    berth.signal("INT");
    berth
        .wait_log("stopping: no new connections", Duration::from_secs(5))
        .await;
    assert_eq!(
        berth.exited(Duration::from_millis(500)).await,
        None,
        "one signal: the request in flight still runs"
    );
    let second = Instant::now();
    berth.signal("TERM");
    let code = berth.exited(Duration::from_secs(5)).await;
    println!(
        "berth exited {:.0} ms after the second signal",
        second.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(code, Some(1), "{}", berth.log());
    let cut = slow.await.unwrap();
    assert!(
        cut.as_ref().map_or(true, |r| r.status != 200),
        "the 30 s request was cut: {cut:?}"
    );
}
