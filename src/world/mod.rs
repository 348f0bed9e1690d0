//! The World: what berth knows about the engine's containers and what it
//! learned itself (health checks, connect failures, drains). One task (the
//! Docker watcher) owns it and feeds it inspections, events and [`Input`]s;
//! the reducer in [`state`] applies them and the planner reads the result.
//! Pure: no I/O, no clock (the caller passes the time in).

mod state;

pub use state::{EventReaction, InputOutcome, Resync, WorldState};

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// How long a container stays out after repeated connect failures before it
/// is probed again.
pub const PASSIVE_COOLDOWN: std::time::Duration = std::time::Duration::from_secs(5);

pub const COMPOSE_PROJECT: &str = "com.docker.compose.project";
pub const COMPOSE_SERVICE: &str = "com.docker.compose.service";

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Container {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    pub image: String,
    pub labels: HashMap<String, String>,
    /// Docker's own word: created, running, restarting, paused, exited, dead.
    pub status: String,
    /// Docker health: starting, healthy, unhealthy; `None` without a HEALTHCHECK.
    pub health: Option<String>,
    /// Changes on every start: tells a new run from the one a `kill` was for.
    pub started_at: String,
    /// How its last run ended, once it has stopped.
    pub exit_code: Option<i64>,
    /// A stop signal was sent to this run: it is on its way out (kept
    /// once it has exited: it was stopped, it did not crash).
    pub stopping: bool,
    /// A stop signal came while what berth holds is a run that is over: it
    /// is for the run a `start` began, which the next inspection shows.
    pub stop_pending: bool,
    /// Docker's restart policy: `no` (or empty), `always`, `unless-stopped`,
    /// `on-failure`. With one, the engine restarts a crashed run itself.
    pub restart_policy: String,
    /// Its last run was killed for running out of memory.
    pub oom_killed: bool,
    /// Its CPU limit in cores (`--cpus`, or quota / period), if it has one.
    pub cpu_limit: Option<f64>,
    /// It has a memory limit (`--memory`, compose `mem_limit`).
    pub memory_limited: bool,
    /// The container's stop signal as a number (15 unless the image says otherwise).
    pub stop_signal: i32,
    /// Network name → the container's address on it (none while stopped).
    pub networks: BTreeMap<String, Option<IpAddr>>,
    /// Exposed TCP ports, sorted.
    pub exposed_ports: Vec<u16>,
    /// Ports as `docker ps` shows them: `0.0.0.0:8080->80/tcp`, `80/tcp`.
    pub ports: Vec<String>,
    /// Every address the container has (IPv4 and IPv6), with its network's
    /// prefix length: what internal DNS answers and whom it answers.
    pub addresses: Vec<NetAddress>,
}

/// One address of a container on one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetAddress {
    pub network: String,
    pub ip: IpAddr,
    /// The network's prefix length (`/16`, `/64`, ...).
    pub prefix: u8,
}

/// Where a container stands for routing (README, "Architecture": backend states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// Not running (or paused, restarting): no traffic, but its routes stay known.
    Stopped,
    /// Running, health gate not passed yet.
    Starting,
    Ready,
    /// Leaving: takes no new requests.
    Draining,
    /// Running but failing health.
    Down,
}

impl BackendState {
    pub const ALL: [BackendState; 5] = [
        BackendState::Ready,
        BackendState::Starting,
        BackendState::Draining,
        BackendState::Down,
        BackendState::Stopped,
    ];

    /// The word users see (API, CLI, metrics): the serde name.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Stopped => "stopped",
            BackendState::Starting => "starting",
            BackendState::Ready => "ready",
            BackendState::Draining => "draining",
            BackendState::Down => "down",
        }
    }
}

impl std::fmt::Display for BackendState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// What other parts of berth tell the owner of the world.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// One active HTTP check result for a run of a container.
    Check {
        id: String,
        started_at: String,
        ok: bool,
        detail: String,
        rise: u32,
        fall: u32,
    },
    /// The proxy saw repeated connect failures to this container.
    ConnectFailures { id: String },
    /// A probe of a passively-down container after its cool-down.
    Probe { id: String, ok: bool },
    /// Take no new requests (rollout, scale, admin): until the run ends.
    Drain { id: String },
    /// Back in rotation: what the drain was for did not happen.
    Undrain { id: String },
    /// Every service's maintenance or pause mode, as set now.
    Modes(crate::policy::mode::ModeTable),
}

/// The watcher's connection to the engine, as the snapshot publishes it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DockerStatus {
    /// Listed the engine at least once since start: the snapshot is real.
    pub synced: bool,
    /// The event stream is up now.
    pub connected: bool,
    /// Last full list (unix seconds).
    pub last_sync_unix: Option<u64>,
    /// Docker event → snapshot published, for the last event (microseconds).
    pub last_event_lag_us: Option<u64>,
}

/// What berth itself learned about containers, beside what Docker says:
/// active check results, passive connect failures, drains asked for.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    pub checks: HashMap<String, CheckState>,
    /// Down after repeated connect failures, until a probe succeeds.
    /// Container id → the run that failed: a new run, or a passing check,
    /// ends it.
    pub passive_down: HashMap<String, String>,
    /// Asked to drain (rollout, scale, admin): no new requests. Container id →
    /// the run (`started_at`) the drain is for: a restart ends it.
    pub drain: HashMap<String, String>,
    /// Services in maintenance or paused (service key → mode).
    pub modes: crate::policy::mode::ModeTable,
}

/// Results of the active HTTP check for one run of a container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckState {
    /// The run these results are for: a restart starts over.
    pub started_at: String,
    pub healthy: bool,
    /// Passed at least once in this run: failing now means down, not starting.
    pub ever_healthy: bool,
    pub ok_streak: u32,
    pub fail_streak: u32,
    /// The last result, for users: "200", "connection refused", ...
    pub last: String,
}

/// Failed checks in a row, none passed since the start, after which a
/// container is a problem: about a second at the pace of the first checks
/// (every 50 ms until one passes).
pub const NOT_READY_AFTER: u32 = 20;

impl CheckState {
    /// Failing since its start for long enough to be a problem.
    pub fn never_passed(&self) -> bool {
        !self.ever_healthy && self.fail_streak >= NOT_READY_AFTER
    }

    /// Counts one result; `healthy` flips after `rise` passes in a row or
    /// `fall` failures in a row. Returns true when `healthy` flipped.
    pub fn record(&mut self, ok: bool, detail: String, rise: u32, fall: u32) -> bool {
        self.last = detail;
        if ok {
            self.ok_streak += 1;
            self.fail_streak = 0;
        } else {
            self.fail_streak += 1;
            self.ok_streak = 0;
        }
        let was = self.healthy;
        if !self.healthy && self.ok_streak >= rise {
            self.healthy = true;
            self.ever_healthy = true;
        } else if self.healthy && self.fail_streak >= fall {
            self.healthy = false;
        }
        was != self.healthy
    }
}

impl Container {
    /// Docker's view alone (no active check, no signals).
    pub fn state(&self) -> BackendState {
        self.state_with(&Signals::default(), false)
    }

    /// The backend state from Docker's view and berth's own signals.
    /// `active_check`: the labels ask for an HTTP check, which must pass too.
    pub fn state_with(&self, signals: &Signals, active_check: bool) -> BackendState {
        if self.status != "running" {
            return BackendState::Stopped;
        }
        if self.stopping || signals.drain.get(&self.id) == Some(&self.started_at) {
            return BackendState::Draining;
        }
        let check = signals
            .checks
            .get(&self.id)
            .filter(|c| c.started_at == self.started_at);
        let docker = match self.health.as_deref() {
            None | Some("healthy") => BackendState::Ready,
            Some("unhealthy") => BackendState::Down,
            Some(_) => BackendState::Starting,
        };
        let active = match (active_check, check) {
            (false, _) => BackendState::Ready,
            (true, Some(c)) if c.healthy => BackendState::Ready,
            // Failing after having passed: down; never passed: starting.
            (true, Some(c)) if c.ever_healthy => BackendState::Down,
            (true, _) => BackendState::Starting,
        };
        let passive = if signals.passive_down.get(&self.id) == Some(&self.started_at) {
            BackendState::Down
        } else {
            BackendState::Ready
        };
        // The worst of the three wins.
        [docker, active, passive]
            .into_iter()
            .max_by_key(|s| match s {
                BackendState::Ready => 0,
                BackendState::Starting => 1,
                _ => 2,
            })
            .unwrap_or(BackendState::Ready)
    }

    /// The unit whose last good labels are remembered: the compose service,
    /// or the container itself.
    pub fn service_key(&self) -> String {
        match (
            self.labels.get(COMPOSE_PROJECT),
            self.labels.get(COMPOSE_SERVICE),
        ) {
            (Some(p), Some(s)) => format!("{p}/{s}"),
            _ => self.name.clone(),
        }
    }

    pub fn short_id(&self) -> &str {
        crate::names::short_id(&self.id)
    }
}

/// Container id → container.
pub type World = BTreeMap<String, Container>;

/// A signal name or number as Docker writes it (`SIGTERM`, `TERM`, `15`).
pub fn signal_number(s: &str) -> Option<i32> {
    let s = s.trim();
    if let Ok(n) = s.parse() {
        return Some(n);
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    Some(match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "TERM" => 15,
        "WINCH" => 28,
        "PWR" => 30,
        _ => return None,
    })
}

/// A `kill` with this signal takes the container out of rotation: its own
/// stop signal, or one that ends any process.
pub fn is_stop_signal(signal: i32, container_stop_signal: i32) -> bool {
    signal == container_stop_signal || matches!(signal, 2 | 9 | 15)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> Container {
        Container {
            id: "0123456789abcdef".into(),
            name: "web-1".into(),
            status: "running".into(),
            stop_signal: 15,
            ..Default::default()
        }
    }

    #[test]
    fn states() {
        let mut c = running();
        assert_eq!(c.state(), BackendState::Ready);
        c.health = Some("starting".into());
        assert_eq!(c.state(), BackendState::Starting);
        c.health = Some("unhealthy".into());
        assert_eq!(c.state(), BackendState::Down);
        c.health = Some("healthy".into());
        assert_eq!(c.state(), BackendState::Ready);
        c.stopping = true;
        assert_eq!(c.state(), BackendState::Draining);
        c.status = "exited".into();
        assert_eq!(c.state(), BackendState::Stopped);
        let mut p = running();
        p.status = "paused".into();
        assert_eq!(p.state(), BackendState::Stopped);
    }

    #[test]
    fn active_check_gates_and_downs() {
        let c = running();
        let mut sig = Signals::default();
        assert_eq!(
            c.state_with(&sig, true),
            BackendState::Starting,
            "no result yet"
        );
        let mut check = CheckState::default();
        assert!(!check.record(false, "connection refused".into(), 1, 2));
        sig.checks.insert(c.id.clone(), check.clone());
        assert_eq!(
            c.state_with(&sig, true),
            BackendState::Starting,
            "never passed"
        );
        assert!(check.record(true, "200".into(), 1, 2));
        sig.checks.insert(c.id.clone(), check.clone());
        assert_eq!(c.state_with(&sig, true), BackendState::Ready);
        assert!(
            !check.record(false, "500".into(), 1, 2),
            "one failure is below fall=2"
        );
        assert!(check.record(false, "500".into(), 1, 2));
        sig.checks.insert(c.id.clone(), check.clone());
        assert_eq!(c.state_with(&sig, true), BackendState::Down);
        // A new run of the container starts over.
        let mut restarted = c.clone();
        restarted.started_at = "later".into();
        assert_eq!(restarted.state_with(&sig, true), BackendState::Starting);
        // Results for the current run only matter when a check is configured.
        assert_eq!(c.state_with(&sig, false), BackendState::Ready);
    }

    #[test]
    fn drain_and_passive_signals() {
        let c = running();
        let mut sig = Signals::default();
        sig.passive_down.insert(c.id.clone(), c.started_at.clone());
        assert_eq!(c.state_with(&sig, false), BackendState::Down);
        sig.drain.insert(c.id.clone(), c.started_at.clone());
        assert_eq!(
            c.state_with(&sig, false),
            BackendState::Draining,
            "draining wins over down"
        );
        let mut unhealthy = c.clone();
        unhealthy.health = Some("starting".into());
        assert_eq!(
            unhealthy.state_with(&Signals::default(), false),
            BackendState::Starting
        );
    }

    #[test]
    fn signals() {
        assert_eq!(signal_number("SIGTERM"), Some(15));
        assert_eq!(signal_number("QUIT"), Some(3));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number("SIGBOGUS"), None);
        assert!(is_stop_signal(15, 15));
        assert!(is_stop_signal(3, 3));
        assert!(!is_stop_signal(1, 15), "SIGHUP is a reload, not a stop");
    }

    #[test]
    fn service_key_prefers_compose() {
        let mut c = running();
        assert_eq!(c.service_key(), "web-1");
        c.labels.insert(COMPOSE_PROJECT.into(), "blog".into());
        c.labels.insert(COMPOSE_SERVICE.into(), "web".into());
        assert_eq!(c.service_key(), "blog/web");
        assert_eq!(c.short_id(), "0123456789ab");
    }
}
