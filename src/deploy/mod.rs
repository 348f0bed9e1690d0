//! Deploys: rollouts, scaling and self-healing. The controller takes requests
//! from the admin API one at a time, turns each into a [`plan::Plan`], performs
//! the plan's actions on the Docker engine and feeds back their results and
//! the published backend states until the plan is final. Progress lines go to
//! the requester as they happen; finished runs are kept in a short history.

pub mod clone;
pub mod plan;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::query_parameters::RestartContainerOptions;
use bollard::Docker;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::config::Config;
use crate::docker::ops;
use crate::docker::{connect, Input, Inputs};
use crate::plan::{BackendInfo, ContainerInfo};
use crate::world::BackendState;
use crate::SharedSnapshot;
use plan::{Action, Event, Plan, Status, Unit};

/// How many finished runs the history keeps.
const HISTORY: usize = 100;

#[derive(Debug, Clone)]
pub enum Kind {
    Rollout {
        image: Option<String>,
        batch: usize,
    },
    Scale {
        replicas: usize,
    },
    /// Restart the running containers of a deployment (compose project, or
    /// a container outside compose) one at a time, each drained first.
    Restart,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub kind: Kind,
    /// `project/service`, or a container name outside compose.
    pub service: String,
    pub health_timeout: Option<Duration>,
    pub drain_timeout: Option<Duration>,
}

/// One line of progress, streamed to the requester.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub id: u64,
    pub service: String,
    pub status: String,
    pub message: String,
}

/// A run, as listed by `GET /api/rollouts`.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub id: u64,
    pub kind: String,
    pub service: String,
    pub image: Option<String>,
    pub status: String,
    pub reason: Option<String>,
    pub replicas: usize,
    pub started_unix: u64,
    pub finished_unix: Option<u64>,
}

pub struct Job {
    pub id: u64,
    pub request: Request,
    pub progress: mpsc::UnboundedSender<Progress>,
}

/// What the API shares with the controller.
#[derive(Clone)]
pub struct Deploys {
    jobs: mpsc::UnboundedSender<Job>,
    pub history: Arc<Mutex<Vec<Record>>>,
    pub restarts: Arc<Mutex<HashMap<String, u32>>>,
    next_id: Arc<Mutex<u64>>,
}

impl Deploys {
    /// Queues a request; progress arrives on the returned channel, the last
    /// line carrying a final status.
    pub fn submit(&self, request: Request) -> (u64, mpsc::UnboundedReceiver<Progress>) {
        let id = {
            let mut n = self.next_id.lock().unwrap_or_else(|e| e.into_inner());
            *n += 1;
            *n
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(Progress {
            id,
            service: request.service.clone(),
            status: Status::Queued.to_string(),
            message: "queued".into(),
        });
        let record = Record {
            id,
            kind: match &request.kind {
                Kind::Rollout { .. } => "rollout".into(),
                Kind::Scale { .. } => "scale".into(),
                Kind::Restart => "restart".into(),
            },
            service: request.service.clone(),
            image: match &request.kind {
                Kind::Rollout { image, .. } => image.clone(),
                Kind::Scale { .. } | Kind::Restart => None,
            },
            status: Status::Queued.to_string(),
            reason: None,
            replicas: 0,
            started_unix: unix_now(),
            finished_unix: None,
        };
        {
            let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
            h.push(record);
            let excess = h.len().saturating_sub(HISTORY);
            h.drain(..excess);
        }
        if self
            .jobs
            .send(Job {
                id,
                request,
                progress: tx.clone(),
            })
            .is_err()
        {
            let _ = tx.send(Progress {
                id,
                service: String::new(),
                status: Status::Failed.to_string(),
                message: "the deploy controller is not running".into(),
            });
        }
        (id, rx)
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut Record)) {
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = h.iter_mut().find(|r| r.id == id) {
            f(r);
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub struct Controller {
    config: Arc<Config>,
    snapshot: SharedSnapshot,
    notify: watch::Receiver<u64>,
    inputs: Inputs,
    deploys: Deploys,
    jobs: Mutex<Option<mpsc::UnboundedReceiver<Job>>>,
}

impl Controller {
    pub fn new(
        config: Arc<Config>,
        snapshot: SharedSnapshot,
        notify: watch::Receiver<u64>,
        inputs: Inputs,
    ) -> (Controller, Deploys) {
        let (tx, rx) = mpsc::unbounded_channel();
        let deploys = Deploys {
            jobs: tx,
            history: Arc::default(),
            restarts: Arc::default(),
            next_id: Arc::default(),
        };
        let c = Controller {
            config,
            snapshot,
            notify,
            inputs,
            deploys: deploys.clone(),
            jobs: Mutex::new(Some(rx)),
        };
        (c, deploys)
    }

    async fn run(&self) {
        let Some(mut jobs) = self.jobs.lock().ok().and_then(|mut j| j.take()) else {
            return;
        };
        tokio::spawn(autoheal(
            self.config.clone(),
            self.snapshot.clone(),
            self.notify.clone(),
            self.deploys.restarts.clone(),
        ));
        while let Some(job) = jobs.recv().await {
            self.run_job(job).await;
        }
    }

    async fn run_job(&self, job: Job) {
        let Job {
            id,
            request,
            progress,
        } = job;
        let say = |status: Status, message: String| {
            info!(deploy = id, service = %request.service, %status, "{message}");
            let _ = progress.send(Progress {
                id,
                service: request.service.clone(),
                status: status.to_string(),
                message,
            });
        };
        let docker = match connect(&self.config) {
            Ok(d) => d,
            Err(e) => {
                say(Status::Failed, e.to_string());
                self.deploys.update(id, |r| {
                    r.status = Status::Failed.to_string();
                    r.reason = Some(e.to_string());
                    r.finished_unix = Some(unix_now());
                });
                return;
            }
        };
        if let Kind::Restart = request.kind {
            let result = self.restart(&docker, id, &request, &say).await;
            let (status, message) = match result {
                Ok(n) => (Status::Completed, format!("{n} containers restarted")),
                Err(e) => (Status::Failed, e),
            };
            say(status, message.clone());
            self.deploys.update(id, |r| {
                r.status = status.to_string();
                r.reason = (status == Status::Failed).then_some(message);
                r.finished_unix = Some(unix_now());
            });
            return;
        }
        let backends = self.snapshot.load().backends.clone();
        let mut plan = match units_for(&request, &backends) {
            Ok((units, batch)) => {
                let image = match &request.kind {
                    Kind::Rollout { image, .. } => image.clone(),
                    Kind::Scale { .. } | Kind::Restart => None,
                };
                let n = units.len();
                self.deploys.update(id, |r| r.replicas = n);
                Plan::new(
                    units,
                    batch,
                    image,
                    request
                        .health_timeout
                        .unwrap_or(self.config.deploy.health_timeout),
                    request.drain_timeout,
                )
            }
            Err(e) => {
                say(Status::Failed, e.clone());
                self.deploys.update(id, |r| {
                    r.status = Status::Failed.to_string();
                    r.reason = Some(e);
                    r.finished_unix = Some(unix_now());
                });
                return;
            }
        };
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<Event>();
        let mut notify = self.notify.clone();
        let mut last_status = Status::Queued;
        let mut actions = plan.advance(&self.snapshot.load().backends, Instant::now());
        loop {
            let names = self.snapshot.load().backends.clone();
            for a in actions.drain(..) {
                self.perform(&docker, &ev_tx, a, &names, plan.status, &say);
            }
            if plan.status != last_status {
                last_status = plan.status;
                self.deploys
                    .update(id, |r| r.status = plan.status.to_string());
                if !plan.status.is_final() {
                    say(plan.status, format!("{}", plan.status).replace('_', " "));
                }
            }
            if plan.status.is_final() {
                break;
            }
            tokio::select! {
                Some(ev) = ev_rx.recv() => {
                    actions = plan.on_event(ev, &self.snapshot.load().backends, Instant::now());
                }
                _ = notify.changed() => {
                    actions = plan.advance(&self.snapshot.load().backends, Instant::now());
                }
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    actions = plan.advance(&self.snapshot.load().backends, Instant::now());
                }
            }
        }
        let message = match (&plan.status, &plan.reason) {
            (Status::Completed, _) => format!("{} replicas done", plan.units.len()),
            (_, Some(r)) => r.clone(),
            _ => plan.status.to_string(),
        };
        say(plan.status, message);
        self.deploys.update(id, |r| {
            r.status = plan.status.to_string();
            r.reason = plan.reason.clone();
            r.finished_unix = Some(unix_now());
        });
    }

    /// A rolling restart: for each running container of the deployment (by
    /// service, then name), drain it if berth routes it, restart it, and
    /// wait until its new run is Ready before the next. Returns how many.
    async fn restart(
        &self,
        docker: &Docker,
        id: u64,
        request: &Request,
        say: &impl Fn(Status, String),
    ) -> Result<usize, String> {
        let say = |status: Status, message: String| {
            self.deploys.update(id, |r| r.status = status.to_string());
            say(status, message);
        };
        let snap = self.snapshot.load_full();
        let mut targets: Vec<_> = snap
            .containers
            .values()
            .filter(|c| deployment_of(c) == request.service && c.status == "running")
            .map(|c| (c.id.clone(), c.name.clone(), c.service.clone()))
            .collect();
        targets.sort_by(|a, b| (&a.2, &a.1).cmp(&(&b.2, &b.1)));
        if targets.is_empty() {
            return Err(format!(
                "deployment {} has no running container",
                request.service
            ));
        }
        self.deploys.update(id, |r| r.replicas = targets.len());
        let timeout = request
            .health_timeout
            .unwrap_or(self.config.deploy.health_timeout);
        let mut restarted = 0;
        for (cid, name, _) in &targets {
            // As it is now, not as it was when the restart began.
            let Some(before) = self.snapshot.load().containers.get(cid).cloned() else {
                say(Status::Starting, format!("{name} is gone: skipped"));
                continue;
            };
            if before.status != "running" {
                say(
                    Status::Starting,
                    format!("{name} is {}: skipped", before.status),
                );
                continue;
            }
            let drained = if before.routed {
                say(Status::Draining, format!("draining {name}"));
                let d = ops::drain(&self.snapshot, &self.inputs, cid).await;
                if let Some(open) = d.as_ref().map(|d| d.open).filter(|&n| n > 0) {
                    say(
                        Status::Draining,
                        format!("{name}: drain timeout with {open} requests open"),
                    );
                }
                d
            } else {
                None
            };
            say(Status::Starting, format!("restarting {name}"));
            // The container's own stop timeout (compose stop_grace_period).
            ops::restart(docker, cid, name, None)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(d) = drained {
                d.keep();
            }
            say(
                Status::WaitingHealthy,
                format!("waiting for {name} to be ready"),
            );
            let mut notify = self.notify.clone();
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let now = self.snapshot.load();
                match now.containers.get(cid) {
                    Some(n)
                        if n.started_at != before.started_at && n.state == BackendState::Ready =>
                    {
                        break
                    }
                    Some(n) if n.started_at != before.started_at && n.status == "exited" => {
                        return Err(format!("{name} exited after its restart"));
                    }
                    None => return Err(format!("{name} was removed during its restart")),
                    _ => {}
                }
                if tokio::time::Instant::now() >= deadline {
                    let last = now
                        .backends
                        .get(cid)
                        .and_then(|b| b.check.clone().or_else(|| b.health.clone()))
                        .map(|h| format!(" (last health: {h})"))
                        .unwrap_or_default();
                    return Err(format!(
                        "{name} was not ready {timeout:?} after its restart{last}"
                    ));
                }
                tokio::select! {
                    _ = notify.changed() => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                }
            }
            restarted += 1;
            say(Status::Switching, format!("{name} is ready"));
        }
        Ok(restarted)
    }

    fn perform(
        &self,
        docker: &Docker,
        events: &mpsc::UnboundedSender<Event>,
        action: Action,
        names: &BTreeMap<String, BackendInfo>,
        status: Status,
        say: &impl Fn(Status, String),
    ) {
        let (docker, events) = (docker.clone(), events.clone());
        match action {
            Action::Progress { text, .. } => say(status, text),
            Action::Drain { id } => {
                let _ = self.inputs.send(Input::Drain { id });
            }
            Action::Create {
                unit,
                template,
                image,
            } => {
                let from = names
                    .get(&template)
                    .map_or(template.clone(), |b| b.name.clone());
                say(
                    Status::Starting,
                    format!(
                        "creating a replica from {from}{}",
                        image
                            .as_ref()
                            .map(|i| format!(" with {i}"))
                            .unwrap_or_default()
                    ),
                );
                tokio::spawn(async move {
                    let ev = match clone::create_clone(&docker, &template, image.as_deref(), unit)
                        .await
                    {
                        Ok(id) => Event::Created { unit, id },
                        Err(error) => Event::DockerFailed { unit, error },
                    };
                    let _ = events.send(ev);
                });
            }
            Action::Start { unit, id } => {
                tokio::spawn(async move {
                    let ev = match clone::start(&docker, &id).await {
                        Ok(()) => Event::Started { unit },
                        Err(error) => Event::DockerFailed { unit, error },
                    };
                    let _ = events.send(ev);
                });
            }
            Action::StopRemove { unit, id, timeout } => {
                tokio::spawn(async move {
                    if let Err(e) = clone::remove(&docker, &id, timeout.as_secs() as i32).await {
                        warn!(container = %id, error = %e, "removing a container failed");
                    }
                    let _ = events.send(Event::Removed { unit });
                });
            }
        }
    }
}

/// The deployment a container belongs to: its compose project, or itself.
pub fn deployment_of(c: &ContainerInfo) -> String {
    c.project.clone().unwrap_or_else(|| c.name.clone())
}

/// The units and batch size for a request, from the running replicas of its
/// service (oldest names first).
pub fn units_for(
    request: &Request,
    backends: &BTreeMap<String, BackendInfo>,
) -> Result<(Vec<Unit>, usize), String> {
    let mut replicas: Vec<&BackendInfo> = backends
        .values()
        .filter(|b| b.service == request.service)
        .filter(|b| !matches!(b.state, BackendState::Stopped | BackendState::Draining))
        .collect();
    replicas.sort_by(|a, b| a.name.cmp(&b.name));
    let Some(first) = replicas.first() else {
        return Err(format!(
            "service {} has no running replica",
            request.service
        ));
    };
    Ok(match &request.kind {
        Kind::Rollout { batch, .. } => (
            replicas.iter().map(|b| Unit::replace(&b.id)).collect(),
            (*batch).max(1),
        ),
        Kind::Scale { replicas: n } if *n == 0 => {
            return Err("scale to at least 1 replica (docker stop stops a service)".into())
        }
        Kind::Scale { replicas: n } if *n >= replicas.len() => {
            let add = n - replicas.len();
            ((0..add).map(|_| Unit::add(&first.id)).collect(), add.max(1))
        }
        Kind::Scale { replicas: n } => {
            let retire: Vec<Unit> = replicas[*n..].iter().map(|b| Unit::retire(&b.id)).collect();
            let batch = retire.len();
            (retire, batch)
        }
        Kind::Restart => return Err("a restart is not a plan of units".into()),
    })
}

/// Restarts routed containers that stay unhealthy past the grace period
/// (Docker itself never does), backing off per container.
async fn autoheal(
    config: Arc<Config>,
    snapshot: SharedSnapshot,
    mut notify: watch::Receiver<u64>,
    restarts: Arc<Mutex<HashMap<String, u32>>>,
) {
    let grace = config.deploy.autoheal_grace;
    // container id → (unhealthy since, not before)
    let mut watch: HashMap<String, (Instant, Instant)> = HashMap::new();
    loop {
        let now = Instant::now();
        let snap = snapshot.load_full();
        watch.retain(|id, _| {
            snap.backends
                .get(id)
                .is_some_and(|b| b.unhealthy && b.autoheal)
        });
        for b in snap.backends.values().filter(|b| b.unhealthy && b.autoheal) {
            let (since, not_before) = *watch.entry(b.id.clone()).or_insert((now, now + grace));
            if now < not_before {
                continue;
            }
            let n = {
                let mut r = restarts.lock().unwrap_or_else(|e| e.into_inner());
                let n = r.entry(b.id.clone()).or_default();
                *n += 1;
                *n
            };
            // Backoff: the grace period, doubled for each restart, up to 10 min.
            let wait = (grace * 2u32.saturating_pow(n.min(10))).min(Duration::from_secs(600));
            watch.insert(b.id.clone(), (since, now + wait));
            warn!(container = %b.name, unhealthy_for = ?now.duration_since(since), restart = n, "autoheal: restarting an unhealthy container");
            let (config, id, name) = (config.clone(), b.id.clone(), b.name.clone());
            tokio::spawn(async move {
                let result = match connect(&config) {
                    Ok(d) => d
                        .restart_container(
                            &id,
                            Some(RestartContainerOptions {
                                t: Some(10),
                                signal: None,
                            }),
                        )
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = result {
                    warn!(container = %name, error = %e, "autoheal: restart failed");
                }
            });
        }
        tokio::select! {
            r = notify.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

crate::background_until_shutdown!(Controller);

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(id: &str, name: &str, service: &str, state: BackendState) -> (String, BackendInfo) {
        (id.into(), BackendInfo::for_test(id, name, service, state))
    }

    fn req(kind: Kind) -> Request {
        Request {
            kind,
            service: "p/web".into(),
            health_timeout: None,
            drain_timeout: None,
        }
    }

    #[test]
    fn units_come_from_the_running_replicas_of_the_service() {
        let backends: BTreeMap<_, _> = [
            backend("2", "p-web-2", "p/web", BackendState::Ready),
            backend("1", "p-web-1", "p/web", BackendState::Starting),
            backend("3", "p-web-3", "p/web", BackendState::Stopped),
            backend("9", "p-api-1", "p/api", BackendState::Ready),
        ]
        .into();
        let (units, batch) = units_for(
            &req(Kind::Rollout {
                image: None,
                batch: 1,
            }),
            &backends,
        )
        .unwrap();
        let olds: Vec<_> = units.iter().map(|u| u.old.clone().unwrap()).collect();
        assert_eq!((olds, batch), (vec!["1".to_string(), "2".to_string()], 1));

        let (units, batch) = units_for(&req(Kind::Scale { replicas: 5 }), &backends).unwrap();
        assert_eq!((units.len(), batch), (3, 3));
        assert!(units
            .iter()
            .all(|u| u.old.is_none() && u.template.as_deref() == Some("1")));

        let (units, _) = units_for(&req(Kind::Scale { replicas: 1 }), &backends).unwrap();
        assert_eq!(units.len(), 1);
        assert_eq!(
            units[0].old.as_deref(),
            Some("2"),
            "the newest names go first"
        );
        assert!(units_for(&req(Kind::Scale { replicas: 0 }), &backends).is_err());

        let mut other = req(Kind::Scale { replicas: 2 });
        other.service = "p/none".into();
        assert!(units_for(&other, &backends)
            .unwrap_err()
            .contains("no running replica"));
    }
}
