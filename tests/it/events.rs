//! The engine and berth's link to it: the event stream cut mid-run (berth
//! keeps serving what it knows, reconnects, re-lists, and catches up with
//! what happened during the cut), and an engine reached over TCP.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::task::JoinHandle;

use crate::harness::{docker, eventually, free_port, Berth, Env, HttpClient, TempDir};

const DOCKER_SOCK: &str = "/var/run/docker.sock";

/// A unix-socket relay to the engine that the test can cut and restore.
struct Relay {
    path: PathBuf,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    fn start(path: &Path) -> Relay {
        let mut r = Relay {
            path: path.to_path_buf(),
            accept: None,
            conns: Arc::default(),
        };
        r.restore();
        r
    }

    fn restore(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path).expect("bind relay socket");
        let conns = self.conns.clone();
        self.accept = Some(tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let h = tokio::spawn(async move {
                    if let Ok(mut engine) = UnixStream::connect(DOCKER_SOCK).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                    }
                });
                conns.lock().unwrap().push(h);
            }
        }));
    }

    /// Drops every open connection (the event stream with them) and refuses
    /// new ones until `restore`.
    fn cut(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
        }
        let _ = std::fs::remove_file(&self.path);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_cut_then_resync_catches_up() {
    let env = Env::new("cut").await;
    let dir = TempDir::new();
    let mut relay = Relay::start(&dir.path().join("docker.sock"));
    let (old, new) = (env.host("old"), env.host("new"));
    env.run("old", &["--label", &format!("berth.host={old}")])
        .await;
    let port = free_port();
    let extra = format!("  host: unix://{}\n", relay.path.display());
    // `docker:` is the second table of the test config; add the host to it.
    let cfg = env
        .config(port, "")
        .replacen("docker:\n", &format!("docker:\n{extra}"), 1);
    let berth = Berth::start(&cfg, port).await;
    let client = HttpClient::new();
    eventually(
        Duration::from_secs(10),
        "the first container routed",
        || async { (client.get(port, &old, "/").await.ok()?.status == 200).then_some(()) },
    )
    .await;

    relay.cut();
    berth
        .wait_log("Docker watch interrupted", Duration::from_secs(5))
        .await;
    // Blind to the engine, berth keeps serving the routes it has.
    assert_eq!(client.get(port, &old, "/").await.unwrap().status, 200);
    // What happens during the cut, berth cannot see.
    env.run("new", &["--label", &format!("berth.host={new}")])
        .await;
    docker(&["stop", "-t", "5", &env.container_name("old")]).await;
    // Until berth has tried the engine again after these changes (and found
    // the socket gone), and also then, the new container stays unknown.
    let interrupted = berth.count_lines(&["Docker watch interrupted"]);
    eventually(
        Duration::from_secs(15),
        "a failed reconnect after the changes",
        || async {
            let retried = berth.count_lines(&["Docker watch interrupted"]) > interrupted;
            assert_eq!(
                client.get(port, &new, "/").await.unwrap().status,
                404,
                "berth cannot know yet"
            );
            retried.then_some(())
        },
    )
    .await;

    relay.restore();
    eventually(
        Duration::from_secs(15),
        "the container started during the cut to be routed",
        || async { (client.get(port, &new, "/").await.ok()?.status == 200).then_some(()) },
    )
    .await;
    let r = client.get(port, &old, "/").await.unwrap();
    assert_eq!(
        r.status, 503,
        "the container stopped during the cut left rotation: {}",
        r.body
    );
    let log = berth.log();
    let resyncs = log.matches("resynced with the Docker engine").count();
    assert!(resyncs >= 2, "expected a resync after reconnecting:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_static_routes_while_docker_is_unreachable_then_catches_up() {
    let env = Env::new("nodocker").await;
    let dir = TempDir::new();
    let sock = dir.path().join("docker.sock");
    let web = env.host("web");
    env.run("web", &["--label", &format!("berth.host={web}")])
        .await;
    // A static route to a loopback listener that answers 200 to anything.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0
                        || s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nstatic\n")
                            .await
                            .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    let port = free_port();
    let stat = env.host("static");
    // Requests for hosts berth cannot know yet wait half a second, then 503.
    let extra = format!(
        "routes:\n  - host: {stat}\n    backends: [127.0.0.1:{backend}]\nproxy:\n  startup_hold: 500ms\n"
    );
    let cfg = env.config(port, &extra).replacen(
        "docker:\n",
        &format!("docker:\n  host: unix://{}\n", sock.display()),
        1,
    );
    let berth = Berth::start(&cfg, port).await;
    berth
        .wait_log(
            "cannot connect to the Docker engine",
            Duration::from_secs(5),
        )
        .await;
    let client = HttpClient::new();
    assert_eq!(client.get(port, &stat, "/").await.unwrap().body, "static\n");
    // Not a 404: the host may well exist, berth has not listed the engine.
    let r = client.get(port, &web, "/").await.unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("not listed yet"), "{}", r.body);

    let _relay = Relay::start(&sock);
    eventually(
        Duration::from_secs(15),
        "container routes once Docker answers",
        || async { (client.get(port, &web, "/").await.ok()?.status == 200).then_some(()) },
    )
    .await;
    assert_eq!(client.get(port, &stat, "/").await.unwrap().status, 200);
}

/// The engine's unix socket exposed on a loopback TCP port, as
/// `dockerd -H tcp://127.0.0.1:PORT` would; counts the connections it relays.
async fn tcp_relay() -> (String, Arc<AtomicUsize>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a port");
    let addr = listener.local_addr().expect("the relay's address");
    let relayed = Arc::new(AtomicUsize::new(0));
    let count = relayed.clone();
    let accept = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                if let Ok(mut engine) = UnixStream::connect(DOCKER_SOCK).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                }
            });
        }
    });
    (format!("tcp://{addr}"), relayed, accept)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_host_tcp_reaches_the_engine_and_tls_is_refused_not_ignored() {
    let env = Env::new("tcp").await;
    let host = env.host("web");
    env.run("web", &["--label", &format!("berth.host={host}")])
        .await;
    let (engine, relayed, relay) = tcp_relay().await;
    let port = free_port();
    let berth =
        Berth::start_with_env(&env.config(port, ""), port, &[("DOCKER_HOST", &engine)]).await;
    berth
        .wait_log("resynced with the Docker engine", Duration::from_secs(10))
        .await;
    let client = HttpClient::new();
    eventually(
        Duration::from_secs(10),
        "the route, learnt over TCP",
        || async { (client.get(port, &host, "/").await.ok()?.status == 200).then_some(()) },
    )
    .await;
    assert!(
        relayed.load(Ordering::Relaxed) > 0,
        "berth used the local socket, not DOCKER_HOST"
    );
    drop(berth);

    // With TLS asked for, berth refuses to start rather than talk in clear.
    let dir = TempDir::new();
    let cfg = dir.path().join("berth.yaml");
    std::fs::write(&cfg, env.config(free_port(), "")).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .env("DOCKER_HOST", &engine)
        .env("DOCKER_TLS_VERIFY", "1")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("DOCKER_HOST") && err.contains(&engine) && err.contains("TLS"),
        "{err}"
    );
    relay.abort();
}
