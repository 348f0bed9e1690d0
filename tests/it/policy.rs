//! Route policies from labels, against real containers and real clients
//! (curl for source addresses, bodies and encodings): basic and forward
//! auth, allow/deny lists behind trusted proxies, rate limits, redirects,
//! prefix stripping, headers, CORS, compression, body limits, sticky
//! replicas.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;

use crate::harness::{
    admin_ready, berth_cli, cli, docker, eventually, free_port, ip_of, served_by, Berth, Env,
    HttpClient, TempDir,
};

/// What curl got: the final status (after any 100 Continue), headers with
/// lowercase names, and the body.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `curl -si` to berth at `port` with Host `host`; `extra` are more curl
/// arguments (headers, `--interface`, data).
async fn curl(port: u16, host: &str, path: &str, extra: &[&str]) -> Reply {
    let url = format!("http://127.0.0.1:{port}{path}");
    let host_header = format!("Host: {host}");
    let out = tokio::process::Command::new("curl")
        .args(["-si", "--max-time", "10", "-H", &host_header])
        .args(extra)
        .arg(&url)
        .output()
        .await
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "curl {extra:?} {url}: {text}");
    let mut rest = text.as_str();
    loop {
        let (head, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {text}"));
        if (100..200).contains(&status) {
            rest = body;
            continue;
        }
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        return Reply {
            status,
            headers,
            body: body.to_string(),
        };
    }
}

/// `htpasswd -nbB user password`: the line a user pastes into the label.
async fn htpasswd(user: &str, password: &str) -> String {
    let out = tokio::process::Command::new("htpasswd")
        .args(["-nbB", user, password])
        .output()
        .await
        .expect("htpasswd (apache2-utils)");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn routed(port: u16, host: &str, path: &str, want: u16) {
    eventually(
        Duration::from_secs(15),
        &format!("{host} answers {want}"),
        || async { (curl(port, host, path, &[]).await.status == want).then_some(()) },
    )
    .await;
}

fn label(kv: &str) -> [String; 2] {
    ["--label".to_string(), kv.to_string()]
}

fn args(labels: &[String]) -> Vec<&str> {
    labels.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_challenges_passes_and_a_bad_hash_fails_closed() {
    let env = Env::new("basic").await;
    let (locked, broken, open) = (env.host("locked"), env.host("broken"), env.host("open"));
    let alice = htpasswd("alice", "s3cret").await;
    println!("label: berth.auth.basic={alice}");
    let mut l = Vec::new();
    l.extend(label(&format!("berth.host={locked}")));
    l.extend(label(&format!("berth.auth.basic={alice}")));
    l.extend(label("berth.auth.realm=staff"));
    env.run("locked", &args(&l)).await;
    let mut l = Vec::new();
    l.extend(label(&format!("berth.host={broken}")));
    l.extend(label("berth.auth.basic=bob:hunter2"));
    l.extend(label(&format!("berth.api.host=api.{broken}")));
    env.run("broken", &args(&l)).await;
    env.run("open", &["--label", &format!("berth.host={open}")])
        .await;

    // `berth check` names the label, and not the password.
    let http = free_port();
    let dir = TempDir::new();
    let cfg = dir.path().join("berth.yaml");
    std::fs::write(&cfg, env.config(http, "")).unwrap();
    let (code, out, err) = berth_cli(&["check", "--config", cfg.to_str().unwrap()]).await;
    println!("berth check printed:\n{out}{err}");
    assert_eq!(code, 1);
    let line = out
        .lines()
        .find(|l| l.contains(&env.container_name("broken")))
        .unwrap_or_else(|| panic!("the container is not named:\n{out}"));
    assert!(line.contains("berth.auth.basic"), "{line}");
    assert!(line.contains("plain passwords are refused"), "{line}");
    assert!(
        !out.contains("hunter2"),
        "a password is never printed:\n{out}"
    );

    let admin_port = free_port();
    let admin = format!("127.0.0.1:{admin_port}");
    let _berth = Berth::start(&env.config_admin(http, admin_port, ""), http).await;
    admin_ready(&admin).await;
    routed(http, &open, "/", 200).await;

    let r = curl(http, &locked, "/", &[]).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"staff\", charset=\"UTF-8\"")
    );
    let started = Instant::now();
    let r = curl(http, &locked, "/", &["-u", "alice:s3cret"]).await;
    let first = started.elapsed();
    assert_eq!(r.status, 200, "{r:?}");
    let started = Instant::now();
    let r = curl(http, &locked, "/", &["-u", "alice:s3cret"]).await;
    let again = started.elapsed();
    assert_eq!(r.status, 200);
    println!("with credentials: first {first:?} (bcrypt), then {again:?} (remembered)");
    for wrong in ["alice:S3cret", "mallory:s3cret", "alice:"] {
        let r = curl(http, &locked, "/", &["-u", wrong]).await;
        assert_eq!(r.status, 401, "{wrong}: {r:?}");
    }

    // Fail closed: the route with the bad hash answers 503 with the reason;
    // its other route and the other containers are served.
    let r = curl(http, &broken, "/", &["-u", "bob:hunter2"]).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        r.body.contains("closed until its labels are fixed"),
        "{}",
        r.body
    );
    assert!(
        !r.body.contains("bob"),
        "the reason is not shown to the world: {}",
        r.body
    );
    let (code, out, _) = cli(&admin, &["problems"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("berth.auth.basic") && !out.contains("hunter2"),
        "{out}"
    );
    routed(http, &format!("api.{broken}"), "/", 200).await;
    assert_eq!(curl(http, &open, "/", &[]).await.status, 200);

    let (code, out, _) = cli(&admin, &["routes"]).await;
    println!("berth routes:\n{out}");
    assert_eq!(code, 0);
    let row = |host: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{host} ")))
            .unwrap_or_else(|| panic!("{host} not listed:\n{out}"))
            .to_string()
    };
    assert!(row(&locked).contains("auth.basic: alice"), "{out}");
    assert!(!out.contains("$2y$"), "no hash in the listing");
    assert!(row(&broken).contains("blocked (503)"), "{out}");
    assert!(row(&open).trim_end().ends_with('-'), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_passes_copies_headers_and_returns_the_refusal() {
    let env = Env::new("fwd").await;
    let auth = env.run("auth", &[]).await;
    let auth_ip = ip_of(&auth).await;
    let app = env.host("app");
    let mut l = Vec::new();
    l.extend(label(&format!("berth.host={app}")));
    l.extend(label(&format!(
        "berth.auth.forward=http://{auth_ip}:8080/cgi-bin/auth"
    )));
    l.extend(label("berth.auth.forward.headers=X-Auth-User"));
    env.run("app", &args(&l)).await;
    let http = free_port();
    let _berth = Berth::start(&env.config(http, ""), http).await;
    routed(http, &app, "/", 401).await;

    let r = curl(http, &app, "/cgi-bin/who?x=1", &["-H", "X-Token: good"]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("HTTP_X_AUTH_USER=alice"), "{}", r.body);
    assert!(
        !r.body.contains("not-copied"),
        "only the chosen headers: {}",
        r.body
    );

    let r = curl(http, &app, "/cgi-bin/who?x=1", &["-X", "DELETE"]).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"test\""));
    assert_eq!(r.header("x-seen-uri"), Some("/cgi-bin/who?x=1"));
    assert_eq!(r.header("x-seen-method"), Some("DELETE"));
    assert!(r.body.contains("denied by auth"), "{}", r.body);

    // The auth service gone: closed, not open.
    docker(&["rm", "-f", &auth]).await;
    let r = curl(http, &app, "/", &["-H", "X-Token: good"]).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("auth service"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_and_deny_by_client_address_behind_trusted_proxies_only() {
    let env = Env::new("allow").await;
    let (inner, outer) = (env.host("inner"), env.host("outer"));
    let mut l = Vec::new();
    l.extend(label(&format!("berth.host={inner}")));
    l.extend(label("berth.allow=127.0.0.1"));
    env.run("inner", &args(&l)).await;
    let mut l = Vec::new();
    l.extend(label(&format!("berth.host={outer}")));
    l.extend(label("berth.deny=127.0.0.2/32"));
    env.run("outer", &args(&l)).await;
    let http = free_port();
    let extra = "proxy:\n  trusted_proxies: [127.0.0.3]\n";
    let _berth = Berth::start(&env.config(http, extra), http).await;
    routed(http, &inner, "/", 200).await;

    let from = |ip: &'static str| ["--interface", ip];
    assert_eq!(
        curl(http, &inner, "/", &from("127.0.0.1")).await.status,
        200
    );
    let r = curl(http, &inner, "/", &from("127.0.0.2")).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains("127.0.0.2"), "{}", r.body);
    // A client cannot claim another address: it is not a trusted proxy.
    let mut spoof = from("127.0.0.2").to_vec();
    spoof.extend(["-H", "X-Forwarded-For: 127.0.0.1"]);
    assert_eq!(curl(http, &inner, "/", &spoof).await.status, 403);
    // A trusted proxy can, and the backend sees the client and the chain.
    let mut proxied = from("127.0.0.3").to_vec();
    proxied.extend(["-H", "X-Forwarded-For: 127.0.0.1"]);
    let r = curl(http, &inner, "/cgi-bin/who", &proxied).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("HTTP_X_REAL_IP=127.0.0.1"), "{}", r.body);
    assert!(
        r.body.contains("x-forwarded-for=127.0.0.1, 127.0.0.3"),
        "{}",
        r.body
    );
    let mut proxied = from("127.0.0.3").to_vec();
    proxied.extend(["-H", "X-Forwarded-For: 127.0.0.2"]);
    assert_eq!(curl(http, &inner, "/", &proxied).await.status, 403);

    assert_eq!(
        curl(http, &outer, "/", &from("127.0.0.1")).await.status,
        200
    );
    assert_eq!(
        curl(http, &outer, "/", &from("127.0.0.2")).await.status,
        403
    );
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_allows_the_burst_then_429_and_stays_small_under_many_clients() {
    let env = Env::new("rate").await;
    let (limited, keyed) = (env.host("limited"), env.host("keyed"));
    let mut l = Vec::new();
    l.extend(label(&format!("berth.host={limited}")));
    l.extend(label("berth.ratelimit=30/m"));
    l.extend(label("berth.ratelimit.burst=20"));
    env.run("limited", &args(&l)).await;
    let mut l = Vec::new();
    l.extend(label(&format!("berth.host={keyed}")));
    l.extend(label("berth.ratelimit=1/m"));
    l.extend(label("berth.ratelimit.key=header:X-Key"));
    env.run("keyed", &args(&l)).await;
    let http = free_port();
    let berth = Berth::start(&env.config(http, ""), http).await;
    // Readiness without spending the limited route's allowance.
    let client = HttpClient::new();
    eventually(Duration::from_secs(15), "the keyed route", || async {
        let req = http::Request::get(format!("http://127.0.0.1:{http}/"))
            .header("host", &keyed)
            .header("x-key", "warm-up")
            .body(Empty::<Bytes>::new())
            .unwrap();
        (client.send(req).await.ok()?.status == 200).then_some(())
    })
    .await;

    let started = Instant::now();
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..60 {
        let r = client.get(http, &limited, "/").await.unwrap();
        if r.status == 429 && retry_after.is_none() {
            retry_after = r.headers.get("retry-after").cloned();
        }
        statuses.push(r.status);
    }
    let secs = started.elapsed().as_secs_f64();
    let allowed = statuses.iter().filter(|s| **s == 200).count();
    let expected = 20.0 + secs * 30.0 / 60.0;
    println!("60 requests in {secs:.2}s: {allowed} allowed (expected {expected:.1}), Retry-After {retry_after:?}");
    assert!(
        (allowed as f64 - expected).abs() <= expected * 0.1,
        "{allowed} allowed, expected {expected:.1} ± 10 %"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert_eq!(retry_after.unwrap().to_str().unwrap(), "2", "60 s / 30");

    // 10,000 distinct clients (by API key): each is allowed once, and
    // berth's memory stays bounded.
    let before = rss_kib(berth.pid());
    let started = Instant::now();
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (client, keyed) = (HttpClient::new(), keyed.clone());
            tokio::spawn(async move {
                for i in (w..10_000).step_by(8) {
                    let req = http::Request::get(format!("http://127.0.0.1:{http}/"))
                        .header("host", &keyed)
                        .header("x-key", format!("client-{i}"))
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    let r = client.send(req).await.unwrap();
                    assert_eq!(r.status, 200, "client-{i}: a new key has its own allowance");
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let after = rss_kib(berth.pid());
    println!(
        "10,000 keys in {:.1}s: berth RSS {before} KiB → {after} KiB (+{} KiB)",
        started.elapsed().as_secs_f64(),
        after.saturating_sub(before)
    );
    assert!(
        after.saturating_sub(before) < 16 * 1024,
        "RSS grew by more than 16 MiB"
    );
    let req = http::Request::get(format!("http://127.0.0.1:{http}/"))
        .header("host", &keyed)
        .header("x-key", "client-7")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(
        client.send(req).await.unwrap().status,
        429,
        "keys are remembered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_prefix_headers_cors_compression_and_body_limit() {
    let env = Env::new("rewrite").await;
    let apex = env.host("shop");
    let www = format!("www.{apex}");
    let mut l = Vec::new();
    for kv in [
        format!("berth.host={apex},{www}"),
        "berth.redirect.www=to-apex".into(),
        "berth.redirect=/old:/new,/docs/*:/manual/*".into(),
        "berth.headers.request.set.X-Team=blue".into(),
        "berth.headers.request.remove=X-Drop".into(),
        "berth.headers.response.set.X-Frame-Options=DENY".into(),
        "berth.headers.response.remove=Last-Modified".into(),
        "berth.cors.origins=https://app.test".into(),
        "berth.compress=gzip,br".into(),
        "berth.body_limit=1KB".into(),
        format!("berth.api.host={apex}"),
        "berth.api.path=/api".into(),
        "berth.api.strip_prefix=true".into(),
    ] {
        l.extend(label(&kv));
    }
    env.run("shop", &args(&l)).await;
    let http = free_port();
    let _berth = Berth::start(&env.config(http, ""), http).await;
    routed(http, &apex, "/", 200).await;

    let r = curl(http, &www, "/x?y=1", &[]).await;
    assert_eq!(r.status, 308, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some(format!("http://{apex}/x?y=1").as_str())
    );
    let r = curl(http, &apex, "/old", &[]).await;
    assert_eq!((r.status, r.header("location")), (308, Some("/new")));
    let r = curl(http, &apex, "/docs/a/b?q=1", &[]).await;
    assert_eq!(r.header("location"), Some("/manual/a/b?q=1"));

    let r = curl(http, &apex, "/cgi-bin/who", &["-H", "X-Drop: 1"]).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("HTTP_X_TEAM=blue"), "{}", r.body);
    assert!(!r.body.contains("HTTP_X_DROP"), "{}", r.body);
    assert_eq!(r.header("x-frame-options"), Some("DENY"));

    let r = curl(http, &apex, "/api/cgi-bin/who?z=2", &[]).await;
    assert!(r.body.contains("uri=/cgi-bin/who?z=2"), "{}", r.body);
    assert!(
        r.body.contains("HTTP_X_FORWARDED_PREFIX=/api"),
        "{}",
        r.body
    );

    // Compression only when the client asks, only what is worth it.
    let plain = curl(http, &apex, "/big.html", &[]).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("last-modified"), None, "removed");
    let gz = curl(http, &apex, "/big.html", &["-H", "Accept-Encoding: gzip"]).await;
    assert_eq!(
        gz.header("content-encoding"),
        Some("gzip"),
        "{:?}",
        gz.headers
    );
    let vary = |r: &Reply| r.header("vary").unwrap_or("").to_ascii_lowercase();
    assert!(vary(&gz).contains("accept-encoding"), "{:?}", gz.headers);
    assert!(
        vary(&plain).contains("accept-encoding"),
        "{:?}",
        plain.headers
    );
    let br = curl(
        http,
        &apex,
        "/big.html",
        &["-H", "Accept-Encoding: br;q=1, gzip;q=0"],
    )
    .await;
    assert_eq!(br.header("content-encoding"), Some("br"));
    let decoded = curl(http, &apex, "/big.html", &["--compressed"]).await;
    assert_eq!(decoded.body, plain.body, "the same page once decoded");
    let zstd = curl(http, &apex, "/big.html", &["-H", "Accept-Encoding: zstd"]).await;
    assert_eq!(
        zstd.header("content-encoding"),
        None,
        "zstd is not offered here"
    );
    let small = curl(http, &apex, "/", &["-H", "Accept-Encoding: gzip"]).await;
    assert_eq!(
        small.header("content-encoding"),
        None,
        "too small to bother"
    );

    // CORS: a preflight from a listed origin is answered by berth.
    let pre = [
        "-X",
        "OPTIONS",
        "-H",
        "Origin: https://app.test",
        "-H",
        "Access-Control-Request-Method: POST",
        "-H",
        "Access-Control-Request-Headers: content-type",
    ];
    let r = curl(http, &apex, "/cgi-bin/who", &pre).await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.test")
    );
    assert!(r
        .header("access-control-allow-methods")
        .unwrap()
        .contains("POST"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("content-type")
    );
    let mut evil = pre.to_vec();
    evil[3] = "Origin: https://evil.test";
    assert_eq!(curl(http, &apex, "/cgi-bin/who", &evil).await.status, 403);
    let r = curl(http, &apex, "/", &["-H", "Origin: https://app.test"]).await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.test")
    );
    let r = curl(http, &apex, "/", &["-H", "Origin: https://evil.test"]).await;
    assert_eq!(r.header("access-control-allow-origin"), None);

    // Body limit: refused before the body goes upstream, with a length or
    // chunked.
    let dir = TempDir::new();
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'x'; 2048]).unwrap();
    let small = dir.path().join("small");
    std::fs::write(&small, vec![b'x'; 512]).unwrap();
    let data = |p: &std::path::Path| format!("@{}", p.display());
    let (big_arg, small_arg) = (data(&big), data(&small));
    let r = curl(http, &apex, "/cgi-bin/who", &["--data-binary", &big_arg]).await;
    assert_eq!(r.status, 413, "{r:?}");
    let r = curl(http, &apex, "/cgi-bin/who", &["--data-binary", &small_arg]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let chunked = [
        "--data-binary",
        big_arg.as_str(),
        "-H",
        "Transfer-Encoding: chunked",
    ];
    let r = curl(http, &apex, "/cgi-bin/who", &chunked).await;
    assert_eq!(r.status, 413, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_cookie_keeps_a_client_on_one_replica_until_it_leaves() {
    let env = Env::new("sticky").await;
    let host = env.host("web");
    let labels = [
        "--label".to_string(),
        format!("berth.host={host}"),
        "--label".into(),
        "berth.sticky=cookie".into(),
    ];
    let a = env.run("web-1", &args(&labels)).await;
    let b = env.run("web-2", &args(&labels)).await;
    let http = free_port();
    let _berth = Berth::start(&env.config(http, ""), http).await;
    let client = HttpClient::new();
    eventually(
        Duration::from_secs(15),
        "both replicas in rotation",
        || async {
            let mut seen = std::collections::HashSet::new();
            for _ in 0..4 {
                seen.insert(served_by(&client.get(http, &host, "/").await.ok()?.body));
            }
            (seen.len() == 2).then_some(())
        },
    )
    .await;

    let first = client.get(http, &host, "/").await.unwrap();
    let cookie = first
        .headers
        .get("set-cookie")
        .expect("a sticky cookie")
        .to_str()
        .unwrap()
        .to_string();
    println!("Set-Cookie: {cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("Path=/"),
        "{cookie}"
    );
    let mut jar = cookie.split(';').next().unwrap().to_string();
    let get = |jar: String| {
        let client = client.clone();
        let host = host.clone();
        async move {
            let req = http::Request::get(format!("http://127.0.0.1:{http}/"))
                .header("host", &host)
                .header("cookie", &jar)
                .body(Empty::<Bytes>::new())
                .unwrap();
            client.send(req).await
        }
    };
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..50 {
        let r = get(jar.clone()).await.unwrap();
        assert_eq!(r.status, 200);
        assert!(
            r.headers.get("set-cookie").is_none(),
            "the cookie still holds"
        );
        *counts.entry(served_by(&r.body)).or_default() += 1;
    }
    println!("50 requests with the cookie: {counts:?}");
    assert_eq!(counts.len(), 1, "{counts:?}");
    let pinned = counts.keys().next().unwrap().clone();
    let (stopped, other) = if a.starts_with(&pinned) {
        (a, b)
    } else {
        (b, a)
    };

    // Its replica leaves: the client moves on without a failed request.
    let stop = tokio::spawn(async move { docker(&["stop", "-t", "5", &stopped]).await });
    let mut moved_at = None;
    let mut failed = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        match get(jar.clone()).await {
            Ok(r) if r.status == 200 => {
                if let Some(c) = r.headers.get("set-cookie") {
                    jar = c.to_str().unwrap().split(';').next().unwrap().to_string();
                }
                if served_by(&r.body) == other[..12] && moved_at.is_none() {
                    moved_at = Some(started.elapsed());
                }
            }
            Ok(r) => failed.push(format!("{}: {}", r.status, r.body)),
            Err(e) => failed.push(e),
        }
        if moved_at.is_some() && stop.is_finished() {
            break;
        }
    }
    stop.await.unwrap();
    println!("moved to the other replica after {moved_at:?}");
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(moved_at.is_some(), "the client never moved");
    for _ in 0..10 {
        let r = get(jar.clone()).await.unwrap();
        assert_eq!(served_by(&r.body), other[..12]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_under_load_then_pause_and_resume_kept_across_a_restart() {
    let env = Env::new("maint").await;
    let host = env.host("web");
    let mut l = env.service_labels("web");
    l.extend(label(&format!("berth.host={host}")));
    env.run("web-1", &args(&l)).await;
    let http = free_port();
    let admin_port = free_port();
    let admin = format!("127.0.0.1:{admin_port}");
    let state = TempDir::new();
    let extra = format!("state_dir: {}\n", state.path().display());
    let config = env.config_admin(http, admin_port, &extra);
    let berth = Berth::start(&config, http).await;
    admin_ready(&admin).await;
    routed(http, &host, "/", 200).await;

    let load = crate::harness::Load::start(http, &host, 4);
    load.wait_count(50, "load before the maintenance").await;
    let message = "Back at five: upgrading the database";
    let (code, out, err) = cli(&admin, &["maintenance", "on", "web", "--message", message]).await;
    assert_eq!(code, 0, "{out}{err}");
    println!("{out}");
    assert!(out.contains("in maintenance"), "{out}");
    let r = curl(http, &host, "/", &[]).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.body.trim(), message);
    assert!(r.header("retry-after").is_some());
    let page = curl(http, &host, "/", &["-H", "Accept: text/html,*/*"]).await;
    assert_eq!(page.status, 503);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(
        page.body.contains(message) && page.body.contains("<h1>"),
        "{}",
        page.body
    );
    let seen = load.count();
    load.wait_count(seen + 50, "load during the maintenance")
        .await;
    let (code, out, _) = cli(&admin, &["routes"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("maintenance (503)"), "{out}");
    let (code, _, _) = cli(&admin, &["maintenance", "off", "web"]).await;
    assert_eq!(code, 0);
    assert_eq!(curl(http, &host, "/", &[]).await.status, 200);
    let seen = load.count();
    load.wait_count(seen + 50, "load after the maintenance")
        .await;
    let (log, _) = load.finish().await;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for r in &log {
        let kind = match r {
            Ok(_) => "200",
            Err(e) if e.starts_with("status 503") && e.contains(message) => "maintenance 503",
            Err(_) => "other",
        };
        *counts.entry(kind).or_default() += 1;
    }
    println!("under load: {counts:?}");
    assert_eq!(
        counts.get("other"),
        None,
        "{:?}",
        crate::harness::failures(&log)
    );
    assert!(counts.get("maintenance 503").copied().unwrap_or(0) >= 50);
    let last = log.iter().rposition(|r| r.is_err()).unwrap();
    assert!(log[last + 1..].len() >= 50 && log[last + 1..].iter().all(Result::is_ok));

    // Pause: requests wait, then go on when resumed.
    let (code, out, err) = cli(&admin, &["pause", "web", "--max", "20s"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let held: Vec<_> = (0..5)
        .map(|i| {
            let host = host.clone();
            tokio::spawn(async move {
                let r = HttpClient::new()
                    .get(http, &host, &format!("/?n={i}"))
                    .await;
                (Instant::now(), r)
            })
        })
        .collect();
    eventually(Duration::from_secs(10), "5 requests held", || async {
        let (_, body) =
            crate::harness::api(&admin, "GET", "/api/modes", Some(crate::harness::TOKEN)).await;
        body.contains("\"held\":5").then_some(())
    })
    .await;
    let (code, out, _) = cli(&admin, &["modes"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("paused") && out.contains("5 held"), "{out}");
    let resumed = Instant::now();
    let (code, out, err) = cli(&admin, &["resume", "web"]).await;
    assert_eq!(code, 0, "{out}{err}");
    for h in held {
        let (at, r) = h.await.unwrap();
        assert_eq!(r.unwrap().status, 200);
        assert!(at >= resumed, "answered before the resume");
    }
    let (code, _, err) = cli(&admin, &["resume", "web"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("not paused"), "{err}");

    // A request held past --max gets 503.
    let (code, _, _) = cli(&admin, &["pause", "web", "--max", "1s"]).await;
    assert_eq!(code, 0);
    let started = Instant::now();
    let r = curl(http, &host, "/", &[]).await;
    println!("held {:?}, then {}", started.elapsed(), r.status);
    assert_eq!(r.status, 503, "{r:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(r.body.contains("paused"), "{}", r.body);

    // The mode outlives berth.
    let (code, _, _) = cli(&admin, &["maintenance", "on", "web"]).await;
    assert_eq!(code, 0);
    drop(berth);
    let _berth = Berth::start(&config, http).await;
    eventually(
        Duration::from_secs(10),
        "the maintenance after a restart",
        || async {
            let r = curl(http, &host, "/", &[]).await;
            (r.status == 503 && r.body.contains("maintenance")).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_pages_for_browsers_and_text_for_others() {
    let env = Env::new("pages").await;
    let (app, plain) = (env.host("app"), env.host("plain"));
    let mut l = Vec::new();
    l.extend(label(&format!("berth.host={app}")));
    l.extend(label("berth.errors.page=/www/error.html"));
    let id = env.run("app", &args(&l)).await;
    env.run("plain", &["--label", &format!("berth.host={plain}")])
        .await;
    let dir = TempDir::new();
    let page = dir.path().join("error.html");
    std::fs::write(&page, "<h1>{{status}} at the edge</h1><p>{{message}}</p>\n").unwrap();
    let http = free_port();
    let extra = format!("proxy:\n  error_page: {}\n", page.display());
    let berth = Berth::start(&env.config(http, &extra), http).await;
    routed(http, &app, "/", 200).await;
    berth
        .wait_log("error page loaded", Duration::from_secs(10))
        .await;
    let html = ["-H", "Accept: text/html,application/xhtml+xml,*/*;q=0.8"];

    // berth's own 404: the page from the config for a browser, text for curl.
    let r = curl(http, &env.host("nowhere"), "/", &html).await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("<h1>404 at the edge</h1>"), "{}", r.body);
    assert!(r.body.contains("no route for"), "{}", r.body);
    let r = curl(http, &env.host("nowhere"), "/", &[]).await;
    assert!(r.body.starts_with("berth: no route for"), "{}", r.body);

    // The app's own 404: its route's page for a browser, its body otherwise.
    let r = curl(http, &app, "/missing", &html).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(r.body.contains("<h1>404 from the app</h1>"), "{}", r.body);
    let r = curl(http, &app, "/missing", &[]).await;
    assert_eq!(r.status, 404);
    assert!(!r.body.contains("from the app"), "{}", r.body);
    // A route without a page keeps the app's answer for everyone.
    let r = curl(http, &plain, "/missing", &html).await;
    assert!(!r.body.contains("at the edge"), "{}", r.body);

    // Nothing ready: 503 with the route's page, kept from when it ran.
    docker(&["stop", "-t", "2", &id]).await;
    eventually(Duration::from_secs(10), "the 503 page", || async {
        let r = curl(http, &app, "/", &html).await;
        (r.status == 503 && r.body.contains("<h1>503 from the app</h1>")).then_some(())
    })
    .await;
    let r = curl(http, &app, "/", &[]).await;
    assert!(r.body.starts_with("berth: no ready backend"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_route_read_timeout() {
    let env = Env::new("timeout").await;
    let (quick, patient) = (env.host("quick"), env.host("patient"));
    let mut l = Vec::new();
    l.extend(label(&format!("berth.host={quick}")));
    l.extend(label("berth.timeout.read=1s"));
    l.extend(label(&format!("berth.slow.host={patient}")));
    env.run("app", &args(&l)).await;
    let http = free_port();
    let _berth = Berth::start(&env.config(http, ""), http).await;
    routed(http, &quick, "/", 200).await;
    // The backend answers after 2 s: too late for the route that waits 1 s.
    let started = Instant::now();
    let r = curl(http, &quick, "/cgi-bin/who?wait=2", &[]).await;
    let waited = started.elapsed();
    println!("timeout.read=1s: {} after {waited:?}", r.status);
    assert_eq!(r.status, 504, "{r:?}");
    assert!(waited < Duration::from_millis(1900), "{waited:?}");
    let r = curl(http, &patient, "/cgi-bin/who?wait=2", &[]).await;
    assert_eq!(
        r.status, 200,
        "the other route keeps proxy.read_timeout: {r:?}"
    );
}
