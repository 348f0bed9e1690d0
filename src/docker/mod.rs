//! The Docker watcher: the one task that owns the [`World`]. It opens the event
//! stream, lists and inspects everything, applies events in order, re-lists
//! periodically, and after every change asks the planner for a new snapshot
//! and publishes it. When the engine goes away it retries with capped backoff.

pub mod convert;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bollard::models::EventMessage;
use bollard::query_parameters::{EventsOptions, InspectContainerOptions, ListContainersOptions};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures_util::StreamExt;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::plan::{Planner, Problem};
use crate::world::{is_stop_signal, Container, World};
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
}

struct State {
    world: World,
    planner: Planner,
    problems: Vec<Problem>,
}

impl Watcher {
    pub fn new(
        config: Arc<Config>,
        snapshot: SharedSnapshot,
        notify: watch::Sender<u64>,
    ) -> Watcher {
        Watcher {
            config,
            snapshot,
            notify,
        }
    }

    pub async fn run(&self) {
        let mut st = State {
            world: World::new(),
            planner: Planner::new(self.config.clone()),
            problems: Vec::new(),
        };
        self.publish(&mut st, None);
        let mut backoff = BACKOFF_MIN;
        loop {
            let synced_at = std::time::Instant::now();
            let err = self.session(&mut st).await;
            // A session that ran a while was healthy: start the backoff over.
            if synced_at.elapsed() > BACKOFF_MAX {
                backoff = BACKOFF_MIN;
            }
            warn!(error = %err, retry_in = ?backoff, "Docker watch interrupted; routes stay as they are until the engine answers");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One connection to the engine: resync, then follow events until
    /// something breaks. Returns why it stopped.
    async fn session(&self, st: &mut State) -> DockerError {
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
        if let Err(e) = self.resync(&docker, st, "connected").await {
            return e;
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
        let mut tick = tokio::time::interval(self.config.docker.resync_interval);
        tick.reset();
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Some(Ok(ev)) => {
                        if let Err(e) = self.apply(&docker, st, ev).await {
                            return e;
                        }
                    }
                    Some(Err(source)) => return DockerError::Api { call: "events", source },
                    None => return DockerError::StreamEnded,
                },
                _ = tick.tick() => {
                    if let Err(e) = self.resync(&docker, st, "periodic").await {
                        return e;
                    }
                }
            }
        }
    }

    async fn resync(&self, docker: &Docker, st: &mut State, why: &str) -> Result<(), DockerError> {
        let fresh = list_and_inspect(docker, &self.config).await?;
        let (world, added, removed, changed) = convert::resync(&st.world, fresh);
        st.world = world;
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
        Ok(())
    }

    async fn apply(
        &self,
        docker: &Docker,
        st: &mut State,
        ev: EventMessage,
    ) -> Result<(), DockerError> {
        let action = ev.action.as_deref().unwrap_or_default();
        let actor = ev.actor.as_ref();
        let attrs = actor.and_then(|a| a.attributes.as_ref());
        let is_network = matches!(ev.typ, Some(bollard::models::EventMessageTypeEnum::NETWORK));
        let id = if is_network {
            attrs.and_then(|a| a.get("container")).cloned()
        } else {
            actor.and_then(|a| a.id.clone())
        };
        let Some(id) = id else { return Ok(()) };
        let changed = match action {
            // Health checks run as execs every interval: not a state change.
            a if a.starts_with("exec_") => false,
            "kill" => {
                let signal = attrs
                    .and_then(|a| a.get("signal"))
                    .and_then(|s| s.parse().ok());
                match (st.world.get_mut(&id), signal) {
                    (Some(c), Some(sig)) if is_stop_signal(sig, c.stop_signal) && !c.stopping => {
                        c.stopping = true;
                        true
                    }
                    _ => false,
                }
            }
            "destroy" => st.world.remove(&id).is_some(),
            "create" | "start" | "restart" | "die" | "stop" | "pause" | "unpause" | "rename"
            | "update" | "connect" | "disconnect" | "oom" => self.refresh(docker, st, &id).await?,
            a if a.starts_with("health_status") => self.refresh(docker, st, &id).await?,
            _ => false,
        };
        if changed {
            let event_ns = ev.time_nano.unwrap_or(0);
            self.publish(st, Some((action, &id, event_ns)));
        }
        Ok(())
    }

    /// Re-inspects one container; true when what we know of it changed.
    async fn refresh(
        &self,
        docker: &Docker,
        st: &mut State,
        id: &str,
    ) -> Result<bool, DockerError> {
        match inspect(docker, id).await? {
            Some(c) if wanted(&self.config, &c) => {
                let c = convert::merge(st.world.get(id), c);
                if st.world.get(id) == Some(&c) {
                    return Ok(false);
                }
                st.world.insert(id.to_string(), c);
                Ok(true)
            }
            _ => Ok(st.world.remove(id).is_some()),
        }
    }

    fn publish(&self, st: &mut State, cause: Option<(&str, &str, i64)>) {
        let snap = st.planner.build(&st.world);
        for p in snap.problems.iter().filter(|p| !st.problems.contains(p)) {
            warn!(container = %p.container, key = %p.key, value = %p.value, hint = p.hint.as_deref().unwrap_or(""), "label problem: {}", p.message);
        }
        st.problems = snap.problems.clone();
        let generation = snap.generation;
        let routes = snap.table.len();
        self.snapshot.store(Arc::new(snap));
        self.notify.send_replace(generation);
        if let Some((action, id, event_ns)) = cause {
            let now_ns = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0);
            let latency_us = (now_ns - event_ns).max(0) / 1000;
            debug!(action, container = %&id[..id.len().min(12)], generation, routes, latency_us, "snapshot published");
        }
    }
}

#[async_trait]
impl BackgroundService for Watcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tokio::select! {
            _ = self.run() => {}
            _ = shutdown.changed() => info!("Docker watcher stopping"),
        }
    }
}
