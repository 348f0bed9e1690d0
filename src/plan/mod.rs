//! World + Config → Snapshot. Pure: the planner reads the containers the
//! watcher saw and the static routes of the config, and produces the routing
//! table and the list of problems that everyone else reads.

pub mod dns;
pub mod table;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::labels::{self, LabelSpec, RouteSpec, TlsMode};
use crate::names::{HostPattern, PathPrefix};
use crate::policy::mode::ServiceMode;
use crate::policy::{PolicySpec, RoutePolicy};
pub use crate::world::DockerStatus;
use crate::world::{BackendState, Container, Signals, World, COMPOSE_PROJECT, COMPOSE_SERVICE};
use dns::{DnsTable, Target};
pub use table::{Backend, BackendStats, CanarySplit, Route, RouteTable};

/// Everything the data plane reads, published as one immutable value.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub table: RouteTable,
    pub problems: Vec<Problem>,
    /// Every routed container (any state), by container id.
    pub backends: BTreeMap<String, BackendInfo>,
    /// The active HTTP checks to run now.
    pub checks: Vec<CheckTarget>,
    /// Exact hostnames of routes that want HTTPS (not `tls=off`).
    pub tls_hosts: BTreeSet<String>,
    /// The internal DNS zone: names of every container, ready or not.
    pub dns: DnsTable,
    /// Every container berth sees (routed or not), by id: what `berth ps`,
    /// logs, stats and the container actions work from.
    pub containers: BTreeMap<String, ContainerInfo>,
    /// The Docker engine as the watcher last saw it (set by the watcher).
    pub docker: DockerStatus,
    /// Counts rebuilds, for logs and tests.
    pub generation: u64,
    /// The configuration this snapshot was planned with: a reload reaches
    /// every part through the next snapshot.
    pub config: Arc<Config>,
    /// What the proxy reads on every request, computed once per config.
    pub settings: Arc<ProxySettings>,
    /// Routed replicas whose first check has not answered yet (no failure
    /// seen): at start, requests for them wait rather than get a 503.
    pub unchecked: usize,
    /// Autoscaled services (`scale.*` labels of their newest container),
    /// by service key.
    pub autoscale: BTreeMap<String, Arc<crate::deploy::autoscale::Policy>>,
}

/// The proxy's per-request settings, from `proxy.*` and `tls.*`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxySettings {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub idle_timeout: Duration,
    /// Seconds a client's keep-alive connection may idle between requests.
    pub keepalive_secs: u64,
    /// The Retry-After value of a 503, in seconds.
    pub retry_after: String,
    /// HTTP → HTTPS where a certificate exists.
    pub redirect: bool,
    /// `Strict-Transport-Security` value on HTTPS answers.
    pub hsts: Option<String>,
    pub access_log: bool,
    /// `proxy.trusted_proxies`: whose X-Forwarded-For is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `proxy.error_page`: what browsers get for berth's own errors.
    pub error_page: Option<Arc<String>>,
}

impl ProxySettings {
    pub fn new(config: &Config) -> ProxySettings {
        let p = &config.proxy;
        ProxySettings {
            connect_timeout: p.connect_timeout,
            read_timeout: p.read_timeout,
            idle_timeout: p.idle_timeout,
            keepalive_secs: p.keepalive_timeout.as_secs().max(1),
            retry_after: p.retry_after.as_secs().max(1).to_string(),
            redirect: config.tls.redirect,
            hsts: config.tls.hsts.map(|d| format!("max-age={}", d.as_secs())),
            access_log: config.access_log,
            trusted_proxies: p.trusted_proxies.clone(),
            error_page: p.error_page.as_ref().map(|(_, text)| text.clone()),
        }
    }
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings::new(&Config::default())
    }
}

/// A container as `berth ps` and the admin API show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerInfo {
    #[serde(rename = "container_id")]
    pub id: String,
    pub name: String,
    pub image: String,
    pub project: Option<String>,
    pub service: Option<String>,
    /// Docker's word: created, running, exited, ...
    pub status: String,
    pub health: Option<String>,
    /// The backend state, whether berth routes it or not (DNS uses it).
    pub state: BackendState,
    pub routed: bool,
    pub ports: Vec<String>,
    pub networks: BTreeMap<String, Option<std::net::IpAddr>>,
    /// Tells a restarted run from the one before (not shown).
    #[serde(skip)]
    pub started_at: String,
    /// Compose's config hash: tells drift from the last deploy (not shown).
    #[serde(skip)]
    pub config_hash: Option<String>,
    /// How its last run ended, once it has stopped (not shown).
    #[serde(skip)]
    pub exit_code: Option<i64>,
    /// A canary replica: its share of traffic in percent (not shown).
    #[serde(skip)]
    pub canary: Option<u32>,
    /// How its run is going or ended beyond Docker's word (not shown).
    #[serde(skip)]
    pub run: RunFacts,
    /// Times berth restarted or replaced it (autoheal, crash replacement):
    /// filled in by the admin API.
    #[serde(default)]
    pub restarts: u32,
}

/// What crash replacement and autoscaling read of a container's run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFacts {
    /// A stop signal was sent to this run (`docker stop`, `docker kill`, a
    /// rollout): if it exited, it was stopped, not crashed.
    pub stop_requested: bool,
    /// Docker's restart policy (`no` or empty: the engine restarts nothing).
    pub restart_policy: String,
    /// The last run was killed for running out of memory.
    pub oom_killed: bool,
    /// CPU limit in cores, if any.
    pub cpu_limit: Option<f64>,
    /// It has a memory limit.
    pub memory_limited: bool,
}

impl ContainerInfo {
    /// A running, ready container for unit tests.
    #[cfg(test)]
    pub fn for_test(
        id: &str,
        name: &str,
        project: Option<&str>,
        service: Option<&str>,
    ) -> ContainerInfo {
        ContainerInfo {
            id: id.into(),
            name: name.into(),
            image: "img".into(),
            project: project.map(str::to_string),
            service: service.map(str::to_string),
            status: "running".into(),
            health: None,
            state: BackendState::Ready,
            routed: false,
            ports: vec![],
            networks: BTreeMap::new(),
            started_at: String::new(),
            config_hash: None,
            exit_code: None,
            canary: None,
            run: RunFacts::default(),
            restarts: 0,
        }
    }

    /// The deployment it belongs to: its compose project, or itself.
    pub fn deployment(&self) -> &str {
        self.project.as_deref().unwrap_or(&self.name)
    }

    /// Its service: the compose service, or itself outside compose.
    pub fn service_name(&self) -> &str {
        self.service.as_deref().unwrap_or(&self.name)
    }

    pub fn is_running(&self) -> bool {
        self.status == "running"
    }

    /// `project/service`, or its name outside compose: what backends call
    /// their service.
    pub fn service_key(&self) -> String {
        match (&self.project, &self.service) {
            (Some(p), Some(s)) => format!("{p}/{s}"),
            _ => self.name.clone(),
        }
    }
}

/// A routed container as the proxy, the checker and the deploy controller see it.
#[derive(Debug, Clone)]
pub struct BackendInfo {
    pub id: String,
    pub name: String,
    /// Compose `project/service`, or the container name.
    pub service: String,
    pub image: String,
    pub state: BackendState,
    /// Docker's health word, if the image has a HEALTHCHECK.
    pub health: Option<String>,
    /// The last active check result, if a check is configured.
    pub check: Option<String>,
    pub addrs: Vec<SocketAddr>,
    pub stats: Arc<BackendStats>,
    pub drain_timeout: Duration,
    pub autoheal: bool,
    /// Failing its health check (Docker's or berth's active one) after having
    /// passed: what autoheal acts on.
    pub unhealthy: bool,
    /// Docker's word: created, running, exited, ...
    pub status: String,
}

#[cfg(test)]
impl BackendInfo {
    /// A routed container for unit tests of the modules that read snapshots.
    pub fn for_test(id: &str, name: &str, service: &str, state: BackendState) -> BackendInfo {
        BackendInfo {
            id: id.into(),
            name: name.into(),
            service: service.into(),
            image: "img".into(),
            state,
            health: None,
            check: None,
            addrs: vec![],
            stats: Arc::default(),
            drain_timeout: Duration::from_secs(30),
            autoheal: true,
            unhealthy: false,
            status: "running".into(),
        }
    }
}

/// One active check: `GET path` on `addr` every `interval`, or with no path,
/// a TCP connect.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckTarget {
    pub id: String,
    pub started_at: String,
    pub addr: SocketAddr,
    pub path: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

/// A bad label or an unroutable container, attached to that container only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub container: String,
    pub container_id: String,
    pub key: String,
    pub value: String,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "container {} ({}): {}={:?}: {}",
            self.container,
            self.container_id,
            self.key.escape_debug(),
            self.value,
            self.message
        )?;
        if let Some(h) = &self.hint {
            write!(f, "; {h}")?;
        }
        Ok(())
    }
}

/// Holds what must outlive one snapshot: the last labels of each service that
/// parsed cleanly, the round-robin counters and the backend counters.
pub struct Planner {
    config: Arc<Config>,
    settings: Arc<ProxySettings>,
    /// Service → its last labels (under the prefix) that parsed cleanly,
    /// and what they say.
    last_good: HashMap<String, (LastLabels, LabelSpec)>,
    /// `last_good` changed since [`Planner::last_good_changed`] last said so.
    last_good_dirty: bool,
    counters: HashMap<(HostPattern, PathPrefix), Arc<AtomicUsize>>,
    stats: HashMap<String, Arc<BackendStats>>,
    /// Each route's policy of the last snapshot: kept while unchanged, so
    /// a rebuild keeps its rate limiter and remembered credentials.
    policies: HashMap<Key, Arc<RoutePolicy>>,
    generation: u64,
}

type Key = (HostPattern, PathPrefix);

/// A container's labels under berth's prefix, as the last good ones are kept.
pub type LastLabels = BTreeMap<String, String>;

fn own_labels(prefix: &str, labels: &HashMap<String, String>) -> LastLabels {
    let dotted = format!("{prefix}.");
    labels
        .iter()
        .filter(|(k, _)| k.starts_with(&dotted))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

pub use crate::world::NOT_READY_AFTER;

impl Planner {
    pub fn new(config: Arc<Config>) -> Planner {
        Planner {
            settings: Arc::new(ProxySettings::new(&config)),
            config,
            last_good: HashMap::new(),
            last_good_dirty: false,
            counters: HashMap::new(),
            stats: HashMap::new(),
            policies: HashMap::new(),
            generation: 0,
        }
    }

    /// A reloaded configuration: the next snapshot is planned with it.
    pub fn set_config(&mut self, config: Arc<Config>) {
        self.settings = Arc::new(ProxySettings::new(&config));
        self.config = config;
    }

    fn stats_for(&mut self, key: &str) -> Arc<BackendStats> {
        self.stats.entry(key.to_string()).or_default().clone()
    }

    pub fn build(&mut self, world: &World, signals: &Signals) -> Snapshot {
        let mut b = Build::default();
        self.add_static_routes(&mut b);
        let mut containers: Vec<&Container> = world.values().collect();
        containers.sort_by(|x, y| x.name.cmp(&y.name));
        for c in containers {
            self.add_container(&mut b, c, signals);
        }
        let containers = container_infos(world, &b.backends, signals);
        self.counters.retain(|k, _| b.routes.contains_key(k));
        self.stats
            .retain(|k, _| world.contains_key(k) || k.starts_with("static:"));
        let policies = self.route_policies(std::mem::take(&mut b.policies), &mut b.problems);
        let (table, tls_hosts) = self.table(b.routes, &b.tls_off, policies, &b.modes);
        self.generation += 1;
        Snapshot {
            table,
            problems: b.problems,
            backends: b.backends,
            checks: b.checks,
            tls_hosts,
            dns: b.dns,
            containers,
            docker: DockerStatus::default(),
            generation: self.generation,
            config: self.config.clone(),
            settings: self.settings.clone(),
            unchecked: b.unchecked,
            autoscale: b
                .scale
                .into_iter()
                .map(|(service, (_, p))| (service, Arc::new(p)))
                .collect(),
        }
    }

    /// The config's routes, to fixed addresses.
    fn add_static_routes(&mut self, b: &mut Build) {
        let static_name: Arc<str> = Arc::from("static");
        let config = self.config.clone();
        for r in &config.routes {
            for h in &r.hosts {
                let key = (h.clone(), r.path.clone());
                b.policies.entry(key).or_default().insert(
                    format!("static route {h}{}", r.path.as_str()),
                    PolicyFrom {
                        started_at: String::new(),
                        container: "config".into(),
                        container_id: "-".into(),
                        spec: r.policy.clone(),
                    },
                );
                for &addr in &r.backends {
                    let id = format!("static:{addr}");
                    let stats = self.stats_for(&id);
                    b.routes
                        .entry((h.clone(), r.path.clone()))
                        .or_default()
                        .push(Backend::new(
                            addr,
                            static_name.clone(),
                            Arc::from(id),
                            stats,
                        ));
                }
            }
        }
    }

    /// One container: its routes (ready: with it as a backend), its check,
    /// its DNS names, its backend info and its problems.
    fn add_container(&mut self, b: &mut Build, c: &Container, signals: &Signals) {
        let spec = self.labels_for(c, &mut b.problems);
        b.dns.add_asker(
            c.labels.get(COMPOSE_PROJECT).map(String::as_str),
            &c.addresses,
        );
        if !spec.enabled {
            return;
        }
        let lone =
            !c.labels.contains_key(COMPOSE_PROJECT) || !c.labels.contains_key(COMPOSE_SERVICE);
        if let (Some(_), true) = (&spec.scale, lone) {
            // Its clones would be services of their own (each with the
            // policy): only a compose service is autoscaled.
            let key = format!("{}.scale.max", self.config.label_prefix);
            b.problems.push(Problem {
                container: c.name.clone(),
                container_id: c.short_id().to_string(),
                value: c.labels.get(&key).cloned().unwrap_or_default(),
                key,
                message: "autoscaling needs a compose service (labels com.docker.compose.project and .service): a lone container's replicas would each be a service of its own".into(),
                hint: Some("run it with docker compose, or berth deploy".into()),
            });
        } else if let Some(policy) = &spec.scale {
            let newest = b
                .scale
                .get(&c.service_key())
                .is_none_or(|(started, _)| started <= &c.started_at);
            if newest && c.status == "running" {
                b.scale
                    .insert(c.service_key(), (c.started_at.clone(), policy.clone()));
            }
        }
        if spec.routes.is_empty() {
            self.dns_names(&mut b.dns, c, &spec, c.state_with(signals, false));
            return;
        }
        // berth checks every replica itself: the HTTP check of its labels,
        // or, without that and without a Docker HEALTHCHECK, a TCP connect
        // to its port, so no route goes live before the app listens.
        let tcp_only = spec.health.path.is_none() && c.health.is_none();
        let active = spec.health.path.is_some() || tcp_only;
        let state = c.state_with(signals, active);
        let running = c.status == "running";
        let stats = self.stats_for(&c.id);
        let mode = signals.modes.0.get(&c.service_key()).cloned();
        let addrs = self.add_routes(b, c, &spec, state, &stats, mode);
        let check = signals
            .checks
            .get(&c.id)
            .filter(|ch| active && ch.started_at == c.started_at);
        if let (true, Some(&addr), true) = (active, addrs.first(), running && !c.stopping) {
            let target = CheckTarget {
                id: c.id.clone(),
                started_at: c.started_at.clone(),
                addr,
                path: spec.health.path.as_ref().map(|p| p.to_string()),
                interval: spec.health.interval,
                timeout: spec.health.timeout,
                rise: spec.health.rise,
                fall: if tcp_only { 2 } else { spec.health.fall },
            };
            if check.is_none_or(|ch| !ch.ever_healthy && ch.fail_streak == 0) {
                b.unchecked += 1;
            }
            let never_passed = check.filter(|ch| ch.never_passed());
            if let Some(ch) = never_passed {
                b.problems.push(self.not_ready(c, &spec, &target, &ch.last));
            }
            b.checks.push(target);
        }
        self.dns_names(&mut b.dns, c, &spec, state);
        b.backends.insert(
            c.id.clone(),
            BackendInfo {
                id: c.id.clone(),
                name: c.name.clone(),
                service: c.service_key(),
                image: c.image.clone(),
                state,
                health: c.health.clone(),
                check: check.map(|ch| ch.last.clone()),
                addrs,
                stats,
                drain_timeout: spec.drain_timeout,
                autoheal: spec.autoheal,
                status: c.status.clone(),
                unhealthy: running
                    && (c.health.as_deref() == Some("unhealthy")
                        || check.is_some_and(|ch| ch.ever_healthy && !ch.healthy)),
            },
        );
    }

    /// The container's routes; returns the addresses it is reached on.
    /// Every route of a container that exists stays known (a stopped
    /// service answers 503, not 404); a ready one is a backend of each.
    fn add_routes(
        &self,
        b: &mut Build,
        c: &Container,
        spec: &LabelSpec,
        state: BackendState,
        stats: &Arc<BackendStats>,
        mode: Option<Arc<ServiceMode>>,
    ) -> Vec<SocketAddr> {
        let running = c.status == "running";
        let name: Arc<str> = Arc::from(c.name.as_str());
        let id: Arc<str> = Arc::from(c.id.as_str());
        let mut addrs = Vec::new();
        for route in &spec.routes {
            for h in &route.hosts {
                let key = (h.clone(), route.path.clone());
                let by_service = b.policies.entry(key.clone()).or_default();
                let newest = by_service
                    .get(&c.service_key())
                    .is_none_or(|p| p.started_at <= c.started_at);
                if newest {
                    by_service.insert(
                        c.service_key(),
                        PolicyFrom {
                            started_at: c.started_at.clone(),
                            container: c.name.clone(),
                            container_id: c.short_id().to_string(),
                            spec: route.policy.clone(),
                        },
                    );
                }
                if let Some(m) = &mode {
                    b.modes.insert(key.clone(), m.clone());
                }
                b.routes.entry(key).or_default();
                if route.tls == Some(TlsMode::Off) {
                    b.tls_off.insert((h.clone(), route.path.clone()));
                }
            }
            let port = match resolve_port(c, route) {
                Ok(p) => p,
                Err(p) => {
                    let key = route_key(&self.config.label_prefix, route, "port");
                    b.problems.push(problem(c, &key, p));
                    continue;
                }
            };
            let ip = match resolve_ip(c, spec, running) {
                Ok(Some(ip)) => ip,
                Ok(None) => continue,
                Err(p) => {
                    let key = format!("{}.network", self.config.label_prefix);
                    b.problems.push(problem(c, &key, p));
                    continue;
                }
            };
            let addr = SocketAddr::new(ip, port);
            addrs.push(addr);
            if state == BackendState::Ready {
                for h in &route.hosts {
                    b.routes
                        .entry((h.clone(), route.path.clone()))
                        .or_default()
                        .push(Backend {
                            canary: canary_of(c),
                            ..Backend::new(addr, name.clone(), id.clone(), stats.clone())
                        });
                }
            }
        }
        addrs
    }

    /// A running container whose check has never passed: a wrong port, an
    /// app that does not listen, a health path that does not answer. Named
    /// by the label to look at, with the last check result.
    pub fn not_ready(
        &self,
        c: &Container,
        spec: &LabelSpec,
        target: &CheckTarget,
        last: &str,
    ) -> Problem {
        let prefix = &self.config.label_prefix;
        let message = format!("no check has passed since it started: {last}");
        let (key, value, hint) = match &target.path {
            Some(path) => (
                format!("{prefix}.health.path"),
                path.clone(),
                format!("does GET {path} on {} answer 2xx or 3xx?", target.addr),
            ),
            None => {
                let route = spec.routes.iter().find(|r| resolve_port(c, r).is_ok());
                let key = route.map_or(format!("{prefix}.port"), |r| route_key(prefix, r, "port"));
                (
                    key,
                    target.addr.port().to_string(),
                    format!(
                        "does the app listen on port {} on all interfaces? set the port label to the one it listens on",
                        target.addr.port()
                    ),
                )
            }
        };
        Problem {
            container: c.name.clone(),
            container_id: c.short_id().to_string(),
            key,
            value,
            message,
            hint: Some(hint),
        }
    }

    /// The routing table, each route with its round-robin counter (kept
    /// across snapshots), and the hosts (and `*.` wildcards) that want
    /// certificates.
    fn table(
        &mut self,
        routes: BTreeMap<Key, Vec<Backend>>,
        tls_off: &BTreeSet<Key>,
        mut policies: HashMap<Key, Arc<RoutePolicy>>,
        modes: &BTreeMap<Key, Arc<ServiceMode>>,
    ) -> (RouteTable, BTreeSet<String>) {
        let mut tls_hosts = BTreeSet::new();
        let table = RouteTable::new(routes.into_iter().map(|((host, prefix), mut backends)| {
            backends.dedup();
            // The stable replicas first, then the canary's.
            backends.sort_by_key(|b| b.canary.is_some());
            let stable = backends.iter().filter(|b| b.canary.is_none()).count();
            let canary = backends
                .iter()
                .filter_map(|b| b.canary)
                .max()
                .filter(|_| stable > 0)
                .map(|percent| CanarySplit {
                    percent,
                    stable,
                    generation: backends
                        .iter()
                        .filter(|b| b.canary.is_some())
                        .map(|b| b.token as u32)
                        .min()
                        .unwrap_or_default(),
                });
            let next = self
                .counters
                .entry((host.clone(), prefix.clone()))
                .or_default()
                .clone();
            let tls = !tls_off.contains(&(host.clone(), prefix.clone()));
            if tls {
                // A wildcard route wants one wildcard certificate (DNS-01).
                tls_hosts.insert(host.to_string());
            }
            let label = Arc::from(format!("{host}{}", prefix.as_str()));
            let policy = policies.remove(&(host.clone(), prefix.clone()));
            let mode = modes.get(&(host.clone(), prefix.clone())).cloned();
            Route {
                host,
                prefix,
                backends,
                next,
                tls,
                label,
                policy,
                mode,
                canary,
            }
        }));
        (table, tls_hosts)
    }

    /// Each route's policy: the newest container's of each service on it.
    /// Services that disagree block the route (503) with a problem: none
    /// of them may open a route another one protects. An unchanged policy
    /// keeps its live state from the last snapshot.
    fn route_policies(
        &mut self,
        found: BTreeMap<Key, BTreeMap<String, PolicyFrom>>,
        problems: &mut Vec<Problem>,
    ) -> HashMap<Key, Arc<RoutePolicy>> {
        let mut out = HashMap::new();
        for (key, by_service) in found {
            let mut froms = by_service.into_iter();
            let Some((first_service, first)) = froms.next() else {
                continue;
            };
            let mut spec = first.spec;
            for (service, other) in froms {
                if other.spec == spec {
                    continue;
                }
                let why = format!(
                    "services {first_service} and {service} route {}{} with different policy labels: give them the same ones",
                    key.0,
                    key.1.as_str()
                );
                problems.push(Problem {
                    container: other.container.clone(),
                    container_id: other.container_id.clone(),
                    key: format!("{}.host", self.config.label_prefix),
                    value: key.0.to_string(),
                    message: why.clone(),
                    hint: Some(format!(
                        "the route answers 503 until they agree ({})",
                        first.container
                    )),
                });
                spec = PolicySpec {
                    blocked: vec![why],
                    ..PolicySpec::default()
                };
                break;
            }
            if spec.is_empty() {
                continue;
            }
            let timeouts = (
                self.config.proxy.connect_timeout,
                self.config.proxy.read_timeout,
            );
            let policy = match self.policies.get(&key) {
                Some(old) if old.same(&spec, timeouts) => old.clone(),
                old => {
                    let limiter = old.and_then(|o| o.limiter.clone());
                    Arc::new(RoutePolicy::new(Arc::new(spec), limiter, timeouts))
                }
            };
            out.insert(key, policy);
        }
        self.policies = out.clone();
        out
    }

    /// Takes back the last good labels saved by an earlier run; labels that
    /// no longer parse cleanly (a prefix or rules changed) are dropped.
    pub fn restore(&mut self, saved: BTreeMap<String, LastLabels>) {
        for (service, labels) in saved {
            let map = labels.clone().into_iter().collect();
            let (spec, problems) = labels::parse(&self.config.label_prefix, &map);
            if problems.is_empty() {
                self.last_good.insert(service, (labels, spec));
            }
        }
    }

    /// The last good labels of every service, when they changed since the
    /// last call: what to save.
    pub fn last_good_changed(&mut self) -> Option<BTreeMap<String, LastLabels>> {
        if !std::mem::take(&mut self.last_good_dirty) {
            return None;
        }
        Some(
            self.last_good
                .iter()
                .map(|(k, (l, _))| (k.clone(), l.clone()))
                .collect(),
        )
    }

    /// The container's names in the internal zone: `<service>` and
    /// `<service>.<project>` (compose), its own name, and its `dns` aliases.
    fn dns_names(&self, dns: &mut DnsTable, c: &Container, spec: &LabelSpec, state: BackendState) {
        let project = c.labels.get(COMPOSE_PROJECT);
        let target = Target {
            container: c.name.clone(),
            project: project.cloned(),
            ready: state == BackendState::Ready,
            addrs: c
                .addresses
                .iter()
                .filter(|a| spec.network.as_ref().is_none_or(|n| n == &a.network))
                .cloned()
                .collect(),
        };
        let zone = format!(".{}", self.config.dns.zone);
        let mut names = vec![c.name.clone()];
        if let (Some(p), Some(s)) = (project, c.labels.get(COMPOSE_SERVICE)) {
            names.push(s.clone());
            names.push(format!("{s}.{p}"));
        }
        for alias in &spec.dns {
            names.push(alias.strip_suffix(&zone).unwrap_or(alias).to_string());
        }
        for n in names {
            dns.insert(&n, target.clone());
        }
    }

    /// The container's labels, or when they have problems, the last labels of
    /// its service that had none, so one bad label never takes a live route down.
    fn labels_for(&mut self, c: &Container, problems: &mut Vec<Problem>) -> LabelSpec {
        let (spec, mut label_problems) = labels::parse(&self.config.label_prefix, &c.labels);
        // The constraint label may share the prefix (berth.instance=public).
        if let Some((key, _)) = &self.config.docker.constraint {
            label_problems.retain(|p| &p.key != key);
        }
        // A bad `scale.*` label only leaves the service unscaled: it is no
        // reason to fall back to older labels (whose policy would go on).
        let scale_prefix = format!("{}.scale.", self.config.label_prefix);
        let (scale_problems, label_problems): (Vec<_>, Vec<_>) = label_problems
            .into_iter()
            .partition(|p| p.key.starts_with(&scale_prefix));
        for p in scale_problems.iter().cloned() {
            problems.push(label_problem(
                c,
                p,
                Some("not autoscaled until it is fixed".into()),
            ));
        }
        let service = c.service_key();
        if label_problems.is_empty() {
            // Good but for autoscaling: kept without its scale keys (a
            // fallback takes the scale of the labels of the moment).
            let mut mine = own_labels(&self.config.label_prefix, &c.labels);
            mine.retain(|k, _| !k.starts_with(&scale_prefix));
            if self.last_good.get(&service).map(|(l, _)| l) != Some(&mine) {
                self.last_good.insert(service, (mine, spec.clone()));
                self.last_good_dirty = true;
            }
            return spec;
        }
        // Labels that ask for protection (auth, allow/deny, a rate or body
        // limit) apply as they parsed, bad parts blocking their route: the
        // last good labels may lack that protection, and serving with them
        // would leave open what the new ones close.
        let protects = labels::has_security_labels(&self.config.label_prefix, &c.labels);
        // The service's autoscaling is always what its labels say now.
        let fallback = if protects {
            None
        } else {
            self.last_good.get(&service).map(|(_, s)| LabelSpec {
                scale: spec.scale.clone(),
                ..s.clone()
            })
        };
        for p in label_problems {
            let kept = fallback
                .is_some()
                .then(|| format!("routes kept from the last good labels of {service}"));
            problems.push(label_problem(c, p, kept));
        }
        fallback.unwrap_or(spec)
    }
}

/// What one build collects before it becomes a snapshot.
#[derive(Default)]
struct Build {
    routes: BTreeMap<Key, Vec<Backend>>,
    /// Each route's policy from each service routed on it (its newest container).
    policies: BTreeMap<Key, BTreeMap<String, PolicyFrom>>,
    /// Routes of a service in maintenance or paused.
    modes: BTreeMap<Key, Arc<ServiceMode>>,
    tls_off: BTreeSet<Key>,
    problems: Vec<Problem>,
    backends: BTreeMap<String, BackendInfo>,
    checks: Vec<CheckTarget>,
    dns: DnsTable,
    unchecked: usize,
    /// Each autoscaled service's policy, from its newest running container.
    scale: BTreeMap<String, (String, crate::deploy::autoscale::Policy)>,
}

/// A canary replica's share of traffic, from its label.
fn canary_of(c: &Container) -> Option<u32> {
    c.labels
        .get(crate::deploy::canary::CANARY_LABEL)
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|p| (1..=99).contains(p))
}

/// A route's policy as one container's labels say it.
struct PolicyFrom {
    started_at: String,
    container: String,
    container_id: String,
    spec: PolicySpec,
}

/// Every container as `berth ps` shows it.
fn container_infos(
    world: &World,
    backends: &BTreeMap<String, BackendInfo>,
    signals: &Signals,
) -> BTreeMap<String, ContainerInfo> {
    world
        .values()
        .map(|c| {
            let backend = backends.get(&c.id);
            let info = ContainerInfo {
                id: c.id.clone(),
                name: c.name.clone(),
                image: c.image.clone(),
                project: c.labels.get(COMPOSE_PROJECT).cloned(),
                service: c.labels.get(COMPOSE_SERVICE).cloned(),
                status: c.status.clone(),
                health: c.health.clone(),
                state: backend.map_or_else(|| c.state_with(signals, false), |b| b.state),
                routed: backend.is_some(),
                ports: c.ports.clone(),
                networks: c.networks.clone(),
                started_at: c.started_at.clone(),
                config_hash: c
                    .labels
                    .get(crate::deploy::project::spec::COMPOSE_HASH)
                    .cloned(),
                exit_code: c.exit_code,
                canary: canary_of(c),
                run: RunFacts {
                    stop_requested: c.stopping,
                    restart_policy: c.restart_policy.clone(),
                    oom_killed: c.oom_killed,
                    cpu_limit: c.cpu_limit,
                    memory_limited: c.memory_limited,
                },
                restarts: 0,
            };
            (c.id.clone(), info)
        })
        .collect()
}

/// A label's problem on container `c`, with `more` said after its hint.
fn label_problem(c: &Container, p: labels::LabelProblem, more: Option<String>) -> Problem {
    Problem {
        container: c.name.clone(),
        container_id: c.short_id().to_string(),
        key: p.key,
        value: p.value,
        message: p.message,
        hint: match (p.hint, more) {
            (Some(h), Some(m)) => Some(format!("{h} ({m})")),
            (h, m) => h.or(m),
        },
    }
}

fn problem(c: &Container, key: &str, p: Unresolved) -> Problem {
    let (value, message, hint) = p;
    Problem {
        container: c.name.clone(),
        container_id: c.short_id().to_string(),
        key: key.to_string(),
        value,
        message,
        hint,
    }
}

fn route_key(prefix: &str, r: &RouteSpec, key: &str) -> String {
    if r.name.is_empty() {
        format!("{prefix}.{key}")
    } else {
        format!("{prefix}.{}.{key}", r.name)
    }
}

type Unresolved = (String, String, Option<String>);

fn resolve_port(c: &Container, r: &RouteSpec) -> Result<u16, Unresolved> {
    if let Some(p) = r.port {
        return Ok(p);
    }
    match c.exposed_ports.as_slice() {
        [p] => Ok(*p),
        [] => Err((
            String::new(),
            "no port: the image exposes none".into(),
            Some("set the port label to the port the app listens on".into()),
        )),
        many => Err((
            String::new(),
            format!(
                "the image exposes several ports ({})",
                many.iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some("set the port label to the one to route to".into()),
        )),
    }
}

/// The address to reach a container on. `Ok(None)`: not running, so no
/// address is expected.
fn resolve_ip(
    c: &Container,
    spec: &LabelSpec,
    running: bool,
) -> Result<Option<std::net::IpAddr>, Unresolved> {
    let names = || c.networks.keys().cloned().collect::<Vec<_>>().join(", ");
    let (net, ip) = match &spec.network {
        Some(n) => match c.networks.get(n) {
            Some(ip) => (n.clone(), *ip),
            None => {
                return Err((
                    n.clone(),
                    format!("not attached to network {n} (it is on: {})", names()),
                    None,
                ))
            }
        },
        None => {
            let mut with_ip = c.networks.iter().filter(|(_, ip)| ip.is_some() || !running);
            match (with_ip.next(), with_ip.next()) {
                (Some((n, ip)), None) => (n.clone(), *ip),
                (None, _) if !running => return Ok(None),
                (None, _) => {
                    return Err((
                        String::new(),
                        "no network address (network mode host or none?)".into(),
                        None,
                    ))
                }
                (Some(_), Some(_)) => {
                    return Err((
                        String::new(),
                        format!(
                            "on several networks ({}): which one to use is ambiguous",
                            names()
                        ),
                        Some("set the network label to one of them".into()),
                    ))
                }
            }
        }
    };
    match ip {
        Some(ip) => Ok(Some(ip)),
        None if !running => Ok(None),
        None => Err((net.clone(), format!("no address on network {net}"), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::{CheckState, COMPOSE_SERVICE};

    fn container(name: &str, ip: u8, labels: &[(&str, &str)]) -> Container {
        Container {
            id: format!("{name}-id-0123456789"),
            name: name.into(),
            status: "running".into(),
            stop_signal: 15,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            networks: [("net".to_string(), Some([10, 0, 0, ip].into()))].into(),
            exposed_ports: vec![8080],
            ..Default::default()
        }
    }

    #[test]
    fn autoscaling_is_what_a_compose_services_labels_say_now() {
        let mut p = Planner::new(Arc::new(Config::default()));
        let web = |host: &'static str, max: &'static str| {
            container(
                "p-web-1",
                2,
                &[
                    (COMPOSE_PROJECT, "p"),
                    (COMPOSE_SERVICE, "web"),
                    ("berth.host", host),
                    ("berth.scale.max", max),
                ],
            )
        };
        let mut w = World::new();
        let c = web("a.test", "3");
        w.insert(c.id.clone(), c);
        let s = build(&mut p, &w);
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        assert_eq!(s.autoscale.get("p/web").map(|p| p.max), Some(3));

        // A bad scale label: not autoscaled, and the other labels apply as
        // they are (no fall back to the last good ones).
        let c = web("b.test", "abc");
        w.insert(c.id.clone(), c);
        let s = build(&mut p, &w);
        assert!(s.autoscale.is_empty());
        assert_eq!(s.problems.len(), 1, "{:?}", s.problems);
        assert_eq!(
            (s.problems[0].key.as_str(), s.problems[0].value.as_str()),
            ("berth.scale.max", "abc")
        );
        assert!(s.table.find("b.test", "/").is_some());
        assert!(s.table.find("a.test", "/").is_none());

        // A lone container cannot be autoscaled.
        let mut w = World::new();
        let c = container(
            "solo",
            3,
            &[("berth.host", "c.test"), ("berth.scale.max", "2")],
        );
        w.insert(c.id.clone(), c);
        let s = build(&mut p, &w);
        assert!(s.autoscale.is_empty());
        assert!(
            s.problems[0].message.contains("compose service"),
            "{:?}",
            s.problems
        );
        assert!(s.table.find("c.test", "/").is_some(), "still routed");
    }

    /// Builds as if every container had passed berth's own check.
    fn build(p: &mut Planner, w: &World) -> Snapshot {
        let mut signals = Signals::default();
        for c in w.values() {
            let ok = CheckState {
                started_at: c.started_at.clone(),
                healthy: true,
                ever_healthy: true,
                ok_streak: 1,
                ..Default::default()
            };
            signals.checks.insert(c.id.clone(), ok);
        }
        p.build(w, &signals)
    }

    #[test]
    fn without_any_check_result_a_replica_waits_for_its_tcp_check() {
        let mut p = Planner::new(Arc::default());
        let w = world(vec![container("web-1", 2, &[("berth.host", "a.test")])]);
        let s = p.build(&w, &Signals::default());
        assert_eq!(
            backends(&s, "a.test", "/"),
            Some(vec![]),
            "known, not ready"
        );
        assert_eq!(s.checks.len(), 1);
        assert_eq!(s.checks[0].path, None, "a TCP connect check");
        assert_eq!(s.checks[0].addr.to_string(), "10.0.0.2:8080");
        // A Docker HEALTHCHECK replaces berth's TCP check.
        let mut docker_checked = container("web-1", 2, &[("berth.host", "a.test")]);
        docker_checked.health = Some("healthy".into());
        let s = p.build(&world(vec![docker_checked]), &Signals::default());
        assert!(s.checks.is_empty());
        assert_eq!(
            backends(&s, "a.test", "/"),
            Some(vec!["10.0.0.2:8080".into()])
        );
    }

    fn world(cs: Vec<Container>) -> World {
        cs.into_iter().map(|c| (c.id.clone(), c)).collect()
    }

    fn backends(s: &Snapshot, host: &str, path: &str) -> Option<Vec<String>> {
        s.table
            .find(host, path)
            .map(|r| r.backends.iter().map(|b| b.addr.to_string()).collect())
    }

    #[test]
    fn a_backend_whose_check_never_passes_is_a_problem_named_by_its_label() {
        let mut p = Planner::new(Arc::default());
        let failing = |c: &Container, streak: u32, ever: bool| {
            let mut signals = Signals::default();
            let state = CheckState {
                started_at: c.started_at.clone(),
                ever_healthy: ever,
                fail_streak: streak,
                last: "connect: Connection refused (os error 111)".into(),
                ..Default::default()
            };
            signals.checks.insert(c.id.clone(), state);
            signals
        };
        let wrong_port = container(
            "web-1",
            2,
            &[("berth.host", "a.test"), ("berth.port", "9999")],
        );
        let w = world(vec![wrong_port.clone()]);
        let s = p.build(&w, &failing(&wrong_port, NOT_READY_AFTER, false));
        assert_eq!(s.problems.len(), 1, "{:?}", s.problems);
        let problem = &s.problems[0];
        assert_eq!(
            (problem.key.as_str(), problem.value.as_str()),
            ("berth.port", "9999")
        );
        assert!(problem.message.contains("Connection refused"), "{problem}");
        for (streak, ever) in [(NOT_READY_AFTER - 1, false), (NOT_READY_AFTER, true)] {
            let s = p.build(&w, &failing(&wrong_port, streak, ever));
            assert!(
                s.problems.is_empty(),
                "starting, or down after passing: {:?}",
                s.problems
            );
        }
        let bad_path = container(
            "api-1",
            3,
            &[
                ("berth.api.host", "api.test"),
                ("berth.health.path", "/healthz"),
            ],
        );
        let s = p.build(
            &world(vec![bad_path.clone()]),
            &failing(&bad_path, 40, false),
        );
        let keys: Vec<(&str, &str)> = s
            .problems
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str()))
            .collect();
        assert_eq!(keys, vec![("berth.health.path", "/healthz")]);
    }

    #[test]
    fn replicas_share_a_route() {
        let mut p = Planner::new(Arc::default());
        let s = build(
            &mut p,
            &world(vec![
                container("web-1", 2, &[("berth.host", "a.test")]),
                container("web-2", 3, &[("berth.host", "a.test")]),
            ]),
        );
        assert_eq!(
            backends(&s, "a.test", "/"),
            Some(vec!["10.0.0.2:8080".into(), "10.0.0.3:8080".into()])
        );
        assert!(s.problems.is_empty());
    }

    #[test]
    fn stopped_and_unhealthy_keep_the_route_known_but_empty() {
        let mut stopped = container("web-1", 2, &[("berth.host", "a.test")]);
        stopped.status = "exited".into();
        stopped.networks = [("net".to_string(), None)].into();
        let mut starting = container("web-2", 3, &[("berth.host", "a.test")]);
        starting.health = Some("starting".into());
        let mut p = Planner::new(Arc::default());
        let s = build(&mut p, &world(vec![stopped, starting]));
        assert_eq!(backends(&s, "a.test", "/"), Some(vec![]));
        assert!(s.problems.is_empty(), "{:?}", s.problems);
    }

    #[test]
    fn bad_label_on_one_container_leaves_others_alone() {
        let mut p = Planner::new(Arc::default());
        let s = build(
            &mut p,
            &world(vec![
                container("good", 2, &[("berth.host", "a.test")]),
                container("typo", 3, &[("berth.hots", "b.test")]),
            ]),
        );
        assert_eq!(
            backends(&s, "a.test", "/"),
            Some(vec!["10.0.0.2:8080".into()])
        );
        assert_eq!(s.problems.len(), 1);
        let text = s.problems[0].to_string();
        assert!(
            text.contains("typo")
                && text.contains("berth.hots")
                && text.contains("did you mean berth.host?"),
            "{text}"
        );
    }

    #[test]
    fn last_good_labels_of_a_service_stay_in_place() {
        let mut p = Planner::new(Arc::default());
        let good = container(
            "web-1",
            2,
            &[
                ("berth.host", "a.test"),
                (COMPOSE_SERVICE, "web"),
                ("com.docker.compose.project", "p"),
            ],
        );
        build(&mut p, &world(vec![good]));
        // The service is recreated with a typo in its port label.
        let bad = container(
            "web-1",
            4,
            &[
                ("berth.host", "a.test"),
                ("berth.port", "80a"),
                (COMPOSE_SERVICE, "web"),
                ("com.docker.compose.project", "p"),
            ],
        );
        let s = build(&mut p, &world(vec![bad]));
        assert_eq!(
            backends(&s, "a.test", "/"),
            Some(vec!["10.0.0.4:8080".into()])
        );
        assert_eq!(s.problems.len(), 1);
        assert!(s.problems[0]
            .hint
            .as_deref()
            .unwrap()
            .contains("last good labels of p/web"));
    }

    #[test]
    fn new_protection_with_a_mistake_never_falls_back_to_open_labels() {
        let mut p = Planner::new(Arc::default());
        let svc = [
            (COMPOSE_SERVICE, "web"),
            ("com.docker.compose.project", "p"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut l = vec![("berth.host", "a.test")];
            l.extend_from_slice(&svc);
            l.extend_from_slice(extra);
            container("web-1", 2, &l)
        };
        build(&mut p, &world(vec![with(&[])]));
        // Auth is added with a plain password: the route is blocked, not
        // served on the last good labels (which have no auth).
        let s = build(
            &mut p,
            &world(vec![with(&[("berth.auth.basic", "bob:hunter2")])]),
        );
        let route = s.table.find("a.test", "/").unwrap();
        assert!(route.policy.as_ref().unwrap().blocked.is_some());
        assert!(!s.problems[0]
            .hint
            .as_deref()
            .unwrap_or("")
            .contains("last good"));
        // A valid new auth next to another mistake keeps the auth.
        let hash = "$2y$05$pQid562aaK.6oz2XeQEu4eYNpBIaQFBBTC5nmE4UBiAYQCwXSqlGi";
        let c = container(
            "web-1",
            2,
            &[
                ("berth.host", "a.test"),
                (COMPOSE_SERVICE, "web"),
                ("com.docker.compose.project", "p"),
                ("berth.auth.basic", &format!("alice:{hash}")),
                ("berth.compress", "deflate"),
            ],
        );
        let s = build(&mut p, &world(vec![c]));
        let route = s.table.find("a.test", "/").unwrap();
        let policy = route.policy.as_ref().unwrap();
        assert!(policy.auth.is_some() && policy.blocked.is_none());
    }

    #[test]
    fn last_good_labels_survive_a_restart_of_berth() {
        let labels = |extra: &[(&'static str, &'static str)]| {
            let mut l = vec![
                ("berth.host", "a.test"),
                ("berth.path", "/api"),
                (COMPOSE_SERVICE, "api"),
                (COMPOSE_PROJECT, "shop"),
            ];
            l.extend_from_slice(extra);
            container("api-1", 2, &l)
        };
        let mut p = Planner::new(Arc::default());
        build(&mut p, &world(vec![labels(&[])]));
        let saved = p.last_good_changed().expect("new last good labels");
        assert_eq!(saved["shop/api"]["berth.path"], "/api");
        assert!(
            !saved["shop/api"].contains_key(COMPOSE_SERVICE),
            "berth's own only"
        );
        build(&mut p, &world(vec![labels(&[])]));
        assert_eq!(p.last_good_changed(), None, "unchanged: nothing to save");
        // A new berth, and the service now carries a typo: the saved labels
        // keep /api where it was.
        let mut fresh = Planner::new(Arc::default());
        fresh.restore(saved);
        let s = build(&mut fresh, &world(vec![labels(&[("berth.pth", "/x")])]));
        assert_eq!(
            backends(&s, "a.test", "/api"),
            Some(vec!["10.0.0.2:8080".into()])
        );
        assert_eq!(backends(&s, "a.test", "/"), None);
        assert!(s.problems[0]
            .hint
            .as_deref()
            .unwrap()
            .contains("last good labels"));
    }

    #[test]
    fn port_and_network_ambiguity_are_problems() {
        let mut two_ports = container("a", 2, &[("berth.host", "a.test")]);
        two_ports.exposed_ports = vec![80, 443];
        let mut two_nets = container("b", 3, &[("berth.host", "b.test")]);
        two_nets
            .networks
            .insert("other".into(), Some([10, 1, 0, 3].into()));
        let mut chosen = two_nets.clone();
        chosen.id = "c-id".into();
        chosen.name = "c".into();
        chosen.labels = [("berth.host", "c.test"), ("berth.network", "other")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut p = Planner::new(Arc::default());
        let s = build(&mut p, &world(vec![two_ports, two_nets, chosen]));
        assert_eq!(backends(&s, "a.test", "/"), Some(vec![]));
        assert_eq!(backends(&s, "b.test", "/"), Some(vec![]));
        assert_eq!(
            backends(&s, "c.test", "/"),
            Some(vec!["10.1.0.3:8080".into()])
        );
        let keys: Vec<&str> = s.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, vec!["berth.port", "berth.network"]);
        assert!(s.problems[0].message.contains("80, 443"));
    }

    #[test]
    fn the_constraint_label_is_not_an_unknown_label() {
        let cfg = Config::parse("docker:\n  constraint: berth.instance=public\n", "t").unwrap();
        let mut p = Planner::new(Arc::new(cfg));
        let s = build(
            &mut p,
            &world(vec![container(
                "a",
                2,
                &[("berth.host", "a.test"), ("berth.instance", "public")],
            )]),
        );
        assert!(s.problems.is_empty(), "{:?}", s.problems);
    }

    #[test]
    fn static_routes_join_the_same_table() {
        let cfg = Config::parse(
            "routes:\n  - host: s.test\n    backends: [127.0.0.1:9000]\n",
            "t",
        )
        .unwrap();
        let mut p = Planner::new(Arc::new(cfg));
        let s = build(&mut p, &World::new());
        assert_eq!(
            backends(&s, "s.test", "/"),
            Some(vec!["127.0.0.1:9000".into()])
        );
    }

    #[test]
    fn round_robin_position_survives_rebuilds() {
        let mut p = Planner::new(Arc::default());
        let w = world(vec![container("web-1", 2, &[("berth.host", "a.test")])]);
        let s1 = build(&mut p, &w);
        s1.table.find("a.test", "/").unwrap().start();
        let s2 = build(&mut p, &w);
        assert_eq!(s2.table.find("a.test", "/").unwrap().start(), 1);
        assert_eq!(s2.generation, 2);
    }

    #[test]
    fn dns_names_follow_state_labels_and_networks() {
        use crate::world::NetAddress;
        let at = |network: &str, ip: &str| NetAddress {
            network: network.into(),
            ip: ip.parse().unwrap(),
            prefix: 24,
        };
        let host: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let mut web = container(
            "blog-web-1",
            2,
            &[
                (COMPOSE_PROJECT, "blog"),
                (COMPOSE_SERVICE, "web"),
                ("berth.host", "a.test"),
                ("berth.dns", "www.internal,api"),
                ("berth.network", "front"),
            ],
        );
        web.addresses = vec![at("front", "10.0.1.2"), at("back", "10.0.2.2")];
        let mut db = container(
            "blog-db-1",
            3,
            &[(COMPOSE_PROJECT, "blog"), (COMPOSE_SERVICE, "db")],
        );
        db.addresses = vec![at("back", "10.0.2.3")];
        db.health = Some("starting".into());
        let mut hidden = container("hidden", 4, &[("berth.enable", "false")]);
        hidden.addresses = vec![at("back", "10.0.2.4")];
        let mut p = Planner::new(Arc::default());
        let s = build(&mut p, &world(vec![web, db.clone(), hidden]));
        let web_ip = Some(vec!["10.0.1.2".parse().unwrap()]);
        for name in ["web", "web.blog", "blog-web-1", "www", "api"] {
            assert_eq!(
                s.dns.lookup(name, host),
                web_ip,
                "{name}: only berth.network's address"
            );
        }
        assert_eq!(s.dns.lookup("db", host), Some(vec![]), "starting: NODATA");
        assert_eq!(s.dns.lookup("hidden", host), None, "berth.enable=false");
        assert_eq!(s.dns.subnets.len(), 2, "{:?}", s.dns.subnets);
        db.health = Some("healthy".into());
        let s = build(&mut p, &world(vec![db]));
        assert_eq!(
            s.dns.lookup("db.blog", host),
            Some(vec!["10.0.2.3".parse().unwrap()])
        );
        assert_eq!(s.dns.lookup("web", host), None, "gone with its container");
    }
}
