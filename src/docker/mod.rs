//! The Docker watcher: the one task that owns the [`World`]. It opens the event
//! stream, lists and inspects everything, applies events in order, re-lists
//! periodically, and after every change asks the planner for a new snapshot
//! and publishes it. When the engine goes away it retries with capped backoff.

pub mod convert;
pub mod ops;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::models::EventMessage;
use bollard::query_parameters::{EventsOptions, InspectContainerOptions, ListContainersOptions};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::plan::{DockerStatus, Planner, Problem};
use crate::world::{is_stop_signal, CheckState, Container, Signals, World};
use crate::SharedSnapshot;

/// Seconds a single API call (not the event stream) may take.
const API_TIMEOUT_SECS: u64 = 10;
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot connect to the Docker engine at {host}: {source}")]
    Connect {
        host: String,
        source: bollard::errors::Error,
    },
    #[error("Docker API call {call} failed: {source}")]
    Api {
        call: &'static str,
        source: bollard::errors::Error,
    },
    #[error("the Docker event stream ended")]
    StreamEnded,
}

pub fn connect(config: &Config) -> Result<Docker, DockerError> {
    let host = config
        .docker
        .host
        .clone()
        .or_else(|| {
            std::env::var("DOCKER_HOST")
                .ok()
                .filter(|h| h.starts_with("unix://"))
        })
        .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
    Docker::connect_with_unix(&host, API_TIMEOUT_SECS, API_DEFAULT_VERSION)
        .map_err(|source| DockerError::Connect { host, source })
}

fn wanted(config: &Config, c: &Container) -> bool {
    match &config.docker.constraint {
        None => true,
        Some((k, v)) => c.labels.get(k) == Some(v),
    }
}

/// Lists every container (running or not) and inspects each: `list` alone
/// lacks health and per-network addresses.
pub async fn list_and_inspect(docker: &Docker, config: &Config) -> Result<World, DockerError> {
    let mut filters = HashMap::new();
    if let Some((k, v)) = &config.docker.constraint {
        filters.insert("label".to_string(), vec![format!("{k}={v}")]);
    }
    let list = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(|source| DockerError::Api {
            call: "list containers",
            source,
        })?;
    let mut world = World::new();
    for summary in list {
        let Some(id) = summary.id else { continue };
        if let Some(c) = inspect(docker, &id).await? {
            if wanted(config, &c) {
                world.insert(c.id.clone(), c);
            }
        }
    }
    Ok(world)
}

/// `Ok(None)` when the container is gone.
async fn inspect(docker: &Docker, id: &str) -> Result<Option<Container>, DockerError> {
    match docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
    {
        Ok(i) => Ok(convert::from_inspect(&i)),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(source) => Err(DockerError::Api {
            call: "inspect container",
            source,
        }),
    }
}

pub struct Watcher {
    config: Arc<Config>,
    snapshot: SharedSnapshot,
    notify: watch::Sender<u64>,
    inputs_tx: Inputs,
    inputs: Mutex<Option<mpsc::UnboundedReceiver<Input>>>,
}

/// What other parts of berth tell the owner of the world.
#[derive(Debug)]
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
    /// Take no new requests (rollout, scale, admin drain).
    Drain { id: String },
    /// Back in rotation: what the drain was for did not happen.
    Undrain { id: String },
}

pub type Inputs = mpsc::UnboundedSender<Input>;

/// How long a container stays out after repeated connect failures before it
/// is probed again.
pub const PASSIVE_COOLDOWN: Duration = Duration::from_secs(5);

struct State {
    world: World,
    signals: Signals,
    planner: Planner,
    problems: Vec<Problem>,
    /// Orders inspections: each gets a number, and a result older than what
    /// was already applied to its container is dropped.
    seq: u64,
    applied: HashMap<String, u64>,
    docker: DockerStatus,
}

/// What an inspection (or a full re-list) found, sent back to the event loop.
// A few of these a second at most: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Found {
    One {
        id: String,
        seq: u64,
        result: Result<Option<Container>, DockerError>,
        action: String,
        event_ns: i64,
    },
    All {
        seq: u64,
        result: Result<World, DockerError>,
    },
}

impl State {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
}

impl Watcher {
    pub fn new(
        config: Arc<Config>,
        snapshot: SharedSnapshot,
        notify: watch::Sender<u64>,
        inputs_tx: Inputs,
        inputs: mpsc::UnboundedReceiver<Input>,
    ) -> Watcher {
        Watcher {
            config,
            snapshot,
            notify,
            inputs_tx,
            inputs: Mutex::new(Some(inputs)),
        }
    }

    pub async fn run(&self) {
        let Some(mut inputs) = self.inputs.lock().ok().and_then(|mut i| i.take()) else {
            warn!("Docker watcher started twice; the second one does nothing");
            return;
        };
        let mut st = State {
            world: World::new(),
            signals: Signals::default(),
            planner: Planner::new(self.config.clone()),
            problems: Vec::new(),
            seq: 0,
            applied: HashMap::new(),
            docker: DockerStatus::default(),
        };
        self.publish(&mut st, None);
        let mut backoff = BACKOFF_MIN;
        loop {
            let started = std::time::Instant::now();
            let err = self.session(&mut st, &mut inputs).await;
            // A session that ran a while was healthy: start the backoff over.
            if started.elapsed() > BACKOFF_MAX {
                backoff = BACKOFF_MIN;
            }
            warn!(error = %err, retry_in = ?backoff, "Docker watch interrupted; routes stay as they are until the engine answers");
            st.docker.connected = false;
            self.publish(&mut st, None);
            // Health results and drains still apply while the engine is away.
            let wait = tokio::time::sleep(backoff);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    _ = &mut wait => break,
                    Some(i) = inputs.recv() => self.on_input(&mut st, i),
                }
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn on_input(&self, st: &mut State, input: Input) {
        let changed = match input {
            Input::Check {
                id,
                started_at,
                ok,
                detail,
                rise,
                fall,
            } => {
                let Some(c) = st.world.get(&id) else { return };
                if c.started_at != started_at {
                    return;
                }
                let entry = st.signals.checks.entry(id.clone()).or_default();
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
                // A new result text is worth a snapshot too: rollouts report it.
                flipped || before != detail
            }
            Input::ConnectFailures { id } => {
                let Some(c) = st.world.get(&id) else { return };
                if !st.signals.passive_down.insert(id.clone()) {
                    return;
                }
                warn!(container = %c.name, cooldown = ?PASSIVE_COOLDOWN, "repeated connect failures: out of rotation until a probe succeeds");
                self.schedule_probe(id);
                true
            }
            Input::Probe { id, ok } => {
                if !st.signals.passive_down.contains(&id) {
                    return;
                }
                if ok {
                    st.signals.passive_down.remove(&id);
                    if let Some(c) = st.world.get(&id) {
                        info!(container = %c.name, "probe succeeded: back in rotation");
                    }
                    true
                } else {
                    self.schedule_probe(id);
                    false
                }
            }
            Input::Drain { id } => match st.world.get(&id) {
                Some(c) => {
                    st.signals.drain.insert(id, c.started_at.clone()).as_ref()
                        != Some(&c.started_at)
                }
                None => false,
            },
            Input::Undrain { id } => st.signals.drain.remove(&id).is_some(),
        };
        if changed {
            self.publish(st, None);
        }
    }

    /// After the cool-down, a TCP connect to each of the container's
    /// addresses decides whether it comes back.
    fn schedule_probe(&self, id: String) {
        let addrs = self
            .snapshot
            .load()
            .backends
            .get(&id)
            .map(|b| b.addrs.clone())
            .unwrap_or_default();
        let tx = self.inputs_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(PASSIVE_COOLDOWN).await;
            let mut ok = !addrs.is_empty();
            for a in addrs {
                let connect =
                    tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(a));
                ok &= matches!(connect.await, Ok(Ok(_)));
            }
            let _ = tx.send(Input::Probe { id, ok });
        });
    }

    /// One connection to the engine: resync, then follow events until
    /// something breaks. Returns why it stopped.
    ///
    /// Inspections run as tasks: `inspect` of a container that is starting
    /// waits for the start to finish, and a `kill` of another container must
    /// not queue behind it.
    async fn session(
        &self,
        st: &mut State,
        inputs: &mut mpsc::UnboundedReceiver<Input>,
    ) -> DockerError {
        let docker = match connect(&self.config) {
            Ok(d) => d,
            Err(e) => return e,
        };
        if let Err(source) = docker.ping().await {
            return DockerError::Api {
                call: "ping",
                source,
            };
        }
        // Events are asked for from one second before the list, so nothing
        // that happens while listing is missed; replaying one is harmless.
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs().saturating_sub(1))
            .unwrap_or(0);
        let seq = st.next_seq();
        match list_and_inspect(&docker, &self.config).await {
            Ok(world) => self.apply_all(st, seq, Ok(world), "connected"),
            Err(e) => return e,
        }
        let filters: HashMap<String, Vec<String>> = [(
            "type".to_string(),
            vec!["container".to_string(), "network".to_string()],
        )]
        .into();
        let mut events = docker.events(Some(EventsOptions {
            since: Some(since.to_string()),
            until: None,
            filters: Some(filters),
        }));
        let (tx, mut found) = mpsc::unbounded_channel::<Found>();
        let mut tick = tokio::time::interval(self.config.docker.resync_interval);
        tick.reset();
        loop {
            let result = tokio::select! {
                ev = events.next() => match ev {
                    Some(Ok(ev)) => {
                        self.on_event(&docker, st, &tx, ev);
                        Ok(())
                    }
                    Some(Err(source)) => Err(DockerError::Api { call: "events", source }),
                    None => Err(DockerError::StreamEnded),
                },
                Some(i) = inputs.recv() => {
                    self.on_input(st, i);
                    Ok(())
                }
                Some(f) = found.recv() => match f {
                    Found::One { id, seq, result, action, event_ns } => result.map(|c| {
                        if self.apply_one(st, id.clone(), seq, c) {
                            self.publish(st, Some((&action, &id, event_ns)));
                        }
                    }),
                    Found::All { seq, result } => {
                        self.apply_all(st, seq, result, "periodic");
                        Ok(())
                    }
                },
                _ = tick.tick() => {
                    let seq = st.next_seq();
                    let (docker, config, tx) = (docker.clone(), self.config.clone(), tx.clone());
                    tokio::spawn(async move {
                        let result = list_and_inspect(&docker, &config).await;
                        let _ = tx.send(Found::All { seq, result });
                    });
                    Ok(())
                }
            };
            if let Err(e) = result {
                return e;
            }
        }
    }

    fn on_event(
        &self,
        docker: &Docker,
        st: &mut State,
        tx: &mpsc::UnboundedSender<Found>,
        ev: EventMessage,
    ) {
        let action = ev.action.as_deref().unwrap_or_default();
        let actor = ev.actor.as_ref();
        let attrs = actor.and_then(|a| a.attributes.as_ref());
        let is_network = matches!(ev.typ, Some(bollard::models::EventMessageTypeEnum::NETWORK));
        let id = if is_network {
            attrs.and_then(|a| a.get("container")).cloned()
        } else {
            actor.and_then(|a| a.id.clone())
        };
        let Some(id) = id else { return };
        let event_ns = ev.time_nano.unwrap_or(0);
        match action {
            // Health checks run as execs every interval: not a state change.
            a if a.starts_with("exec_") => {}
            // Applied at once, without asking the engine: the replica is
            // leaving and must get no new request.
            "kill" => {
                let signal = attrs
                    .and_then(|a| a.get("signal"))
                    .and_then(|s| s.parse().ok());
                if let (Some(c), Some(sig)) = (st.world.get_mut(&id), signal) {
                    if is_stop_signal(sig, c.stop_signal) && !c.stopping {
                        c.stopping = true;
                        self.publish(st, Some((action, &id, event_ns)));
                    }
                }
            }
            "destroy" => {
                let seq = st.next_seq();
                st.applied.insert(id.clone(), seq);
                if st.world.remove(&id).is_some() {
                    self.publish(st, Some((action, &id, event_ns)));
                }
            }
            a if REFRESH_ON.contains(&a) || a.starts_with("health_status") => {
                let seq = st.next_seq();
                let (docker, tx, action) = (docker.clone(), tx.clone(), action.to_string());
                tokio::spawn(async move {
                    let result = inspect(&docker, &id).await;
                    let _ = tx.send(Found::One {
                        id,
                        seq,
                        result,
                        action,
                        event_ns,
                    });
                });
            }
            _ => {}
        }
    }

    /// Applies one inspection unless something newer was applied already;
    /// true when what we know changed.
    fn apply_one(&self, st: &mut State, id: String, seq: u64, found: Option<Container>) -> bool {
        if st.applied.get(&id).is_some_and(|&s| s > seq) {
            return false;
        }
        st.applied.insert(id.clone(), seq);
        match found {
            Some(c) if wanted(&self.config, &c) => {
                let c = convert::merge(st.world.get(&id), c);
                if st.world.get(&id) == Some(&c) {
                    return false;
                }
                st.world.insert(id, c);
                true
            }
            _ => st.world.remove(&id).is_some(),
        }
    }

    /// Applies a full re-list; containers with a newer single inspection keep it.
    fn apply_all(&self, st: &mut State, seq: u64, result: Result<World, DockerError>, why: &str) {
        let mut fresh = match result {
            Ok(w) => w,
            Err(e) => {
                warn!(error = %e, why, "re-listing containers failed; keeping what is known");
                return;
            }
        };
        for (id, &s) in &st.applied {
            if s > seq {
                match st.world.get(id) {
                    Some(c) => fresh.insert(id.clone(), c.clone()),
                    None => fresh.remove(id),
                };
            }
        }
        st.docker.synced = true;
        st.docker.connected = true;
        st.docker.last_sync_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs());
        let (world, added, removed, changed) = convert::resync(&st.world, fresh);
        st.world = world;
        let world = &st.world;
        st.applied
            .retain(|id, &mut s| s > seq || world.contains_key(id));
        if why == "periodic" && added + removed + changed > 0 {
            warn!(
                added,
                removed, changed, "periodic resync found changes the event stream had not shown"
            );
        }
        info!(
            containers = st.world.len(),
            added, removed, changed, why, "resynced with the Docker engine"
        );
        self.publish(st, None);
    }

    fn publish(&self, st: &mut State, cause: Option<(&str, &str, i64)>) {
        let world = &st.world;
        st.signals.checks.retain(|id, _| world.contains_key(id));
        st.signals.passive_down.retain(|id| world.contains_key(id));
        st.signals
            .drain
            .retain(|id, run| world.get(id).is_some_and(|c| &c.started_at == run));
        let mut snap = st.planner.build(&st.world, &st.signals);
        let lag_us = cause.map(|(_, _, event_ns)| {
            let now_ns = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0);
            ((now_ns - event_ns).max(0) / 1000) as u64
        });
        if lag_us.is_some() {
            st.docker.last_event_lag_us = lag_us;
        }
        snap.docker = st.docker.clone();
        for p in snap.problems.iter().filter(|p| !st.problems.contains(p)) {
            warn!(container = %p.container, key = %p.key, value = %p.value, hint = p.hint.as_deref().unwrap_or(""), "label problem: {}", p.message);
        }
        st.problems = snap.problems.clone();
        let generation = snap.generation;
        let routes = snap.table.len();
        self.snapshot.store(Arc::new(snap));
        self.notify.send_replace(generation);
        if let (Some((action, id, _)), Some(latency_us)) = (cause, lag_us) {
            debug!(action, container = %&id[..id.len().min(12)], generation, routes, latency_us, "snapshot published");
        }
    }
}

/// Container events after which berth re-inspects the container.
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

crate::background_until_shutdown!(Watcher);
