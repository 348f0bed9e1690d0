//! berth replaced or reconfigured while it serves: `berth upgrade` hands the
//! listeners to a new process, SIGHUP / `berth reload` / `POST /api/reload`
//! apply a changed file, and a berth that has not learned the containers yet
//! holds requests instead of answering 404.

use std::time::{Duration, Instant};

use crate::harness::{
    admin_ready, api, cli, eventually, failures, free_port, ip_of, serve_web, Berth, Env,
    HttpClient, Load, DNS_OFF, TOKEN,
};

/// Waits until the berth started first has exited (it does by itself after
/// handing over).
async fn first_exits(berth: &mut Berth, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !berth.first_exited() {
        assert!(
            Instant::now() < deadline,
            "the old berth still runs after {limit:?}:\n{}",
            berth.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_upgrades_under_load_fail_no_request() {
    let env = Env::new("upgrade").await;
    let s = serve_web(&env, "").await;
    drop(s.berth);
    // The same berth with the admin API and DNS on: their sockets are shared
    // with the new berth during the hand-over.
    let (admin_port, dns) = (free_port(), free_port());
    let admin = format!("127.0.0.1:{admin_port}");
    let config = env.config_admin(s.port, admin_port, "").replace(
        DNS_OFF,
        &format!("dns:\n  listen: 127.0.0.1:{dns}\n  forward: off\n"),
    );
    let mut berth = Berth::start(&config, s.port).await;
    admin_ready(&admin).await;
    let web = format!("{}.internal", env.container_name("web"));
    let answers = |name: String| async move {
        let out = tokio::process::Command::new("dig")
            .args(["@127.0.0.1", "-p", &dns.to_string(), &name, "A", "+short"])
            .args(["+tries=3", "+time=1"])
            .output()
            .await
            .expect("dig");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let load = Load::start(s.port, &s.host, 8);
    load.wait_count(500, "the load before the upgrade").await;
    for round in 1..=2 {
        let before = berth.pid();
        let (code, out) = berth.upgrade().await;
        assert_eq!(code, 0, "upgrade {round}: {out}\n{}", berth.log());
        assert_ne!(berth.pid(), before, "upgrade {round}: a new process serves");
        if round == 1 {
            first_exits(&mut berth, Duration::from_secs(15)).await;
        } else {
            eventually(
                Duration::from_secs(15),
                "the second old berth to exit",
                || async {
                    let alive = std::path::Path::new(&format!("/proc/{before}")).exists();
                    (!alive).then_some(())
                },
            )
            .await;
        }
        let n = load.count();
        load.wait_count(n + 500, "the load after the old berth exited")
            .await;
        // The new berth has the admin API and the DNS server to itself now.
        let (status, _) = api(&admin, "GET", "/api/routes", Some(TOKEN)).await;
        assert_eq!(status, 200, "upgrade {round}: the admin API");
        let found = answers(web.clone()).await;
        assert!(
            !found.is_empty(),
            "upgrade {round}: DNS for {web}: {found:?}"
        );
    }
    let (log, rate) = load.finish().await;
    println!("{} requests at {rate:.0}/s through two upgrades", log.len());
    assert!(
        failures(&log).is_empty(),
        "{} failed, e.g. {:?}",
        log.iter().filter(|r| r.is_err()).count(),
        failures(&log)
    );
    assert!(rate >= 500.0, "{rate:.0} requests/s");
    assert_eq!(
        berth.count_lines(&["listeners taken over from the running berth"]),
        2,
        "{}",
        berth.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_without_a_running_berth_is_refused() {
    let dir = crate::harness::TempDir::new();
    let cfg = dir.path().join("berth.yaml");
    let port = free_port();
    std::fs::write(
        &cfg,
        format!(
            "http:\n  listen: 127.0.0.1:{port}\nadmin:\n  listen: \"off\"\ntls:\n  listen: \"off\"\ndns:\n  listen: \"off\"\nstate_dir: {}\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["upgrade", "--config"])
        .arg(&cfg)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("berth.pid") && err.contains("without --upgrade"),
        "{err}"
    );
}

/// The config of the reload test: a static route to `backend`, and the
/// proxy's read timeout.
fn reload_config(env: &Env, http: u16, admin: u16, backend: &str, read_timeout: &str) -> String {
    env.config_admin(
        http,
        admin,
        &format!(
            "proxy:\n  read_timeout: {read_timeout}\nroutes:\n  - host: static.test\n    backends: [\"{backend}:8080\"]\n"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_routes_and_timeouts_live_and_refuses_a_bad_file() {
    let env = Env::new("reload").await;
    let a = env.run("a", &[]).await;
    let b = env.run("b", &[]).await;
    let (ip_a, ip_b) = (ip_of(&a).await, ip_of(&b).await);
    let (http, admin_port) = (free_port(), free_port());
    let admin = format!("127.0.0.1:{admin_port}");
    let mut berth = Berth::start(&reload_config(&env, http, admin_port, &ip_a, "1s"), http).await;
    admin_ready(&admin).await;
    let client = HttpClient::new();
    let body = |r: &crate::harness::Response| r.body.clone();
    eventually(Duration::from_secs(10), "the static route to a", || async {
        let r = client.get(http, "static.test", "/cgi-bin/who").await.ok()?;
        (r.status == 200 && body(&r).contains(&a[..12])).then_some(())
    })
    .await;
    let slow = client
        .get(http, "static.test", "/cgi-bin/who?wait=2")
        .await
        .unwrap();
    assert_eq!(slow.status, 504, "read_timeout 1s: {}", slow.body);
    let load = Load::start(http, "static.test", 4);
    load.wait_count(200, "the load before the reload").await;

    // SIGHUP with the route moved to b and a longer read timeout.
    let write = |yaml: String| berth.rewrite_config(&yaml);
    write(reload_config(&env, http, admin_port, &ip_b, "5s"));
    berth.signal("HUP");
    berth
        .wait_log("configuration reloaded", Duration::from_secs(5))
        .await;
    eventually(Duration::from_secs(5), "the route to b", || async {
        let r = client.get(http, "static.test", "/cgi-bin/who").await.ok()?;
        (r.status == 200 && body(&r).contains(&b[..12])).then_some(())
    })
    .await;
    let slow = client
        .get(http, "static.test", "/cgi-bin/who?wait=2")
        .await
        .unwrap();
    assert_eq!(slow.status, 200, "read_timeout 5s now: {}", slow.body);

    // An invalid file: refused by the API, the CLI and SIGHUP; all stays.
    write(
        reload_config(&env, http, admin_port, &ip_a, "5s")
            .replace("proxy:\n", "proxy:\n  read_timeot: 2s\n"),
    );
    let (status, text) = api(&admin, "POST", "/api/reload", Some(TOKEN)).await;
    assert_eq!(status, 422, "{text}");
    assert!(
        text.contains("proxy.read_timeot") && text.contains("read_timeout"),
        "{text}"
    );
    let (code, _, err) = cli(&admin, &["reload"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("proxy.read_timeot"), "{err}");
    berth.signal("HUP");
    berth
        .wait_log("configuration refused", Duration::from_secs(5))
        .await;
    let r = client
        .get(http, "static.test", "/cgi-bin/who")
        .await
        .unwrap();
    assert!(r.body.contains(&b[..12]), "{}", r.body);

    // A good file again through the CLI: what needs a restart is named.
    let moved = reload_config(&env, http, admin_port, &ip_a, "5s").replace(
        &format!("listen: 127.0.0.1:{http}"),
        &format!("listen: 127.0.0.1:{}", free_port()),
    );
    write(moved);
    let (code, out, err) = cli(&admin, &["reload"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("applied: routes"), "{out}");
    assert!(
        out.contains("needs a restart (berth upgrade): http.listen"),
        "{out}"
    );
    eventually(Duration::from_secs(5), "the route back to a", || async {
        let r = client.get(http, "static.test", "/cgi-bin/who").await.ok()?;
        (r.status == 200 && body(&r).contains(&a[..12])).then_some(())
    })
    .await;

    let (log, rate) = load.finish().await;
    println!(
        "{} requests at {rate:.0}/s through three reloads",
        log.len()
    );
    assert!(failures(&log).is_empty(), "{:?}", failures(&log));
    assert_eq!(berth.exited(Duration::ZERO).await, None, "berth still runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_the_first_docker_sync_requests_wait_and_never_get_a_404() {
    // An engine that is not there: berth never syncs; after the hold, a
    // 503 with Retry-After, not "no route".
    let dir = crate::harness::TempDir::new();
    let http = free_port();
    let config = format!(
        "http:\n  listen: 127.0.0.1:{http}\ndocker:\n  host: unix://{}/none.sock\nproxy:\n  startup_hold: 300ms\nadmin:\n  listen: \"off\"\ntls:\n  listen: \"off\"\ndns:\n  listen: \"off\"\n",
        dir.path().display()
    );
    let _berth = Berth::start(&config, http).await;
    let client = HttpClient::new();
    let r = client.get(http, "unknown.test", "/").await.unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("starting"), "{}", r.body);
    assert!(r.headers.contains_key("retry-after"));

    // With the engine there, the very first request to a fresh berth is
    // answered by the container: held until berth has listed and checked it.
    let env = Env::new("hold").await;
    let host = env.host("web");
    env.run("web", &["--label", &format!("berth.host={host}")])
        .await;
    let port = free_port();
    let _b = Berth::spawn_with_env(&env.config(port, ""), &[]);
    eventually(Duration::from_secs(10), "the listener", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let r = client.get(port, &host, "/").await.unwrap();
    assert_eq!(r.status, 200, "the first request: {}", r.body);
}
