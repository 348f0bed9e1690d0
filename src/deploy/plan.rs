//! The one rolling-replacement engine: a pure state machine. Events (engine
//! calls done, the published snapshot, the time) go in; actions (create,
//! start, restart, drain, stop and remove a container, report progress) come
//! out. The controller in `deploy/mod.rs` performs the actions and feeds the
//! results back.
//!
//! Rollouts, scaling and rolling restarts are lists of units, taken a batch at
//! a time: a unit may make a new replica (cloned from a template, optionally
//! with another image), retire an old one, or both: a new replica first, and
//! the old one is drained only once the new one is Ready. A restart unit
//! drains a container (when berth routes it), restarts it in place and waits
//! until its new run is Ready.
//!
//! [`recover`] decides what becomes of a run a killed berth left unfinished.

mod recover;

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::names::short_id;
use crate::plan::Snapshot;
use crate::world::BackendState;
pub use recover::{recover, OpKind, Operation, Recovery, SavedUnit};

/// How long an old replica gets to exit after its in-flight requests finished.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// ... and after its drain timed out with requests still open: those are cut.
const STOP_CUT: Duration = Duration::from_secs(1);

/// Where a run stands, as progress lines and the history name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    /// A deploy builds its images.
    Building,
    /// A deploy makes networks and volumes and goes through its services.
    Deploying,
    Starting,
    WaitingHealthy,
    Switching,
    Draining,
    Completed,
    Failed,
    RolledBack,
    /// A deploy's build failed: nothing was changed.
    BuildFailed,
}

impl Status {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Completed | Status::Failed | Status::RolledBack | Status::BuildFailed
        )
    }
}

impl Status {
    /// The serde name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Building => "building",
            Status::Deploying => "deploying",
            Status::BuildFailed => "build_failed",
            Status::Starting => "starting",
            Status::WaitingHealthy => "waiting_healthy",
            Status::Switching => "switching",
            Status::Draining => "draining",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::RolledBack => "rolled_back",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Pending,
    Creating,
    Starting,
    /// A restart unit: the engine is restarting the container.
    Restarting,
    WaitingHealthy,
    Draining,
    Stopping,
    Done,
    Failed,
}

#[derive(Debug, Clone)]
pub struct Unit {
    /// The replica this unit retires (or, restarting, restarts), if any.
    pub old: Option<String>,
    /// The container to clone for a new replica, if one is made.
    pub template: Option<String>,
    pub new: Option<String>,
    /// Restart `old` in place instead of replacing it.
    pub restart: bool,
    pub phase: Phase,
    /// When the phase began; `None` before the first step.
    since: Option<Instant>,
    /// The last health word or check result of the new replica.
    detail: String,
    /// A failed unit's new replica is being removed.
    removing: bool,
    /// A restart unit drained its container: undone if the restart fails.
    drained: bool,
    /// The run (`started_at`) a restart unit restarts.
    run: String,
    /// A restart unit found nothing to restart (gone, or not running).
    pub skipped: bool,
}

impl Unit {
    pub fn replace(old: &str) -> Unit {
        Unit::new(Some(old), Some(old))
    }
    pub fn add(template: &str) -> Unit {
        Unit::new(None, Some(template))
    }
    pub fn retire(old: &str) -> Unit {
        Unit::new(Some(old), None)
    }
    pub fn restart(id: &str) -> Unit {
        Unit {
            restart: true,
            ..Unit::new(Some(id), None)
        }
    }
    fn new(old: Option<&str>, template: Option<&str>) -> Unit {
        Unit {
            old: old.map(str::to_string),
            template: template.map(str::to_string),
            new: None,
            restart: false,
            phase: Phase::Pending,
            since: None,
            detail: String::new(),
            removing: false,
            drained: false,
            run: String::new(),
            skipped: false,
        }
    }
    fn settled(&self) -> bool {
        self.phase == Phase::Done || (self.phase == Phase::Failed && !self.removing)
    }
    fn enter(&mut self, phase: Phase, now: Instant) {
        self.phase = phase;
        self.since = Some(now);
    }
    fn elapsed(&self, now: Instant) -> Duration {
        self.since.map_or(Duration::ZERO, |s| now.duration_since(s))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Create {
        unit: usize,
        template: String,
        image: Option<String>,
    },
    Start {
        unit: usize,
        id: String,
    },
    Drain {
        id: String,
    },
    /// Back in rotation: the restart it was drained for failed.
    Undrain {
        id: String,
    },
    /// Restart in place, with the container's own stop timeout.
    Restart {
        unit: usize,
        id: String,
    },
    StopRemove {
        unit: usize,
        id: String,
        timeout: Duration,
    },
    Progress {
        unit: usize,
        text: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Created { unit: usize, id: String },
    Started { unit: usize },
    Restarted { unit: usize },
    Removed { unit: usize },
    DockerFailed { unit: usize, error: String },
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub units: Vec<Unit>,
    pub status: Status,
    pub reason: Option<String>,
    batch: usize,
    image: Option<String>,
    health_timeout: Duration,
    drain_timeout: Option<Duration>,
    /// Index of the first unit of the current batch.
    cursor: usize,
    failed: bool,
}

impl Plan {
    pub fn new(
        units: Vec<Unit>,
        batch: usize,
        image: Option<String>,
        health_timeout: Duration,
        drain_timeout: Option<Duration>,
    ) -> Plan {
        Plan {
            units,
            status: Status::Queued,
            reason: None,
            batch: batch.max(1),
            image,
            health_timeout,
            drain_timeout,
            cursor: 0,
            failed: false,
        }
    }

    fn batch_range(&self) -> std::ops::Range<usize> {
        self.cursor..(self.cursor + self.batch).min(self.units.len())
    }

    /// Containers restarted so far (restart units that were not skipped).
    pub fn restarted(&self) -> usize {
        self.units
            .iter()
            .filter(|u| u.restart && u.phase == Phase::Done && !u.skipped)
            .count()
    }

    /// Applies an engine result, then advances.
    pub fn on_event(&mut self, ev: Event, snap: &Snapshot, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match ev {
            Event::Created { unit, id } => {
                let u = &mut self.units[unit];
                u.new = Some(id.clone());
                if u.phase == Phase::Failed {
                    // Failed while it was being created: remove it at once.
                    u.removing = true;
                    out.push(Action::StopRemove {
                        unit,
                        id,
                        timeout: STOP_CUT,
                    });
                } else {
                    u.enter(Phase::Starting, now);
                    out.push(Action::Start { unit, id });
                }
            }
            Event::Started { unit } => {
                let u = &mut self.units[unit];
                if u.phase == Phase::Starting {
                    u.enter(Phase::WaitingHealthy, now);
                }
            }
            Event::Restarted { unit } => {
                let u = &mut self.units[unit];
                if u.phase == Phase::Restarting {
                    u.enter(Phase::WaitingHealthy, now);
                    let old = u.old.clone().unwrap_or_default();
                    out.push(Action::Progress {
                        unit,
                        text: format!("waiting for {} to be ready", name_of(snap, &old)),
                    });
                }
            }
            Event::Removed { unit } => {
                let u = &mut self.units[unit];
                if u.phase == Phase::Stopping {
                    u.phase = Phase::Done;
                }
                u.removing = false;
            }
            Event::DockerFailed { unit, error } => out.extend(self.fail(unit, error)),
        }
        out.extend(self.advance(snap, now));
        out
    }

    /// Moves every unit of the current batch as far as the published states
    /// and the clock allow.
    pub fn advance(&mut self, snap: &Snapshot, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.status.is_final() {
            return out;
        }
        loop {
            for i in self.batch_range() {
                out.extend(self.step(i, snap, now));
            }
            let range = self.batch_range();
            if !self.units[range.clone()].iter().all(Unit::settled) {
                break;
            }
            if self.failed || range.end >= self.units.len() {
                self.finish();
                break;
            }
            self.cursor = range.end;
        }
        self.status = self.current_status();
        out
    }

    fn step(&mut self, i: usize, snap: &Snapshot, now: Instant) -> Vec<Action> {
        match self.units[i].phase {
            Phase::Pending if self.failed => {
                self.units[i].phase = Phase::Failed;
                Vec::new()
            }
            Phase::Pending => self.begin(i, snap, now),
            Phase::WaitingHealthy if self.units[i].restart => self.wait_restarted(i, snap, now),
            Phase::WaitingHealthy => self.wait_new(i, snap, now),
            Phase::Draining => self.wait_drained(i, snap, now),
            _ => Vec::new(),
        }
    }

    /// A unit's first step: create its new replica, or drain its old one.
    fn begin(&mut self, i: usize, snap: &Snapshot, now: Instant) -> Vec<Action> {
        let image = self.image.clone();
        let u = &mut self.units[i];
        if u.restart {
            return restart_begin(i, u, snap, now);
        }
        match (&u.template, &u.old) {
            (Some(t), _) => {
                let template = t.clone();
                u.enter(Phase::Creating, now);
                vec![Action::Create {
                    unit: i,
                    template,
                    image,
                }]
            }
            (None, Some(old)) => {
                let old = old.clone();
                u.enter(Phase::Draining, now);
                let text = format!("draining {}", name_of(snap, &old));
                vec![
                    Action::Drain { id: old },
                    Action::Progress { unit: i, text },
                ]
            }
            (None, None) => {
                u.phase = Phase::Done;
                Vec::new()
            }
        }
    }

    /// A new replica: Ready switches the old one out; an exit or the health
    /// timeout fails the unit.
    fn wait_new(&mut self, i: usize, snap: &Snapshot, now: Instant) -> Vec<Action> {
        let u = &mut self.units[i];
        let new = u.new.clone().unwrap_or_default();
        // A routed replica by its backend (berth's own checks count); any
        // other by its container (Docker's health, or running).
        let b = snap.backends.get(&new);
        let c = snap.containers.get(&new);
        let detail = match b {
            Some(b) => b.check.clone().or_else(|| b.health.clone()),
            None => c.and_then(|c| c.health.clone()),
        };
        if let Some(d) = detail {
            u.detail = d;
        }
        let status = b
            .map(|b| b.status.as_str())
            .or(c.map(|c| c.status.as_str()));
        match b.map(|b| b.state).or(c.map(|c| c.state)) {
            Some(BackendState::Ready) => {
                let name = name_of(snap, &new);
                match u.old.clone() {
                    Some(old) => {
                        u.enter(Phase::Draining, now);
                        vec![
                            Action::Progress {
                                unit: i,
                                text: format!(
                                    "switching: {name} is ready, draining {}",
                                    name_of(snap, &old)
                                ),
                            },
                            Action::Drain { id: old },
                        ]
                    }
                    None => {
                        u.phase = Phase::Done;
                        vec![Action::Progress {
                            unit: i,
                            text: format!("{name} is ready"),
                        }]
                    }
                }
            }
            // "created" is a container the engine has not started yet.
            Some(BackendState::Stopped) if matches!(status, Some("exited" | "dead")) => {
                let code = c
                    .and_then(|c| c.exit_code)
                    .map(|n| format!(" with code {n}"))
                    .unwrap_or_default();
                let why = format!("{} exited{code} before becoming ready", name_of(snap, &new));
                self.fail(i, why)
            }
            _ if u.elapsed(now) > self.health_timeout => {
                let detail = if u.detail.is_empty() {
                    "no health result".to_string()
                } else {
                    u.detail.clone()
                };
                let why = format!(
                    "{} not ready after {:?} (last health: {detail})",
                    name_of(snap, &new),
                    self.health_timeout
                );
                self.fail(i, why)
            }
            _ => Vec::new(),
        }
    }

    /// A restarted container: its new run Ready, or it exited, went away or
    /// timed out.
    fn wait_restarted(&mut self, i: usize, snap: &Snapshot, now: Instant) -> Vec<Action> {
        let u = &mut self.units[i];
        let id = u.old.clone().unwrap_or_default();
        let name = name_of(snap, &id);
        let new_run = |c: &crate::plan::ContainerInfo| c.started_at != u.run;
        let why = match snap.containers.get(&id) {
            Some(c) if new_run(c) && c.state == BackendState::Ready => {
                u.phase = Phase::Done;
                return vec![Action::Progress {
                    unit: i,
                    text: format!("{name} is ready"),
                }];
            }
            Some(c) if new_run(c) && c.status == "exited" => {
                format!("{name} exited after its restart")
            }
            None => format!("{name} was removed during its restart"),
            _ if u.elapsed(now) >= self.health_timeout => {
                let last = snap
                    .backends
                    .get(&id)
                    .and_then(|b| b.check.clone().or_else(|| b.health.clone()))
                    .map(|h| format!(" (last health: {h})"))
                    .unwrap_or_default();
                format!(
                    "{name} was not ready {:?} after its restart{last}",
                    self.health_timeout
                )
            }
            _ => return Vec::new(),
        };
        self.fail(i, why)
    }

    /// An old replica being drained: once out of rotation with nothing in
    /// flight (or the drain timeout passed), it is restarted or removed.
    fn wait_drained(&mut self, i: usize, snap: &Snapshot, now: Instant) -> Vec<Action> {
        let drain_timeout = self.drain_timeout;
        let u = &mut self.units[i];
        let old = u.old.clone().unwrap_or_default();
        let b = snap.backends.get(&old);
        let out_of_rotation =
            b.is_none_or(|b| matches!(b.state, BackendState::Draining | BackendState::Stopped));
        let inflight = b.map_or(0, |b| {
            b.stats.inflight.load(std::sync::atomic::Ordering::Relaxed)
        });
        let limit = drain_timeout
            .or(b.map(|b| b.drain_timeout))
            .unwrap_or(crate::labels::DEFAULT_DRAIN_TIMEOUT);
        let timed_out = u.elapsed(now) >= limit;
        // A retired replica is stopped only once out of rotation. A restart
        // goes ahead at the drain timeout whatever the state shows: the
        // container may have been restarted by someone else meanwhile (a new
        // run is never draining).
        let drained = if u.restart {
            let out = b.is_none_or(|b| b.state != BackendState::Ready);
            (out && inflight == 0) || timed_out
        } else {
            out_of_rotation && (inflight == 0 || timed_out)
        };
        if !drained {
            return Vec::new();
        }
        let name = name_of(snap, &old);
        let mut out = Vec::new();
        if u.restart {
            if inflight > 0 {
                out.push(Action::Progress {
                    unit: i,
                    text: format!("{name}: drain timeout with {inflight} requests open"),
                });
            }
            u.enter(Phase::Restarting, now);
            out.push(Action::Progress {
                unit: i,
                text: format!("restarting {name}"),
            });
            out.push(Action::Restart { unit: i, id: old });
            return out;
        }
        let text = if inflight == 0 {
            format!("{name} drained, stopping it")
        } else {
            format!("{name} still had {inflight} requests after {limit:?}: stopping it")
        };
        out.push(Action::Progress { unit: i, text });
        out.push(Action::StopRemove {
            unit: i,
            id: old,
            timeout: if inflight == 0 { STOP_GRACE } else { STOP_CUT },
        });
        u.phase = Phase::Stopping;
        out
    }

    /// A unit failed: its new replica (if any) goes, a drained container that
    /// was not restarted comes back, old ones keep serving, and units not yet
    /// switched in this batch are called off.
    fn fail(&mut self, unit: usize, reason: String) -> Vec<Action> {
        let mut out = vec![Action::Progress {
            unit,
            text: format!("failed: {reason}"),
        }];
        if self.reason.is_none() {
            self.reason = Some(reason);
        }
        self.failed = true;
        for i in self.batch_range() {
            let u = &mut self.units[i];
            let failable = matches!(
                u.phase,
                Phase::Pending
                    | Phase::Creating
                    | Phase::Starting
                    | Phase::Restarting
                    | Phase::WaitingHealthy
            );
            if !failable {
                continue;
            }
            if u.phase == Phase::Restarting && u.drained {
                out.push(Action::Undrain {
                    id: u.old.clone().unwrap_or_default(),
                });
            }
            u.phase = Phase::Failed;
            if let Some(id) = u.new.clone() {
                u.removing = true;
                out.push(Action::StopRemove {
                    unit: i,
                    id,
                    timeout: STOP_CUT,
                });
            }
        }
        out
    }

    fn finish(&mut self) {
        let changed_something = self
            .units
            .iter()
            .any(|u| u.restart || (u.phase == Phase::Done && u.template.is_some()));
        self.status = if !self.failed {
            Status::Completed
        } else if changed_something {
            Status::Failed
        } else {
            Status::RolledBack
        };
    }

    fn current_status(&self) -> Status {
        // Final, or failing while a new replica is removed: stays as it was.
        if self.status.is_final() || self.failed {
            return self.status;
        }
        self.units[self.batch_range()]
            .iter()
            .map(|u| match u.phase {
                Phase::Pending | Phase::Creating | Phase::Starting | Phase::Restarting => {
                    Status::Starting
                }
                Phase::WaitingHealthy => Status::WaitingHealthy,
                Phase::Draining | Phase::Stopping => Status::Draining,
                Phase::Done | Phase::Failed => Status::Switching,
            })
            .min()
            .unwrap_or(Status::Starting)
    }
}

/// A restart unit's first step, with the container as it is now (not as it
/// was when the restart began): skip it if it is gone or stopped, drain it
/// if berth routes it, else restart it at once.
fn restart_begin(i: usize, u: &mut Unit, snap: &Snapshot, now: Instant) -> Vec<Action> {
    let id = u.old.clone().unwrap_or_default();
    let name = name_of(snap, &id);
    let skip = |u: &mut Unit, text: String| {
        u.phase = Phase::Done;
        u.skipped = true;
        vec![Action::Progress { unit: i, text }]
    };
    let Some(c) = snap.containers.get(&id) else {
        return skip(u, format!("{name} is gone: skipped"));
    };
    if c.status != "running" {
        return skip(u, format!("{name} is {}: skipped", c.status));
    }
    u.run = c.started_at.clone();
    if c.routed {
        u.drained = true;
        u.enter(Phase::Draining, now);
        return vec![
            Action::Progress {
                unit: i,
                text: format!("draining {name}"),
            },
            Action::Drain { id },
        ];
    }
    u.enter(Phase::Restarting, now);
    vec![
        Action::Progress {
            unit: i,
            text: format!("restarting {name}"),
        },
        Action::Restart { unit: i, id },
    ]
}

/// A container's name for progress lines, or its short id once it is gone.
fn name_of(snap: &Snapshot, id: &str) -> String {
    snap.backends
        .get(id)
        .map(|b| b.name.clone())
        .or_else(|| snap.containers.get(id).map(|c| c.name.clone()))
        .unwrap_or_else(|| short_id(id).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{BackendInfo, ContainerInfo};
    use std::sync::atomic::Ordering;

    fn info(id: &str, state: BackendState) -> BackendInfo {
        BackendInfo::for_test(id, &format!("{id}-name"), "p/web", state)
    }

    /// A snapshot with these routed containers.
    fn world(list: &[(&str, BackendState)]) -> Snapshot {
        let mut s = Snapshot::default();
        for (id, state) in list {
            s.backends.insert(id.to_string(), info(id, *state));
        }
        s
    }

    fn kinds(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter(|a| !matches!(a, Action::Progress { .. }))
            .map(|a| match a {
                Action::Create { template, .. } => format!("create from {template}"),
                Action::Start { id, .. } => format!("start {id}"),
                Action::Drain { id } => format!("drain {id}"),
                Action::Undrain { id } => format!("undrain {id}"),
                Action::Restart { id, .. } => format!("restart {id}"),
                Action::StopRemove { id, .. } => format!("remove {id}"),
                Action::Progress { .. } => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn rollout_replaces_one_replica_at_a_time() {
        let t0 = Instant::now();
        let mut p = Plan::new(
            vec![Unit::replace("a"), Unit::replace("b")],
            1,
            Some("img:2".into()),
            Duration::from_secs(60),
            None,
        );
        let mut w = world(&[("a", BackendState::Ready), ("b", BackendState::Ready)]);
        assert_eq!(kinds(&p.advance(&w, t0)), vec!["create from a"]);
        assert_eq!(p.status, Status::Starting);
        let acts = p.on_event(
            Event::Created {
                unit: 0,
                id: "a2".into(),
            },
            &w,
            t0,
        );
        assert_eq!(kinds(&acts), vec!["start a2"]);
        p.on_event(Event::Started { unit: 0 }, &w, t0);
        assert_eq!(p.status, Status::WaitingHealthy);
        w.backends
            .insert("a2".into(), info("a2", BackendState::Starting));
        assert!(kinds(&p.advance(&w, t0 + Duration::from_secs(1))).is_empty());
        w.backends
            .insert("a2".into(), info("a2", BackendState::Ready));
        assert_eq!(
            kinds(&p.advance(&w, t0 + Duration::from_secs(2))),
            vec!["drain a"]
        );
        assert_eq!(p.status, Status::Draining);
        // Still in rotation in the published snapshot: wait for it to be out.
        assert!(kinds(&p.advance(&w, t0 + Duration::from_secs(2))).is_empty());
        w.backends
            .insert("a".into(), info("a", BackendState::Draining));
        w.backends["a"].stats.inflight.store(2, Ordering::Relaxed);
        assert!(
            kinds(&p.advance(&w, t0 + Duration::from_secs(3))).is_empty(),
            "requests in flight"
        );
        w.backends["a"].stats.inflight.store(0, Ordering::Relaxed);
        let acts = p.advance(&w, t0 + Duration::from_secs(4));
        assert_eq!(kinds(&acts), vec!["remove a"]);
        assert!(acts.contains(&Action::StopRemove {
            unit: 0,
            id: "a".into(),
            timeout: STOP_GRACE
        }));
        // The next batch starts only once the old one is gone.
        let acts = p.on_event(Event::Removed { unit: 0 }, &w, t0 + Duration::from_secs(5));
        assert_eq!(kinds(&acts), vec!["create from b"]);
        p.on_event(
            Event::Created {
                unit: 1,
                id: "b2".into(),
            },
            &w,
            t0,
        );
        p.on_event(Event::Started { unit: 1 }, &w, t0);
        w.backends
            .insert("b2".into(), info("b2", BackendState::Ready));
        assert_eq!(
            kinds(&p.advance(&w, t0 + Duration::from_secs(6))),
            vec!["drain b"]
        );
        w.backends.remove("b");
        assert_eq!(
            kinds(&p.advance(&w, t0 + Duration::from_secs(6))),
            vec!["remove b"]
        );
        p.on_event(Event::Removed { unit: 1 }, &w, t0 + Duration::from_secs(7));
        assert_eq!(p.status, Status::Completed);
        assert_eq!(p.reason, None);
    }

    #[test]
    fn health_timeout_rolls_back_and_keeps_the_old_replicas() {
        let t0 = Instant::now();
        let mut p = Plan::new(
            vec![Unit::replace("a"), Unit::replace("b")],
            1,
            None,
            Duration::from_secs(10),
            None,
        );
        let mut w = world(&[("a", BackendState::Ready), ("b", BackendState::Ready)]);
        p.advance(&w, t0);
        p.on_event(
            Event::Created {
                unit: 0,
                id: "a2".into(),
            },
            &w,
            t0,
        );
        p.on_event(Event::Started { unit: 0 }, &w, t0);
        let mut starting = info("a2", BackendState::Starting);
        starting.check = Some("HTTP 500".into());
        w.backends.insert("a2".into(), starting);
        assert!(kinds(&p.advance(&w, t0 + Duration::from_secs(9))).is_empty());
        let acts = p.advance(&w, t0 + Duration::from_secs(11));
        assert_eq!(
            kinds(&acts),
            vec!["remove a2"],
            "the old replica is never drained"
        );
        assert_eq!(
            p.status,
            Status::WaitingHealthy,
            "not final until the new one is removed"
        );
        p.on_event(Event::Removed { unit: 0 }, &w, t0 + Duration::from_secs(12));
        assert_eq!(p.status, Status::RolledBack);
        let reason = p.reason.clone().unwrap();
        assert!(
            reason.contains("a2-name not ready after 10s") && reason.contains("HTTP 500"),
            "{reason}"
        );
        assert_eq!(
            p.units[1].phase,
            Phase::Pending,
            "the second replica is not touched"
        );
    }

    #[test]
    fn failure_in_a_later_batch_is_failed_not_rolled_back() {
        let t0 = Instant::now();
        let mut p = Plan::new(
            vec![Unit::replace("a"), Unit::replace("b")],
            1,
            None,
            Duration::from_secs(10),
            None,
        );
        let mut w = world(&[("a", BackendState::Ready), ("b", BackendState::Ready)]);
        p.advance(&w, t0);
        p.on_event(
            Event::Created {
                unit: 0,
                id: "a2".into(),
            },
            &w,
            t0,
        );
        p.on_event(Event::Started { unit: 0 }, &w, t0);
        w.backends
            .insert("a2".into(), info("a2", BackendState::Ready));
        w.backends
            .insert("a".into(), info("a", BackendState::Draining));
        p.advance(&w, t0);
        p.advance(&w, t0);
        p.on_event(Event::Removed { unit: 0 }, &w, t0);
        let acts = p.on_event(
            Event::DockerFailed {
                unit: 1,
                error: "no such image".into(),
            },
            &w,
            t0,
        );
        assert!(kinds(&acts).is_empty());
        assert_eq!(p.status, Status::Failed);
        assert!(p.reason.as_deref().unwrap().contains("no such image"));
    }

    #[test]
    fn drain_timeout_cuts_remaining_requests() {
        let t0 = Instant::now();
        let mut p = Plan::new(
            vec![Unit::retire("a")],
            1,
            None,
            Duration::from_secs(10),
            Some(Duration::from_secs(5)),
        );
        let w = world(&[("a", BackendState::Draining)]);
        assert_eq!(kinds(&p.advance(&w, t0)), vec!["drain a"]);
        w.backends["a"].stats.inflight.store(1, Ordering::Relaxed);
        assert!(kinds(&p.advance(&w, t0 + Duration::from_secs(4))).is_empty());
        let acts = p.advance(&w, t0 + Duration::from_secs(5));
        assert!(acts.contains(&Action::StopRemove {
            unit: 0,
            id: "a".into(),
            timeout: STOP_CUT
        }));
        p.on_event(Event::Removed { unit: 0 }, &w, t0 + Duration::from_secs(6));
        assert_eq!(p.status, Status::Completed);
    }

    #[test]
    fn scale_up_adds_replicas_in_one_batch() {
        let t0 = Instant::now();
        let mut p = Plan::new(
            vec![Unit::add("a"), Unit::add("a")],
            2,
            None,
            Duration::from_secs(10),
            None,
        );
        let mut w = world(&[("a", BackendState::Ready)]);
        assert_eq!(
            kinds(&p.advance(&w, t0)),
            vec!["create from a", "create from a"]
        );
        for (unit, id) in [(0, "n1"), (1, "n2")] {
            p.on_event(
                Event::Created {
                    unit,
                    id: id.into(),
                },
                &w,
                t0,
            );
            p.on_event(Event::Started { unit }, &w, t0);
            w.backends.insert(id.into(), info(id, BackendState::Ready));
        }
        p.advance(&w, t0);
        assert_eq!(p.status, Status::Completed);
    }

    #[test]
    fn a_new_replica_that_exits_fails_at_once() {
        let t0 = Instant::now();
        let mut p = Plan::new(
            vec![Unit::replace("a")],
            1,
            None,
            Duration::from_secs(60),
            None,
        );
        let mut w = world(&[("a", BackendState::Ready)]);
        p.advance(&w, t0);
        p.on_event(
            Event::Created {
                unit: 0,
                id: "a2".into(),
            },
            &w,
            t0,
        );
        p.on_event(Event::Started { unit: 0 }, &w, t0);
        let mut created = info("a2", BackendState::Stopped);
        created.status = "created".into();
        w.backends.insert("a2".into(), created);
        assert!(
            kinds(&p.advance(&w, t0)).is_empty(),
            "created, not started yet: wait"
        );
        let mut exited = info("a2", BackendState::Stopped);
        exited.status = "exited".into();
        w.backends.insert("a2".into(), exited);
        assert_eq!(
            kinds(&p.advance(&w, t0 + Duration::from_secs(1))),
            vec!["remove a2"]
        );
        assert!(p
            .reason
            .as_deref()
            .unwrap()
            .contains("exited before becoming ready"));
    }

    fn container(
        id: &str,
        status: &str,
        run: &str,
        state: BackendState,
        routed: bool,
    ) -> ContainerInfo {
        ContainerInfo {
            id: id.into(),
            name: format!("{id}-name"),
            image: "img".into(),
            project: Some("p".into()),
            service: Some("web".into()),
            status: status.into(),
            health: None,
            state,
            routed,
            ports: vec![],
            networks: Default::default(),
            started_at: run.into(),
            config_hash: None,
            exit_code: None,
            canary: None,
            run: Default::default(),
            restarts: 0,
        }
    }

    fn restart_plan(ids: &[&str]) -> Plan {
        Plan::new(
            ids.iter().map(|id| Unit::restart(id)).collect(),
            1,
            None,
            Duration::from_secs(10),
            None,
        )
    }

    #[test]
    fn a_rolling_restart_drains_restarts_and_waits_for_the_new_run() {
        let t0 = Instant::now();
        let mut p = restart_plan(&["a", "b", "gone"]);
        let mut w = world(&[("a", BackendState::Ready)]);
        w.containers.insert(
            "a".into(),
            container("a", "running", "r1", BackendState::Ready, true),
        );
        w.containers.insert(
            "b".into(),
            container("b", "running", "r1", BackendState::Ready, false),
        );
        assert_eq!(
            kinds(&p.advance(&w, t0)),
            vec!["drain a"],
            "routed: drained first"
        );
        assert_eq!(p.status, Status::Draining);
        assert!(kinds(&p.advance(&w, t0)).is_empty(), "still in rotation");
        w.backends
            .insert("a".into(), info("a", BackendState::Draining));
        assert_eq!(kinds(&p.advance(&w, t0)), vec!["restart a"]);
        assert_eq!(p.status, Status::Starting);
        p.on_event(Event::Restarted { unit: 0 }, &w, t0);
        assert_eq!(
            p.status,
            Status::WaitingHealthy,
            "the old run does not count"
        );
        w.containers.insert(
            "a".into(),
            container("a", "running", "r2", BackendState::Starting, true),
        );
        assert!(
            kinds(&p.advance(&w, t0)).is_empty(),
            "the new run is not ready yet"
        );
        w.containers.insert(
            "a".into(),
            container("a", "running", "r2", BackendState::Ready, true),
        );
        assert_eq!(
            kinds(&p.advance(&w, t0)),
            vec!["restart b"],
            "a is ready; b is not routed: restarted at once"
        );
        w.containers.insert(
            "b".into(),
            container("b", "running", "r2", BackendState::Ready, false),
        );
        let acts = p.on_event(Event::Restarted { unit: 1 }, &w, t0);
        assert!(kinds(&acts).is_empty());
        assert!(acts.contains(&Action::Progress {
            unit: 2,
            text: "gone is gone: skipped".into()
        }));
        assert_eq!(p.status, Status::Completed);
        assert_eq!(p.restarted(), 2);
    }

    #[test]
    fn a_restart_the_engine_refuses_puts_the_container_back_and_fails() {
        let t0 = Instant::now();
        let mut p = restart_plan(&["a", "b"]);
        let mut w = world(&[("a", BackendState::Draining)]);
        w.containers.insert(
            "a".into(),
            container("a", "running", "r1", BackendState::Draining, true),
        );
        assert_eq!(kinds(&p.advance(&w, t0)), vec!["drain a"]);
        assert_eq!(kinds(&p.advance(&w, t0)), vec!["restart a"]);
        let acts = p.on_event(
            Event::DockerFailed {
                unit: 0,
                error: "restart a-name: no".into(),
            },
            &w,
            t0,
        );
        assert_eq!(kinds(&acts), vec!["undrain a"]);
        assert_eq!(p.status, Status::Failed, "a restart is never rolled back");
        assert_eq!(p.units[1].phase, Phase::Pending, "b is not touched");
        assert_eq!(p.restarted(), 0);
    }

    #[test]
    fn a_restart_goes_ahead_at_the_drain_timeout_even_if_the_drain_never_shows() {
        let t0 = Instant::now();
        let mut p = restart_plan(&["a"]);
        // Restarted by someone else while berth drained it: a new run, Ready.
        let mut w = world(&[("a", BackendState::Ready)]);
        w.containers.insert(
            "a".into(),
            container("a", "running", "r1", BackendState::Ready, true),
        );
        assert_eq!(kinds(&p.advance(&w, t0)), vec!["drain a"]);
        assert!(kinds(&p.advance(&w, t0 + Duration::from_secs(29))).is_empty());
        assert_eq!(
            kinds(&p.advance(&w, t0 + Duration::from_secs(30))),
            vec!["restart a"],
            "the label's drain timeout (30s) bounds the wait"
        );
    }

    #[test]
    fn a_restarted_container_that_never_gets_ready_fails_the_restart() {
        let t0 = Instant::now();
        let mut p = restart_plan(&["a"]);
        let mut w = world(&[]);
        w.containers.insert(
            "a".into(),
            container("a", "running", "r1", BackendState::Ready, false),
        );
        assert_eq!(kinds(&p.advance(&w, t0)), vec!["restart a"]);
        p.on_event(Event::Restarted { unit: 0 }, &w, t0);
        w.containers.insert(
            "a".into(),
            container("a", "running", "r2", BackendState::Starting, false),
        );
        assert!(kinds(&p.advance(&w, t0 + Duration::from_secs(9))).is_empty());
        assert!(kinds(&p.advance(&w, t0 + Duration::from_secs(10))).is_empty());
        assert_eq!(p.status, Status::Failed);
        let reason = p.reason.clone().unwrap();
        assert!(
            reason.contains("a-name was not ready 10s after its restart"),
            "{reason}"
        );

        let mut p = restart_plan(&["a"]);
        w.containers.insert(
            "a".into(),
            container("a", "running", "r1", BackendState::Ready, false),
        );
        p.advance(&w, t0);
        p.on_event(Event::Restarted { unit: 0 }, &w, t0);
        w.containers.insert(
            "a".into(),
            container("a", "exited", "r2", BackendState::Stopped, false),
        );
        p.advance(&w, t0);
        assert!(p.reason.unwrap().contains("exited after its restart"));
    }
}
