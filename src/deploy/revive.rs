//! Crash replacement: a routed replica whose run ends on its own — a
//! non-zero exit or an OOM kill, with no stop signal sent to it (`docker
//! stop`, `docker kill`, a rollout) — is started again, or replaced by a
//! clone when it cannot be started, with a backoff between attempts. A
//! container a person stopped stays stopped, and one with a Docker restart
//! policy is left to the engine. Each attempt is a run in the deploy
//! history (`revive`) and counts in the container's restarts.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{info, warn};

use super::{unix_now, Deploys, Status};
use crate::config::Config;
use crate::engine::Engine;
use crate::plan::{ContainerInfo, Snapshot};
use crate::world::BackendState;
use crate::SharedSnapshot;

/// A replica that stayed up this long since its last crash starts its
/// backoff over.
const RESET_AFTER: Duration = Duration::from_secs(600);
/// The longest wait before an attempt.
const MAX_WAIT: Duration = Duration::from_secs(300);
/// Attempts in a row that leave it not running, before berth gives up on it.
const GIVE_UP_AFTER: u32 = 10;

/// Why a run that is over counts as a crash, or `None` when it was stopped,
/// exited cleanly, or Docker restarts it itself.
pub fn crash_reason(c: &ContainerInfo) -> Option<String> {
    if !c.routed || !matches!(c.status.as_str(), "exited" | "dead") || c.run.stop_requested {
        return None;
    }
    if !matches!(c.run.restart_policy.as_str(), "" | "no") {
        return None;
    }
    match (c.exit_code, c.run.oom_killed) {
        (_, true) => Some("killed for running out of memory".into()),
        (Some(code), _) if code != 0 => Some(match code {
            137 => "exited with code 137 (SIGKILL)".to_string(),
            139 => "exited with code 139 (SIGSEGV)".to_string(),
            c => format!("exited with code {c}"),
        }),
        _ => None,
    }
}

/// The wait before the attempt after the `streak`-th crash (or failed
/// attempt) in a row: none for the first, then 1 s doubling up to 5 min.
pub fn backoff(streak: u32) -> Duration {
    match streak {
        0 | 1 => Duration::ZERO,
        n => Duration::from_secs(1u64 << (n - 2).min(16)).min(MAX_WAIT),
    }
}

/// A crashed container waiting for its next attempt.
struct Pending {
    service: String,
    name: String,
    why: String,
    next_at: Instant,
    /// The run that crashed.
    run: String,
    /// The service's other replicas that were running when it crashed.
    siblings: Vec<String>,
    /// Tells this crash's attempts from a later crash's.
    epoch: u64,
    /// Attempts in a row after which it was still not running.
    failed: u32,
}

/// A container's crashes in a row: how many, and since when its latest
/// run has been seen running.
#[derive(Default)]
struct Streak {
    count: u32,
    up_since: Option<Instant>,
}

impl Streak {
    /// Seen running now.
    fn up(&mut self, now: Instant) {
        self.up_since.get_or_insert(now);
    }

    /// One more crash (or failed attempt) now; the wait before the next
    /// attempt. A run that stayed up long enough starts the count over.
    fn crash(&mut self, now: Instant) -> Duration {
        if self
            .up_since
            .is_some_and(|t| now.duration_since(t) >= RESET_AFTER)
        {
            self.count = 0;
        }
        self.up_since = None;
        self.count += 1;
        backoff(self.count)
    }
}

/// Watches the snapshots for crashes and revives them until berth stops.
pub async fn run(
    config: Arc<Config>,
    engine: Engine,
    snapshot: SharedSnapshot,
    mut notify: watch::Receiver<u64>,
    deploys: Deploys,
) {
    // Runs seen running (container id → started_at): only a run berth saw
    // end, through the event stream, is judged; never one that ended while
    // berth was not looking (stopped, or cut off from the engine, when a
    // stop signal could have been missed).
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut streaks: HashMap<String, Streak> = HashMap::new();
    let mut epoch = 0u64;
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    // Attempts report here when they are over: (container, epoch).
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(String, u64)>();
    loop {
        let now = Instant::now();
        let snap = snapshot.load_full();
        if !snap.docker.connected {
            seen.clear();
        }
        while let Ok((id, of)) = done_rx.try_recv() {
            // Still not running after the attempt (it failed, or the new run
            // ended before a snapshot saw it): a longer wait, or give up.
            let running = snap.containers.get(&id).is_some_and(|c| c.is_running());
            let Some(p) = pending.get_mut(&id).filter(|p| p.epoch == of && !running) else {
                continue;
            };
            // A new run that someone stopped, or that ended cleanly: not
            // a crash to go on with.
            let ended_otherwise = snap.containers.get(&id).is_some_and(|c| {
                c.started_at != p.run && (c.run.stop_requested || crash_reason(c).is_none())
            });
            if ended_otherwise {
                info!(container = %p.name, "crash replacement: its new run was stopped or ended cleanly: leaving it");
                pending.remove(&id);
                continue;
            }
            p.failed += 1;
            if p.failed >= GIVE_UP_AFTER {
                warn!(container = %p.name, attempts = p.failed, "crash replacement: giving up on it: start it by hand, or fix what makes it crash");
                let (_, _, reporter) = deploys.begin("revive", &p.service);
                let message = format!(
                    "{} gave up after {} attempts in a row that left it not running; start it by hand once it is fixed",
                    p.name, p.failed
                );
                deploys.end(&reporter, &p.service, Status::Failed, message, 0);
                pending.remove(&id);
                continue;
            }
            let wait = streaks.entry(id).or_default().crash(now);
            p.next_at = now + wait;
            warn!(container = %p.name, attempts = p.failed, next_in = ?wait, "crash replacement: not running after the attempt");
        }
        for c in snap.containers.values() {
            if c.is_running() {
                if snap.docker.connected {
                    seen.insert(c.id.clone(), c.started_at.clone());
                }
                if let Some(s) = streaks.get_mut(&c.id) {
                    s.up(now);
                }
                // Started again (by a person, Docker, or an attempt).
                pending.remove(&c.id);
                continue;
            }
            let Some(run) = seen.remove(&c.id) else {
                continue;
            };
            let opted_out = snap.backends.get(&c.id).is_some_and(|b| !b.autoheal);
            let Some(why) = crash_reason(c).filter(|_| run == c.started_at && !opted_out) else {
                continue;
            };
            let wait = streaks.entry(c.id.clone()).or_default().crash(now);
            warn!(container = %c.name, reason = %why, wait = ?wait, "crash replacement: a replica ended without a stop");
            epoch += 1;
            let service = c.service_key();
            let siblings = snap
                .containers
                .values()
                .filter(|o| o.id != c.id && o.is_running() && o.service_key() == service)
                .map(|o| o.id.clone())
                .collect();
            pending.insert(
                c.id.clone(),
                Pending {
                    service,
                    name: c.name.clone(),
                    why,
                    next_at: now + wait,
                    run: c.started_at.clone(),
                    siblings,
                    epoch,
                    failed: 0,
                },
            );
        }
        seen.retain(|id, _| snap.containers.contains_key(id));
        pending.retain(|id, _| snap.containers.contains_key(id));
        streaks.retain(|id, _| snap.containers.contains_key(id));
        deploys
            .restarts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| snap.containers.contains_key(id));
        // What the people and the other runs did meanwhile wins: a run on
        // the service (a rollout, a scale, a stop, a deploy; not the
        // autoscaler's, which only adds capacity while a crash is
        // replaced) decides what runs; a service whose other replicas were
        // all stopped on purpose stays stopped.
        // A run on the whole deployment (a deploy, a restart) only defers
        // it: what that run does to this service is not known here.
        let mut deferred = HashSet::new();
        pending.retain(|id, p| {
            let drop = match deploys.busy_run(&p.service, &["revive", "autoscale"]) {
                Some((run, true)) => Some(format!("run {run} on the service decides what runs")),
                Some((_, false)) => {
                    deferred.insert(id.clone());
                    None
                }
                None => stopped_on_purpose(&snap, &p.siblings)
                    .then(|| "the rest of the service was stopped on purpose".to_string()),
            };
            if let Some(why) = &drop {
                info!(container = %p.name, "crash replacement: not restarting it: {why}");
            }
            drop.is_none()
        });
        {
            let mut reviving = deploys.reviving.lock().unwrap_or_else(|e| e.into_inner());
            reviving.clear();
            for p in pending.values() {
                *reviving.entry(p.service.clone()).or_default() += 1;
            }
        }
        for (id, p) in &pending {
            if p.next_at > now || deferred.contains(id) {
                continue;
            }
            if !in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.clone())
            {
                continue;
            }
            let attempt = Attempt {
                id: id.clone(),
                service: p.service.clone(),
                name: p.name.clone(),
                why: p.why.clone(),
                number: streaks.get(id).map_or(1, |s| s.count),
                health_timeout: config.deploy.health_timeout,
            };
            let (engine, snapshot, notify, deploys) = (
                engine.clone(),
                snapshot.clone(),
                notify.clone(),
                deploys.clone(),
            );
            let (in_flight, done, of) = (in_flight.clone(), done_tx.clone(), p.epoch);
            tokio::spawn(async move {
                attempt.run(&engine, &snapshot, notify, &deploys).await;
                in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&attempt.id);
                let _ = done.send((attempt.id, of));
            });
        }
        let next = pending
            .values()
            .map(|p| p.next_at)
            .min()
            .unwrap_or(now + Duration::from_secs(1))
            .max(now + Duration::from_millis(50))
            .min(now + Duration::from_secs(1));
        tokio::select! {
            r = notify.changed() => if r.is_err() { return },
            _ = tokio::time::sleep_until(next.into()) => {}
        }
    }
}

/// Whether every other replica that ran when it crashed (`siblings`, at
/// least one) has been stopped by a stop signal since (`docker compose
/// stop`, `docker stop` of each) and is still there: the service was
/// stopped on purpose. One removed (a scale-in, a rollout) says nothing.
fn stopped_on_purpose(snap: &Snapshot, siblings: &[String]) -> bool {
    !siblings.is_empty()
        && siblings.iter().all(|s| {
            snap.containers
                .get(s)
                .is_some_and(|c| !c.is_running() && c.run.stop_requested)
        })
}

/// One attempt at bringing a crashed container back.
struct Attempt {
    id: String,
    service: String,
    name: String,
    why: String,
    /// Its crashes in a row, this one included.
    number: u32,
    health_timeout: Duration,
}

impl Attempt {
    /// Starts it again, or replaces it by a clone.
    async fn run(
        &self,
        engine: &Engine,
        snapshot: &SharedSnapshot,
        notify: watch::Receiver<u64>,
        deploys: &Deploys,
    ) {
        let (run_id, _lines, reporter) = deploys.begin("revive", &self.service);
        let say = |status: Status, message: String| {
            reporter.send(super::Progress {
                id: run_id,
                service: self.service.clone(),
                status,
                message,
            })
        };
        say(
            Status::Starting,
            format!(
                "{} {} without a stop: starting it again (crash {} in a row)",
                self.name, self.why, self.number
            ),
        );
        let started = Instant::now();
        let before = snapshot
            .load()
            .containers
            .get(&self.id)
            .map(|c| c.started_at.clone())
            .unwrap_or_default();
        let (target, how) = match engine.start(&self.id, &self.name).await {
            Ok(()) => (self.id.clone(), "started again"),
            Err(e) => {
                say(
                    Status::Starting,
                    format!(
                        "{} cannot be started ({e}): replacing it with a clone",
                        self.name
                    ),
                );
                let key = format!("revive-{run_id}@{}", unix_now());
                let clone = match engine.create_clone(&self.id, None, 0, &key, None).await {
                    Ok(id) => id,
                    Err(e) => return self.failed(deploys, &reporter, format!("no clone: {e}")),
                };
                if let Err(e) = engine.start(&clone, crate::names::short_id(&clone)).await {
                    let _ = engine
                        .remove(&clone, crate::names::short_id(&clone), true)
                        .await;
                    return self.failed(
                        deploys,
                        &reporter,
                        format!("the clone did not start: {e}"),
                    );
                }
                (clone, "replaced by a clone")
            }
        };
        bump(deploys, &target);
        let ready = wait_ready(snapshot, notify, &target, &before, self.health_timeout).await;
        if target != self.id {
            // The crashed container made way for its clone.
            if let Err(e) = engine.remove(&self.id, &self.name, true).await {
                warn!(container = %self.name, error = %e, "crash replacement: removing the crashed container failed");
            }
        }
        let name = snapshot.load().containers.get(&target).map_or_else(
            || crate::names::short_id(&target).to_string(),
            |c| c.name.clone(),
        );
        let secs = started.elapsed().as_secs_f64();
        let (status, message) = match ready {
            Ok(()) => (
                Status::Completed,
                format!("{} {how}: {name} ready after {secs:.1}s", self.name),
            ),
            Err(why) => (
                Status::Failed,
                format!("{} {how}, but {name} {why}", self.name),
            ),
        };
        info!(container = %self.name, replica = %name, "crash replacement: {message}");
        deploys.end(&reporter, &self.service, status, message, 1);
    }

    fn failed(&self, deploys: &Deploys, reporter: &super::Reporter, why: String) {
        let message = format!("{} could not be brought back: {why}", self.name);
        warn!(container = %self.name, "crash replacement: {message}");
        deploys.end(reporter, &self.service, Status::Failed, message, 0);
    }
}

/// Counts a restart of `id` (shown by `berth ps` and `berth backends`).
fn bump(deploys: &Deploys, id: &str) {
    let mut r = deploys.restarts.lock().unwrap_or_else(|e| e.into_inner());
    *r.entry(id.to_string()).or_default() += 1;
}

/// Waits until `id` runs a new run (not `before`) that is Ready, or says
/// what it is instead after `limit`.
async fn wait_ready(
    snapshot: &SharedSnapshot,
    mut notify: watch::Receiver<u64>,
    id: &str,
    before: &str,
    limit: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let state = state_of(&snapshot.load(), id, before);
        match state {
            Some(BackendState::Ready) => return Ok(()),
            None if !snapshot.load().containers.contains_key(id) => return Err("is gone".into()),
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(match state {
                Some(s) => format!("is {s}, not ready, after {}s", limit.as_secs()),
                None => format!("is not running after {}s", limit.as_secs()),
            });
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), notify.changed()).await;
    }
}

/// The backend state of a new run of `id`, if it runs one.
fn state_of(snap: &Snapshot, id: &str, before: &str) -> Option<BackendState> {
    let c = snap.containers.get(id)?;
    (c.is_running() && c.started_at != before).then_some(c.state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crashed(code: i64) -> ContainerInfo {
        let mut c = ContainerInfo::for_test("1", "p-web-1", Some("p"), Some("web"));
        c.routed = true;
        c.status = "exited".into();
        c.exit_code = Some(code);
        c
    }

    #[test]
    fn only_a_routed_run_that_ended_on_its_own_and_badly_is_a_crash() {
        assert_eq!(
            crash_reason(&crashed(137)).as_deref(),
            Some("exited with code 137 (SIGKILL)")
        );
        assert_eq!(
            crash_reason(&crashed(3)).as_deref(),
            Some("exited with code 3")
        );
        assert_eq!(crash_reason(&crashed(0)), None, "a clean exit");
        let mut c = crashed(137);
        c.run.stop_requested = true;
        assert_eq!(
            crash_reason(&c),
            None,
            "docker stop, docker kill, a rollout"
        );
        let mut c = crashed(137);
        c.run.restart_policy = "unless-stopped".into();
        assert_eq!(crash_reason(&c), None, "the engine restarts it");
        c.run.restart_policy = "no".into();
        assert!(crash_reason(&c).is_some());
        let mut c = crashed(0);
        c.run.oom_killed = true;
        assert_eq!(
            crash_reason(&c).as_deref(),
            Some("killed for running out of memory")
        );
        let mut c = crashed(1);
        c.routed = false;
        assert_eq!(crash_reason(&c), None, "not a routed replica");
        let mut c = crashed(1);
        c.status = "running".into();
        assert_eq!(crash_reason(&c), None);
    }

    #[test]
    fn the_backoff_starts_at_once_and_doubles_to_five_minutes() {
        let waits: Vec<u64> = (1..=12).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        // Crashes in a row keep doubling however long the waits get.
        let mut s = Streak::default();
        let t0 = Instant::now();
        let mut at = t0;
        let mut waits = Vec::new();
        for _ in 0..12 {
            let w = s.crash(at);
            waits.push(w.as_secs());
            at += w + Duration::from_secs(1);
            s.up(at);
        }
        assert_eq!(waits, [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        // Ten minutes up since it was last seen running start it over; a
        // long wait before an attempt is no time up.
        let mut s = Streak::default();
        s.crash(t0);
        s.up(t0 + Duration::from_secs(1));
        assert_eq!(s.crash(t0 + Duration::from_secs(5)).as_secs(), 1);
        assert_eq!(s.crash(t0 + RESET_AFTER * 2).as_secs(), 2, "not seen up");
        s.up(t0 + RESET_AFTER * 2);
        assert_eq!(
            s.crash(t0 + RESET_AFTER * 3),
            Duration::ZERO,
            "up 10 minutes"
        );
    }

    #[test]
    fn a_service_stopped_on_purpose_stays_stopped() {
        let mut snap = Snapshot::default();
        let mut other = crashed(0);
        other.id = "2".into();
        other.name = "p-web-2".into();
        other.run.stop_requested = true;
        snap.containers.insert("1".into(), crashed(137));
        snap.containers.insert("2".into(), other.clone());
        let siblings = vec!["2".to_string()];
        assert!(stopped_on_purpose(&snap, &siblings));
        assert!(
            !stopped_on_purpose(&snap, &[]),
            "2 was not running when 1 crashed (stopped last week): it has no say"
        );
        other.status = "running".into();
        snap.containers.insert("2".into(), other);
        assert!(!stopped_on_purpose(&snap, &siblings), "the other one runs");
        snap.containers.remove("2");
        assert!(!stopped_on_purpose(&snap, &siblings), "removed: a scale-in");
    }
}
