//! The dashboard in a real browser (headless Chromium, `browser.rs`)
//! against a real berth and real containers: login and its cookie, CSRF,
//! the overview following Docker live, a rollout and a scale started from
//! the page, logs that follow replicas across a rollout, the charts, every
//! page at a desktop's and a phone's size, and 200 containers.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::browser::Browser;
use super::harness::*;

const LIMIT: Duration = Duration::from_secs(15);
/// A page with its data while other tests load the machine (the suite runs
/// two at a time on two cores; one starts 200 containers).
const PAGE: Duration = Duration::from_secs(30);

/// Where screenshots go: `target/dashboard/` (kept after the run, to look at).
fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/dashboard");
    std::fs::create_dir_all(&dir).expect("make target/dashboard");
    dir
}

/// The test's config with the admin API on `admin` and the dashboard
/// sampling every second.
fn config(env: &Env, http: u16, admin: u16, extra: &str) -> String {
    env.config_admin(http, admin, extra).replace(
        &format!("  token: {TOKEN}\n"),
        &format!("  token: {TOKEN}\n  stats_interval: 1s\n  stats_history: 10m\n"),
    )
}

/// Logs in through the form and waits for the overview. Returns how many
/// console entries there were by then: the login form itself comes with a
/// 401, which the browser logs as an error.
async fn login(b: &Browser, admin: &str) -> usize {
    b.goto(&format!("http://{admin}/")).await;
    b.wait_for("#token", LIMIT).await;
    b.type_into("#token", TOKEN).await;
    b.click("#login").await;
    b.wait_for("body[data-page=overview]", LIMIT).await;
    b.console().await.len()
}

/// The console errors logged after the first `from` entries.
async fn errors_since(b: &Browser, from: usize) -> Vec<super::browser::LogEntry> {
    b.console()
        .await
        .into_iter()
        .skip(from)
        .filter(|e| e.level == "SEVERE")
        .collect()
}

/// `curl` with `args`: (status, headers, body).
async fn curl(args: &[&str]) -> (u16, String, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-i", "--max-time", "10"])
        .args(args)
        .output()
        .await
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_lowercase(), body.to_string())
}

/// The CSRF token the page was given.
async fn csrf(b: &Browser) -> String {
    b.attr("meta[name=berth-csrf]", "content")
        .await
        .expect("the page's CSRF token")
}

/// An attribute read in one step (a live chart is redrawn between a find
/// and a read): `None` when the element or the attribute is missing.
async fn attr_now(b: &Browser, css: &str, name: &str) -> Option<String> {
    b.execute(
        "const e = document.querySelector(arguments[0]); return e && e.getAttribute(arguments[1])",
        &[serde_json::json!(css), serde_json::json!(name)],
    )
    .await
    .as_str()
    .map(String::from)
}

/// A row's field as the page shows it.
fn field(container: &str, name: &str) -> String {
    format!("tr[data-container=\"{container}\"] [data-field={name}]")
}

#[tokio::test]
async fn login_session_cookie_and_csrf() {
    let env = Env::new("dash-login").await;
    let web = env
        .run(
            "web",
            &["--label", &format!("berth.host={}", env.host("web"))],
        )
        .await;
    let (http, admin_port) = (free_port(), free_port());
    let mut berth = Berth::start(&config(&env, http, admin_port, ""), http).await;
    let admin = format!("127.0.0.1:{admin_port}");
    let url = |p: &str| format!("http://{admin}{p}");

    // Without a session: every page answers 401 with the login form, the
    // scripts and the event stream 401; only the stylesheet is public.
    for page in ["/", "/routes", "/dns", "/service/a/b", "/logs/a/b"] {
        let (status, head, body) = curl(&[&url(page)]).await;
        assert_eq!(status, 401, "{page}: {head}");
        assert!(head.contains("content-type: text/html"), "{page}: {head}");
        assert!(
            head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
            "{page}: {head}"
        );
        assert!(
            body.contains("name=\"token\""),
            "{page}: the login form: {body}"
        );
    }
    for path in ["/api/events", "/ui/app.js", "/api/deployments"] {
        let (status, _, body) = curl(&[&url(path)]).await;
        assert_eq!(status, 401, "{path}: {body}");
    }
    assert_eq!(curl(&[&url("/ui/style.css")]).await.0, 200);

    // A wrong token is refused; a login posted from another site too.
    let (status, _, body) = curl(&["-d", "token=wrong-token-0123456", &url("/login")]).await;
    assert_eq!(status, 401);
    assert!(body.contains("Wrong token"), "{body}");
    let form = format!("token={TOKEN}");
    let (status, head, _) = curl(&[
        "-H",
        "Origin: http://evil.example",
        "-d",
        &form,
        &url("/login"),
    ])
    .await;
    assert_eq!(status, 403, "{head}");
    assert!(!head.contains("set-cookie"), "{head}");
    // Behind a TLS proxy (X-Forwarded-Proto: https) the cookie is Secure.
    let (status, head, _) = curl(&[
        "-H",
        "X-Forwarded-Proto: https",
        "-d",
        &form,
        &url("/login"),
    ])
    .await;
    assert_eq!(status, 303, "{head}");
    assert!(head.contains("; secure"), "{head}");

    // In the browser: the form refuses a wrong token, then logs in.
    let b = Browser::start().await;
    b.goto(&url("/routes")).await;
    b.type_into("#token", "not-the-token-at-all").await;
    b.click("#login").await;
    b.wait_text("#login-error", |t| t.contains("Wrong token"), LIMIT)
        .await;
    b.type_into("#token", TOKEN).await;
    b.click("#login").await;
    // Back where the visitor wanted to go.
    b.wait_for("body[data-page=routes]", LIMIT).await;
    let cookies = b.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c.name == "berth_session")
        .unwrap_or_else(|| panic!("no session cookie: {cookies:?}"));
    assert!(session.http_only, "{session:?}");
    assert!(!session.secure, "plain HTTP on loopback: {session:?}");
    assert_eq!(session.same_site.as_deref(), Some("Strict"), "{session:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiry = session.expiry.expect("an expiring cookie");
    assert!(
        (now + 12 * 3600 - 60..=now + 12 * 3600 + 60).contains(&expiry),
        "12h from now: {expiry} vs {now}"
    );

    // The session reads; a change needs the page's CSRF token, from the
    // page's own origin.
    let cookie = format!("Cookie: berth_session={}", session.value);
    let token = csrf(&b).await;
    let with = format!("X-Berth-CSRF: {token}");
    assert_eq!(
        curl(&["-H", &cookie, &url("/api/deployments")]).await.0,
        200
    );
    let drain = url(&format!("/api/containers/{web}/drain"));
    let (status, _, body) = curl(&["-X", "POST", "-H", &cookie, &drain]).await;
    assert_eq!(status, 403, "no CSRF token: {body}");
    assert!(body.contains("CSRF"), "{body}");
    let (status, _, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &cookie,
        "-H",
        "X-Berth-CSRF: 00",
        &drain,
    ])
    .await;
    assert_eq!(status, 403, "a wrong CSRF token: {body}");
    let (status, _, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &cookie,
        "-H",
        &with,
        "-H",
        "Origin: http://evil.example",
        &drain,
    ])
    .await;
    assert_eq!(status, 403, "from another origin: {body}");
    let (status, _, body) = curl(&["-X", "POST", "-H", &cookie, "-H", &with, &drain]).await;
    assert_eq!(status, 200, "{body}");
    let (_, backends) = api(&admin, "GET", "/api/backends", Some(TOKEN)).await;
    assert!(backends.contains("\"state\":\"draining\""), "{backends}");

    // The session outlives berth itself: after an upgrade (a new process,
    // the same state dir) the browser is still logged in.
    let (code, out) = berth.upgrade().await;
    assert_eq!(code, 0, "{out}");
    // Only the new berth answers from here on (the admin port is shared
    // while both run).
    let old_gone = berth.exited_first(Duration::from_secs(30)).await;
    assert!(
        old_gone,
        "the berth before the upgrade still runs after 30 s"
    );
    assert_eq!(
        curl(&["-H", &cookie, &url("/api/deployments")]).await.0,
        200
    );
    b.goto(&url("/dns")).await;
    b.wait_for("body[data-page=dns]", LIMIT).await;

    // An event stream opened with the session, read by curl.
    let mut stream = tokio::process::Command::new("curl")
        .args(["-s", "-N", "-H", &cookie, &url("/api/events")])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("curl the event stream");
    let mut out = stream.stdout.take().expect("its output");
    let mut first = [0u8; 64];
    let n = tokio::io::AsyncReadExt::read(&mut out, &mut first)
        .await
        .expect("the stream's first bytes");
    assert!(
        String::from_utf8_lossy(&first[..n]).starts_with("retry: 1000"),
        "{:?}",
        String::from_utf8_lossy(&first[..n])
    );
    let drain_output = tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut out, &mut sink).await;
    });

    // Logout ends the session: the old cookie no longer opens a page, and
    // the stream it opened ends.
    b.goto(&url("/")).await;
    b.wait_for("body[data-page=overview]", LIMIT).await;
    b.click("#logout").await;
    b.wait_for("#token", LIMIT).await;
    assert_eq!(curl(&["-H", &cookie, &url("/")]).await.0, 401);
    assert_eq!(curl(&["-H", &cookie, &url("/api/events")]).await.0, 401);
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.wait()).await;
    assert!(
        ended.is_ok(),
        "the session's event stream still open 5 s after logout"
    );
    drain_output.await.expect("the stream's reader");
}

#[tokio::test]
async fn overview_follows_docker_within_two_seconds() {
    let env = Env::new("dash-live").await;
    let host = env.host("web");
    let mut web = env.service_labels("web");
    web.extend(["--label".into(), format!("berth.host={host}")]);
    for l in HTTP_CHECK {
        web.extend(["--label".into(), l.to_string()]);
    }
    let web: Vec<&str> = web.iter().map(String::as_str).collect();
    env.run("web-1", &web).await;
    env.run("web-2", &web).await;
    let worker = env.service_labels("worker");
    let worker: Vec<&str> = worker.iter().map(String::as_str).collect();
    env.run("worker-1", &worker).await;
    let (http, admin_port) = (free_port(), free_port());
    let _berth = Berth::start(&config(&env, http, admin_port, ""), http).await;
    let admin = format!("127.0.0.1:{admin_port}");

    let b = Browser::start().await;
    login(&b, &admin).await;
    let project = &env.id;
    b.wait_for(&format!("section[data-deployment=\"{project}\"]"), LIMIT)
        .await;
    b.wait_text(
        &format!("[data-service=\"{project}/web\"] [data-field=ready]"),
        |t| t.contains("2/2"),
        LIMIT,
    )
    .await;
    let web1 = env.container_name("web-1");
    for name in [&web1, &env.container_name("web-2")] {
        b.wait_text(&field(name, "state"), |t| t == "ready", LIMIT)
            .await;
        assert_eq!(b.text(&field(name, "status")).await, "running");
    }
    b.wait_for(
        &format!("tr[data-container=\"{}\"]", env.container_name("worker-1")),
        LIMIT,
    )
    .await;
    // The page is not reloaded: what a script leaves on it stays.
    b.execute("window.berthTestMark = 42", &[]).await;

    let started = Instant::now();
    let stop = tokio::spawn({
        let web1 = web1.clone();
        async move { docker(&["stop", "-t", "10", &web1]).await }
    });
    let shown = b
        .wait_text(
            &field(&web1, "state"),
            |t| t == "draining" || t == "stopped",
            Duration::from_secs(2),
        )
        .await;
    let took = started.elapsed();
    println!("docker stop → the overview shows {shown:?} in {took:?}");
    stop.await.expect("docker stop");
    b.wait_text(&field(&web1, "status"), |t| t == "exited", LIMIT)
        .await;
    b.wait_text(
        &format!("[data-service=\"{project}/web\"] [data-field=ready]"),
        |t| t.contains("1/2"),
        LIMIT,
    )
    .await;
    assert_eq!(
        b.execute("return window.berthTestMark", &[]).await,
        serde_json::json!(42),
        "the page was reloaded"
    );
    // The change is in the recent events too.
    b.wait_text("#events", |t| t.contains(&web1), LIMIT).await;

    // Stop, then start, a whole service from its page: runs of berth's own,
    // in the history.
    let worker1 = env.container_name("worker-1");
    b.goto(&format!("http://{admin}/service/{project}/worker"))
        .await;
    b.wait_for("body[data-page=service]", LIMIT).await;
    for (button, status) in [("#svc-stop", "exited"), ("#svc-start", "running")] {
        b.click(button).await;
        b.wait_for("dialog#confirm[open]", LIMIT).await;
        b.click("#confirm-yes").await;
        b.wait_for("#run-progress[data-final=completed]", LIMIT)
            .await;
        b.wait_text(&field(&worker1, "status"), |t| t == status, LIMIT)
            .await;
    }
    let (_, runs) = api(&admin, "GET", "/api/rollouts", Some(TOKEN)).await;
    let runs: serde_json::Value = serde_json::from_str(&runs).unwrap();
    let kinds: Vec<(&str, &str)> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["kind"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, [("stop", "completed"), ("start", "completed")]);
    b.wait_text(
        "#svc-history",
        |t| t.contains("stop") && t.contains("start"),
        LIMIT,
    )
    .await;
}

#[tokio::test]
async fn rollout_and_scale_from_the_page_and_logs_that_follow() {
    let r = replicas("dash-roll", 2, &HTTP_CHECK, "").await;
    let project = r.env.id.clone();
    let b = Browser::start().await;
    let after_login = login(&b, &r.admin).await;

    // Lines written by the two replicas in turn come in the order they
    // were written, not one container's block after the other's.
    let web1 = r.env.container_name("web-1");
    let web2 = r.env.container_name("web-2");
    // web-1 has more to say first: sent as they come, its earlier lines
    // would hold back web-2's.
    docker(&[
        "exec",
        &web1,
        "sh",
        "-c",
        "for i in $(seq 60); do echo filler-$i; done > /proc/1/fd/1",
    ])
    .await;
    for (i, c) in [&web1, &web2, &web1, &web2].into_iter().enumerate() {
        let echo = format!("echo turn-{i} > /proc/1/fd/1");
        docker(&["exec", c, "sh", "-c", &echo]).await;
    }
    // Logs, followed: a line written after the page opened appears.
    b.goto(&format!("http://{}/logs/{project}/web", r.admin))
        .await;
    let text = b
        .wait_text("#log-lines", |t| t.contains("turn-3"), LIMIT)
        .await;
    let at: Vec<usize> = (0..4)
        .map(|i| text.find(&format!("turn-{i}")).expect("each turn"))
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "in time order: {text}");
    b.wait_text("#log-status", |t| t.contains("following"), LIMIT)
        .await;
    docker(&[
        "exec",
        &web1,
        "sh",
        "-c",
        "echo dashboard-line-one > /proc/1/fd/1",
    ])
    .await;
    b.wait_text("#log-lines", |t| t.contains("dashboard-line-one"), LIMIT)
        .await;
    // A restart ends the engine's follow of that container: its new run is
    // followed again, without the lines of the run before.
    docker(&["restart", "-t", "5", &web1]).await;
    docker(&[
        "exec",
        &web1,
        "sh",
        "-c",
        "echo dashboard-after-restart > /proc/1/fd/1",
    ])
    .await;
    b.wait_text(
        "#log-lines",
        |t| t.contains("dashboard-after-restart"),
        LIMIT,
    )
    .await;
    let text = b.text("#log-lines").await;
    assert_eq!(
        text.matches("dashboard-line-one").count(),
        1,
        "the earlier run's lines once: {text}"
    );

    // A rollout (through the API) replaces both replicas; the page keeps
    // following: a line from a new replica appears.
    let (code, out, err) = cli(&r.admin, &["rollout", "web", "--image", IMAGE_V2]).await;
    assert_eq!(code, 0, "{out}{err}");
    let new: Vec<String> = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
        "--filter",
        &format!("ancestor={IMAGE_V2}"),
    ])
    .await
    .split_whitespace()
    .map(String::from)
    .collect();
    assert_eq!(new.len(), 2, "{new:?}");
    docker(&[
        "exec",
        &new[0],
        "sh",
        "-c",
        "echo dashboard-line-two > /proc/1/fd/1",
    ])
    .await;
    b.wait_text("#log-lines", |t| t.contains("dashboard-line-two"), LIMIT)
        .await;
    assert!(b.text("#log-status").await.contains("following"));

    // A rollout started from the service page: each step shows as it
    // happens, it ends completed, and the rows show the image.
    b.goto(&format!("http://{}/service/{project}/web", r.admin))
        .await;
    b.wait_for("#rollout-image", LIMIT).await;
    b.type_into("#rollout-image", IMAGE).await;
    b.click("#rollout-go").await;
    b.wait_for("dialog#confirm[open]", LIMIT).await;
    b.click("#confirm-yes").await;
    // A step before the end is on the page while the run goes on.
    let live = b
        .wait_text(
            "#run-progress",
            |t| t.contains("starting") || t.contains("waiting"),
            LIMIT,
        )
        .await;
    assert!(
        b.attr("#run-progress", "data-final").await.is_none() || live.contains("completed"),
        "the steps come as they happen"
    );
    b.wait_for(
        "#run-progress[data-final=completed]",
        Duration::from_secs(60),
    )
    .await;
    let steps = b.find_all("#run-progress li").await.len();
    assert!(
        steps >= 4,
        "{steps} steps: {}",
        b.text("#run-progress").await
    );
    b.wait_text(
        "[data-service] [data-field=image], tr[data-container] [data-field=image]",
        |t| t.contains(IMAGE),
        LIMIT,
    )
    .await;
    let images = b
        .execute(
            "return [...document.querySelectorAll('tr[data-container] [data-field=image]')].map(e => e.textContent)",
            &[],
        )
        .await;
    let images: Vec<&str> = images
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        !images.is_empty() && images.iter().all(|i| *i == IMAGE),
        "{images:?}"
    );

    // Scale from the page: 3 replicas, confirmed, completed.
    b.type_into("#scale-replicas", "3").await;
    b.click("#scale-go").await;
    b.wait_for("dialog#confirm[open]", LIMIT).await;
    b.click("#confirm-yes").await;
    b.wait_for(
        "#run-progress[data-final=completed]",
        Duration::from_secs(60),
    )
    .await;
    eventually(LIMIT, "3 ready rows on the service page", || async {
        let ready = b
            .execute(
                "return [...document.querySelectorAll('tr[data-container] [data-field=state]')].filter(e => e.textContent === 'ready').length",
                &[],
            )
            .await;
        (ready == serde_json::json!(3)).then_some(())
    })
    .await;
    let errors = errors_since(&b, after_login).await;
    assert!(errors.is_empty(), "{errors:?}");
}

/// The test's config with DNS on its own port (the DNS page has names).
fn config_with_dns(env: &Env, http: u16, admin: u16) -> String {
    config(env, http, admin, "").replace(
        DNS_OFF,
        &format!("dns:\n  listen: 127.0.0.1:{}\n", free_port()),
    )
}

#[tokio::test]
async fn charts_and_every_page_at_desktop_and_phone_size() {
    let env = Env::new("dash-pages").await;
    let host = env.host("web");
    let mut web = env.service_labels("web");
    web.extend(["--label".into(), format!("berth.host={host}")]);
    let web: Vec<&str> = web.iter().map(String::as_str).collect();
    env.run("web-1", &web).await;
    env.run("web-2", &web).await;
    let (http, admin_port) = (free_port(), free_port());
    let _berth = Berth::start(&config_with_dns(&env, http, admin_port), http).await;
    let admin = format!("127.0.0.1:{admin_port}");
    let origin = format!("http://{admin}/");
    let project = env.id.clone();
    let web1 = env.container_name("web-1");

    // Traffic through the proxy while the page samples: a route chart
    // with requests, 2xx and 4xx.
    let client = HttpClient::new();
    let traffic = tokio::spawn({
        let host = host.clone();
        async move {
            for i in 0..400 {
                let path = if i % 10 == 0 { "/missing" } else { "/" };
                let _ = client.get(http, &host, path).await;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    });

    let b = Browser::start().await;
    let after_login = login(&b, &admin).await;

    // The service page's charts: a CPU series that grows one sample per
    // interval, and memory that is not zero.
    b.goto(&format!("{origin}service/{project}/web")).await;
    b.wait_for("body[data-page=service]", PAGE).await;
    let cpu = format!("svg.chart[data-container=\"{web1}\"][data-series=cpu]");
    let n = 5;
    let started = Instant::now();
    eventually(
        Duration::from_secs(30),
        "5 CPU samples on the chart",
        || async {
            let got: usize = attr_now(&b, &cpu, "data-samples")
                .await
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            (got >= n).then_some(())
        },
    )
    .await;
    println!(
        "{n} CPU samples charted after {:?} (1 s interval)",
        started.elapsed()
    );
    let memory = format!("svg.chart[data-container=\"{web1}\"][data-series=memory]");
    let last: f64 = attr_now(&b, &memory, "data-last")
        .await
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(last > 0.0, "memory on the chart: {last}");
    for series in ["net_rx", "net_tx"] {
        b.wait_for(
            &format!("svg.chart[data-container=\"{web1}\"][data-series={series}]"),
            PAGE,
        )
        .await;
    }
    traffic.await.expect("the traffic");
    b.goto(&format!("{origin}routes")).await;
    b.wait_for(&format!("tr[data-route=\"{host}/\"]"), PAGE)
        .await;
    b.wait_for(&format!("svg.chart[data-route=\"{host}/\"]"), PAGE)
        .await;

    // Every page at a desktop's and a phone's size: nothing wider than the
    // screen, a screenshot of each to look at.
    let pages = [
        ("overview", String::new()),
        ("service", format!("service/{project}/web")),
        ("logs", format!("logs/{project}/web")),
        ("routes", "routes".to_string()),
        ("dns", "dns".to_string()),
    ];
    let dir = shots();
    for (w, h) in [(1280, 800), (390, 844)] {
        b.set_viewport(w, h).await;
        for (page, path) in &pages {
            b.goto(&format!("{origin}{path}")).await;
            b.wait_for(&format!("body[data-page={page}]"), PAGE).await;
            match *page {
                "overview" => {
                    b.wait_for(&format!("section[data-deployment=\"{project}\"]"), PAGE)
                        .await;
                }
                "service" => {
                    b.wait_for(&cpu, PAGE).await;
                }
                "dns" => {
                    b.wait_for("#dns-names tr[data-name]", PAGE).await;
                }
                _ => {}
            }
            let overflow = b
                .execute(
                    "return document.documentElement.scrollWidth - innerWidth",
                    &[],
                )
                .await;
            assert!(
                overflow.as_i64().unwrap_or(1) <= 0,
                "{page} at {w}x{h} is wider than the screen by {overflow}px"
            );
            let file = dir.join(format!("{page}-{w}x{h}.png"));
            b.screenshot(&file).await;
            println!("screenshot: {}", file.display());
        }
    }

    // No console error after login; every request stayed on berth.
    let errors = errors_since(&b, after_login).await;
    assert!(errors.is_empty(), "{errors:#?}");
    let urls = b.resource_urls().await;
    assert!(!urls.is_empty());
    let away: Vec<&String> = urls.iter().filter(|u| !u.starts_with(&origin)).collect();
    assert!(away.is_empty(), "requests off berth's origin: {away:?}");
}

#[tokio::test]
async fn two_hundred_containers_render_within_a_second() {
    const SERVICES: usize = 20;
    const REPLICAS: usize = 10;
    let env = Env::new("dash-200").await;
    // Started ten at a time: the engine takes about as long for each.
    let mut names = Vec::new();
    for s in 0..SERVICES {
        for r in 1..=REPLICAS {
            names.push((format!("svc{s:02}"), format!("svc{s:02}-{r}")));
        }
    }
    // Without a network: 200 endpoints removed at once from one bridge
    // network leave the engine (20.10) counting endpoints that are gone, and
    // the network can no longer be removed.
    let label = format!("berth-test.run={}", env.id);
    for batch in names.chunks(10) {
        let runs = batch.iter().map(|(service, name)| {
            let mut args: Vec<String> = ["run", "-d", "--network", "none", "--label", &label]
                .map(String::from)
                .to_vec();
            args.extend(["--name".into(), env.container_name(name)]);
            args.extend(env.service_labels(service));
            args.push(IMAGE.into());
            async move {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                docker(&args).await
            }
        });
        futures_util::future::join_all(runs).await;
    }
    let (http, admin_port) = (free_port(), free_port());
    let _berth = Berth::start(&env.config_admin(http, admin_port, ""), http).await;
    let admin = format!("127.0.0.1:{admin_port}");
    eventually(
        Duration::from_secs(60),
        "berth sees the 200 containers",
        || async {
            let (_, body) = api(&admin, "GET", "/api/containers", Some(TOKEN)).await;
            (body.matches("\"container_id\"").count() == SERVICES * REPLICAS).then_some(())
        },
    )
    .await;

    let b = Browser::start().await;
    login(&b, &admin).await;
    // A fresh load of the overview, measured in the browser: from the
    // navigation's start to the first render with the data.
    b.goto(&format!("http://{admin}/")).await;
    let rendered = eventually(LIMIT, "the overview rendered", || async {
        b.execute("return window.berthRenderedAt", &[])
            .await
            .as_f64()
    })
    .await;
    let rows = b.find_all("tr[data-container]").await.len();
    assert_eq!(rows, SERVICES * REPLICAS);
    println!(
        "overview of {rows} containers rendered {rendered:.0} ms after the navigation started"
    );
    assert!(rendered < 1000.0, "{rendered} ms");
}
