//! Autoscaling on CPU and on requests, no action on a load that swings
//! around the target, and crash replacement: real containers (CPU-limited,
//! with a CGI endpoint that burns CPU), real load, berth's own API.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{
    api, assert_all_served, cli, docker, eventually, replicas, replicas_with, HttpClient, Load,
    HTTP_CHECK, TOKEN,
};

/// The service's entry of `GET /api/autoscale`.
async fn scaling(admin: &str) -> Option<Value> {
    let (code, body) = api(admin, "GET", "/api/autoscale", Some(TOKEN)).await;
    assert_eq!(code, 200, "{body}");
    let list: Vec<Value> = serde_json::from_str(&body).unwrap();
    list.into_iter().next()
}

/// Replicas running now, as the autoscaler counts them.
async fn running_replicas(admin: &str) -> u64 {
    scaling(admin)
        .await
        .and_then(|v| v["replicas"].as_u64())
        .unwrap_or(0)
}

/// The runs of the history of this kind.
async fn runs_of(admin: &str, kind: &str) -> Vec<Value> {
    let (code, body) = api(admin, "GET", "/api/rollouts", Some(TOKEN)).await;
    assert_eq!(code, 200, "{body}");
    let all: Vec<Value> = serde_json::from_str(&body).unwrap();
    all.into_iter().filter(|r| r["kind"] == kind).collect()
}

/// Waits until the autoscaler runs `n` replicas, all finished; returns when.
async fn until_replicas(admin: &str, n: u64, limit: Duration, what: &str) -> Duration {
    let t0 = Instant::now();
    eventually(limit, what, || async {
        let v = scaling(admin).await?;
        let settled = v["replicas"].as_u64() == Some(n)
            && !v["state"].as_str().unwrap_or("").starts_with("scal");
        settled.then_some(())
    })
    .await;
    t0.elapsed()
}

fn scale_labels(extra: &[&'static str]) -> Vec<&'static str> {
    let mut l = HTTP_CHECK.to_vec();
    l.extend(extra);
    l
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_cpu_load_scales_out_and_the_service_comes_back_in_after_the_cooldown() {
    let labels = scale_labels(&[
        "berth.scale.min=1",
        "berth.scale.max=3",
        "berth.scale.cpu=50",
        "berth.scale.interval=1s",
        "berth.scale.cooldown=5s",
    ]);
    // Half a core each: a request burning CPU keeps its replica at its limit.
    let r = replicas_with("ascpu", 1, &labels, &["--cpus", "0.5"], "").await;
    let (host, port, admin) = (r.host.clone(), r.port, r.admin.clone());
    eventually(Duration::from_secs(10), "the autoscaler to see web", || {
        scaling(&admin)
    })
    .await;

    let t0 = Instant::now();
    let load = Load::start_path(port, &host, "/cgi-bin/burn?ms=100", 3);
    let steps = std::sync::Mutex::new(Vec::<(u64, Duration)>::new());
    eventually(Duration::from_secs(60), "a scale-out", || async {
        let n = running_replicas(&admin).await;
        let mut s = steps.lock().unwrap();
        if s.last().is_none_or(|(m, _)| *m != n) {
            s.push((n, t0.elapsed()));
        }
        (n >= 2).then_some(())
    })
    .await;
    let steps = steps.into_inner().unwrap();
    until_replicas(&admin, 3, Duration::from_secs(60), "three replicas").await;
    let at_three = t0.elapsed();
    let (log, rate) = load.finish().await;
    for (n, at) in &steps {
        println!(
            "{n} replica(s) running {:.1}s after the load started",
            at.as_secs_f64()
        );
    }
    println!(
        "3 replicas settled {:.1}s after the load started",
        at_three.as_secs_f64()
    );
    assert_all_served(&log, rate, "on the CPU endpoint while scaling out", None);

    // No load: back to the minimum, one replica per cooldown, while a
    // light client (50 requests/s) checks that nothing fails.
    let t1 = Instant::now();
    let probe = Load::start_paced(port, &host, "/", 1, Duration::from_millis(20));
    let steps = std::sync::Mutex::new(Vec::<(u64, Duration)>::new());
    eventually(Duration::from_secs(90), "back to one replica", || async {
        let v = scaling(&admin).await?;
        let n = v["replicas"].as_u64()?;
        let mut s = steps.lock().unwrap();
        if s.last().is_none_or(|(m, _)| *m != n) {
            s.push((n, t1.elapsed()));
        }
        let settled = n == 1 && !v["state"].as_str()?.starts_with("scal");
        settled.then_some(())
    })
    .await;
    for (n, at) in steps.into_inner().unwrap() {
        println!(
            "{n} replica(s) running {:.1}s after the load stopped",
            at.as_secs_f64()
        );
    }
    let (log, rate) = probe.finish().await;
    println!(
        "back to 1 replica {:.1}s after the load stopped",
        t1.elapsed().as_secs_f64()
    );
    assert_all_served(&log, rate, "while scaling in", None);
    let seen: Vec<_> = crate::harness::replicas_seen(&HttpClient::new(), port, &host, 4)
        .await
        .into_iter()
        .collect();
    assert_eq!(seen.len(), 1, "one replica left: {seen:?}");

    // Every decision is a completed run in the history, with its figures.
    let runs = runs_of(&admin, "autoscale").await;
    assert!(
        runs.len() >= 3,
        "out (1 or 2 steps) and two steps in: {runs:#?}"
    );
    for run in &runs {
        assert_eq!(run["status"], "completed", "{run:#}");
        let first = run["steps"][0]["message"].as_str().unwrap_or_default();
        let note = run["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|s| s["message"].as_str().filter(|m| m.starts_with("autoscale")))
            .unwrap_or_else(|| panic!("no autoscale note, first step {first:?}: {run:#}"));
        assert!(note.contains("cpu"), "{note}");
    }
    let v = scaling(&admin).await.unwrap();
    let decisions = v["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), runs.len(), "{v:#}");
    assert_eq!(decisions.last().unwrap()["to"], 1);
    let (code, out, err) = cli(&admin, &["autoscale"]).await;
    assert_eq!(code, 0, "{out}{err}");
    println!("{out}");
    assert!(out.contains("cpu 50%") && out.contains("2 → 1"), "{out}");
    let (_, metrics) = api(&admin, "GET", "/metrics", Some(TOKEN)).await;
    let service = format!("{}/web", r.env.id);
    assert!(
        metrics.contains(&format!(
            "berth_autoscale_desired_replicas{{service=\"{service}\"}} 1"
        )) && metrics.contains(&format!(
            "berth_autoscale_replicas{{service=\"{service}\"}} 1"
        )),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_swinging_around_the_target_makes_no_scale_action() {
    let labels = scale_labels(&[
        "berth.scale.min=1",
        "berth.scale.max=3",
        "berth.scale.cpu=50",
        "berth.scale.interval=1s",
        "berth.scale.cooldown=8s",
    ]);
    let r = replicas_with("asswing", 2, &labels, &["--cpus", "0.5"], "").await;
    let (host, port, admin) = (r.host.clone(), r.port, r.admin.clone());
    eventually(Duration::from_secs(10), "the autoscaler to see web", || {
        scaling(&admin)
    })
    .await;
    // Three cooldowns of a 4 s cycle: 1.5 s of two clients burning CPU
    // (both replicas near their limit), 2.5 s idle. No three samples in a
    // row are all above 50 %, and no cooldown window is all below 45 %.
    let t0 = Instant::now();
    let mut cycles = 0;
    while t0.elapsed() < Duration::from_secs(24) {
        let load = Load::start_path(port, &host, "/cgi-bin/burn?ms=100", 2);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (log, rate) = load.finish().await;
        assert_all_served(&log, rate, "in a busy phase", None);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        cycles += 1;
    }
    let v = scaling(&admin).await.unwrap();
    let cpu: Vec<f64> = v["recent"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["cpu"].as_f64())
        .collect();
    println!("{cycles} cycles; CPU per interval (% of the limit): {cpu:?}");
    let (high, low) = (
        cpu.iter().filter(|c| **c > 50.0).count(),
        cpu.iter().filter(|c| **c < 45.0).count(),
    );
    assert!(
        high >= 3 && low >= 3,
        "the load must cross the target both ways to mean anything: {cpu:?}"
    );
    let actions = v["decisions"].as_array().unwrap().len();
    println!("scale actions: {actions}; state: {}", v["state"]);
    assert_eq!(actions, 0, "{v:#}");
    assert!(runs_of(&admin, "autoscale").await.is_empty());
    assert_eq!(v["replicas"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requests_target_alone_scales_on_request_rate() {
    let labels = scale_labels(&[
        "berth.scale.max=2",
        "berth.scale.requests=50",
        "berth.scale.interval=1s",
        "berth.scale.out_samples=2",
        "berth.scale.cooldown=1m",
    ]);
    let r = replicas("asreq", 1, &labels, "").await;
    let (host, port, admin) = (r.host.clone(), r.port, r.admin.clone());
    let v = eventually(Duration::from_secs(10), "the autoscaler to see web", || {
        scaling(&admin)
    })
    .await;
    assert_eq!(
        (v["cpu"].clone(), v["requests"].as_f64()),
        (Value::Null, Some(50.0))
    );
    // Static pages: many requests, next to no CPU.
    let t0 = Instant::now();
    let load = Load::start(port, &host, 2);
    until_replicas(&admin, 2, Duration::from_secs(30), "a second replica").await;
    println!(
        "2 replicas {:.1}s after the load started",
        t0.elapsed().as_secs_f64()
    );
    let (log, rate) = load.finish().await;
    assert_all_served(&log, rate, "while scaling on requests", Some(100.0));
    let v = scaling(&admin).await.unwrap();
    let d = &v["decisions"][0];
    println!("decision: {d}");
    assert!(
        d["reason"].as_str().unwrap().starts_with("requests/s"),
        "{d}"
    );
    assert!(d["figures"]["requests"].as_f64().unwrap() > 50.0, "{d}");
}

/// The container's main process id on the host.
async fn host_pid(id: &str) -> String {
    docker(&["inspect", "-f", "{{.State.Pid}}", id]).await
}

async fn started_at(id: &str) -> String {
    docker(&["inspect", "-f", "{{.State.StartedAt}}", id]).await
}

/// SIGKILL to the replica's main process from the host, as the kernel's
/// OOM killer or a crash would end it: no `docker kill`, no event saying
/// anyone stopped it. (From inside, `kill -9 1` is refused: the kernel
/// shields a namespace's init from its own processes.)
async fn kill_9(id: &str) {
    let pid = host_pid(id).await;
    let out = tokio::process::Command::new("kill")
        .args(["-9", &pid])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "kill -9 {pid}: {out:?}");
}

/// Waits until `id` runs a run other than `before` and berth routes to it.
async fn revived(id: &str, before: &str, port: u16, host: &str) -> Duration {
    let t0 = Instant::now();
    eventually(
        Duration::from_secs(20),
        "the crashed replica to run again",
        || async {
            let now = started_at(id).await;
            let running = docker(&["inspect", "-f", "{{.State.Running}}", id]).await;
            (now != before && running == "true").then_some(())
        },
    )
    .await;
    let name = docker(&["inspect", "-f", "{{.Config.Hostname}}", id]).await;
    let client = HttpClient::new();
    eventually(
        Duration::from_secs(10),
        "the revived replica to serve",
        || async {
            let seen = crate::harness::replicas_seen(&client, port, host, 6).await;
            seen.iter().any(|b| b.starts_with(&name)).then_some(())
        },
    )
    .await;
    t0.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_is_started_again_and_one_stopped_by_hand_stays_stopped() {
    let r = replicas("revive", 3, &HTTP_CHECK, "").await;
    let (host, port, admin) = (r.host.clone(), r.port, r.admin.clone());
    let (a, b) = (r.ids[0].clone(), r.ids[1].clone());
    let load = Load::start(port, &host, 2);
    load.wait_count(50, "the load to run").await;

    let before = started_at(&a).await;
    kill_9(&a).await;
    let took = revived(&a, &before, port, &host).await;
    println!(
        "killed replica serving again after {:.2}s",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    let code = docker(&["inspect", "-f", "{{.State.ExitCode}} {{.RestartCount}}", &a]).await;
    println!("docker: exit code and its own restart count: {code}");

    // A person stops b; a is killed again: a comes back (after the first
    // backoff step), b stays stopped.
    docker(&["stop", "-t", "1", &b]).await;
    let before = started_at(&a).await;
    kill_9(&a).await;
    let took = revived(&a, &before, port, &host).await;
    println!("killed again, serving after {:.2}s", took.as_secs_f64());
    let (log, rate) = load.finish().await;
    assert_all_served(&log, rate, "while replicas were killed and replaced", None);
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Status}}", &b]).await,
        "exited",
        "stopped by hand: left stopped"
    );

    let revives = runs_of(&admin, "revive").await;
    assert_eq!(revives.len(), 2, "{revives:#?}");
    for run in &revives {
        assert_eq!(run["status"], "completed", "{run:#}");
        let first = run["steps"][0]["message"].as_str().unwrap();
        assert!(
            first.contains("exited with code 137 (SIGKILL) without a stop"),
            "{first}"
        );
    }
    let (code, out, err) = cli(&admin, &["ps"]).await;
    assert_eq!(code, 0, "{err}");
    println!("{out}");
    let a_name = docker(&["inspect", "-f", "{{.Name}}", &a]).await;
    let row = out
        .lines()
        .find(|l| l.contains(a_name.trim_start_matches('/')))
        .unwrap();
    assert!(
        row.split_whitespace().any(|c| c == "2"),
        "two restarts counted: {row}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_scale_label_is_a_problem_of_that_service_only() {
    let r = replicas("asbad", 1, &["berth.scale.max=abc"], "").await;
    // Another service beside it, autoscaled with good labels.
    let api_host = r.env.host("api");
    let mut args = r.env.service_labels("api");
    args.extend(
        [
            format!("berth.host={api_host}"),
            "berth.scale.max=2".to_string(),
        ]
        .into_iter()
        .flat_map(|l| ["--label".to_string(), l]),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    r.env.run("api-1", &args).await;
    let client = HttpClient::new();
    eventually(
        Duration::from_secs(15),
        "the other service served",
        || async {
            let got = client.get(r.port, &api_host, "/").await.ok()?;
            (got.status == 200).then_some(())
        },
    )
    .await;
    let (code, body) = api(&r.admin, "GET", "/api/problems", Some(TOKEN)).await;
    assert_eq!(code, 200);
    let problems: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(problems.len(), 1, "{body}");
    assert_eq!(problems[0]["key"], "berth.scale.max");
    assert_eq!(problems[0]["value"], "abc");
    println!("{}", problems[0]);
    // Its route is served (replicas() waited for it), and nothing is
    // autoscaled.
    let r2 = HttpClient::new().get(r.port, &r.host, "/").await.unwrap();
    assert_eq!(r2.status, 200);
    let scaled = eventually(
        Duration::from_secs(10),
        "the other service autoscaled",
        || scaling(&r.admin),
    )
    .await;
    assert_eq!(
        scaled["service"],
        format!("{}/api", r.env.id),
        "only the other one"
    );
}
