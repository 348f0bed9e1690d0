//! The rollout and scale planner: a pure state machine. Events (Docker calls
//! done, the published backend states, the time) go in; actions (create, start,
//! drain, stop and remove a container, report progress) come out. The
//! controller in `deploy/mod.rs` performs the actions and feeds the results back.
//!
//! Both rollouts and scaling are lists of units: a unit may make a new replica
//! (cloned from a template, optionally with another image), retire an old one,
//! or both: a new replica first, and the old one is drained only once the new
//! one is Ready.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use crate::plan::BackendInfo;
use crate::world::BackendState;

/// How long an old replica gets to exit after its in-flight requests finished.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// ... and after its drain timed out with requests still open: those are cut.
const STOP_CUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Queued,
    Starting,
    WaitingHealthy,
    Switching,
    Draining,
    Completed,
    Failed,
    RolledBack,
}

impl Status {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Completed | Status::Failed | Status::RolledBack
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Queued => "queued",
            Status::Starting => "starting",
            Status::WaitingHealthy => "waiting_healthy",
            Status::Switching => "switching",
            Status::Draining => "draining",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::RolledBack => "rolled_back",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Creating,
    Starting,
    WaitingHealthy,
    Draining,
    Stopping,
    Done,
    Failed,
}

#[derive(Debug, Clone)]
pub struct Unit {
    /// The replica this unit retires, if any.
    pub old: Option<String>,
    /// The container to clone for a new replica, if one is made.
    pub template: Option<String>,
    pub new: Option<String>,
    pub phase: Phase,
    since: Instant,
    /// The last health word or check result of the new replica.
    detail: String,
    /// A failed unit's new replica is being removed.
    removing: bool,
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
    fn new(old: Option<&str>, template: Option<&str>) -> Unit {
        Unit {
            old: old.map(str::to_string),
            template: template.map(str::to_string),
            new: None,
            phase: Phase::Pending,
            since: Instant::now(),
            detail: String::new(),
            removing: false,
        }
    }
    fn settled(&self) -> bool {
        self.phase == Phase::Done || (self.phase == Phase::Failed && !self.removing)
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

    /// Applies a Docker result, then advances.
    pub fn on_event(
        &mut self,
        ev: Event,
        backends: &BTreeMap<String, BackendInfo>,
        now: Instant,
    ) -> Vec<Action> {
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
                    u.phase = Phase::Starting;
                    u.since = now;
                    out.push(Action::Start { unit, id });
                }
            }
            Event::Started { unit } => {
                let u = &mut self.units[unit];
                if u.phase == Phase::Starting {
                    u.phase = Phase::WaitingHealthy;
                    u.since = now;
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
        out.extend(self.advance(backends, now));
        out
    }

    /// Moves every unit of the current batch as far as the published states
    /// and the clock allow.
    pub fn advance(
        &mut self,
        backends: &BTreeMap<String, BackendInfo>,
        now: Instant,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if self.status.is_final() {
            return out;
        }
        loop {
            for i in self.batch_range() {
                out.extend(self.step(i, backends, now));
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

    fn step(
        &mut self,
        i: usize,
        backends: &BTreeMap<String, BackendInfo>,
        now: Instant,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let u = &mut self.units[i];
        match u.phase {
            Phase::Pending if self.failed => {
                u.phase = Phase::Failed;
            }
            Phase::Pending => match (&u.template, &u.old) {
                (Some(t), _) => {
                    out.push(Action::Create {
                        unit: i,
                        template: t.clone(),
                        image: self.image.clone(),
                    });
                    u.phase = Phase::Creating;
                    u.since = now;
                }
                (None, Some(old)) => {
                    out.push(Action::Drain { id: old.clone() });
                    out.push(Action::Progress {
                        unit: i,
                        text: format!("draining {}", name_of(backends, old)),
                    });
                    u.phase = Phase::Draining;
                    u.since = now;
                }
                (None, None) => u.phase = Phase::Done,
            },
            Phase::WaitingHealthy => {
                let new = u.new.clone().unwrap_or_default();
                let b = backends.get(&new);
                if let Some(b) = b {
                    if let Some(d) = b.check.clone().or_else(|| b.health.clone()) {
                        u.detail = d;
                    }
                }
                match b.map(|b| b.state) {
                    Some(BackendState::Ready) => {
                        let name = name_of(backends, &new);
                        match u.old.clone() {
                            Some(old) => {
                                out.push(Action::Progress {
                                    unit: i,
                                    text: format!(
                                        "switching: {name} is ready, draining {}",
                                        name_of(backends, &old)
                                    ),
                                });
                                out.push(Action::Drain { id: old });
                                u.phase = Phase::Draining;
                                u.since = now;
                            }
                            None => {
                                out.push(Action::Progress {
                                    unit: i,
                                    text: format!("{name} is ready"),
                                });
                                u.phase = Phase::Done;
                            }
                        }
                    }
                    // "created" is a container the engine has not started yet.
                    Some(BackendState::Stopped)
                        if b.is_some_and(|b| matches!(b.status.as_str(), "exited" | "dead")) =>
                    {
                        let why =
                            format!("{} exited before becoming ready", name_of(backends, &new));
                        out.extend(self.fail(i, why));
                    }
                    _ if now.duration_since(u.since) > self.health_timeout => {
                        let detail = if u.detail.is_empty() {
                            "no health result".to_string()
                        } else {
                            u.detail.clone()
                        };
                        let why = format!(
                            "{} not ready after {:?} (last health: {detail})",
                            name_of(backends, &new),
                            self.health_timeout
                        );
                        out.extend(self.fail(i, why));
                    }
                    _ => {}
                }
            }
            Phase::Draining => {
                let old = u.old.clone().unwrap_or_default();
                let b = backends.get(&old);
                let out_of_rotation = b.is_none_or(|b| {
                    matches!(b.state, BackendState::Draining | BackendState::Stopped)
                });
                let inflight = b.map_or(0, |b| {
                    b.stats.inflight.load(std::sync::atomic::Ordering::Relaxed)
                });
                let limit = self
                    .drain_timeout
                    .or(b.map(|b| b.drain_timeout))
                    .unwrap_or(crate::labels::DEFAULT_DRAIN_TIMEOUT);
                let timed_out = now.duration_since(u.since) >= limit;
                if out_of_rotation && (inflight == 0 || timed_out) {
                    let text = if inflight == 0 {
                        format!("{} drained, stopping it", name_of(backends, &old))
                    } else {
                        format!(
                            "{} still had {inflight} requests after {limit:?}: stopping it",
                            name_of(backends, &old)
                        )
                    };
                    out.push(Action::Progress { unit: i, text });
                    out.push(Action::StopRemove {
                        unit: i,
                        id: old,
                        timeout: if inflight == 0 { STOP_GRACE } else { STOP_CUT },
                    });
                    u.phase = Phase::Stopping;
                }
            }
            _ => {}
        }
        out
    }

    /// A unit failed: its new replica (if any) goes, old ones keep serving,
    /// and units not yet switched in this batch are called off.
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
            if matches!(
                u.phase,
                Phase::Pending | Phase::Creating | Phase::Starting | Phase::WaitingHealthy
            ) {
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
        }
        out
    }

    fn finish(&mut self) {
        self.status = if !self.failed {
            Status::Completed
        } else if self
            .units
            .iter()
            .any(|u| u.phase == Phase::Done && u.template.is_some())
        {
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
                Phase::Pending | Phase::Creating | Phase::Starting => Status::Starting,
                Phase::WaitingHealthy => Status::WaitingHealthy,
                Phase::Draining | Phase::Stopping => Status::Draining,
                Phase::Done | Phase::Failed => Status::Switching,
            })
            .min()
            .unwrap_or(Status::Starting)
    }
}

fn name_of(backends: &BTreeMap<String, BackendInfo>, id: &str) -> String {
    backends
        .get(id)
        .map(|b| b.name.clone())
        .unwrap_or_else(|| id[..id.len().min(12)].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn info(id: &str, state: BackendState) -> BackendInfo {
        BackendInfo::for_test(id, &format!("{id}-name"), "p/web", state)
    }

    fn world(list: &[(&str, BackendState)]) -> BTreeMap<String, BackendInfo> {
        list.iter()
            .map(|(id, s)| (id.to_string(), info(id, *s)))
            .collect()
    }

    fn kinds(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter(|a| !matches!(a, Action::Progress { .. }))
            .map(|a| match a {
                Action::Create { template, .. } => format!("create from {template}"),
                Action::Start { id, .. } => format!("start {id}"),
                Action::Drain { id } => format!("drain {id}"),
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
        w.insert("a2".into(), info("a2", BackendState::Starting));
        assert!(kinds(&p.advance(&w, t0 + Duration::from_secs(1))).is_empty());
        w.insert("a2".into(), info("a2", BackendState::Ready));
        assert_eq!(
            kinds(&p.advance(&w, t0 + Duration::from_secs(2))),
            vec!["drain a"]
        );
        assert_eq!(p.status, Status::Draining);
        // Still in rotation in the published snapshot: wait for it to be out.
        assert!(kinds(&p.advance(&w, t0 + Duration::from_secs(2))).is_empty());
        w.insert("a".into(), info("a", BackendState::Draining));
        w["a"].stats.inflight.store(2, Ordering::Relaxed);
        assert!(
            kinds(&p.advance(&w, t0 + Duration::from_secs(3))).is_empty(),
            "requests in flight"
        );
        w["a"].stats.inflight.store(0, Ordering::Relaxed);
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
        w.insert("b2".into(), info("b2", BackendState::Ready));
        assert_eq!(
            kinds(&p.advance(&w, t0 + Duration::from_secs(6))),
            vec!["drain b"]
        );
        w.remove("b");
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
        w.insert("a2".into(), starting);
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
        w.insert("a2".into(), info("a2", BackendState::Ready));
        w.insert("a".into(), info("a", BackendState::Draining));
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
        w["a"].stats.inflight.store(1, Ordering::Relaxed);
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
            w.insert(id.into(), info(id, BackendState::Ready));
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
        w.insert("a2".into(), created);
        assert!(
            kinds(&p.advance(&w, t0)).is_empty(),
            "created, not started yet: wait"
        );
        let mut exited = info("a2", BackendState::Stopped);
        exited.status = "exited".into();
        w.insert("a2".into(), exited);
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
}
