//! The one seam to the Docker engine: an [`Engine`] handle, made once at start
//! and given to every part that talks to the engine (the watcher, the deploy
//! controller, autoheal, the admin API, `berth check`). It speaks bollard and
//! returns berth's own types; each container action exists once, here.

pub mod build;
pub mod clone;
pub mod convert;
pub mod logs;
pub mod project;
pub mod stats;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::{
    EventsOptions, InspectContainerOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, RestartContainerOptions, StartContainerOptions, StatsOptions,
    StopContainerOptions,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::config::DockerConfig;
use crate::error::CallError;
use crate::names::short_id;
use crate::world::{Container, World};
pub use stats::Stats;

/// Seconds a single API call (not a stream) may take.
const API_TIMEOUT_SECS: u64 = 10;

/// One engine event, as the watcher needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineEvent {
    /// The container it is about (for network events, the one connected).
    pub id: String,
    /// Docker's action: `start`, `kill`, `health_status: healthy`, ...
    pub action: String,
    /// The signal of a `kill`.
    pub signal: Option<i32>,
    /// When the engine saw it (unix nanoseconds).
    pub time_ns: i64,
}

/// A handle on the engine. Cloning it is cheap and shares the connection.
#[derive(Clone)]
pub struct Engine {
    /// `unix:///path` of the engine's socket.
    host: String,
    /// Made on first use (bollard refuses a socket that does not exist yet,
    /// and berth starts before the engine as well as after).
    docker: Arc<Mutex<Option<Docker>>>,
    /// `docker.constraint`: listing asks the engine for these containers only.
    constraint: Option<(String, String)>,
}

/// The first regular file of a tar, at most `max` bytes.
fn first_file(tar: &[u8], max: usize) -> Result<Bytes, String> {
    use std::io::Read;
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        if entry.size() > max as u64 {
            return Err(format!("larger than {max} bytes"));
        }
        let mut out = Vec::new();
        entry.read_to_end(&mut out).map_err(|e| e.to_string())?;
        return Ok(Bytes::from(out));
    }
    Err("not a file".into())
}

/// The engine's error as a [`CallError`] naming what was asked.
pub(crate) fn call_error(what: String, e: bollard::errors::Error) -> CallError {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => CallError {
            status: Some(status_code),
            message: format!("{what}: {message}"),
        },
        other => CallError::unreached(format!("{what}: {other}")),
    }
}

impl Engine {
    /// The engine at `docker.host`, else `$DOCKER_HOST`, else the default
    /// socket: `unix:///path` or `tcp://host:port` (plain; TLS is refused
    /// rather than silently not used). Nothing is sent yet: the first call
    /// connects, and every call after a failed connect tries again.
    pub fn new(config: &DockerConfig) -> Result<Engine, CallError> {
        let (host, origin) = match (&config.host, std::env::var("DOCKER_HOST")) {
            (Some(h), _) => (h.clone(), "docker.host"),
            (None, Ok(h)) if !h.trim().is_empty() => (h.trim().to_string(), "DOCKER_HOST"),
            _ => ("unix:///var/run/docker.sock".to_string(), "the default"),
        };
        let tls = std::env::var("DOCKER_TLS_VERIFY").is_ok_and(|v| !v.is_empty() && v != "0");
        check_host(&host, origin, tls)?;
        Ok(Engine {
            host,
            docker: Arc::default(),
            constraint: config.constraint.clone(),
        })
    }

    /// The bollard client, connected on first use.
    pub(crate) fn docker(&self) -> Result<Docker, CallError> {
        let mut slot = self.docker.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = slot.as_ref() {
            return Ok(d.clone());
        }
        let connected = if self.host.starts_with("tcp://") {
            Docker::connect_with_http(&self.host, API_TIMEOUT_SECS, API_DEFAULT_VERSION)
        } else {
            Docker::connect_with_unix(&self.host, API_TIMEOUT_SECS, API_DEFAULT_VERSION)
        };
        let d = connected.map_err(|e| {
            CallError::unreached(format!(
                "cannot connect to the Docker engine at {}: {e}",
                self.host
            ))
        })?;
        *slot = Some(d.clone());
        Ok(d)
    }

    pub async fn ping(&self) -> Result<(), CallError> {
        self.docker()?
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| call_error("Docker API call ping failed".into(), e))
    }

    /// Every container (running or not), each inspected: a list alone lacks
    /// health and per-network addresses.
    pub async fn list(&self) -> Result<World, CallError> {
        let mut filters = HashMap::new();
        if let Some((k, v)) = &self.constraint {
            filters.insert("label".to_string(), vec![format!("{k}={v}")]);
        }
        let list = self
            .docker()?
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| call_error("Docker API call list containers failed".into(), e))?;
        let mut world = World::new();
        for summary in list {
            let Some(id) = summary.id else { continue };
            if let Some(c) = self.inspect(&id).await? {
                world.insert(c.id.clone(), c);
            }
        }
        Ok(world)
    }

    /// `Ok(None)` when the container is gone.
    pub async fn inspect(&self, id: &str) -> Result<Option<Container>, CallError> {
        match self
            .docker()?
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(i) => Ok(convert::from_inspect(&i)),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(call_error(
                "Docker API call inspect container failed".into(),
                e,
            )),
        }
    }

    /// Container and network events from `since` (unix seconds) on.
    pub fn events(
        &self,
        since: u64,
    ) -> Result<impl Stream<Item = Result<EngineEvent, CallError>>, CallError> {
        let filters: HashMap<String, Vec<String>> = [(
            "type".to_string(),
            vec!["container".to_string(), "network".to_string()],
        )]
        .into();
        Ok(self
            .docker()?
            .events(Some(EventsOptions {
                since: Some(since.to_string()),
                until: None,
                filters: Some(filters),
            }))
            .filter_map(|ev| async move {
                match ev {
                    Ok(ev) => event(ev).map(Ok),
                    Err(e) => Some(Err(call_error("Docker API call events failed".into(), e))),
                }
            }))
    }

    pub async fn start(&self, id: &str, name: &str) -> Result<(), CallError> {
        self.docker()?
            .start_container(id, None::<StartContainerOptions>)
            .await
            .map_err(|e| call_error(format!("start {name}"), e))
    }

    /// `timeout`: seconds the process gets after its stop signal; `None`: the
    /// container's own stop timeout (compose `stop_grace_period`).
    pub async fn stop(&self, id: &str, name: &str, timeout: Option<i32>) -> Result<(), CallError> {
        self.docker()?
            .stop_container(
                id,
                Some(StopContainerOptions {
                    t: timeout,
                    signal: None,
                }),
            )
            .await
            .map_err(|e| call_error(format!("stop {name}"), e))
    }

    /// As [`Engine::stop`], then started again.
    pub async fn restart(
        &self,
        id: &str,
        name: &str,
        timeout: Option<i32>,
    ) -> Result<(), CallError> {
        self.docker()?
            .restart_container(
                id,
                Some(RestartContainerOptions {
                    t: timeout,
                    signal: None,
                }),
            )
            .await
            .map_err(|e| call_error(format!("restart {name}"), e))
    }

    pub async fn remove(&self, id: &str, name: &str, force: bool) -> Result<(), CallError> {
        self.docker()?
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force,
                    v: false,
                    link: false,
                }),
            )
            .await
            .map_err(|e| call_error(format!("remove {name}"), e))
    }

    /// Stops (its stop signal, then SIGKILL after `timeout` seconds) and
    /// removes; a stop that fails (already stopped) does not keep it.
    pub async fn stop_and_remove(&self, id: &str, timeout: i32) -> Result<(), CallError> {
        let short = short_id(id);
        let _ = self.stop(id, short, Some(timeout)).await;
        self.remove(id, short, true).await
    }

    /// Creates (not starts) a clone of `template`, optionally with another
    /// image (see [`clone`]), labelled with the run `operation` and its unit
    /// `n`; returns its id. `n` also tells clones made together apart.
    pub async fn create_clone(
        &self,
        template: &str,
        image: Option<&str>,
        n: usize,
        operation: &str,
        canary: Option<u32>,
    ) -> Result<String, CallError> {
        let docker = self.docker()?;
        let old = docker
            .inspect_container(template, None)
            .await
            .map_err(|e| call_error(format!("inspect {template}"), e))?;
        let old_image_ref = old
            .config
            .as_ref()
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        let image = image.map(str::to_string).unwrap_or(old_image_ref);
        // The image the old container runs, to tell its own settings from the image's.
        let old_image = match &old.image {
            Some(id) => docker.inspect_image(id).await.ok().and_then(|i| i.config),
            None => None,
        };
        // A compose replica gets the next free container number, as
        // `docker compose up --scale` would give it (the `n`-th free one, so
        // that clones made together differ).
        let labels = old
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let number = match (
            labels.get(crate::world::COMPOSE_PROJECT),
            labels.get(crate::world::COMPOSE_SERVICE),
        ) {
            (Some(p), Some(s)) => {
                let taken: Vec<u32> = self
                    .project_containers(p)
                    .await?
                    .iter()
                    .filter(|r| &r.service == s)
                    .filter_map(|r| r.number)
                    .collect();
                Some(crate::deploy::project::spec::nth_free_number(&taken, n))
            }
            _ => None,
        };
        let by = clone::MadeBy {
            operation,
            unit: n,
            number,
            canary,
        };
        let body = clone::clone_body(&old, old_image.as_ref(), &image, by);
        let name = clone::clone_name(
            old.name
                .as_deref()
                .unwrap_or(template)
                .trim_start_matches('/'),
            &clone::fresh_tag(n),
        );
        let first = clone::first_network(&old).map(|(n, _)| n);
        let more = clone::networks(&old)
            .into_iter()
            .filter(|(net, _)| Some(net) != first.as_ref())
            .collect();
        self.create_from(&name, body, more).await
    }

    /// The container's log lines (stdout and stderr), each prefixed with
    /// `prefix`; with `follow`, new lines as they are written; with `from`
    /// (unix seconds, nanoseconds), only the lines written from then. A
    /// last line without a newline is still shown when the log ends.
    pub fn logs(
        &self,
        id: &str,
        prefix: String,
        tail: Option<u64>,
        follow: bool,
        from: Option<(i64, u32)>,
    ) -> Result<impl Stream<Item = Bytes> + Send + 'static, CallError> {
        let stream = self
            .docker()?
            .logs(
                id,
                Some(LogsOptions {
                    follow,
                    stdout: true,
                    stderr: true,
                    tail: tail.map_or("all".to_string(), |t| t.to_string()),
                    // From the second `from` falls in; what came before it
                    // in that second is dropped by its timestamp.
                    since: from.and_then(|(s, _)| i32::try_from(s).ok()).unwrap_or(0),
                    timestamps: from.is_some(),
                    ..Default::default()
                }),
            )
            .boxed();
        let lines = logs::Lines {
            prefix,
            partial: [Vec::new(), Vec::new()],
            after: from,
        };
        Ok(futures_util::stream::unfold(
            Some((stream, lines)),
            |state| async move {
                let (mut stream, mut lines) = state?;
                loop {
                    match stream.next().await {
                        Some(Ok(chunk)) => {
                            let out = lines.push(&chunk);
                            if !out.is_empty() {
                                return Some((out, Some((stream, lines))));
                            }
                        }
                        // The end, or the engine went away: what is left, then stop.
                        _ => {
                            let rest = lines.finish();
                            return (!rest.is_empty()).then_some((rest, None));
                        }
                    }
                }
            },
        ))
    }

    /// The last `tail` lines of a container's log with the engine's time of
    /// each (stdout and stderr together).
    pub async fn log_tail(
        &self,
        id: &str,
        name: &str,
        tail: u64,
    ) -> Result<Vec<logs::Stamped>, CallError> {
        let mut stream = self.docker()?.logs(
            id,
            Some(LogsOptions {
                follow: false,
                stdout: true,
                stderr: true,
                timestamps: true,
                tail: tail.to_string(),
                ..Default::default()
            }),
        );
        let mut lines = logs::Lines {
            prefix: String::new(),
            partial: [Vec::new(), Vec::new()],
            after: None,
        };
        let mut text = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| call_error(format!("logs {name}"), e))?;
            text.extend_from_slice(&lines.push(&chunk));
        }
        text.extend_from_slice(&lines.finish());
        Ok(logs::stamped(&text))
    }

    /// One sample of a running container (the engine samples twice, about a
    /// second apart, for the CPU figure).
    /// One reading without waiting for a second one (the engine's
    /// `one-shot`): its CPU counters are compared with the caller's last.
    pub async fn stats_once(
        &self,
        id: &str,
        name: &str,
    ) -> Result<(Stats, stats::CpuCounters), CallError> {
        let mut s = self.docker()?.stats(
            id,
            Some(StatsOptions {
                stream: false,
                one_shot: true,
            }),
        );
        match s.next().await {
            Some(Ok(r)) => Ok((stats::summarize(&r), stats::CpuCounters::now(&r))),
            Some(Err(e)) => Err(call_error(format!("stats {name}"), e)),
            None => Err(CallError::unreached(format!(
                "stats {name}: the engine sent nothing"
            ))),
        }
    }

    /// A file from a container's filesystem (the engine's archive API), at
    /// most `max` bytes: an error page a route names, for example.
    pub async fn read_file(&self, id: &str, path: &str, max: usize) -> Result<Bytes, CallError> {
        let what = || format!("read {path} from {}", short_id(id));
        let options = bollard::query_parameters::DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let mut tar = Vec::new();
        let mut stream = self.docker()?.download_from_container(id, Some(options));
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| call_error(what(), e))?;
            tar.extend_from_slice(&chunk);
            // The tar adds headers and padding: a little more than the file.
            if tar.len() > max + 64 * 1024 {
                return Err(CallError::unreached(format!(
                    "{}: larger than {max} bytes",
                    what()
                )));
            }
        }
        first_file(&tar, max).map_err(|e| CallError::unreached(format!("{}: {e}", what())))
    }

    pub async fn stats(&self, id: &str, name: &str) -> Result<Stats, CallError> {
        let mut s = self.docker()?.stats(
            id,
            Some(StatsOptions {
                stream: false,
                one_shot: false,
            }),
        );
        match s.next().await {
            Some(Ok(r)) => Ok(stats::summarize(&r)),
            Some(Err(e)) => Err(call_error(format!("stats {name}"), e)),
            None => Err(CallError::unreached(format!(
                "stats {name}: the engine sent nothing"
            ))),
        }
    }
}

/// Whether berth can speak to an engine at `host` (named by `origin`):
/// a unix socket, or plain TCP.
fn check_host(host: &str, origin: &str, tls: bool) -> Result<(), CallError> {
    let refuse = |why: &str| Err(CallError::unreached(format!("{origin} {host:?}: {why}")));
    match host.split_once("://") {
        Some(("unix", path)) if path.starts_with('/') => Ok(()),
        Some(("unix", _)) => refuse("a unix socket needs an absolute path: unix:///var/run/docker.sock"),
        Some(("tcp", "")) => refuse("tcp:// needs host:port"),
        Some(("tcp", _)) if tls => refuse(
            "DOCKER_TLS_VERIFY is set, and berth does not speak TLS to the engine yet: expose the engine on a unix socket, or on loopback without TLS",
        ),
        Some(("tcp", _)) => Ok(()),
        _ => refuse("only unix:///path and tcp://host:port are supported"),
    }
}

/// An engine event → what the watcher needs of it; `None`: not about a
/// container.
fn event(ev: EventMessage) -> Option<EngineEvent> {
    let actor = ev.actor.as_ref();
    let attrs = actor.and_then(|a| a.attributes.as_ref());
    let id = if matches!(ev.typ, Some(EventMessageTypeEnum::NETWORK)) {
        attrs.and_then(|a| a.get("container")).cloned()
    } else {
        actor.and_then(|a| a.id.clone())
    }?;
    Some(EngineEvent {
        id,
        action: ev.action.clone().unwrap_or_default(),
        signal: attrs
            .and_then(|a| a.get("signal"))
            .and_then(|s| s.parse().ok()),
        time_ns: ev.time_nano.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;

    #[test]
    fn engine_addresses_berth_speaks_to() {
        for (host, tls, ok) in [
            ("unix:///var/run/docker.sock", false, true),
            ("tcp://127.0.0.1:2375", false, true),
            ("tcp://127.0.0.1:2376", true, false),
            ("unix://docker.sock", false, false),
            ("ssh://me@host", false, false),
            ("tcp://", false, false),
            ("/var/run/docker.sock", false, false),
        ] {
            let got = check_host(host, "DOCKER_HOST", tls);
            assert_eq!(got.is_ok(), ok, "{host} tls={tls}: {got:?}");
            if let Err(e) = got {
                assert!(
                    e.message.contains("DOCKER_HOST") && e.message.contains(host),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn events_name_their_container() {
        let ev = |typ, id: Option<&str>, attrs: &[(&str, &str)], action: &str| EventMessage {
            typ: Some(typ),
            action: Some(action.into()),
            actor: Some(EventActor {
                id: id.map(str::to_string),
                attributes: Some(
                    attrs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
            }),
            time_nano: Some(7),
            ..Default::default()
        };
        let kill = event(ev(
            EventMessageTypeEnum::CONTAINER,
            Some("abc"),
            &[("signal", "15")],
            "kill",
        ))
        .unwrap();
        assert_eq!(
            kill,
            EngineEvent {
                id: "abc".into(),
                action: "kill".into(),
                signal: Some(15),
                time_ns: 7
            }
        );
        let connect = event(ev(
            EventMessageTypeEnum::NETWORK,
            Some("net-id"),
            &[("container", "abc")],
            "connect",
        ))
        .unwrap();
        assert_eq!((connect.id.as_str(), connect.signal), ("abc", None));
        assert_eq!(
            event(ev(EventMessageTypeEnum::NETWORK, Some("n"), &[], "create")),
            None
        );
    }
}
