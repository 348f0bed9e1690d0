//! The admin API, the operator CLI and the metrics against the real engine:
//! auth on every endpoint, `berth ps/logs/stats/restart`, `/metrics`, the
//! access log, and schemathesis against the OpenAPI document.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{
    admin_ready, api, berth_cli, cli, docker, eventually, failures, free_port, replicas, Berth,
    Env, HttpClient, Load, LogFollower, TempDir, TOKEN,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_but_health_needs_the_token() {
    let env = Env::new("auth").await;
    let (http, admin) = (free_port(), free_port());
    let _berth = Berth::start(&env.config_admin(http, admin, ""), http).await;
    let admin = format!("127.0.0.1:{admin}");
    admin_ready(&admin).await;
    let doc: serde_json::Value = serde_json::from_str(berth::api::OPENAPI).unwrap();
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{name}", &env.id)
            .replace("{id}", "nothing-here")
            .replace("{service}", "nothing-here")
            .replace("{key}", "NOTHING");
        // Path-level `parameters` is not a method.
        let methods = ops
            .as_object()
            .unwrap()
            .iter()
            .filter(|(m, _)| *m != "parameters");
        for (method, op) in methods {
            let method = method.to_uppercase();
            let public = op["security"].as_array().is_some_and(|s| s.is_empty());
            let (none, body) = api(&admin, &method, &concrete, None).await;
            let (wrong, _) = api(&admin, &method, &concrete, Some("wrong-token-0123456789")).await;
            if path.ends_with("/hooks/git") {
                // Public, and authenticated by its signature instead.
                assert_eq!((none, wrong), (401, 401), "{method} {path}: {body}");
                assert!(
                    body.contains("signature") && !body.contains("token"),
                    "{body}"
                );
            } else if public {
                assert_eq!(none, 200, "{method} {path} is public: {body}");
            } else {
                assert_eq!((none, wrong), (401, 401), "{method} {path}: {body}");
                let err: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert!(err["error"].as_str().unwrap().contains("token"), "{body}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked} operations");
    // With the token: the read-only endpoints answer 200.
    for path in [
        "/api/deployments",
        "/api/containers",
        "/api/routes",
        "/api/problems",
        "/api/backends",
        "/api/rollouts",
        "/api/certificates",
        "/api/openapi.json",
        "/metrics",
    ] {
        let (code, body) = api(&admin, "GET", path, Some(TOKEN)).await;
        assert_eq!(code, 200, "{path}: {body}");
    }
    // Errors are JSON and name what was wrong.
    let (code, body) = api(
        &admin,
        "POST",
        "/api/containers/nothing-here/stop",
        Some(TOKEN),
    )
    .await;
    assert_eq!(code, 404);
    assert!(
        body.contains("\"error\"") && body.contains("nothing-here"),
        "{body}"
    );
    let (code, body) = api(&admin, "PUT", "/api/routes", Some(TOKEN)).await;
    assert_eq!(code, 405);
    assert!(body.contains("PUT is not allowed on /api/routes"), "{body}");
    // A wrong token of another length is refused the same way.
    let (code, _) = api(&admin, "GET", "/api/backends", Some("nope")).await;
    assert_eq!(code, 401);
    // The CLI: a refused token exits 2 and says why.
    let (code, _, err) = berth_cli(&["rollout", "web", "--admin", &admin, "--token", "nope"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("401"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ps_logs_and_stats_follow_the_engine() {
    let env = Env::new("ps").await;
    let (http, admin) = (free_port(), free_port());
    let _berth = Berth::start(&env.config_admin(http, admin, ""), http).await;
    let admin = format!("127.0.0.1:{admin}");
    let mut web = env.service_labels("web");
    web.extend(["--label".into(), format!("berth.host={}", env.host("web"))]);
    let web: Vec<&str> = web.iter().map(String::as_str).collect();
    let web_id = env.run("web-1", &web).await;
    let mut db = env.service_labels("db");
    db.extend(
        [
            "--health-cmd",
            "test -f /www/health",
            "--health-interval",
            "1s",
        ]
        .map(String::from),
    );
    let db: Vec<&str> = db.iter().map(String::as_str).collect();
    let db_id = env.run("db-1", &db).await;
    let (web_name, db_name) = (env.container_name("web-1"), env.container_name("db-1"));

    let row = |out: &str, name: &str| -> String {
        out.lines()
            .find(|l| l.split_whitespace().nth(2) == Some(name))
            .unwrap_or_default()
            .to_string()
    };
    let out = eventually(
        Duration::from_secs(15),
        "both services healthy in ps",
        || async {
            let (code, out, _) = cli(&admin, &["ps"]).await;
            let ok = code == 0
                && row(&out, &web_name).contains("running")
                && row(&out, &web_name).contains(" ready")
                && row(&out, &db_name).contains("healthy")
                && row(&out, &db_name).contains("ready (dns)");
            ok.then_some(out)
        },
    )
    .await;
    assert!(out.starts_with("DEPLOYMENT"), "{out}");
    assert!(row(&out, &db_name).starts_with(&env.id), "{out}");
    assert!(row(&out, &db_name).contains(" db "), "{out}");

    // docker stop shows at once: berth learns it from the engine's events.
    let stopping = tokio::spawn(async move { docker(&["stop", "-t", "1", &db_id]).await });
    let started = Instant::now();
    eventually(Duration::from_secs(10), "the stop in ps", || async {
        let (_, out, _) = cli(&admin, &["ps"]).await;
        let r = row(&out, &db_name);
        (r.contains("draining") || r.contains("exited")).then_some(())
    })
    .await;
    let seen = started.elapsed();
    println!(
        "docker stop visible in berth ps after {:.0} ms",
        seen.as_secs_f64() * 1000.0
    );
    // Nominally a few hundred ms (each poll is a CLI run). The bound is 5x the
    // second this test once asserted, so a busy two-core machine passes, yet
    // far under the 30 s resync of the test config: missing the stop event
    // (seeing it only at the next resync) still fails.
    assert!(seen < Duration::from_secs(5), "{seen:?}");
    stopping.await.unwrap();
    let (_, json, _) = cli(&admin, &["ps", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let db_json = &v[0]["services"][0]["containers"][0];
    assert_eq!(db_json["status"], "exited", "{json}");
    assert_eq!(db_json["state"], "stopped", "{json}");

    // logs -f shows what the container writes after the command started.
    let follow = LogFollower::start(&admin, "web");
    let write = |line: String| {
        let web_id = web_id.clone();
        async move {
            let cmd = format!("echo {line} > /proc/1/fd/1");
            docker(&["exec", &web_id, "sh", "-c", &cmd]).await;
        }
    };
    // Numbered probes until one comes through: then the follower is attached.
    let probe = format!("follow-probe-{}-", env.id);
    let n = AtomicUsize::new(0);
    eventually(
        Duration::from_secs(10),
        "a probe line through berth logs -f",
        || async {
            if follow.text().contains(&probe) {
                return Some(());
            }
            write(format!("{probe}{}", n.fetch_add(1, Ordering::Relaxed))).await;
            None
        },
    )
    .await;
    // A line written after that must arrive too.
    let marker = format!("written-after-follow-{}", env.id);
    write(marker.clone()).await;
    let text = eventually(
        Duration::from_secs(10),
        "the marker through berth logs -f",
        || async {
            let text = follow.text();
            text.contains(&marker).then_some(text)
        },
    )
    .await;
    assert!(text.contains(&format!("{web_name} | {marker}")), "{text}");
    drop(follow);
    // By container name too (a compose container: its project's logs, that one only).
    let (code, out, err) = cli(&admin, &["logs", &web_name, "--tail", "5"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("{web_name} | {marker}")), "{out}");

    // stats: non-zero memory of the running container.
    let (code, out, err) = cli(&admin, &["stats", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 1, "only the running container: {out}");
    assert_eq!(list[0]["container"], web_name.as_str());
    assert!(list[0]["memory_used"].as_u64().unwrap() > 0, "{out}");
    assert!(list[0]["memory_limit"].as_u64().unwrap() > 0, "{out}");
    let (code, table, _) = cli(&admin, &["stats", &env.id]).await;
    assert_eq!(code, 0);
    assert!(
        table.contains(&web_name) && table.contains("MiB"),
        "{table}"
    );
    // By service and by container too, with both services running.
    docker(&["start", &db_name]).await;
    eventually(
        Duration::from_secs(10),
        "db running in berth ps",
        || async {
            let (_, out, _) = cli(&admin, &["ps"]).await;
            row(&out, &db_name).contains("running").then_some(())
        },
    )
    .await;
    for (target, only) in [
        ("web", &web_name),
        (web_name.as_str(), &web_name),
        ("db", &db_name),
    ] {
        let (code, out, err) = cli(&admin, &["stats", target, "--json"]).await;
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 1, "{target}: {out}");
        assert_eq!(v[0]["container"], only.as_str(), "{target}: {out}");
    }

    // Exit codes: a target that does not exist is 3.
    let (code, _, err) = cli(&admin, &["stop", "no-such-thing"]).await;
    assert_eq!(code, 3, "{err}");
    let (code, _, _) =
        berth_cli(&["ps", "--admin", &admin, "--token", "wrong-token-0123456789"]).await;
    assert_eq!(code, 2, "a wrong token: berth could not be asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_load_fails_no_request() {
    let r = replicas("restart", 2, &[], "").await;
    let before: Vec<String> = {
        let mut v = Vec::new();
        for id in &r.ids {
            v.push(docker(&["inspect", "-f", "{{.State.StartedAt}}", id]).await);
        }
        v
    };
    let load = Load::start(r.port, &r.host, 4);
    load.wait_count(50, "the load to run before the restart")
        .await;
    let (code, out, err) = cli(&r.admin, &["restart", &r.env.id]).await;
    let done = load.count();
    load.wait_count(done + 50, "requests served after the restart")
        .await;
    let (log, rate) = load.finish().await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 containers restarted"), "{out}");
    let failed = failures(&log);
    println!(
        "rolling restart of 2 replicas: {} requests at {rate:.0}/s, {} failed",
        log.len(),
        log.iter().filter(|r| r.is_err()).count()
    );
    assert!(failed.is_empty(), "{failed:?}\n{out}");
    assert!(log.len() > 100, "the load ran: {}", log.len());
    // The same containers, restarted.
    for (id, was) in r.ids.iter().zip(before) {
        let now = docker(&["inspect", "-f", "{{.State.StartedAt}}", id]).await;
        assert_ne!(now, was, "{id} was restarted in place");
    }
    let (_, runs, _) = cli(&r.admin, &["rollouts"]).await;
    assert!(runs.contains("restart"), "{runs}");

    // One service of the project: rolling as well, never both replicas down.
    let load = Load::start(r.port, &r.host, 4);
    load.wait_count(50, "the load to run before the service restart")
        .await;
    let (code, out, err) = cli(&r.admin, &["restart", "web", "--project", &r.env.id]).await;
    let done = load.count();
    load.wait_count(done + 50, "requests served after the service restart")
        .await;
    let (log, _) = load.finish().await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 containers restarted"), "{out}");
    assert!(failures(&log).is_empty(), "{:?}\n{out}", failures(&log));
}

/// Prometheus text format, line by line: comments, or `name{labels} value`.
fn parse_prometheus(text: &str) -> Vec<(String, String, f64)> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            assert!(
                rest.starts_with("HELP ") || rest.starts_with("TYPE "),
                "bad comment: {line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => {
                assert!(l.ends_with('}'), "unclosed labels: {line}");
                (n, l.trim_end_matches('}'))
            }
            None => (series, ""),
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once("=\"")
                .unwrap_or_else(|| panic!("bad label: {line}"));
            assert!(
                k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line}"
            );
            let _ = v;
        }
        out.push((name.to_string(), labels.to_string(), value));
    }
    out
}

/// Scrapes `/metrics` until `ok` holds for what it says.
async fn scrape_until(admin: &str, ok: impl Fn(&str) -> bool) -> String {
    eventually(Duration::from_secs(5), "the request counts", || async {
        let (code, text) = api(admin, "GET", "/metrics", Some(TOKEN)).await;
        (code == 200 && ok(&text)).then_some(text)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_and_the_access_log_has_them() {
    let env = Env::new("metrics").await;
    let host = env.host("web");
    let mut args = env.service_labels("web");
    args.extend(["--label".into(), format!("berth.host={host}")]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.run("web-1", &args).await;
    let (http, admin) = (free_port(), free_port());
    let berth = Berth::start(&env.config_admin(http, admin, ""), http).await;
    let admin = format!("127.0.0.1:{admin}");
    let client = HttpClient::new();
    eventually(Duration::from_secs(10), "the route", || async {
        (client.get(http, &host, "/").await.ok()?.status == 200).then_some(())
    })
    .await;
    let count = |text: &str, code: &str| -> f64 {
        parse_prometheus(text)
            .into_iter()
            .filter(|(n, l, _)| {
                n == "berth_http_requests_total"
                    && l.contains(&format!("route=\"{host}/\""))
                    && l.contains(&format!("code=\"{code}\""))
            })
            .map(|(_, _, v)| v)
            .sum()
    };
    // A request is counted once its response is out (Pingora's logging
    // hook): the client can have its answer a moment before the count moves.
    // So each scrape waits until it counts what was sent so far: the one 200
    // above; then 25 more, and the 3 without a route.
    let unrouted = |text: &str| {
        parse_prometheus(text)
            .into_iter()
            .filter(|(n, l, _)| {
                n == "berth_http_requests_total"
                    && l.contains("code=\"4xx\"")
                    && l.contains("route=\"\"")
            })
            .map(|(_, _, v)| v)
            .sum::<f64>()
    };
    let before = scrape_until(&admin, |t| count(t, "2xx") >= 1.0).await;
    for _ in 0..25 {
        assert_eq!(client.get(http, &host, "/").await.unwrap().status, 200);
    }
    for _ in 0..3 {
        client.get(http, "unrouted.invalid", "/").await.unwrap();
    }
    let (ok_before, none_before) = (count(&before, "2xx"), unrouted(&before));
    let after = scrape_until(&admin, |t| {
        count(t, "2xx") >= ok_before + 25.0 && unrouted(t) >= none_before + 3.0
    })
    .await;
    assert_eq!(
        count(&after, "2xx") - count(&before, "2xx"),
        25.0,
        "{after}"
    );
    let series = parse_prometheus(&after);
    let has = |name: &str| series.iter().any(|(n, _, _)| n == name);
    for name in [
        "berth_http_request_duration_seconds_bucket",
        "berth_backends",
        "berth_docker_synced",
        "berth_routes",
    ] {
        assert!(has(name), "{name} missing:\n{after}");
    }
    assert!(
        series
            .iter()
            .any(|(n, l, v)| n == "berth_http_requests_total"
                && l.contains("code=\"4xx\"")
                && l.contains("route=\"\"")
                && *v >= 3.0),
        "404s without a route: {after}"
    );
    assert!(series
        .iter()
        .any(|(n, _, v)| n == "berth_docker_synced" && *v == 1.0));

    // One access line per request, with what an operator greps for.
    let log = berth.log();
    let line = log
        .lines()
        .find(|l| l.contains("berth::access") && l.contains(&host) && l.contains("status=200"))
        .unwrap_or_else(|| panic!("no access line for {host}:\n{log}"));
    for field in [
        "method=GET",
        "path=\"/\"",
        "status=200",
        "upstream=",
        "duration_ms=",
        "bytes=",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    drop(berth);

    // JSON logs on request.
    let http2 = free_port();
    let json_berth = Berth::start(
        &env.config(http2, "").replace(
            "log:\n  level: debug\n",
            "log:\n  level: info\n  format: json\n",
        ),
        http2,
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the route on the JSON berth",
        || async { (client.get(http2, &host, "/").await.ok()?.status == 200).then_some(()) },
    )
    .await;
    // The line is written once the response is out: poll for it.
    let access = eventually(Duration::from_secs(5), "a JSON access line", || async {
        json_berth
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["target"] == "berth::access" && v["status"] == 200)
    })
    .await;
    assert_eq!(access["host"], host.as_str());
    assert_eq!(access["method"], "GET");
    assert!(access["duration_ms"].as_f64().is_some(), "{access}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_holds_under_schemathesis() {
    let env = Env::new("openapi").await;
    let mut args = env.service_labels("web");
    args.extend(["--label".into(), format!("berth.host={}", env.host("web"))]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.run("web-1", &args).await;
    let (http, admin) = (free_port(), free_port());
    let _berth = Berth::start(&env.config_admin(http, admin, ""), http).await;
    let dir = TempDir::new();
    let (code, doc) = api(
        &format!("127.0.0.1:{admin}"),
        "GET",
        "/api/openapi.json",
        Some(TOKEN),
    )
    .await;
    assert_eq!(code, 200);
    let spec = dir.path().join("openapi.json");
    std::fs::write(&spec, doc).unwrap();
    let run = |extra: &[&str]| {
        let mut cmd = std::process::Command::new("schemathesis");
        cmd.current_dir(dir.path())
            .args(["run", spec.to_str().unwrap()])
            .args(["--url", &format!("http://127.0.0.1:{admin}")])
            .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
            .args([
                "--checks",
                "not_a_server_error,response_schema_conformance,content_type_conformance,ignored_auth,unsupported_method",
            ])
            .args(["--max-examples", "25", "--seed", "1", "--request-timeout", "20"])
            .args(extra);
        let out = cmd
            .output()
            .expect("schemathesis (pip install schemathesis)");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "schemathesis failed:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!("schemathesis:\n{text}");
        text
    };
    // Everything, stateful phase included (it acts on the test's own
    // container through the ids the API lists); the log stream is fuzzed
    // apart, without the stateful phase, so no `follow` waits for ever.
    // Not fuzzed: a deploy (a generated git URL would send traffic off the
    // machine) and `down` (it would remove the test's own project); the
    // deploy tests in project.rs drive both for real.
    let all = run(&[
        "--exclude-path",
        "/api/deployments/{name}/logs",
        "--exclude-operation-id",
        "deploy",
        "--exclude-operation-id",
        "down",
        "--exclude-operation-id",
        "down_post",
        // The dashboard's live stream never ends: the browser tests drive it.
        "--exclude-operation-id",
        "events",
    ]);
    assert!(all.contains("passed"), "{all}");
    let logs = run(&[
        "--include-path",
        "/api/deployments/{name}/logs",
        "--phases",
        "examples,coverage,fuzzing",
    ]);
    assert!(logs.contains("passed"), "{logs}");
}
