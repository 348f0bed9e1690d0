//! The host as the admin API shows it: deployments (compose projects, or a
//! container outside compose) → services → containers; container actions
//! (stop and restart drain first); logs, stats, routes and problems.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::drain::drain;
use super::{bad, stream, ApiError, App};
use crate::deploy::{Kind, Request as DeployRequest};
use crate::engine::Stats;
use crate::error::CallError;
use crate::names::id_prefix_of;
use crate::plan::{ContainerInfo, Problem, Snapshot};

#[derive(Debug, Serialize, Deserialize)]
pub struct ServiceView {
    pub name: String,
    pub containers: Vec<ContainerInfo>,
    /// For a deployment berth owns: how what runs differs from its last
    /// deploy (the compose file), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DeploymentView {
    pub name: String,
    /// A compose project, or a single container outside compose.
    pub compose: bool,
    /// Deployed by berth (`berth deploy`): it has a deploy history.
    #[serde(default)]
    pub owned: bool,
    pub services: Vec<ServiceView>,
}

/// Containers grouped into deployments and services, sorted by name.
pub fn deployments(containers: &BTreeMap<String, ContainerInfo>) -> Vec<DeploymentView> {
    let mut tree: BTreeMap<String, (bool, BTreeMap<String, Vec<&ContainerInfo>>)> = BTreeMap::new();
    for c in containers.values() {
        let service = c.service_name().to_string();
        let entry = tree
            .entry(c.deployment().to_string())
            .or_insert((c.project.is_some(), BTreeMap::new()));
        entry.1.entry(service).or_default().push(c);
    }
    tree.into_iter()
        .map(|(name, (compose, services))| DeploymentView {
            name,
            compose,
            owned: false,
            services: services
                .into_iter()
                .map(|(name, mut cs)| {
                    cs.sort_by(|a, b| a.name.cmp(&b.name));
                    ServiceView {
                        name,
                        containers: cs.into_iter().cloned().collect(),
                        drift: None,
                    }
                })
                .collect(),
        })
        .collect()
}

/// A container by exact name, full id, or a unique id prefix (long enough:
/// [`crate::names::MIN_ID_PREFIX`]), among the containers berth sees (never
/// others on the engine).
pub fn find<'a>(snap: &'a Snapshot, target: &str) -> Result<&'a ContainerInfo, ApiError> {
    if let Some(c) = snap.containers.get(target) {
        return Ok(c);
    }
    if let Some(c) = snap.containers.values().find(|c| c.name == target) {
        return Ok(c);
    }
    let by_prefix: Vec<&ContainerInfo> = snap
        .containers
        .values()
        .filter(|c| id_prefix_of(target, &c.id))
        .collect();
    match by_prefix.as_slice() {
        [one] => Ok(one),
        [] => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("container {target:?}: no such container (by name, id, or id prefix of 4+ characters) among those berth sees"),
        )),
        many => Err(bad(format!(
            "container {target:?}: the prefix matches {} containers",
            many.len()
        ))),
    }
}

fn deployment<'a>(snap: &'a Snapshot, name: &str) -> Result<Vec<&'a ContainerInfo>, ApiError> {
    let mut cs: Vec<&ContainerInfo> = snap
        .containers
        .values()
        .filter(|c| c.deployment() == name)
        .collect();
    if cs.is_empty() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("deployment {name:?}: no compose project or container of that name"),
        ));
    }
    cs.sort_by(|a, b| (&a.service, &a.name).cmp(&(&b.service, &b.name)));
    Ok(cs)
}

/// Query parameters, checked by hand so that an unknown key or a bad value
/// gets a JSON error naming it.
fn params(
    q: &HashMap<String, String>,
    allowed: &[&str],
) -> Result<HashMap<String, String>, ApiError> {
    if let Some(k) = q.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(bad(format!(
            "query parameter {k:?} is unknown here; known: {}",
            if allowed.is_empty() {
                "none".to_string()
            } else {
                allowed.join(", ")
            }
        )));
    }
    Ok(q.clone())
}

fn flag(q: &HashMap<String, String>, key: &str) -> Result<bool, ApiError> {
    match q.get(key).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("") | Some("true") | Some("1") => Ok(true),
        Some(v) => Err(bad(format!("{key}: {v:?}: use true or false"))),
    }
}

fn engine_error(e: CallError) -> ApiError {
    let status = match e.status {
        Some(404) => StatusCode::NOT_FOUND,
        Some(304) | Some(409) => StatusCode::CONFLICT,
        _ => StatusCode::BAD_GATEWAY,
    };
    ApiError(status, e.message)
}

/// `GET /api/ready`: ready once the engine was listed.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReadyView {
    pub ready: bool,
    pub docker: crate::world::DockerStatus,
}

pub async fn ready(State(app): State<App>) -> Response {
    let s = app.snapshot.load();
    let body = ReadyView {
        ready: s.docker.synced,
        docker: s.docker.clone(),
    };
    if s.docker.synced {
        Json(body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

pub async fn list_deployments(State(app): State<App>) -> Json<Vec<DeploymentView>> {
    Json(deployment_list(&app))
}

/// Every deployment → service → container, with drift for the owned ones.
pub fn deployment_list(app: &App) -> Vec<DeploymentView> {
    let mut list = deployments(&app.snapshot.load().containers);
    if let Ok(store) = app.deploys.projects.lock() {
        add_drift(
            &mut list,
            &store.deployments,
            &app.snapshot.load().autoscale,
        );
    }
    with_restarts(
        app,
        list.iter_mut()
            .flat_map(|d| d.services.iter_mut())
            .flat_map(|s| s.containers.iter_mut()),
    );
    list
}

/// Fills in how often berth restarted each container.
fn with_restarts<'a>(app: &App, containers: impl Iterator<Item = &'a mut ContainerInfo>) {
    let restarts = app.restart_counts();
    for c in containers {
        c.restarts = restarts.get(&c.id).copied().unwrap_or(0);
    }
}

/// Marks the services of deployments berth owns whose running replicas are
/// not what the last deploy made; a service of it with none running is
/// listed too.
fn add_drift(
    list: &mut Vec<DeploymentView>,
    owned: &BTreeMap<String, crate::deploy::project::store::Deployment>,
    autoscaled: &BTreeMap<String, std::sync::Arc<crate::deploy::autoscale::Policy>>,
) {
    use crate::deploy::project::diff::drift;
    for (name, d) in owned {
        if let Some(v) = list.iter_mut().find(|v| &v.name == name) {
            v.owned = true;
        }
        if d.services.is_empty() {
            continue;
        }
        let view = match list.iter().position(|v| &v.name == name) {
            Some(i) => &mut list[i],
            None => {
                list.push(DeploymentView {
                    name: name.clone(),
                    compose: true,
                    owned: true,
                    services: Vec::new(),
                });
                list.last_mut().expect("just pushed")
            }
        };
        for (service, deployed) in &d.services {
            let sv = match view.services.iter().position(|s| &s.name == service) {
                Some(i) => &mut view.services[i],
                None => {
                    view.services.push(ServiceView {
                        name: service.clone(),
                        containers: Vec::new(),
                        drift: None,
                    });
                    view.services.last_mut().expect("just pushed")
                }
            };
            let running: Vec<Option<&str>> = sv
                .containers
                .iter()
                .filter(|c| c.is_running() || (deployed.task && c.status == "exited"))
                .map(|c| c.config_hash.as_deref())
                .collect();
            // Autoscaling changes the count on purpose: within its bounds,
            // no drift.
            let replicas = match autoscaled.get(&format!("{name}/{service}")) {
                Some(p) => running.len().clamp(p.min as usize, p.max as usize),
                None => deployed.replicas,
            };
            sv.drift = drift(&deployed.hash, replicas, &running);
        }
        view.services.sort_by(|a, b| a.name.cmp(&b.name));
    }
    list.sort_by(|a, b| a.name.cmp(&b.name));
}

pub async fn list_containers(State(app): State<App>) -> Json<Vec<ContainerInfo>> {
    let s = app.snapshot.load();
    let mut list: Vec<ContainerInfo> = s.containers.values().cloned().collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    with_restarts(&app, list.iter_mut());
    Json(list)
}

/// What a container action answers once the engine did it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ActionView {
    pub container: String,
    pub container_id: String,
    pub action: String,
    pub ok: bool,
}

fn done(c: &ContainerInfo, action: &str) -> Json<ActionView> {
    Json(ActionView {
        container: c.name.clone(),
        container_id: c.id.clone(),
        action: action.into(),
        ok: true,
    })
}

/// Takes a routed container out of rotation until its run ends (or an
/// undrain): no new requests, in-flight ones finish. It keeps running.
pub async fn drain_container(
    State(app): State<App>,
    Path(target): Path<String>,
) -> Result<Json<ActionView>, ApiError> {
    let snap = app.snapshot.load_full();
    let c = find(&snap, &target)?;
    if !c.routed || !c.is_running() {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "container {:?}: berth drains only a running container it routes",
                c.name
            ),
        ));
    }
    match drain(&app.snapshot, &app.inputs, &c.id).await {
        Some(d) => d.keep(),
        None => {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!("container {:?}: not in rotation", c.name),
            ))
        }
    }
    Ok(done(c, "drain"))
}

/// Puts a drained container back in rotation (once ready again).
pub async fn undrain_container(
    State(app): State<App>,
    Path(target): Path<String>,
) -> Result<Json<ActionView>, ApiError> {
    let snap = app.snapshot.load_full();
    let c = find(&snap, &target)?;
    if !c.routed {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("container {:?}: berth does not route it", c.name),
        ));
    }
    let _ = app
        .inputs
        .send(crate::world::Input::Undrain { id: c.id.clone() });
    Ok(done(c, "undrain"))
}

pub async fn start_container(
    State(app): State<App>,
    Path(target): Path<String>,
) -> Result<Json<ActionView>, ApiError> {
    let snap = app.snapshot.load_full();
    let c = find(&snap, &target)?;
    app.engine
        .start(&c.id, &c.name)
        .await
        .map_err(engine_error)?;
    Ok(done(c, "start"))
}

/// Drains a routed container (no new requests, in-flight ones finish), then
/// stops it.
pub async fn stop_container(
    State(app): State<App>,
    Path(target): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<ActionView>, ApiError> {
    drained(app, target, q, "stop").await
}

/// As stop, then starts it again; a stopped container is just started.
pub async fn restart_container(
    State(app): State<App>,
    Path(target): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<ActionView>, ApiError> {
    drained(app, target, q, "restart").await
}

async fn drained(
    app: App,
    target: String,
    q: HashMap<String, String>,
    action: &'static str,
) -> Result<Json<ActionView>, ApiError> {
    let q = params(&q, &["timeout"])?;
    let timeout = timeout_param(&q)?;
    let snap = app.snapshot.load_full();
    let c = find(&snap, &target)?;
    if action == "stop" && !c.is_running() {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("container {}: not running ({})", c.name, c.status),
        ));
    }
    stop_drained(&app, c, action == "restart", timeout)
        .await
        .map_err(engine_error)?;
    Ok(done(c, action))
}

/// Stops (or restarts) a container, a running routed one drained first;
/// when the engine refuses, the container goes back into rotation.
pub(crate) async fn stop_drained(
    app: &App,
    c: &ContainerInfo,
    restart: bool,
    timeout: Option<i32>,
) -> Result<(), CallError> {
    let drained = match c.is_running() {
        true => drain(&app.snapshot, &app.inputs, &c.id).await,
        false => None,
    };
    if restart {
        app.engine.restart(&c.id, &c.name, timeout).await?;
    } else {
        app.engine.stop(&c.id, &c.name, timeout).await?;
    }
    if let Some(d) = drained {
        d.keep();
    }
    Ok(())
}

/// `None`: the container's own stop timeout.
fn timeout_param(q: &HashMap<String, String>) -> Result<Option<i32>, ApiError> {
    match q.get("timeout") {
        None => Ok(None),
        Some(v) => match v.parse::<i32>() {
            Ok(t) if (0..=3600).contains(&t) => Ok(Some(t)),
            _ => Err(bad(format!("timeout: {v:?}: seconds between 0 and 3600"))),
        },
    }
}

pub async fn remove_container(
    State(app): State<App>,
    Path(target): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<ActionView>, ApiError> {
    let q = params(&q, &["force"])?;
    let force = flag(&q, "force")?;
    let snap = app.snapshot.load_full();
    let c = find(&snap, &target)?;
    if c.is_running() && !force {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "container {}: running; stop it first or pass force=true",
                c.name
            ),
        ));
    }
    let drained = match c.is_running() {
        true => drain(&app.snapshot, &app.inputs, &c.id).await,
        false => None,
    };
    app.engine
        .remove(&c.id, &c.name, force)
        .await
        .map_err(engine_error)?;
    if let Some(d) = drained {
        d.keep();
    }
    Ok(done(c, "remove"))
}

/// A rolling restart; NDJSON progress like a rollout.
pub async fn restart_deployment(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let q = params(&q, &["health_timeout", "service"])?;
    let health_timeout = super::duration("health_timeout", &q.get("health_timeout").cloned())?;
    let snap = app.snapshot.load_full();
    let cs = deployment(&snap, &name)?;
    // One service of it: rolling too, each replica Ready before the next.
    let service = q.get("service");
    let cs: Vec<_> = match service {
        Some(s) => {
            let of: Vec<_> = cs.into_iter().filter(|c| c.service_name() == s).collect();
            if of.is_empty() {
                return Err(ApiError(
                    StatusCode::NOT_FOUND,
                    format!("deployment {name:?}: no service {s:?}"),
                ));
            }
            of
        }
        None => cs,
    };
    if !cs.iter().any(|c| c.is_running()) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("deployment {name:?}: no running container to restart"),
        ));
    }
    let target = match service {
        Some(s) => format!("{name}/{s}"),
        None => name,
    };
    Ok(stream(
        &app,
        DeployRequest {
            kind: Kind::Restart,
            service: target,
            health_timeout,
            drain_timeout: None,
        },
    ))
}

/// Log lines of a deployment's containers (optionally one service), each
/// prefixed `container | `; `follow` streams new lines until the client
/// goes away.
pub async fn logs(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let q = params(&q, &["service", "container", "tail", "follow"])?;
    let follow = flag(&q, "follow")?;
    let tail = match q.get("tail").map(String::as_str) {
        None | Some("all") => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| bad(format!("tail: {v:?}: a number of lines, or all")))?,
        ),
    };
    let snap = app.snapshot.load_full();
    let mut cs = deployment(&snap, &name)?;
    if let Some(s) = q.get("service") {
        cs.retain(|c| c.service_name() == s);
        if cs.is_empty() {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("service {s:?}: not in deployment {name:?}"),
            ));
        }
    }
    if let Some(only) = q.get("container") {
        cs.retain(|c| &c.name == only);
        if cs.is_empty() {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("container {only:?}: not in deployment {name:?}"),
            ));
        }
    }
    let width = cs.iter().map(|c| c.name.len()).max().unwrap_or(0);
    // The last lines of several containers come as one log, in the order
    // they were written; following goes on from each one's last line.
    let (first, from) = match tail {
        Some(n) if cs.len() > 1 => {
            let (merged, from) = merged_tails(&app, &cs, width, n).await?;
            (Some(merged), Some(from))
        }
        _ => (None, None),
    };
    let first = futures_util::stream::iter(first.map(Ok::<_, Infallible>));
    let body = if follow && !q.contains_key("container") {
        let service = q.get("service").cloned();
        let rest = follow_deployment(&app, &cs, name, service, width, tail, from.as_ref())?;
        Body::from_stream(first.chain(rest))
    } else if from.is_some() && !follow {
        Body::from_stream(first)
    } else {
        let mut streams = Vec::new();
        for c in &cs {
            let prefix = format!("{:<width$} | ", c.name);
            let after = from.as_ref().and_then(|f| f.get(&c.id).copied());
            let tail = if after.is_some() { None } else { tail };
            let lines = app.engine.logs(&c.id, prefix, tail, follow, after);
            streams.push(lines.map_err(engine_error)?.boxed());
        }
        let rest = futures_util::stream::select_all(streams).map(Ok::<_, Infallible>);
        Body::from_stream(first.chain(rest))
    };
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

/// The last `n` lines of each container, merged by time, and for each
/// container the time to go on from: just after its last line, or when the
/// tail was asked for if it had none.
async fn merged_tails(
    app: &App,
    cs: &[&ContainerInfo],
    width: usize,
    n: u64,
) -> Result<(Bytes, HashMap<String, (i64, u32)>), ApiError> {
    let asked = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| (d.as_secs() as i64, d.subsec_nanos()))
        .unwrap_or((0, 0));
    let tails =
        futures_util::future::join_all(cs.iter().map(|c| app.engine.log_tail(&c.id, &c.name, n)))
            .await;
    let mut logs = Vec::new();
    let mut from = HashMap::new();
    for (c, tail) in cs.iter().zip(tails) {
        let lines = tail.map_err(engine_error)?;
        let next = lines.iter().map(|l| l.at).max().map_or(asked, |(s, ns)| {
            if ns == 999_999_999 {
                (s + 1, 0)
            } else {
                (s, ns + 1)
            }
        });
        from.insert(c.id.clone(), next);
        logs.push((format!("{:<width$} | ", c.name), lines));
    }
    Ok((crate::engine::logs::merge(&logs), from))
}

/// The logs of a deployment (or one service of it) as they are written,
/// also of the containers that join it meanwhile (a rollout's or a scale's
/// replicas: their whole log), until the client goes away.
fn follow_deployment(
    app: &App,
    now: &[&ContainerInfo],
    deployment: String,
    service: Option<String>,
    width: usize,
    tail: Option<u64>,
    from: Option<&HashMap<String, (i64, u32)>>,
) -> Result<impl futures_util::Stream<Item = Result<Bytes, Infallible>>, ApiError> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    // By run: a restarted container (same id, a new start) is followed
    // again from its new start, since the engine ends a follow when the
    // container stops.
    let mut followed = HashSet::new();
    for c in now {
        // After its merged tail (when there was one): from its last line.
        let after = from.and_then(|f| f.get(&c.id).copied());
        let tail = if after.is_some() { None } else { tail };
        follow_one(app, c, width, tail, after, &tx)?;
        followed.insert((c.id.clone(), c.started_at.clone()));
    }
    let app = app.clone();
    tokio::spawn(async move {
        let mut notified = app.notified.clone();
        loop {
            tokio::select! {
                r = notified.changed() => if r.is_err() { return },
                _ = tx.closed() => return,
            }
            let snap = app.snapshot.load_full();
            let joined: Vec<&ContainerInfo> = snap
                .containers
                .values()
                .filter(|c| {
                    c.deployment() == deployment
                        && service.as_deref().is_none_or(|s| c.service_name() == s)
                        && c.is_running()
                        && !followed.contains(&(c.id.clone(), c.started_at.clone()))
                })
                .collect();
            for c in joined {
                // A new run of a container followed before: its lines since
                // it started (the earlier run's were sent).
                let since = followed
                    .iter()
                    .any(|(id, _)| id == &c.id)
                    .then(|| crate::engine::logs::unix_time(&c.started_at))
                    .flatten();
                followed.insert((c.id.clone(), c.started_at.clone()));
                let _ = follow_one(&app, c, width.max(c.name.len()), None, since, &tx);
            }
        }
    });
    Ok(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok(b), rx))
    }))
}

/// One container's log lines, followed, into `tx`.
fn follow_one(
    app: &App,
    c: &ContainerInfo,
    width: usize,
    tail: Option<u64>,
    since: Option<(i64, u32)>,
    tx: &tokio::sync::mpsc::Sender<Bytes>,
) -> Result<(), ApiError> {
    let prefix = format!("{:<width$} | ", c.name);
    let lines = app
        .engine
        .logs(&c.id, prefix, tail, true, since)
        .map_err(engine_error)?;
    let tx = tx.clone();
    tokio::spawn(async move {
        let mut lines = std::pin::pin!(lines);
        while let Some(b) = lines.next().await {
            if tx.send(b).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StatsView {
    pub container: String,
    pub container_id: String,
    pub service: String,
    #[serde(flatten)]
    pub stats: Stats,
}

/// One sample of every running container of the deployment.
pub async fn stats(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Json<Vec<StatsView>>, ApiError> {
    let snap = app.snapshot.load_full();
    let cs = deployment(&snap, &name)?;
    let running: Vec<&ContainerInfo> = cs.into_iter().filter(|c| c.is_running()).collect();
    let samples =
        futures_util::future::join_all(running.iter().map(|c| app.engine.stats(&c.id, &c.name)))
            .await;
    let mut out = Vec::new();
    for (c, s) in running.iter().zip(samples) {
        match s {
            Ok(stats) => out.push(StatsView {
                container: c.name.clone(),
                container_id: c.id.clone(),
                service: c.service_name().to_string(),
                stats,
            }),
            // Stopped between the snapshot and the call: left out.
            Err(e) if e.status == Some(404) || e.status == Some(409) => {}
            Err(e) => return Err(engine_error(e)),
        }
    }
    Ok(Json(out))
}

/// The kept stats samples of a deployment's containers (those still
/// there), after `since` (unix seconds) when given.
pub async fn stats_history(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<crate::ui::samples::StatsHistory>, ApiError> {
    let q = params(&q, &["since", "service"])?;
    let since = match q.get("since") {
        None => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| bad(format!("since: {v:?}: unix seconds")))?,
        ),
    };
    let snap = app.snapshot.load_full();
    let mut cs = deployment(&snap, &name)?;
    if let Some(s) = q.get("service") {
        cs.retain(|c| c.service_name() == s);
    }
    let ids: Vec<&str> = cs.iter().map(|c| c.id.as_str()).collect();
    Ok(Json(app.ui.samples.stats_history(&ids, since)))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RouteView {
    pub host: String,
    pub path: String,
    pub tls: bool,
    pub backends: Vec<RouteBackend>,
    /// The route's policies, one line each (never a password hash);
    /// empty without any.
    #[serde(default)]
    pub policies: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RouteBackend {
    pub name: String,
    pub addr: String,
}

pub async fn routes(State(app): State<App>) -> Json<Vec<RouteView>> {
    Json(route_list(&app.snapshot.load()))
}

/// Every route with the replicas it sends to now, by host and path.
pub fn route_list(s: &Snapshot) -> Vec<RouteView> {
    let mut list: Vec<RouteView> = s
        .table
        .routes()
        .map(|r| RouteView {
            host: r.host.to_string(),
            path: r.prefix.as_str().to_string(),
            // What is served: HTTPS needs the TLS listener.
            tls: r.tls && s.config.tls.listen.is_some(),
            backends: r
                .backends
                .iter()
                .map(|b| RouteBackend {
                    name: b.name.to_string(),
                    addr: b.addr.to_string(),
                })
                .collect(),
            policies: r
                .mode
                .iter()
                .map(|m| m.describe())
                .chain(r.policy.iter().flat_map(|p| p.spec.describe()))
                .collect(),
        })
        .collect();
    list.sort_by(|a, b| (&a.host, &a.path).cmp(&(&b.host, &b.path)));
    list
}

pub async fn problems(State(app): State<App>) -> Json<Vec<Problem>> {
    Json(app.snapshot.load().problems.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, name: &str, project: Option<&str>, service: Option<&str>) -> ContainerInfo {
        ContainerInfo::for_test(id, name, project, service)
    }

    #[test]
    fn deployments_group_projects_and_lone_containers() {
        let cs: BTreeMap<String, ContainerInfo> = [
            info("a1", "blog-web-2", Some("blog"), Some("web")),
            info("a2", "blog-web-1", Some("blog"), Some("web")),
            info("a3", "blog-db-1", Some("blog"), Some("db")),
            info("b1", "cron", None, None),
        ]
        .into_iter()
        .map(|c| (c.id.clone(), c))
        .collect();
        let d = deployments(&cs);
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].name.as_str(), d[0].compose), ("blog", true));
        assert_eq!(d[0].services[0].name, "db");
        let web: Vec<&str> = d[0].services[1]
            .containers
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(web, vec!["blog-web-1", "blog-web-2"]);
        assert_eq!((d[1].name.as_str(), d[1].compose), ("cron", false));
    }

    #[test]
    fn containers_found_by_name_id_or_long_enough_prefix() {
        let mut snap = Snapshot::default();
        for c in [
            info("abcdef0123", "web-1", None, None),
            info("abcd99", "web-2", None, None),
        ] {
            snap.containers.insert(c.id.clone(), c);
        }
        assert_eq!(find(&snap, "web-2").unwrap().id, "abcd99");
        assert_eq!(find(&snap, "abcdef0123").unwrap().name, "web-1");
        assert_eq!(find(&snap, "abcde").unwrap().name, "web-1");
        assert_eq!(find(&snap, "abcd").unwrap_err().0, StatusCode::BAD_REQUEST);
        assert_eq!(find(&snap, "abc").unwrap_err().0, StatusCode::NOT_FOUND);
        assert_eq!(find(&snap, "nope").unwrap_err().0, StatusCode::NOT_FOUND);
    }
}
