//! A run that a killed berth left unfinished. Before each step the controller
//! saves the run as an [`Operation`] (`state::OPERATION`), and each new
//! replica it creates carries the run's key and its unit as labels; at the
//! next start [`recover`] compares both with the world and decides: a rollout
//! that has switched no replica yet is rolled back, anything else carries on
//! from where the world is, so that the service ends on one version with the
//! replica count the run was for.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Action, Phase, Plan, Status, Unit};
use crate::plan::Snapshot;

/// What a saved run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Rollout,
    Scale,
    Restart,
}

/// A unit as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedUnit {
    pub old: Option<String>,
    pub template: Option<String>,
    pub new: Option<String>,
    pub restart: bool,
    pub phase: Phase,
    /// A restart unit: the run (`started_at`) it restarts.
    pub run: String,
    pub skipped: bool,
}

/// A run in progress, as saved before each of its steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    /// The deploy id: its history record.
    pub id: u64,
    /// What its new replicas carry as `io.berth.operation`.
    pub key: String,
    pub kind: OpKind,
    /// `project/service` (for a restart, the deployment).
    pub service: String,
    /// A scale run: the replica count asked for.
    pub replicas: Option<usize>,
    pub image: Option<String>,
    pub batch: usize,
    pub health_timeout: Duration,
    pub drain_timeout: Option<Duration>,
    pub status: Status,
    /// A unit failed: the rest is being called off.
    pub failed: bool,
    pub reason: Option<String>,
    pub units: Vec<SavedUnit>,
}

impl Operation {
    /// The run `id` about to drive `plan`.
    pub fn new(
        id: u64,
        key: String,
        kind: OpKind,
        service: String,
        replicas: Option<usize>,
        plan: &Plan,
    ) -> Operation {
        let mut op = Operation {
            id,
            key,
            kind,
            service,
            replicas,
            image: plan.image.clone(),
            batch: plan.batch,
            health_timeout: plan.health_timeout,
            drain_timeout: plan.drain_timeout,
            status: Status::Queued,
            failed: false,
            reason: None,
            units: Vec::new(),
        };
        op.update(plan);
        op
    }

    /// Where `plan` stands now.
    pub fn update(&mut self, plan: &Plan) {
        self.status = plan.status;
        self.failed = plan.failed;
        self.reason = plan.reason.clone();
        self.units = plan
            .units
            .iter()
            .map(|u| SavedUnit {
                old: u.old.clone(),
                template: u.template.clone(),
                new: u.new.clone(),
                restart: u.restart,
                phase: u.phase,
                run: u.run.clone(),
                skipped: u.skipped,
            })
            .collect();
    }
}

/// What becomes of an unfinished run.
#[derive(Debug)]
pub enum Recovery {
    /// A rollout that switched no replica yet: its new replicas are removed
    /// and its old ones (drained or not) take requests again, as before it.
    RollBack {
        remove: Vec<String>,
        undrain: Vec<String>,
    },
    /// Carried on from the world as it is: new replicas that no unit keeps
    /// are removed first, then `plan` runs, starting with `actions`.
    Resume {
        plan: Plan,
        remove: Vec<String>,
        actions: Vec<Action>,
    },
}

/// Decides about `op` from the world (`snap`) and the containers labelled
/// with its key (`clones`: id and unit). Pure.
pub fn recover(
    op: &Operation,
    snap: &Snapshot,
    clones: &[(String, usize)],
    now: Instant,
) -> Recovery {
    let running = |id: &str| {
        snap.containers
            .get(id)
            .is_some_and(|c| c.status == "running")
    };
    // Its new replicas: by label, and the ids it saved (should listing them
    // by label have failed).
    let mut news: Vec<(String, usize)> = clones.to_vec();
    for (i, u) in op.units.iter().enumerate() {
        if let Some(n) = &u.new {
            if snap.containers.contains_key(n) && !news.iter().any(|(id, _)| id == n) {
                news.push((n.clone(), i));
            }
        }
    }
    news.sort();

    if op.kind == OpKind::Rollout {
        let switched = op
            .units
            .iter()
            .any(|u| matches!(u.phase, Phase::Draining | Phase::Stopping | Phase::Done));
        let olds_serve = op
            .units
            .iter()
            .all(|u| u.old.as_deref().is_none_or(running));
        if !switched && olds_serve {
            return Recovery::RollBack {
                remove: news.into_iter().map(|(id, _)| id).collect(),
                undrain: op.units.iter().filter_map(|u| u.old.clone()).collect(),
            };
        }
    }

    // Each unit keeps at most one new replica, a running one; the rest go.
    let mut kept: Vec<Option<String>> = vec![None; op.units.len()];
    let mut remove = Vec::new();
    for (id, i) in news {
        let keep = op
            .units
            .get(i)
            .is_some_and(|u| u.template.is_some() && u.phase != Phase::Failed)
            && kept[i].is_none()
            && running(&id);
        if keep {
            kept[i] = Some(id);
        } else {
            remove.push(id);
        }
    }
    // A replica to clone when a unit's template is gone: a running one of
    // the service that no unit retires.
    let retired: Vec<&str> = op
        .units
        .iter()
        .filter(|u| u.template.is_none())
        .filter_map(|u| u.old.as_deref())
        .collect();
    let fallback = snap
        .backends
        .values()
        .filter(|b| b.service == op.service && b.status == "running")
        .filter(|b| !retired.contains(&b.id.as_str()))
        .min_by(|a, b| a.name.cmp(&b.name))
        .map(|b| b.id.clone());

    let mut actions = Vec::new();
    let units = op
        .units
        .iter()
        .enumerate()
        .map(|(i, saved)| {
            if saved.restart {
                resume_restart(i, saved, snap, now, &mut actions)
            } else {
                resume_replica(saved, kept[i].take(), snap, fallback.as_deref(), now)
            }
        })
        .collect();
    let mut plan = Plan::new(
        units,
        op.batch,
        op.image.clone(),
        op.health_timeout,
        op.drain_timeout,
    );
    if op.failed {
        plan.failed = true;
        plan.reason = op.reason.clone();
        plan.status = op.status;
    }
    // The batch of the first unit not settled: earlier ones are over.
    let first = plan.units.iter().position(|u| !u.settled()).unwrap_or(0);
    plan.cursor = first - first % plan.batch;
    Recovery::Resume {
        plan,
        remove,
        actions,
    }
}

/// A unit that makes and/or retires a replica, from its old replica and the
/// new one it keeps (`new`, running).
fn resume_replica(
    saved: &SavedUnit,
    new: Option<String>,
    snap: &Snapshot,
    fallback: Option<&str>,
    now: Instant,
) -> Unit {
    let mut u = Unit::new(saved.old.as_deref(), saved.template.as_deref());
    let exists = |id: &str| snap.containers.contains_key(id);
    let old_here = saved.old.as_deref().is_some_and(exists);
    if saved.phase == Phase::Failed {
        u.phase = Phase::Failed;
        return u;
    }
    match (new, old_here) {
        // The old one (running, drained or stopped) goes once the new one is
        // Ready again; an added replica is done once Ready.
        (Some(new), true) => {
            u.new = Some(new);
            u.enter(Phase::WaitingHealthy, now);
        }
        (Some(new), false) if saved.old.is_none() => {
            u.new = Some(new);
            u.enter(Phase::WaitingHealthy, now);
        }
        (Some(new), false) => {
            u.new = Some(new);
            u.phase = Phase::Done;
        }
        // Not begun, or its new replica did not survive: from the start.
        (None, true) => {}
        // Retired already.
        (None, false) if saved.template.is_none() => u.phase = Phase::Done,
        // Its replica is missing: a new one, from another if need be.
        (None, false) => {
            u.old = None;
            if !saved.template.as_deref().is_some_and(exists) {
                u.template = fallback.map(str::to_string).or(u.template);
            }
        }
    }
    u
}

/// A restart unit, from its container's run now and the run it restarts.
fn resume_restart(
    i: usize,
    saved: &SavedUnit,
    snap: &Snapshot,
    now: Instant,
    actions: &mut Vec<Action>,
) -> Unit {
    let id = saved.old.clone().unwrap_or_default();
    let mut u = Unit::restart(&id);
    u.run = saved.run.clone();
    let began = matches!(
        saved.phase,
        Phase::Draining | Phase::Restarting | Phase::WaitingHealthy
    );
    match snap.containers.get(&id) {
        _ if matches!(saved.phase, Phase::Done | Phase::Failed) => {
            u.phase = saved.phase;
            u.skipped = saved.skipped;
        }
        None => {
            u.phase = Phase::Done;
            u.skipped = true;
        }
        // Restarted: its new run must get Ready.
        Some(c) if began && !saved.run.is_empty() && c.started_at != saved.run => {
            u.enter(Phase::WaitingHealthy, now);
        }
        // Stopped by the restart that was cut short: started again.
        Some(c) if began && c.status != "running" => {
            u.enter(Phase::Restarting, now);
            actions.push(Action::Restart { unit: i, id });
        }
        // Not restarted yet: from the start (drained again if routed).
        Some(_) => {}
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{BackendInfo, ContainerInfo};
    use crate::world::BackendState;

    /// A container of service p/web: `id` with Docker status and run.
    fn c(id: &str, status: &str, run: &str) -> ContainerInfo {
        ContainerInfo {
            id: id.into(),
            name: format!("p-web-{id}"),
            image: "img".into(),
            project: Some("p".into()),
            service: Some("web".into()),
            status: status.into(),
            health: None,
            state: BackendState::Ready,
            routed: true,
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

    fn world(list: &[(&str, &str, &str)]) -> Snapshot {
        let mut s = Snapshot::default();
        for (id, status, run) in list {
            s.containers.insert(id.to_string(), c(id, status, run));
            let mut b =
                BackendInfo::for_test(id, &format!("p-web-{id}"), "p/web", BackendState::Ready);
            b.status = status.to_string();
            s.backends.insert(id.to_string(), b);
        }
        s
    }

    fn unit(old: Option<&str>, template: Option<&str>, phase: Phase) -> SavedUnit {
        SavedUnit {
            old: old.map(str::to_string),
            template: template.map(str::to_string),
            new: None,
            restart: false,
            phase,
            run: String::new(),
            skipped: false,
        }
    }

    fn replace(old: &str, phase: Phase, new: Option<&str>) -> SavedUnit {
        SavedUnit {
            new: new.map(str::to_string),
            ..unit(Some(old), Some(old), phase)
        }
    }

    fn restart(id: &str, phase: Phase, run: &str) -> SavedUnit {
        SavedUnit {
            restart: true,
            run: run.into(),
            ..unit(Some(id), None, phase)
        }
    }

    fn op(kind: OpKind, units: Vec<SavedUnit>) -> Operation {
        Operation {
            id: 4,
            key: "4@1700000000".into(),
            kind,
            service: "p/web".into(),
            replicas: None,
            image: Some("img:2".into()),
            batch: 1,
            health_timeout: Duration::from_secs(60),
            drain_timeout: None,
            status: Status::WaitingHealthy,
            failed: false,
            reason: None,
            units,
        }
    }

    /// A recovery in words: `roll back: remove [..] undrain [..]`, or
    /// `resume: remove [..] then [phase new template, ..] actions [..]`.
    fn said(r: &Recovery) -> String {
        match r {
            Recovery::RollBack { remove, undrain } => {
                format!("roll back: remove {remove:?} undrain {undrain:?}")
            }
            Recovery::Resume {
                plan,
                remove,
                actions,
            } => {
                let units: Vec<String> = plan
                    .units
                    .iter()
                    .map(|u| {
                        format!(
                            "{:?} {} {}",
                            u.phase,
                            u.new.as_deref().unwrap_or("-"),
                            u.template.as_deref().unwrap_or("-")
                        )
                    })
                    .collect();
                format!(
                    "resume: remove {remove:?} then {units:?} at {} actions {actions:?}",
                    plan.cursor
                )
            }
        }
    }

    #[test]
    fn an_unfinished_run_is_rolled_back_or_carried_on_from_the_world() {
        use Phase::*;
        let v1 = [
            ("a", "running", "r1"),
            ("b", "running", "r1"),
            ("c", "running", "r1"),
        ];
        let with = |extra: &[(&'static str, &'static str, &'static str)]| {
            let mut all: Vec<(&str, &str, &str)> = v1.to_vec();
            all.extend_from_slice(extra);
            all
        };
        let minus = |all: Vec<(&'static str, &'static str, &'static str)>, gone: &[&str]| {
            all.into_iter()
                .filter(|(id, _, _)| !gone.contains(id))
                .collect::<Vec<_>>()
        };
        #[allow(clippy::type_complexity)]
        let cases: Vec<(&str, Operation, Vec<(&str, &str, &str)>, Vec<(&str, usize)>, &str)> = vec![
            (
                "a rollout whose first new replica is not ready yet is rolled back",
                op(
                    OpKind::Rollout,
                    vec![
                        replace("a", WaitingHealthy, Some("a2")),
                        replace("b", Pending, None),
                        replace("c", Pending, None),
                    ],
                ),
                with(&[("a2", "running", "r1")]),
                vec![("a2", 0)],
                r#"roll back: remove ["a2"] undrain ["a", "b", "c"]"#,
            ),
            (
                "a new replica created but not yet saved is found by its label",
                op(
                    OpKind::Rollout,
                    vec![
                        replace("a", Creating, None),
                        replace("b", Pending, None),
                        replace("c", Pending, None),
                    ],
                ),
                with(&[("a2", "created", "")]),
                vec![("a2", 0)],
                r#"roll back: remove ["a2"] undrain ["a", "b", "c"]"#,
            ),
            (
                "a rollout calling itself off is rolled back all the same",
                Operation {
                    failed: true,
                    reason: Some("a2 not ready".into()),
                    ..op(
                        OpKind::Rollout,
                        vec![replace("a", Failed, Some("a2")), replace("b", Pending, None)],
                    )
                },
                with(&[("a2", "running", "r1")]),
                vec![],
                r#"roll back: remove ["a2"] undrain ["a", "b"]"#,
            ),
            (
                "once a replica was switched the rollout is finished",
                op(
                    OpKind::Rollout,
                    vec![
                        replace("a", Done, Some("a2")),
                        replace("b", WaitingHealthy, None),
                        replace("c", Pending, None),
                    ],
                ),
                minus(with(&[("a2", "running", "r1"), ("b2", "running", "r1")]), &["a"]),
                vec![("a2", 0), ("b2", 1)],
                r#"resume: remove [] then ["Done a2 a", "WaitingHealthy b2 b", "Pending - c"] at 1 actions []"#,
            ),
            (
                "an old replica drained or stopped but not removed goes once its new one is ready again",
                op(
                    OpKind::Rollout,
                    vec![replace("a", Stopping, Some("a2")), replace("b", Pending, None)],
                ),
                with(&[("a2", "running", "r1")])
                    .into_iter()
                    .map(|(id, s, r)| if id == "a" { (id, "exited", r) } else { (id, s, r) })
                    .collect(),
                vec![("a2", 0)],
                r#"resume: remove [] then ["WaitingHealthy a2 a", "Pending - b"] at 0 actions []"#,
            ),
            (
                "a new replica that does not run is removed and made again; a second one of a unit goes",
                op(
                    OpKind::Rollout,
                    vec![
                        replace("a", Done, Some("a2")),
                        replace("b", Starting, Some("b2")),
                        replace("c", Pending, None),
                    ],
                ),
                minus(
                    with(&[("a2", "running", "r1"), ("b2", "created", ""), ("a3", "running", "r1")]),
                    &["a"],
                ),
                vec![("a2", 0), ("a3", 0), ("b2", 1)],
                r#"resume: remove ["a3", "b2"] then ["Done a2 a", "Pending - b", "Pending - c"] at 1 actions []"#,
            ),
            (
                "a scale up carries on; a replica missing its template is cloned from another",
                Operation {
                    replicas: Some(3),
                    batch: 2,
                    ..op(
                        OpKind::Scale,
                        vec![
                            unit(None, Some("a"), WaitingHealthy),
                            unit(None, Some("a"), Creating),
                        ],
                    )
                },
                vec![("n1", "running", "r1"), ("b", "running", "r1")],
                vec![("n1", 0)],
                r#"resume: remove [] then ["WaitingHealthy n1 a", "Pending - b"] at 0 actions []"#,
            ),
            (
                "a scale down retires what is left",
                Operation {
                    replicas: Some(1),
                    batch: 2,
                    ..op(
                        OpKind::Scale,
                        vec![unit(Some("b"), None, Stopping), unit(Some("c"), None, Draining)],
                    )
                },
                minus(v1.to_vec(), &["b"]),
                vec![],
                r#"resume: remove [] then ["Done - -", "Pending - -"] at 0 actions []"#,
            ),
            (
                "a replica lost mid-rollout is replaced from another",
                op(
                    OpKind::Rollout,
                    vec![replace("a", Done, Some("a2")), replace("b", Draining, Some("b2"))],
                ),
                vec![("a2", "running", "r1"), ("c", "running", "r1")],
                vec![("a2", 0)],
                r#"resume: remove [] then ["Done a2 a", "Pending - a2"] at 1 actions []"#,
            ),
            (
                "a restart: a stopped one is started, a restarted one waited for, the rest restarted",
                Operation {
                    batch: 1,
                    ..op(
                        OpKind::Restart,
                        vec![
                            restart("a", Done, "r1"),
                            restart("b", Restarting, "r1"),
                            restart("c", WaitingHealthy, "r1"),
                            restart("d", Pending, ""),
                            restart("gone", Pending, ""),
                        ],
                    )
                },
                vec![
                    ("a", "running", "r2"),
                    ("b", "exited", "r1"),
                    ("c", "running", "r2"),
                    ("d", "running", "r1"),
                ],
                vec![],
                r#"resume: remove [] then ["Done - -", "Restarting - -", "WaitingHealthy - -", "Pending - -", "Done - -"] at 1 actions [Restart { unit: 1, id: "b" }]"#,
            ),
        ];
        let now = Instant::now();
        for (what, op, list, clones, want) in cases {
            let clones: Vec<(String, usize)> =
                clones.iter().map(|(id, u)| (id.to_string(), *u)).collect();
            let got = said(&recover(&op, &world(&list), &clones, now));
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn a_resumed_rollout_switches_once_the_new_replica_is_ready_again() {
        use Phase::*;
        let saved = op(
            OpKind::Rollout,
            vec![
                replace("a", Done, Some("a2")),
                replace("b", WaitingHealthy, Some("b2")),
            ],
        );
        let mut w = world(&[
            ("a2", "running", "r1"),
            ("b", "running", "r1"),
            ("b2", "running", "r1"),
        ]);
        w.backends.get_mut("b2").unwrap().state = BackendState::Starting;
        let t0 = Instant::now();
        let Recovery::Resume { mut plan, .. } = recover(&saved, &w, &[], t0) else {
            panic!("resumed");
        };
        assert!(plan.advance(&w, t0).is_empty(), "b2 is not ready yet");
        assert_eq!(plan.status, Status::WaitingHealthy);
        w.backends.get_mut("b2").unwrap().state = BackendState::Ready;
        let acts = plan.advance(&w, t0);
        assert!(acts.contains(&Action::Drain { id: "b".into() }), "{acts:?}");
        w.backends.get_mut("b").unwrap().state = BackendState::Draining;
        let acts = plan.advance(&w, t0);
        assert!(
            acts.iter()
                .any(|a| matches!(a, Action::StopRemove { id, .. } if id == "b")),
            "{acts:?}"
        );
        plan.on_event(super::super::Event::Removed { unit: 1 }, &w, t0);
        assert_eq!(plan.status, Status::Completed);
        assert_eq!(plan.reason, None);
    }

    #[test]
    fn an_operation_saves_where_its_plan_stands_and_reads_back() {
        let mut plan = Plan::new(
            vec![Unit::replace("a"), Unit::restart("b")],
            1,
            Some("img:2".into()),
            Duration::from_secs(30),
            Some(Duration::from_secs(5)),
        );
        plan.units[0].new = Some("a2".into());
        plan.units[0].phase = Phase::WaitingHealthy;
        plan.units[1].run = "r1".into();
        plan.status = Status::WaitingHealthy;
        let op = Operation::new(
            9,
            "9@1".into(),
            OpKind::Rollout,
            "p/web".into(),
            None,
            &plan,
        );
        let json = serde_json::to_string(&op).unwrap();
        assert!(json.contains(r#""phase":"waiting_healthy""#), "{json}");
        let back: Operation = serde_json::from_str(&json).unwrap();
        assert_eq!(back, op);
        assert_eq!(back.units[0].new.as_deref(), Some("a2"));
        assert_eq!(back.units[1].run, "r1");
        assert_eq!(
            (back.batch, back.health_timeout, back.drain_timeout),
            (1, Duration::from_secs(30), Some(Duration::from_secs(5)))
        );
    }
}
