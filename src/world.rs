//! What berth knows about the engine: one [`Container`] per container, built by
//! the Docker watcher from `inspect` and events, read by the planner. Plain data.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

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
    /// A stop signal was sent to this run: it is on its way out.
    pub stopping: bool,
    /// The container's stop signal as a number (15 unless the image says otherwise).
    pub stop_signal: i32,
    /// Network name → the container's address on it (none while stopped).
    pub networks: BTreeMap<String, Option<IpAddr>>,
    /// Exposed TCP ports, sorted.
    pub exposed_ports: Vec<u16>,
}

/// Where a container stands for routing (DESIGN.md, "Backend states").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

impl Container {
    pub fn state(&self) -> BackendState {
        if self.status != "running" {
            return BackendState::Stopped;
        }
        if self.stopping {
            return BackendState::Draining;
        }
        match self.health.as_deref() {
            None | Some("healthy") => BackendState::Ready,
            Some("unhealthy") => BackendState::Down,
            Some(_) => BackendState::Starting,
        }
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
        &self.id[..self.id.len().min(12)]
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
