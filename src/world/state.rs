//! The World's reducer: inspections, full re-lists, engine events and inputs
//! from the rest of berth go in; the World changes, and the caller learns
//! whether to publish a snapshot, inspect a container or schedule a probe.
//! Inspections and re-lists carry sequence numbers so that a result older than
//! what was already applied to a container never overwrites it.

use std::collections::{BTreeMap, HashMap};

use tracing::{info, warn};

use super::{
    is_stop_signal, CheckState, Container, DockerStatus, Input, Signals, World, NOT_READY_AFTER,
    PASSIVE_COOLDOWN,
};

/// Container events after which the container is inspected again.
const REFRESH_ON: &[&str] = &[
    "create",
    "start",
    "restart",
    "die",
    "stop",
    "pause",
    "unpause",
    "rename",
    "update",
    "connect",
    "disconnect",
    "oom",
];

/// Everything the owner of the world holds.
#[derive(Debug, Default)]
pub struct WorldState {
    pub containers: World,
    pub signals: Signals,
    pub docker: DockerStatus,
    /// `docker.constraint`: only containers with this label exist for berth.
    constraint: Option<(String, String)>,
    /// The last sequence number handed out.
    seq: u64,
    /// Container id → sequence number of what was applied to it last.
    applied: HashMap<String, u64>,
}

/// What a full re-list changed, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resync {
    pub added: usize,
    pub removed: usize,
    pub changed: usize,
}

impl Resync {
    pub fn any(&self) -> bool {
        self.added + self.removed + self.changed > 0
    }
}

/// What the watcher does after an engine event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventReaction {
    /// Nothing changed.
    Ignore,
    /// Applied at once: publish.
    Changed,
    /// Inspect the container; apply the result with this sequence number.
    Inspect { seq: u64 },
}

/// What an [`Input`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InputOutcome {
    /// The world changed: publish.
    pub changed: bool,
    /// Probe this container after the passive cool-down.
    pub probe: Option<String>,
}

impl WorldState {
    pub fn new(constraint: Option<(String, String)>) -> WorldState {
        WorldState {
            constraint,
            ..WorldState::default()
        }
    }

    /// Whether berth considers this container at all (`docker.constraint`).
    pub fn wanted(&self, c: &Container) -> bool {
        match &self.constraint {
            None => true,
            Some((k, v)) => c.labels.get(k) == Some(v),
        }
    }

    /// A number for an inspection or re-list about to start.
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// An engine event for container `id` (`signal`: of a `kill`).
    pub fn on_event(&mut self, id: &str, action: &str, signal: Option<i32>) -> EventReaction {
        match action {
            // Health checks run as execs every interval: not a state change.
            a if a.starts_with("exec_") => EventReaction::Ignore,
            // Applied at once, without asking the engine: the replica is
            // leaving and must get no new request.
            "kill" => match (self.containers.get_mut(id), signal) {
                // What berth holds is a run that is over (not a paused
                // one): the signal is for the one a `start` began, not
                // inspected yet.
                (Some(c), Some(sig))
                    if is_stop_signal(sig, c.stop_signal)
                        && matches!(c.status.as_str(), "exited" | "dead" | "created") =>
                {
                    c.stop_pending = true;
                    EventReaction::Ignore
                }
                (Some(c), Some(sig)) if is_stop_signal(sig, c.stop_signal) && !c.stopping => {
                    c.stopping = true;
                    EventReaction::Changed
                }
                _ => EventReaction::Ignore,
            },
            "destroy" => {
                let seq = self.next_seq();
                self.applied.insert(id.to_string(), seq);
                match self.containers.remove(id) {
                    Some(_) => EventReaction::Changed,
                    None => EventReaction::Ignore,
                }
            }
            a if REFRESH_ON.contains(&a) || a.starts_with("health_status") => {
                EventReaction::Inspect {
                    seq: self.next_seq(),
                }
            }
            _ => EventReaction::Ignore,
        }
    }

    /// Applies one inspection (`None`: the container is gone) unless
    /// something newer was applied already; true when the world changed.
    pub fn apply_inspection(&mut self, id: &str, seq: u64, found: Option<Container>) -> bool {
        if self.applied.get(id).is_some_and(|&s| s > seq) {
            return false;
        }
        self.applied.insert(id.to_string(), seq);
        match found {
            Some(c) if self.wanted(&c) => {
                let c = merge(self.containers.get(id), c);
                if self.containers.get(id) == Some(&c) {
                    return false;
                }
                self.containers.insert(id.to_string(), c);
                true
            }
            _ => self.containers.remove(id).is_some(),
        }
    }

    /// Applies a full re-list taken with `seq`; containers with a newer
    /// single inspection keep it. The engine answered: synced and connected.
    pub fn apply_list(&mut self, seq: u64, mut fresh: World, now_unix: u64) -> Resync {
        fresh.retain(|_, c| self.wanted(c));
        for (id, &s) in &self.applied {
            if s > seq {
                match self.containers.get(id) {
                    Some(c) => fresh.insert(id.clone(), c.clone()),
                    None => fresh.remove(id),
                };
            }
        }
        self.docker.synced = true;
        self.docker.connected = true;
        self.docker.last_sync_unix = Some(now_unix);
        let (world, resync) = resync(&self.containers, fresh);
        self.containers = world;
        let containers = &self.containers;
        self.applied
            .retain(|id, &mut s| s > seq || containers.contains_key(id));
        resync
    }

    /// The event stream broke: what is known stays, marked as not live.
    pub fn disconnected(&mut self) {
        self.docker.connected = false;
    }

    /// Applies what another part of berth reported.
    pub fn apply_input(&mut self, input: Input) -> InputOutcome {
        let unchanged = InputOutcome::default();
        match input {
            Input::Check {
                id,
                started_at,
                ok,
                detail,
                rise,
                fall,
            } => {
                let Some(c) = self.containers.get(&id) else {
                    return unchanged;
                };
                if c.started_at != started_at {
                    return unchanged;
                }
                let entry = self.signals.checks.entry(id.clone()).or_default();
                if entry.started_at != started_at {
                    *entry = CheckState {
                        started_at,
                        ..Default::default()
                    };
                }
                let before = entry.last.clone();
                let flipped = entry.record(ok, detail.clone(), rise, fall);
                if flipped {
                    info!(container = %c.name, healthy = entry.healthy, result = %detail, "active health check changed");
                }
                // The check reached it: connect failures seen by the proxy are over.
                let recovered = ok && self.signals.passive_down.remove(&id).is_some();
                if recovered {
                    info!(container = %c.name, result = %detail, "check passed: back in rotation after connect failures");
                }
                // Failing long enough since the start: now a problem to show.
                let not_ready = entry.never_passed() && entry.fail_streak == NOT_READY_AFTER;
                InputOutcome {
                    // A new result text is worth a snapshot too: rollouts report it.
                    changed: flipped || recovered || not_ready || before != detail,
                    probe: None,
                }
            }
            Input::ConnectFailures { id } => {
                let Some(c) = self.containers.get(&id) else {
                    return unchanged;
                };
                let run = c.started_at.clone();
                if self.signals.passive_down.get(&id) == Some(&run) {
                    return unchanged;
                }
                self.signals.passive_down.insert(id.clone(), run);
                warn!(container = %c.name, cooldown = ?PASSIVE_COOLDOWN, "repeated connect failures: out of rotation until a probe succeeds");
                InputOutcome {
                    changed: true,
                    probe: Some(id),
                }
            }
            Input::Probe { id, ok } => {
                if !self.signals.passive_down.contains_key(&id) {
                    return unchanged;
                }
                if !ok {
                    return InputOutcome {
                        changed: false,
                        probe: Some(id),
                    };
                }
                self.signals.passive_down.remove(&id);
                if let Some(c) = self.containers.get(&id) {
                    info!(container = %c.name, "probe succeeded: back in rotation");
                }
                InputOutcome {
                    changed: true,
                    probe: None,
                }
            }
            Input::Drain { id } => InputOutcome {
                changed: match self.containers.get(&id) {
                    Some(c) => {
                        self.signals.drain.insert(id, c.started_at.clone()).as_ref()
                            != Some(&c.started_at)
                    }
                    None => false,
                },
                probe: None,
            },
            Input::Undrain { id } => InputOutcome {
                changed: self.signals.drain.remove(&id).is_some(),
                probe: None,
            },
            Input::Modes(modes) => {
                let changed = self.signals.modes != modes;
                self.signals.modes = modes;
                InputOutcome {
                    changed,
                    probe: None,
                }
            }
        }
    }

    /// Forgets signals about containers that are gone, and drains and
    /// connect failures of runs that ended.
    pub fn prune_signals(&mut self) {
        let world = &self.containers;
        self.signals.checks.retain(|id, _| world.contains_key(id));
        self.signals
            .passive_down
            .retain(|id, run| world.get(id).is_some_and(|c| &c.started_at == run));
        self.signals
            .drain
            .retain(|id, run| world.get(id).is_some_and(|c| &c.started_at == run));
    }
}

/// A fresh inspection replaces what we had, except that a stop signal seen for
/// the same run (same start time) still holds: `inspect` keeps saying
/// "running" until the process exits, and once it has, the signal tells a
/// stop from a crash.
fn merge(old: Option<&Container>, mut new: Container) -> Container {
    if let Some(old) = old {
        let same_run = old.started_at == new.started_at;
        if old.stopping && same_run {
            new.stopping = true;
        }
        if old.stop_pending {
            if same_run {
                new.stop_pending = true;
            } else {
                new.stopping = true;
            }
        }
    }
    new
}

/// The world after a full re-list, and what changed.
fn resync(old: &World, fresh: World) -> (World, Resync) {
    let mut next = BTreeMap::new();
    let mut r = Resync::default();
    for (id, c) in fresh {
        let prev = old.get(&id);
        let c = merge(prev, c);
        match prev {
            None => r.added += 1,
            Some(p) if *p != c => r.changed += 1,
            Some(_) => {}
        }
        next.insert(id, c);
    }
    r.removed = old.keys().filter(|id| !next.contains_key(*id)).count();
    (next, r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::BackendState::{self, *};

    fn running(id: &str, run: &str) -> Container {
        Container {
            id: id.into(),
            name: format!("{id}-name"),
            status: "running".into(),
            started_at: run.into(),
            stop_signal: 15,
            labels: [("berth.test".to_string(), "t".to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_exited_run_remembers_whether_it_was_stopped() {
        let mut w = WorldState::new(None);
        let seq = w.next_seq();
        let list: World = [
            ("a".to_string(), running("a", "run1")),
            ("b".to_string(), running("b", "run1")),
        ]
        .into();
        w.apply_list(seq, list, 0);
        assert_eq!(w.on_event("a", "kill", Some(15)), EventReaction::Changed);
        let exited = |id: &str, run: &str| {
            with(running(id, run), |c| {
                c.status = "exited".into();
                c.exit_code = Some(137);
            })
        };
        for id in ["a", "b"] {
            let seq = w.next_seq();
            w.apply_inspection(id, seq, Some(exited(id, "run1")));
        }
        assert!(w.containers["a"].stopping, "stopped: not a crash");
        assert!(!w.containers["b"].stopping, "no stop signal: a crash");
        let seq = w.next_seq();
        w.apply_inspection("a", seq, Some(running("a", "run2")));
        assert!(!w.containers["a"].stopping, "a new run starts afresh");

        // b is started again and stopped before that start's inspection:
        // the stop is for the new run.
        assert!(matches!(
            w.on_event("b", "start", None),
            EventReaction::Inspect { .. }
        ));
        assert_eq!(w.on_event("b", "kill", Some(15)), EventReaction::Ignore);
        let seq = w.next_seq();
        w.apply_inspection("b", seq, Some(running("b", "run2")));
        assert!(
            w.containers["b"].stopping,
            "draining, and not a crash once it exits"
        );
        assert!(!w.containers["b"].stop_pending);
    }

    fn with(mut c: Container, f: impl FnOnce(&mut Container)) -> Container {
        f(&mut c);
        c
    }

    /// What happens, in order, as the watcher would feed it.
    #[allow(clippy::large_enum_variant)]
    enum Step {
        /// A full re-list started and answered now.
        List(Vec<Container>),
        /// An inspection started and answered now.
        Inspect(Container),
        /// An inspection found the container gone.
        Gone(&'static str),
        Event(&'static str, &'static str, Option<i32>),
        Tell(Input),
    }
    use Step::*;

    fn run(steps: Vec<Step>) -> (WorldState, Vec<InputOutcome>) {
        let mut st = WorldState::new(Some(("berth.test".into(), "t".into())));
        let mut outcomes = Vec::new();
        for step in steps {
            match step {
                List(cs) => {
                    let seq = st.next_seq();
                    let world = cs.into_iter().map(|c| (c.id.clone(), c)).collect();
                    st.apply_list(seq, world, 1_000);
                }
                Inspect(c) => {
                    let seq = st.next_seq();
                    st.apply_inspection(&c.id.clone(), seq, Some(c));
                }
                Gone(id) => {
                    let seq = st.next_seq();
                    st.apply_inspection(id, seq, None);
                }
                Event(id, action, signal) => {
                    st.on_event(id, action, signal);
                }
                Tell(i) => outcomes.push(st.apply_input(i)),
            }
            st.prune_signals();
        }
        (st, outcomes)
    }

    fn states(st: &WorldState, active: bool) -> Vec<(String, BackendState)> {
        st.containers
            .values()
            .map(|c| (c.id.clone(), c.state_with(&st.signals, active)))
            .collect()
    }

    #[test]
    fn event_sequences_give_the_expected_world() {
        let a = || running("a", "run1");
        let b = || running("b", "run1");
        let drain = |id: &str| Tell(Input::Drain { id: id.into() });
        // (what happens, the steps, the backend state of each container after)
        type Case = (&'static str, Vec<Step>, Vec<(&'static str, BackendState)>);
        let cases: Vec<Case> = vec![
            (
                "a start",
                vec![List(vec![]), Inspect(a())],
                vec![("a", Ready)],
            ),
            (
                "kill with the stop signal drains before the exit",
                vec![List(vec![a()]), Event("a", "kill", Some(15))],
                vec![("a", Draining)],
            ),
            (
                "kill with SIGHUP is a reload, not a stop",
                vec![List(vec![a()]), Event("a", "kill", Some(1))],
                vec![("a", Ready)],
            ),
            (
                "kill with the image's own stop signal",
                vec![
                    List(vec![with(a(), |c| c.stop_signal = 3)]),
                    Event("a", "kill", Some(3)),
                ],
                vec![("a", Draining)],
            ),
            (
                "a re-inspection of the same run keeps the stop",
                vec![List(vec![a()]), Event("a", "kill", Some(15)), Inspect(a())],
                vec![("a", Draining)],
            ),
            (
                "die: stopped",
                vec![
                    List(vec![a()]),
                    Event("a", "kill", Some(15)),
                    Inspect(with(a(), |c| c.status = "exited".into())),
                ],
                vec![("a", Stopped)],
            ),
            (
                "a restart is a new run: the stop is over",
                vec![
                    List(vec![a()]),
                    Event("a", "kill", Some(15)),
                    Inspect(running("a", "run2")),
                ],
                vec![("a", Ready)],
            ),
            (
                "health: starting, then healthy",
                vec![
                    Inspect(with(a(), |c| c.health = Some("starting".into()))),
                    Inspect(with(b(), |c| c.health = Some("starting".into()))),
                    Event("a", "health_status: healthy", None),
                    Inspect(with(a(), |c| c.health = Some("healthy".into()))),
                ],
                vec![("a", Ready), ("b", Starting)],
            ),
            (
                "unhealthy: down",
                vec![Inspect(with(a(), |c| c.health = Some("unhealthy".into())))],
                vec![("a", Down)],
            ),
            (
                "pause: out of rotation",
                vec![
                    Inspect(a()),
                    Inspect(with(a(), |c| c.status = "paused".into())),
                ],
                vec![("a", Stopped)],
            ),
            (
                "a re-list that misses a container removes it",
                vec![Inspect(a()), Inspect(b()), List(vec![b()])],
                vec![("b", Ready)],
            ),
            (
                "destroy removes at once",
                vec![List(vec![a(), b()]), Event("a", "destroy", None)],
                vec![("b", Ready)],
            ),
            (
                "an inspection that finds it gone removes it",
                vec![List(vec![a(), b()]), Gone("b")],
                vec![("a", Ready)],
            ),
            (
                "containers outside docker.constraint do not exist",
                vec![
                    List(vec![with(b(), |c| c.labels.clear())]),
                    Inspect(with(a(), |c| c.labels.clear())),
                ],
                vec![],
            ),
            (
                "drain, then undrain",
                vec![
                    List(vec![a(), b()]),
                    drain("a"),
                    drain("b"),
                    Tell(Input::Undrain { id: "b".into() }),
                ],
                vec![("a", Draining), ("b", Ready)],
            ),
            (
                "a drain lasts for its run only",
                vec![List(vec![a()]), drain("a"), Inspect(running("a", "run2"))],
                vec![("a", Ready)],
            ),
            (
                "connect failures of a run end with it",
                vec![
                    List(vec![a()]),
                    Tell(Input::ConnectFailures { id: "a".into() }),
                    Inspect(running("a", "run2")),
                ],
                vec![("a", Ready)],
            ),
            (
                "passive failures take it out until a probe succeeds",
                vec![
                    List(vec![a(), b()]),
                    Tell(Input::ConnectFailures { id: "a".into() }),
                    Tell(Input::ConnectFailures { id: "b".into() }),
                    Tell(Input::Probe {
                        id: "b".into(),
                        ok: false,
                    }),
                    Tell(Input::Probe {
                        id: "a".into(),
                        ok: true,
                    }),
                ],
                vec![("a", Ready), ("b", Down)],
            ),
        ];
        for (name, steps, want) in cases {
            let (st, _) = run(steps);
            let want: Vec<(String, BackendState)> = want
                .into_iter()
                .map(|(id, s)| (id.to_string(), s))
                .collect();
            assert_eq!(states(&st, false), want, "{name}");
        }
    }

    #[test]
    fn inputs_say_what_to_publish_and_what_to_probe() {
        let (_, out) = run(vec![
            List(vec![running("a", "r")]),
            Tell(Input::ConnectFailures { id: "a".into() }),
            Tell(Input::ConnectFailures { id: "a".into() }),
            Tell(Input::Probe {
                id: "a".into(),
                ok: false,
            }),
            Tell(Input::Probe {
                id: "a".into(),
                ok: true,
            }),
            Tell(Input::Probe {
                id: "a".into(),
                ok: true,
            }),
            Tell(Input::ConnectFailures { id: "gone".into() }),
            Tell(Input::Drain { id: "a".into() }),
            Tell(Input::Drain { id: "a".into() }),
        ]);
        let probe = |changed, id: Option<&str>| InputOutcome {
            changed,
            probe: id.map(str::to_string),
        };
        assert_eq!(
            out,
            vec![
                probe(true, Some("a")),
                probe(false, None),
                probe(false, Some("a")),
                probe(true, None),
                probe(false, None),
                probe(false, None),
                probe(true, None),
                probe(false, None),
            ]
        );
    }

    #[test]
    fn active_check_results_count_for_their_run_only() {
        let check = |run: &str, ok: bool, detail: &str| {
            Tell(Input::Check {
                id: "a".into(),
                started_at: run.into(),
                ok,
                detail: detail.into(),
                rise: 1,
                fall: 2,
            })
        };
        let (st, out) = run(vec![
            List(vec![running("a", "r1")]),
            check("r1", false, "connect: refused"),
            check("r1", true, "HTTP 200"),
            check("r1", true, "HTTP 200"),
            check("old-run", false, "HTTP 500"),
        ]);
        assert_eq!(states(&st, true), vec![("a".to_string(), Ready)]);
        let changed: Vec<bool> = out.iter().map(|o| o.changed).collect();
        assert_eq!(changed, vec![true, true, false, false]);
        let (st, _) = run(vec![
            List(vec![running("a", "r1")]),
            check("r1", true, "HTTP 200"),
            check("r1", false, "HTTP 500"),
            check("r1", false, "HTTP 500"),
        ]);
        assert_eq!(states(&st, true), vec![("a".to_string(), Down)]);
    }

    #[test]
    fn a_check_failing_since_the_start_is_published_once_it_is_a_problem() {
        let refused = || {
            Tell(Input::Check {
                id: "a".into(),
                started_at: "r1".into(),
                ok: false,
                detail: "connect: refused".into(),
                rise: 1,
                fall: 2,
            })
        };
        let mut steps = vec![List(vec![running("a", "r1")])];
        steps.extend((0..NOT_READY_AFTER + 2).map(|_| refused()));
        let (st, out) = run(steps);
        let published: Vec<usize> = (0..out.len()).filter(|&i| out[i].changed).collect();
        let n = NOT_READY_AFTER as usize;
        assert_eq!(
            published,
            vec![0, n - 1],
            "the first result, then at the threshold"
        );
        assert!(st.signals.checks["a"].never_passed());
    }

    #[test]
    fn a_passing_check_ends_connect_failures() {
        let check = |ok: bool| {
            Tell(Input::Check {
                id: "a".into(),
                started_at: "r1".into(),
                ok,
                detail: if ok {
                    "TCP connect"
                } else {
                    "connect: refused"
                }
                .into(),
                rise: 1,
                fall: 2,
            })
        };
        let failures = || Tell(Input::ConnectFailures { id: "a".into() });
        let (st, out) = run(vec![
            List(vec![running("a", "r1")]),
            check(true),
            failures(),
        ]);
        assert_eq!(states(&st, true), vec![("a".to_string(), Down)]);
        assert_eq!(out[1].probe.as_deref(), Some("a"));
        let (st, out) = run(vec![
            List(vec![running("a", "r1")]),
            check(true),
            failures(),
            check(false),
            check(true),
        ]);
        assert_eq!(states(&st, true), vec![("a".to_string(), Ready)]);
        assert!(out[3].changed, "back in rotation: publish");
    }

    #[test]
    fn results_older_than_what_was_applied_are_dropped() {
        let mut st = WorldState::new(None);
        let list_seq = st.next_seq();
        // While the re-list runs, a container starts and is inspected.
        let EventReaction::Inspect { seq } = st.on_event("new", "start", None) else {
            panic!("a start is inspected");
        };
        assert!(st.apply_inspection("new", seq, Some(running("new", "r"))));
        // The re-list does not have it yet: it stays.
        let r = st.apply_list(list_seq, World::new(), 42);
        assert_eq!(r, Resync::default());
        assert!(st.containers.contains_key("new"));
        assert_eq!(st.docker.last_sync_unix, Some(42));
        assert!(st.docker.synced && st.docker.connected);
        // An inspection that started before a destroy does not bring it back.
        let stale = st.next_seq();
        assert_eq!(st.on_event("new", "destroy", None), EventReaction::Changed);
        assert!(!st.apply_inspection("new", stale, Some(running("new", "r"))));
        assert!(st.containers.is_empty());
        assert_eq!(
            st.on_event("x", "exec_start: wget", None),
            EventReaction::Ignore
        );
        st.disconnected();
        assert!(!st.docker.connected && st.docker.synced);
    }

    #[test]
    fn resync_counts_differences() {
        let mut st = WorldState::new(None);
        let seq = st.next_seq();
        st.apply_list(
            seq,
            [("a", running("a", "r")), ("gone", running("gone", "r"))]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            1,
        );
        let seq = st.next_seq();
        let fresh: World = [
            (
                "a",
                with(running("a", "r"), |c| c.health = Some("unhealthy".into())),
            ),
            ("new", running("new", "r")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let r = st.apply_list(seq, fresh, 2);
        assert_eq!(
            r,
            Resync {
                added: 1,
                removed: 1,
                changed: 1
            }
        );
        assert!(r.any());
    }
}
