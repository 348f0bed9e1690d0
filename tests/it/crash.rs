//! Crash safety: berth killed with SIGKILL in the middle of a rollout or a
//! scale run, then started again on the same state dir. The run is finished
//! or rolled back, the service ends with the replicas it should have, one
//! version, no container left over, and the history says what happened.
//!
//! The replicas start slowly (`START_DELAY`): a new one cannot be Ready
//! within two seconds of its start, so the kill, sent as soon as the test
//! sees the new replica it waits for, lands before the run moves on.

use std::path::Path;
use std::time::Duration;

use berth::deploy::{Record, Status};
use berth::engine::clone::OPERATION_LABEL;

use crate::harness::{
    api, cli, docker, eventually, free_port, replicas_seen, Berth, Env, HttpClient, TempDir,
    HTTP_CHECK, IMAGE_V2, TOKEN,
};

/// `n` slow-starting replicas of service `web` behind a berth with its admin
/// API and its state in `state`.
struct Slow {
    berth: Berth,
    env: Env,
    host: String,
    port: u16,
    admin_port: u16,
    extra: String,
    /// The replicas' ids, as started.
    ids: Vec<String>,
}

impl Slow {
    async fn start(name: &str, n: usize, state: &Path) -> Slow {
        let env = Env::new(name).await;
        let host = env.host("web");
        let mut args = env.service_labels("web");
        args.extend(["--label".into(), format!("berth.host={host}")]);
        for l in HTTP_CHECK {
            args.extend(["--label".into(), l.to_string()]);
        }
        args.extend(["-e".into(), "START_DELAY=2".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut ids = Vec::new();
        for i in 1..=n {
            ids.push(env.run(&format!("web-{i}"), &args).await);
        }
        let (port, admin_port) = (free_port(), free_port());
        let extra = format!("state_dir: {}\n", state.display());
        let berth = Berth::start(&env.config_admin(port, admin_port, &extra), port).await;
        let slow = Slow {
            berth,
            env,
            host,
            port,
            admin_port,
            extra,
            ids,
        };
        slow.serving(n, "v1").await;
        slow
    }

    fn admin(&self) -> String {
        format!("127.0.0.1:{}", self.admin_port)
    }

    /// Kills berth with SIGKILL and starts another on the same config,
    /// ports and state dir.
    async fn kill_and_restart(&mut self) {
        self.berth.signal("KILL");
        assert!(
            self.berth.exited(Duration::from_secs(5)).await.is_some(),
            "berth did not die of SIGKILL"
        );
        let config = self
            .env
            .config_admin(self.port, self.admin_port, &self.extra);
        self.berth = Berth::start(&config, self.port).await;
    }

    /// Waits until exactly `n` replicas answer, all of `version`.
    async fn serving(&self, n: usize, version: &str) {
        let client = HttpClient::new();
        let what = format!("{n} replicas of {version} serving");
        eventually(Duration::from_secs(30), &what, || async {
            let seen = replicas_seen(&client, self.port, &self.host, 4 * n).await;
            let one_version = seen.iter().all(|b| b.trim_end().ends_with(version));
            (seen.len() == n && one_version).then_some(())
        })
        .await;
    }

    /// Every container of the test, running or not: (id, state, the run
    /// that created it or "").
    async fn containers(&self) -> Vec<(String, String, String)> {
        let out = docker(&[
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            &format!("label=berth-test.run={}", self.env.id),
            "--format",
            &format!("{{{{.ID}}}} {{{{.State}}}} {{{{.Label \"{OPERATION_LABEL}\"}}}}"),
        ])
        .await;
        out.lines()
            .map(|l| {
                let mut f = l.split_whitespace().map(str::to_string);
                let id = f.next().unwrap_or_default();
                let state = f.next().unwrap_or_default();
                (id, state, f.next().unwrap_or_default())
            })
            .collect()
    }

    /// Waits until `n` containers (or more) carry a run's label, and returns
    /// them all.
    async fn until_new_replicas(&self, n: usize) -> Vec<(String, String, String)> {
        let what = format!("{n} new replicas made by the run");
        eventually(Duration::from_secs(30), &what, || async {
            let all = self.containers().await;
            let made = all.iter().filter(|(_, _, op)| !op.is_empty()).count();
            (made >= n).then_some(all)
        })
        .await
    }

    /// The run `kind` once its record is final.
    async fn final_record(&self, kind: &str) -> Record {
        let admin = self.admin();
        let what = format!("the interrupted {kind} to end");
        eventually(Duration::from_secs(60), &what, || async {
            let (code, body) = api(&admin, "GET", "/api/rollouts", Some(TOKEN)).await;
            if code != 200 {
                return None;
            }
            let runs: Vec<Record> = serde_json::from_str(&body).ok()?;
            runs.into_iter()
                .find(|r| r.kind == kind && r.status.is_final())
        })
        .await
    }
}

/// Runs the CLI against `admin` in the background: it ends when berth dies.
fn in_background(
    admin: String,
    args: &'static [&'static str],
) -> tokio::task::JoinHandle<(i32, String, String)> {
    tokio::spawn(async move { cli(&admin, args).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_killed_after_its_first_switch_is_finished_by_the_next_berth() {
    let state = TempDir::new();
    let mut s = Slow::start("crashfin", 3, state.path()).await;
    let rollout = in_background(s.admin(), &["rollout", "web", "--image", IMAGE_V2]);
    // The first replica was replaced (a new one is made only once the old
    // one is removed): the second new replica is starting.
    let seen = s.until_new_replicas(2).await;
    s.kill_and_restart().await;
    let made = seen.iter().filter(|(_, _, op)| !op.is_empty()).count();
    assert_eq!(made, 2, "killed while the second replica starts: {seen:?}");
    assert!(
        !seen.iter().any(|(id, _, _)| id == &s.ids[0]),
        "the first old replica was gone at the kill: {seen:?}"
    );
    let (code, out, err) = rollout.await.unwrap();
    assert_eq!(code, 2, "the progress stream ended with berth:\n{out}{err}");

    let run = s.final_record("rollout").await;
    println!("the interrupted rollout: {run:?}");
    assert_eq!(run.status, Status::Completed, "{run:?}");
    let reason = run.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("interrupted by a berth restart") && reason.contains("finished"),
        "{reason}"
    );
    s.serving(3, "v2").await;
    let all = s.containers().await;
    assert_eq!(all.len(), 3, "three containers, no orphan: {all:?}");
    for (id, state, op) in &all {
        assert_eq!(state, "running", "{all:?}");
        assert!(!s.ids.contains(id), "an old replica is left: {all:?}");
        assert!(
            op.starts_with(&format!("{}@", run.id)),
            "made by the rollout: {all:?}"
        );
    }
    assert!(
        !state.path().join("operation.json").exists(),
        "the finished run is no longer saved"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_killed_before_any_switch_is_rolled_back_by_the_next_berth() {
    let state = TempDir::new();
    let mut s = Slow::start("crashback", 3, state.path()).await;
    let rollout = in_background(s.admin(), &["rollout", "web", "--image", IMAGE_V2]);
    // The first new replica exists and cannot be Ready yet.
    s.until_new_replicas(1).await;
    s.kill_and_restart().await;
    let (code, out, err) = rollout.await.unwrap();
    assert_eq!(code, 2, "the progress stream ended with berth:\n{out}{err}");

    let run = s.final_record("rollout").await;
    println!("the interrupted rollout: {run:?}");
    assert_eq!(run.status, Status::RolledBack, "{run:?}");
    let reason = run.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("interrupted by a berth restart") && reason.contains("rolled back"),
        "{reason}"
    );
    s.serving(3, "v1").await;
    let mut all = s.containers().await;
    all.sort();
    let mut olds: Vec<(String, String, String)> = s
        .ids
        .iter()
        .map(|id| (id.clone(), "running".to_string(), String::new()))
        .collect();
    olds.sort();
    assert_eq!(all, olds, "the old replicas, and nothing else");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_up_killed_midway_is_finished_and_its_count_kept() {
    let state = TempDir::new();
    let mut s = Slow::start("crashscale", 1, state.path()).await;
    let scale = in_background(s.admin(), &["scale", "web=3"]);
    s.until_new_replicas(1).await;
    s.kill_and_restart().await;
    let (code, out, err) = scale.await.unwrap();
    assert_eq!(code, 2, "the progress stream ended with berth:\n{out}{err}");

    let run = s.final_record("scale").await;
    println!("the interrupted scale: {run:?}");
    assert_eq!(run.status, Status::Completed, "{run:?}");
    assert!(
        run.reason
            .as_deref()
            .is_some_and(|r| r.contains("interrupted by a berth restart")),
        "{run:?}"
    );
    s.serving(3, "v1").await;
    let all = s.containers().await;
    assert_eq!(all.len(), 3, "three containers, no orphan: {all:?}");
    assert!(all.iter().all(|(_, st, _)| st == "running"), "{all:?}");
    let saved = std::fs::read_to_string(state.path().join("replicas.json")).unwrap();
    assert!(
        saved.contains(&format!("\"{}/web\": 3", s.env.id)),
        "the count berth scale reached is kept: {saved}"
    );
}
