//! Connection limits: idle keep-alive and slowloris connections are closed by
//! their timeouts, a stalled request body is a 408, connections over
//! `proxy.max_connections` are closed at once, memory goes back after a
//! burst of connections, and berth running out of file descriptors never
//! takes a healthy backend out or restarts it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::harness::{
    admin_ready, cli, docker, eventually, free_port, never, replicas, serve_web, Berth, Env,
    HttpClient, Served, HTTP_CHECK,
};

/// What the local backend answers.
const LOCAL: &str = "local backend";

/// A keep-alive HTTP/1.1 backend on loopback answering every request with
/// [`LOCAL`]: thousands of requests in a burst without a container's limits.
async fn local_backend() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        got.drain(..end + 4);
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{LOCAL}",
                            LOCAL.len()
                        );
                        if s.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    port
}

/// berth (the test's config plus `extra`) with a static route `host` to a
/// [`local_backend`]: (berth, its port, host).
async fn serve_local(env: &Env, extra: &str) -> (Berth, u16, String) {
    let host = env.host("local");
    let backend = local_backend().await;
    let port = free_port();
    let extra = format!("{extra}routes:\n  - host: {host}\n    backends: [127.0.0.1:{backend}]\n");
    let berth = Berth::start(&env.config(port, &extra), port).await;
    (berth, port, host)
}

/// Connects to berth, sends `GET /` and reads until the answer's body
/// (`marker`) is in; the connection stays open.
async fn answered(port: u16, host: &str, marker: &str) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(marker) {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .map_err(|_| "no answer within 10 s".to_string())?
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!(
                "closed before the answer: {}",
                String::from_utf8_lossy(&got)
            ));
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(s)
}

/// Waits (up to `limit`) until berth closes `s`: EOF or a reset.
async fn closed(s: &mut TcpStream, limit: Duration) -> Result<(), String> {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return Err(format!("still open after {limit:?}")),
            Ok(Ok(0) | Err(_)) => return Ok(()),
            Ok(Ok(_)) => continue,
        }
    }
}

/// Raises this test process's open-file limit to its hard limit (berth,
/// started after, inherits it); fails clearly when even that is below
/// `needed`.
fn open_files_at_least(needed: u64) {
    let pid = std::process::id().to_string();
    let out = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid,
            "--nofile",
            "--output",
            "HARD",
            "--noheadings",
        ])
        .output()
        .expect("run prlimit");
    let hard = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let n: u64 = hard.parse().unwrap_or(u64::MAX); // "unlimited"
    assert!(
        n >= needed,
        "this test needs {needed} open files; the hard limit is {hard}"
    );
    let raised = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={hard}:{hard}")])
        .status()
        .expect("run prlimit");
    assert!(raised.success(), "prlimit --nofile={hard}:{hard}");
}

/// `VmRSS` of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("its status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// Min, median and max of durations, in ms, for the test's output.
fn spread(mut d: Vec<Duration>) -> String {
    d.sort();
    let ms = |d: Duration| d.as_millis();
    format!(
        "min {} ms, median {} ms, max {} ms",
        ms(d[0]),
        ms(d[d.len() / 2]),
        ms(d[d.len() - 1])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slowloris_connections_are_closed_by_their_timeouts() {
    open_files_at_least(4_000);
    let env = Env::new("slow").await;
    let extra = "proxy:\n  keepalive_timeout: 2s\n  header_timeout: 2s\n";
    let (berth, port, host) = serve_local(&env, extra).await;
    let marker = LOCAL.to_string();
    let mut tasks = JoinSet::new();
    // 1,000 keep-alive connections: one answer each, then idle.
    let requests = Arc::new(Semaphore::new(100));
    for _ in 0..1000 {
        let (host, marker, requests) = (host.clone(), marker.clone(), requests.clone());
        tasks.spawn(async move {
            let permit = requests.acquire_owned().await.expect("semaphore");
            let mut s = answered(port, &host, &marker).await?;
            drop(permit);
            let idle_from = Instant::now();
            closed(&mut s, Duration::from_secs(15)).await?;
            Ok::<_, String>(("idle", idle_from.elapsed()))
        });
    }
    // 200 slowloris connections: a header line every 300 ms, never the end.
    for _ in 0..200 {
        let host = host.clone();
        tasks.spawn(async move {
            let from = Instant::now();
            let s = TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let (mut r, mut w) = s.into_split();
            let dribble = tokio::spawn(async move {
                let start = format!("GET / HTTP/1.1\r\nHost: {host}\r\n");
                let mut line = start.into_bytes();
                for i in 0.. {
                    if w.write_all(&line).await.is_err() {
                        return;
                    }
                    line = format!("X-Slow-{i}: a\r\n").into_bytes();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            });
            let mut buf = [0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(15), r.read(&mut buf))
                .await
                .map_err(|_| "slowloris still open after 15 s".to_string())?
                .unwrap_or(0);
            dribble.abort();
            if n != 0 {
                return Err(format!("an answer: {}", String::from_utf8_lossy(&buf[..n])));
            }
            Ok(("slowloris", from.elapsed()))
        });
    }
    // 100 connections that never send a byte.
    for _ in 0..100 {
        tasks.spawn(async move {
            let from = Instant::now();
            let mut s = TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(|e| format!("connect: {e}"))?;
            closed(&mut s, Duration::from_secs(15)).await?;
            Ok(("silent", from.elapsed()))
        });
    }
    let mut by_kind: std::collections::HashMap<&str, Vec<Duration>> = Default::default();
    while let Some(r) = tasks.join_next().await {
        let (kind, took) = r.expect("task").expect("connection");
        by_kind.entry(kind).or_default().push(took);
    }
    for (kind, n) in [("idle", 1000), ("slowloris", 200), ("silent", 100)] {
        let took = by_kind.remove(kind).unwrap_or_default();
        assert_eq!(took.len(), n, "{kind}");
        println!(
            "{n} {kind} connections closed after: {}",
            spread(took.clone())
        );
        // Nominally 2 s; the upper bound leaves room for a busy machine, not
        // for a timeout that is per read (slowloris) or missing (silent).
        for t in took {
            assert!(
                t >= Duration::from_millis(1900) && t < Duration::from_secs(8),
                "{kind}: closed after {t:?}"
            );
        }
    }
    // One line for the burst, not one per connection.
    let lines = berth.count_lines(&["proxy.header_timeout"]);
    assert_eq!(lines, 1, "log lines about slow headers");
    let r = HttpClient::new().get(port, &host, "/").await.unwrap();
    assert_eq!(r.status, 200, "still serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_is_answered_408_as_the_clients_fault() {
    let env = Env::new("stall").await;
    let Served {
        berth, port, host, ..
    } = serve_web(&env, "proxy:\n  body_timeout: 1s\n").await;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // An app that reads the whole body before it answers (the CGI waits).
    let head = format!(
        "POST /cgi-bin/who?wait=3 HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&[b'x'; 100]).await.unwrap();
    let stalled = Instant::now();
    let mut got = Vec::new();
    let answer = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    let after = stalled.elapsed();
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(
        answer.is_ok(),
        "the connection is closed after the answer: {text}"
    );
    println!("stalled body answered after {} ms", after.as_millis());
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(5),
        "{after:?}"
    );
    let log = berth
        .wait_log(
            "the client stopped sending its request body",
            Duration::from_secs(5),
        )
        .await;
    assert!(log.contains("status=408"), "the access log says 408");
    assert!(!log.contains("status=502"), "no 502");
    // The backend is not blamed: still in rotation, nothing about it logged.
    assert_eq!(berth.count_lines(&["repeated connect failures"]), 0);
    let r = HttpClient::new().get(port, &host, "/").await.unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_max_connections_are_closed_at_once() {
    let env = Env::new("cap").await;
    let Served {
        berth,
        port,
        host,
        id,
    } = serve_web(&env, "proxy:\n  max_connections: 20\n").await;
    let marker = &id[..12];
    // The harness's own client may still hold a connection for a moment:
    // each of the 20 retries until it is answered.
    let mut held = Vec::new();
    for i in 0..20 {
        let s = eventually(
            Duration::from_secs(10),
            &format!("connection {i}"),
            || async { answered(port, &host, marker).await.ok() },
        )
        .await;
        held.push(s);
    }
    let mut over = Vec::new();
    for _ in 0..10 {
        let from = Instant::now();
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let _ = s
            .write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .await;
        closed(&mut s, Duration::from_secs(2))
            .await
            .expect("closed at once");
        over.push(from.elapsed());
    }
    println!(
        "connections over the cap closed after: {}",
        spread(over.clone())
    );
    assert!(over.iter().all(|t| *t < Duration::from_secs(1)), "{over:?}");
    let lines = berth.count_lines(&["proxy.max_connections reached"]);
    assert_eq!(lines, 1, "one line for the burst");
    // One closes: a new connection is served again.
    drop(held.pop());
    eventually(
        Duration::from_secs(5),
        "a connection under the cap",
        || async { answered(port, &host, marker).await.ok() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_goes_back_after_five_thousand_connections_close() {
    open_files_at_least(12_000);
    let env = Env::new("rss").await;
    let (berth, port, host) = serve_local(&env, "").await;
    let marker = LOCAL.to_string();
    let pid = berth.pid();
    let burst = |n: usize| {
        let (host, marker) = (host.clone(), marker.clone());
        async move {
            let requests = Arc::new(Semaphore::new(100));
            let mut tasks = JoinSet::new();
            for _ in 0..n {
                let (host, marker, requests) = (host.clone(), marker.clone(), requests.clone());
                tasks.spawn(async move {
                    let _permit = requests.acquire_owned().await.expect("semaphore");
                    answered(port, &host, &marker).await
                });
            }
            let mut open = Vec::new();
            while let Some(r) = tasks.join_next().await {
                open.push(r.expect("task").expect("an answer"));
            }
            open
        }
    };
    let baseline = rss_kib(pid);
    let limit = baseline + 20 * 1024;
    // Twice: the second burst reuses the memory the first freed.
    for round in 1..=2 {
        let open = burst(5000).await;
        let peak = rss_kib(pid);
        drop(open);
        let closed = Instant::now();
        // Polled with a deadline; the figures are printed either way.
        let mut after = rss_kib(pid);
        while after > limit && closed.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            after = rss_kib(pid);
        }
        println!(
            "RSS, burst {round}: baseline {} MiB, 5,000 connections open {} MiB, closed {} MiB ({} ms later)",
            baseline / 1024,
            peak / 1024,
            after / 1024,
            closed.elapsed().as_millis()
        );
        assert!(
            after <= limit,
            "burst {round}: RSS {after} KiB, more than 20 MiB over the baseline ({baseline} KiB)"
        );
    }
    assert!(
        berth.count_lines(&["freed memory given back to the system"]) >= 1,
        "the trim is logged"
    );
    let r = HttpClient::new().get(port, &host, "/").await.unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_healthy_backends_stay_ready_and_nothing_restarts() {
    // Autoheal would restart an unhealthy container after 1 s.
    let r = replicas("nofile", 1, &HTTP_CHECK, "deploy:\n  autoheal_grace: 1s\n").await;
    let (port, host, admin, web) = (r.port, r.host.clone(), r.admin.clone(), r.ids[0].clone());
    admin_ready(&admin).await;
    let started = docker(&[
        "inspect",
        "-f",
        "{{.State.StartedAt}} {{.RestartCount}}",
        &web,
    ])
    .await;
    let pid = r.berth.pid();
    // Connections opened (and answered) before the shortage, to send a
    // request on during it: a new connection to the backend needs a socket.
    let mut ready = Vec::new();
    for _ in 0..5 {
        let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        ready.push(s);
    }
    // Its first pass is in the log already.
    let before = changes(&r.berth);
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--nofile=256:256"])
        .status()
        .expect("run prlimit");
    assert!(limited.success(), "prlimit");
    // A client takes every file descriptor berth has left.
    let mut flood = Vec::new();
    for _ in 0..400 {
        flood.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    r.berth
        .wait_log("Too many open files", Duration::from_secs(10))
        .await;
    // Requests that need a new connection to the backend: 503, berth's own.
    let mut statuses = Vec::new();
    for mut s in ready {
        s.write_all(
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
        let text = String::from_utf8_lossy(&got).into_owned();
        statuses.push(text.split_whitespace().nth(1).unwrap_or("none").to_string());
    }
    println!("answers during the shortage: {statuses:?}");
    assert!(statuses.iter().any(|s| s == "503"), "{statuses:?}");
    // Checks every 300 ms and autoheal after 1 s: four seconds of shortage
    // would show any state change or restart.
    never(
        Duration::from_secs(4),
        "a backend taken out or restarted",
        || async { changes(&r.berth).ne(&before).then(|| changes(&r.berth)) },
    )
    .await;
    drop(flood);
    // berth recovers: the backend was never out.
    eventually(Duration::from_secs(15), "an answer again", || async {
        let r = HttpClient::new().get(port, &host, "/").await.ok()?;
        (r.status == 200).then_some(())
    })
    .await;
    let (code, table, _) = cli(&admin, &["backends"]).await;
    assert_eq!(code, 0, "{table}");
    assert!(table.contains("ready"), "{table}");
    assert_eq!(
        docker(&[
            "inspect",
            "-f",
            "{{.State.StartedAt}} {{.RestartCount}}",
            &web
        ])
        .await,
        started,
        "not restarted"
    );
    let log = r.berth.log();
    for line in [
        "health check not run: berth is out of file descriptors",
        "cannot connect to backends: berth is out of file descriptors",
    ] {
        let n = log.lines().filter(|l| l.contains(line)).count();
        assert_eq!(n, 1, "{line}: once for the burst");
    }
    assert_eq!(changes(&r.berth), before, "no state change, no restart");
}

/// How many times berth logged a backend's state change, a backend taken
/// out for connect failures, an autoheal restart.
fn changes(berth: &Berth) -> [usize; 3] {
    [
        "active health check changed",
        "repeated connect failures",
        "autoheal: restarting",
    ]
    .map(|l| berth.count_lines(&[l]))
}
