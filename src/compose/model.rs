//! A Compose project as berth deploys it: every short form already turned
//! into its long form, variables interpolated, paths made absolute, env files
//! read. What [`super::load`] returns and what the deploy planner and runner
//! work from. Pure data.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// Where a value came from in the compose file, for errors found after
/// parsing (a dependency cycle, a missing network).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pos {
    pub line: u64,
    pub column: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Project {
    /// `--project`, else the file's top-level `name`, else the directory's
    /// name, normalised as compose does (lowercase, `[a-z0-9_-]`).
    pub name: String,
    /// The compose file, absolute.
    pub file: PathBuf,
    /// Its directory: relative build contexts, bind sources and env files
    /// are resolved from here.
    pub dir: PathBuf,
    pub services: BTreeMap<String, Service>,
    /// Top-level networks; `default` is always there (unless the file
    /// defines it itself, its settings then).
    pub networks: BTreeMap<String, Network>,
    /// Top-level named volumes.
    pub volumes: BTreeMap<String, Volume>,
    /// Service names, each after the services it depends on.
    pub order: Vec<String>,
    /// What the user should hear about but that does not stop a deploy
    /// (a variable the file uses and nothing sets: compose warns too).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    pub name: String,
    /// `image:`; with `build:` as well, the tag the build gets.
    pub image: Option<String>,
    pub build: Option<Build>,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// `env_file` entries in order, then `environment` on top; a bare
    /// `KEY` takes its value from the interpolation variables, and is left
    /// out when none has it (as compose does).
    pub environment: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<Port>,
    /// `expose:` container ports, `80` or `80/udp`.
    pub expose: Vec<String>,
    pub volumes: Vec<Mount>,
    /// Network (top-level key) → how the service joins it. Without
    /// `networks:`, `default`.
    pub networks: BTreeMap<String, ServiceNetwork>,
    pub depends_on: BTreeMap<String, Condition>,
    pub healthcheck: Option<Healthcheck>,
    /// `no`, `always`, `on-failure`, `on-failure:N`, `unless-stopped`.
    pub restart: Option<String>,
    /// `deploy.replicas`, 1 without it.
    pub replicas: usize,
    pub stop_grace_period: Option<Duration>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    /// Where the service is defined in the file (its key).
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Build {
    /// Absolute.
    pub context: PathBuf,
    /// Relative to the context; `Dockerfile` without one.
    pub dockerfile: String,
    pub args: BTreeMap<String, String>,
    pub target: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    /// `127.0.0.1` in `127.0.0.1:8080:80`.
    pub host_ip: Option<String>,
    /// The host port; `None`: the engine picks one.
    pub published: Option<u16>,
    pub target: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MountKind {
    /// A named volume (or, without a source, an anonymous one).
    Volume,
    /// A host path.
    Bind,
    Tmpfs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    pub kind: MountKind,
    /// A volume's top-level key, or an absolute host path; `None` for an
    /// anonymous volume or tmpfs.
    pub source: Option<String>,
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServiceNetwork {
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    ServiceStarted,
    ServiceHealthy,
    ServiceCompletedSuccessfully,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Healthcheck {
    /// `["CMD", ...]`, `["CMD-SHELL", "..."]`, or `["NONE"]` (`disable: true`).
    pub test: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    pub start_period: Option<Duration>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Network {
    /// Created by someone else: used, never created or removed.
    pub external: bool,
    /// The engine's name: `name:`, else `<project>_<key>` (external: the key).
    pub name: String,
    pub driver: Option<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Volume {
    pub external: bool,
    /// The engine's name: `name:`, else `<project>_<key>` (external: the key).
    pub name: String,
    pub driver: Option<String>,
    pub labels: BTreeMap<String, String>,
}
