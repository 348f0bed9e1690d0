//! The admin API: HTTP+JSON on loopback by default, bearer token required on
//! everything but `/api/health`. Rollouts and scaling stream their progress as
//! newline-delimited JSON, one object per line, the last with a final status.

pub mod deployments;
pub mod drain;
pub mod host;
pub mod mode;
pub mod service;
pub mod token;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::{Deserialize, Serialize};
use tracing::{error, info};

use crate::config::Config;
use crate::deploy::{Deploys, Kind, Request as DeployRequest};
use crate::dns::{CountersView, DnsCounters};
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::names::parse_duration;
use crate::plan::dns::NameView;
use crate::tls::acme::{AcmeHandle, HostStatus};
use crate::world::BackendState;
use crate::{Inputs, SharedSnapshot};

/// What the admin API works with.
#[derive(Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub engine: Engine,
    pub snapshot: SharedSnapshot,
    /// Moves on each published snapshot.
    pub notified: tokio::sync::watch::Receiver<u64>,
    pub inputs: Inputs,
    pub deploys: Deploys,
    /// The bearer token; a reload may change it.
    pub token: Arc<arc_swap::ArcSwap<String>>,
    /// `POST /api/reload`; `None` in tests of other endpoints.
    pub reloader: Option<Arc<crate::reload::Reloader>>,
    pub certs: Option<AcmeHandle>,
    /// Query counters, when the DNS server runs.
    pub dns: Option<Arc<DnsCounters>>,
    pub metrics: Arc<Metrics>,
    /// The dashboard's sessions, live stream and samples.
    pub ui: Arc<crate::ui::Ui>,
    /// Services in maintenance or paused.
    pub modes: Arc<crate::policy::mode::Modes>,
}

impl App {
    /// ACME state per host (empty without ACME).
    pub fn cert_list(&self) -> Vec<HostStatus> {
        self.certs
            .as_ref()
            .and_then(|c| c.status.lock().ok().map(|c| c.values().cloned().collect()))
            .unwrap_or_default()
    }

    /// How often berth restarted or replaced each container (autoheal,
    /// crash replacement), by id.
    pub fn restart_counts(&self) -> std::collections::HashMap<String, u32> {
        self.deploys
            .restarts
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Every autoscaled service, by name.
    pub fn autoscale_list(&self) -> Vec<crate::deploy::scaler::ScaleView> {
        self.deploys
            .autoscale
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The recent rollouts, scale runs and restarts.
    fn history(&self) -> Vec<crate::deploy::Record> {
        self.deploys
            .history
            .lock()
            .map(|h| h.clone())
            .unwrap_or_default()
    }
}

/// An error answer: `{"error": "..."}` with a status.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

/// The body of every error answer (the CLI reads it too).
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

pub fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

pub fn router(app: App) -> Router {
    let protected = Router::new()
        .route(
            "/api/deployments",
            get(host::list_deployments).post(deployments::deploy),
        )
        .route("/api/deployments/owned", get(deployments::owned))
        .route(
            "/api/deployments/{name}",
            get(deployments::show).delete(deployments::down),
        )
        .route("/api/deployments/{name}/down", post(deployments::down))
        .route("/api/deployments/{name}/history", get(deployments::history))
        .route(
            "/api/deployments/{name}/rollback",
            post(deployments::rollback),
        )
        .route("/api/deployments/{name}/env", get(deployments::env_list))
        .route(
            "/api/deployments/{name}/env/{key}",
            axum::routing::put(deployments::env_set).delete(deployments::env_unset),
        )
        .route(
            "/api/deployments/{name}/restart",
            post(host::restart_deployment),
        )
        .route("/api/deployments/{name}/logs", get(host::logs))
        .route("/api/deployments/{name}/stats", get(host::stats))
        .route("/api/containers", get(host::list_containers))
        .route("/api/containers/{id}", delete(host::remove_container))
        .route("/api/containers/{id}/start", post(host::start_container))
        .route("/api/containers/{id}/stop", post(host::stop_container))
        .route(
            "/api/containers/{id}/restart",
            post(host::restart_container),
        )
        .route("/api/routes", get(host::routes))
        .route("/api/problems", get(host::problems))
        .route("/api/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/api/backends", get(backends))
        .route("/api/rollouts", get(rollouts))
        .route("/api/autoscale", get(autoscale))
        .route("/api/certificates", get(certificates))
        .route("/api/certificates/{host}/renew", post(renew_certificate))
        .route("/api/dns", get(dns_records))
        .route("/api/services/{service}/rollout", post(rollout))
        .route("/api/services/{service}/scale", post(scale))
        .route(
            "/api/services/{service}/canary/promote",
            post(canary_promote),
        )
        .route("/api/services/{service}/canary/abort", post(canary_abort))
        .route("/api/services/{service}/stop", post(service::stop))
        .route("/api/services/{service}/start", post(service::start))
        .route(
            "/api/services/{service}/maintenance",
            post(mode::maintenance),
        )
        .route("/api/services/{service}/pause", post(mode::pause))
        .route("/api/services/{service}/resume", post(mode::resume))
        .route("/api/modes", get(mode::list))
        .route("/api/reload", post(reload))
        .route("/api/events", get(crate::ui::live::events))
        .route(
            "/api/deployments/{name}/stats/history",
            get(host::stats_history),
        )
        .route("/api/routes/history", get(traffic_history))
        .route("/api/containers/{id}/drain", post(host::drain_container))
        .route(
            "/api/containers/{id}/undrain",
            post(host::undrain_container),
        )
        .route_layer(middleware::from_fn_with_state(app.clone(), auth));
    Router::new()
        .route("/api/health", get(health))
        .route("/api/ready", get(host::ready))
        // Authenticated by its HMAC signature, not the bearer token.
        .route(
            "/api/deployments/{name}/hooks/git",
            post(deployments::git_hook),
        )
        .merge(protected)
        .merge(crate::ui::routes())
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .layer(middleware::from_fn(json_errors))
        .with_state(app)
}

/// Re-reads the configuration file and applies what can change live; an
/// invalid file is refused (400) and the running configuration stays.
async fn reload(State(app): State<App>) -> Result<Json<crate::reload::ReloadReport>, ApiError> {
    let Some(reloader) = app.reloader.clone() else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "reload is not available here".into(),
        ));
    };
    match tokio::task::spawn_blocking(move || reloader.reload()).await {
        Ok(Ok(report)) => Ok(Json(report)),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "configuration refused; the running one stays");
            Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("configuration refused, the running one stays: {e}"),
            ))
        }
        Err(e) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// Prometheus text format.
async fn metrics(State(app): State<App>) -> Response {
    let snapshot = app.snapshot.load_full();
    let deploys = app.history();
    let certs = app.cert_list();
    let autoscale = app.autoscale_list();
    let text = app.metrics.render(&crate::metrics::Scrape {
        snapshot: &snapshot,
        deploys: &deploys,
        certs: &certs,
        dns: app.dns.as_deref(),
        autoscale: &autoscale,
    });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The OpenAPI 3 description of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Errors that axum itself produces (a path or query that does not parse, a
/// method not allowed) come as plain text: wrap them as `{"error": ...}` so
/// that every error is JSON.
async fn json_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    // The dashboard's login form comes with 401 too: a page, not an error.
    let is_page = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if !(status.is_client_error() || status.is_server_error()) || is_json || is_page {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let message = match (status, text.is_empty()) {
        (StatusCode::METHOD_NOT_ALLOWED, _) => format!("{method} is not allowed on {path}"),
        (_, true) => status.canonical_reason().unwrap_or("error").to_string(),
        (_, false) => text,
    };
    let mut out = ApiError(status, message).into_response();
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

/// The bearer token, or a dashboard session (whose changes need its CSRF
/// token).
async fn auth(State(app): State<App>, req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if token::authorized(header, &app.token.load()) {
        next.run(req).await
    } else if let Some(s) = crate::ui::session_of(&app, req.headers()) {
        if crate::ui::csrf_passes(&s, req.method(), req.headers()) {
            next.run(req).await
        } else {
            crate::ui::forbidden_csrf()
        }
    } else {
        let mut r = ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (Authorization: Bearer <token>; see `berth token`)"
                .into(),
        )
        .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        r
    }
}

/// `GET /api/health`: berth answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct HealthView {
    pub status: String,
    pub generation: u64,
    pub routes: usize,
}

async fn health(State(app): State<App>) -> Json<HealthView> {
    let s = app.snapshot.load();
    Json(HealthView {
        status: "ok".into(),
        generation: s.generation,
        routes: s.table.len(),
    })
}

/// A routed container as `GET /api/backends` shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct BackendView {
    pub id: String,
    pub name: String,
    pub service: String,
    pub image: String,
    pub state: BackendState,
    pub health: Option<String>,
    pub check: Option<String>,
    pub addrs: Vec<String>,
    pub inflight: usize,
    pub restarts: u32,
}

async fn backends(State(app): State<App>) -> Json<Vec<BackendView>> {
    Json(backend_list(&app))
}

/// Every routed container with its backend state.
pub fn backend_list(app: &App) -> Vec<BackendView> {
    let s = app.snapshot.load();
    let restarts = app.restart_counts();
    s.backends
        .values()
        .map(|b| BackendView {
            id: b.id.clone(),
            name: b.name.clone(),
            service: b.service.clone(),
            image: b.image.clone(),
            state: b.state,
            health: b.health.clone(),
            check: b.check.clone(),
            addrs: b.addrs.iter().map(SocketAddr::to_string).collect(),
            inflight: b.stats.inflight.load(Ordering::Relaxed),
            restarts: restarts.get(&b.id).copied().unwrap_or(0),
        })
        .collect()
}

/// ACME state per host: valid until, when it is renewed, last error, next
/// attempt.
async fn certificates(State(app): State<App>) -> Json<Vec<HostStatus>> {
    Json(app.cert_list())
}

/// `POST /api/certificates/{host}/renew`: order a new certificate for a
/// host berth manages now, even if the served one is still good (and even
/// while backing off after failures); the hourly cap still applies.
async fn renew_certificate(
    State(app): State<App>,
    Path(host): Path<String>,
) -> Result<(StatusCode, Json<HostStatus>), ApiError> {
    let Some(acme) = &app.certs else {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "ACME is off (acme.email is not set, or tls.listen is off): nothing to renew".into(),
        ));
    };
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let known = acme.status.lock().ok().and_then(|s| s.get(&host).cloned());
    match known {
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("{host}: no route wants a certificate for this name (see berth certs)"),
        )),
        Some(s) if s.not_eligible.is_some() => Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "{host}: not ordered: {}",
                s.not_eligible.unwrap_or_default()
            ),
        )),
        // A name served by a wildcard route's certificate: that one is
        // renewed (it has none of its own).
        Some(s) if s.source.as_deref() == Some("acme (wildcard)") => {
            let wildcard = host
                .split_once('.')
                .map(|(_, parent)| format!("*.{parent}"))
                .unwrap_or_default();
            let w = acme
                .status
                .lock()
                .ok()
                .and_then(|st| st.get(&wildcard).cloned())
                .unwrap_or(s);
            acme.renewals.ask(&w.host);
            Ok((StatusCode::ACCEPTED, Json(w)))
        }
        Some(s) => {
            acme.renewals.ask(&host);
            Ok((StatusCode::ACCEPTED, Json(s)))
        }
    }
}

/// `GET /api/dns`: the zone's names and how queries ended.
#[derive(Debug, Serialize, Deserialize)]
pub struct DnsView {
    pub zone: String,
    pub names: Vec<NameView>,
    pub queries: CountersView,
}

/// The internal zone: every name, the addresses it answers (Ready only) and
/// the containers behind it; and how queries ended.
async fn dns_records(State(app): State<App>) -> Result<Json<DnsView>, ApiError> {
    dns_view(&app).map(Json).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            "the DNS server is off (dns.listen: off)".into(),
        )
    })
}

/// The zone now; `None` when the DNS server is off.
pub fn dns_view(app: &App) -> Option<DnsView> {
    let (Some(counters), zone) = (&app.dns, &app.config.dns.zone) else {
        return None;
    };
    let s = app.snapshot.load();
    let names: Vec<_> = s
        .dns
        .view()
        .into_iter()
        .map(|mut n| {
            n.name = format!("{}.{zone}", n.name);
            n
        })
        .collect();
    Some(DnsView {
        zone: zone.clone(),
        names,
        queries: counters.view(),
    })
}

/// `GET /api/routes/history`: each route's requests per interval, by
/// status class, over the kept history.
async fn traffic_history(State(app): State<App>) -> Json<crate::ui::samples::TrafficHistory> {
    Json(app.ui.samples.traffic())
}

async fn rollouts(State(app): State<App>) -> Json<Vec<crate::deploy::Record>> {
    Json(app.history())
}

/// Every autoscaled service: its policy, figures, state and last actions.
async fn autoscale(State(app): State<App>) -> Json<Vec<crate::deploy::scaler::ScaleView>> {
    Json(app.autoscale_list())
}

/// The body of `POST /api/services/{service}/rollout`, as the CLI sends it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutBody {
    pub project: Option<String>,
    /// `None`: the image the replicas run now.
    pub image: Option<String>,
    /// Replicas replaced at a time (default 1).
    pub batch: Option<usize>,
    pub health_timeout: Option<String>,
    pub drain_timeout: Option<String>,
    /// `10%`: start a canary with `image` beside the replicas instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
    /// With `canary`: judge it after `window` and promote or abort it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<bool>,
    /// How long `auto` watches the canary (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
}

/// The body of `POST /api/services/{service}/canary/promote` and `/abort`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryEndBody {
    pub project: Option<String>,
    pub health_timeout: Option<String>,
    pub drain_timeout: Option<String>,
}

/// The body of `POST /api/services/{service}/scale`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleBody {
    pub project: Option<String>,
    pub replicas: usize,
    pub health_timeout: Option<String>,
    pub drain_timeout: Option<String>,
}

pub fn duration(key: &str, v: &Option<String>) -> Result<Option<Duration>, ApiError> {
    v.as_deref()
        .map(|s| parse_duration(s).map_err(|m| bad(format!("{key}: {s:?}: {m}"))))
        .transpose()
}

pub(crate) fn json_body<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}" as &[u8]
    } else {
        bytes
    };
    serde_json::from_slice(text).map_err(|e| bad(format!("request body: {e}")))
}

async fn rollout(
    State(app): State<App>,
    Path(service): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let b: RolloutBody = json_body(&body)?;
    if b.batch == Some(0) {
        return Err(bad("batch: 0: use 1 or more"));
    }
    let service = resolve_service(
        &service_keys(&app.snapshot.load()),
        &service,
        b.project.as_deref(),
    )?;
    let image = b.image.filter(|i| !i.trim().is_empty());
    let kind = match &b.canary {
        None => {
            if b.auto.is_some() || b.window.is_some() {
                return Err(bad("auto and window go with canary"));
            }
            Kind::Rollout {
                image,
                batch: b.batch.unwrap_or(1),
            }
        }
        Some(share) => {
            let percent = crate::deploy::canary::parse_percent(share)
                .map_err(|e| bad(format!("canary: {e}")))?;
            let Some(image) = image else {
                return Err(bad("canary: give the new image (image)"));
            };
            if b.window.is_some() && b.auto != Some(true) {
                return Err(bad("window goes with auto: true"));
            }
            let window = duration("window", &b.window)?.unwrap_or(Duration::from_secs(300));
            Kind::Canary {
                image,
                percent,
                auto: (b.auto == Some(true)).then_some(window),
            }
        }
    };
    let request = DeployRequest {
        kind,
        service,
        health_timeout: duration("health_timeout", &b.health_timeout)?,
        drain_timeout: duration("drain_timeout", &b.drain_timeout)?,
    };
    Ok(stream(&app, request))
}

/// `POST /api/services/{service}/canary/promote` and `/abort`.
async fn canary_end(
    app: App,
    service: String,
    body: &[u8],
    promote: bool,
) -> Result<Response, ApiError> {
    let b: CanaryEndBody = json_body(body)?;
    let service = resolve_service(
        &service_keys(&app.snapshot.load()),
        &service,
        b.project.as_deref(),
    )?;
    let request = DeployRequest {
        kind: Kind::CanaryEnd {
            promote,
            verdict: None,
        },
        service,
        health_timeout: duration("health_timeout", &b.health_timeout)?,
        drain_timeout: duration("drain_timeout", &b.drain_timeout)?,
    };
    Ok(stream(&app, request))
}

async fn canary_promote(
    State(app): State<App>,
    Path(service): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    canary_end(app, service, &body, true).await
}

async fn canary_abort(
    State(app): State<App>,
    Path(service): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    canary_end(app, service, &body, false).await
}

async fn scale(
    State(app): State<App>,
    Path(service): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let b: ScaleBody = json_body(&body)?;
    let service = resolve_service(
        &service_keys(&app.snapshot.load()),
        &service,
        b.project.as_deref(),
    )?;
    let request = DeployRequest {
        kind: Kind::Scale {
            replicas: b.replicas,
        },
        service,
        health_timeout: duration("health_timeout", &b.health_timeout)?,
        drain_timeout: duration("drain_timeout", &b.drain_timeout)?,
    };
    Ok(stream(&app, request))
}

/// Queues the request and streams its progress as NDJSON.
pub fn stream(app: &App, request: DeployRequest) -> Response {
    stream_with(app, request, None)
}

/// As [`stream`], with `first` as the first line (its id set to the run's).
pub fn stream_with(
    app: &App,
    request: DeployRequest,
    first: Option<crate::deploy::Progress>,
) -> Response {
    let (id, rx) = app.deploys.submit(request);
    let first = first.map(|mut p| {
        p.id = id;
        p
    });
    ndjson(first, rx)
}

/// Progress lines as NDJSON, `first` first, until the run's last line.
pub fn ndjson(
    first: Option<crate::deploy::Progress>,
    rx: tokio::sync::mpsc::UnboundedReceiver<crate::deploy::Progress>,
) -> Response {
    let lines = futures_util::stream::unfold((first, rx), |(first, mut rx)| async move {
        let p = match first {
            Some(p) => p,
            None => rx.recv().await?,
        };
        let mut line = serde_json::to_vec(&p).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(line), (None, rx)))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(lines))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Every service berth can roll out or scale: the routed ones and those of
/// every container, routed or not (workers, databases).
pub(crate) fn service_keys(snap: &crate::plan::Snapshot) -> BTreeSet<String> {
    snap.backends
        .values()
        .map(|b| b.service.clone())
        .chain(snap.containers.values().map(|c| c.service_key()))
        .collect()
}

/// `web` → `blog/web` when exactly one compose project has a service `web`;
/// a container name works for containers outside compose.
pub(crate) fn resolve_service(
    keys: &BTreeSet<String>,
    service: &str,
    project: Option<&str>,
) -> Result<String, ApiError> {
    let keys: BTreeSet<&str> = keys.iter().map(String::as_str).collect();
    let wanted = match project {
        Some(p) => format!("{p}/{service}"),
        None => service.to_string(),
    };
    if keys.contains(wanted.as_str()) {
        return Ok(wanted);
    }
    let matches: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| project.is_none() && k.rsplit_once('/').is_some_and(|(_, s)| s == service))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("service {wanted:?}: no container belongs to it"),
        )),
        many => Err(bad(format!(
            "service {service:?} is in several projects ({}): name the project",
            many.iter()
                .map(|k| k.split('/').next().unwrap_or(k))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

pub struct AdminService {
    /// Bound at start-up (shared with the next berth in an upgrade).
    listener: std::sync::Mutex<Option<std::net::TcpListener>>,
    app: App,
}

impl AdminService {
    pub fn new(listener: std::net::TcpListener, app: App) -> AdminService {
        AdminService {
            listener: std::sync::Mutex::new(Some(listener)),
            app,
        }
    }
}

#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(std) = self.listener.lock().ok().and_then(|mut l| l.take()) else {
            return;
        };
        let listen = std.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let listener = match tokio::net::TcpListener::from_std(std) {
            Ok(l) => l,
            Err(e) => {
                error!(listen, error = %e, "admin.listen: cannot listen; the admin API is off");
                return;
            }
        };
        info!(listen, "admin API listening");
        // The dashboard's live stream and samples run while the API does.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(crate::ui::live::run(self.app.clone(), stopped.clone()));
        tokio::spawn(crate::ui::live::sample(self.app.clone(), stopped));
        let ui = self.app.ui.clone();
        let router = router(self.app.clone());
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
            // Streams that never end on their own end now.
            let _ = stop.send(true);
            ui.hub.close();
        });
        if let Err(e) = serve.await {
            error!(error = %e, "admin API stopped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::BackendInfo;

    fn backends(keys: &[&str]) -> std::collections::BTreeMap<String, BackendInfo> {
        keys.iter()
            .enumerate()
            .map(|(i, k)| {
                let id = i.to_string();
                let b = BackendInfo::for_test(&id, &format!("c{i}"), k, BackendState::Ready);
                (id, b)
            })
            .collect()
    }

    #[test]
    fn services_resolve_by_name_project_or_container() {
        let b: BTreeSet<String> = backends(&["blog/web", "shop/web", "shop/api", "standalone"])
            .values()
            .map(|b| b.service.clone())
            .collect();
        assert_eq!(
            resolve_service(&b, "api", None).ok(),
            Some("shop/api".into())
        );
        assert_eq!(
            resolve_service(&b, "web", Some("blog")).ok(),
            Some("blog/web".into())
        );
        assert_eq!(
            resolve_service(&b, "standalone", None).ok(),
            Some("standalone".into())
        );
        let e = resolve_service(&b, "web", None).err().unwrap();
        assert!(e.1.contains("blog, shop"), "{}", e.1);
        assert_eq!(
            resolve_service(&b, "nope", None).err().unwrap().0,
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn every_documented_path_is_routed() {
        use tower::ServiceExt;
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let (inputs, _rx) = tokio::sync::mpsc::unbounded_channel();
        let inputs_for_modes = inputs.clone();
        let snapshot: SharedSnapshot = Arc::default();
        let engine = Engine::new(&Config::default().docker).unwrap();
        let (_controller, deploys) = crate::deploy::Controller::new(
            Arc::default(),
            engine.clone(),
            snapshot.clone(),
            tokio::sync::watch::channel(0).1,
            inputs.clone(),
            None,
        );
        let app = router(App {
            config: Arc::default(),
            engine,
            notified: tokio::sync::watch::channel(0).1,
            snapshot,
            inputs,
            deploys,
            token: Arc::new(arc_swap::ArcSwap::from_pointee(
                "t0123456789abcdef".to_string(),
            )),
            reloader: None,
            certs: None,
            dns: None,
            metrics: Arc::default(),
            ui: Arc::new(crate::ui::Ui::new(&Config::default(), None)),
            modes: crate::policy::mode::Modes::open(None, inputs_for_modes),
        });
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.len() >= 20, "{}", paths.len());
        for (path, ops) in paths {
            let concrete = path
                .replace("{name}", "none")
                .replace("{id}", "none")
                .replace("{service}", "none")
                .replace("{key}", "NONE");
            // Path-level `parameters` is not a method.
            let methods = ops
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "parameters");
            for method in methods {
                let req = axum::http::Request::builder()
                    .method(method.to_uppercase().as_str())
                    .uri(&concrete)
                    .body(Body::empty())
                    .unwrap();
                let resp = app.clone().oneshot(req).await.unwrap();
                let status = resp.status();
                let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                    .await
                    .unwrap();
                let body = String::from_utf8_lossy(&body);
                assert!(
                    !body.contains("no such endpoint") && status != StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path}: {status} {body}"
                );
                let public = ops[method]["security"]
                    .as_array()
                    .is_some_and(|s| s.is_empty());
                // A public operation may have an auth of its own (the push
                // webhook's signature), never the bearer token.
                let wants_token =
                    status == StatusCode::UNAUTHORIZED && body.contains("bearer token");
                assert_eq!(
                    wants_token, !public,
                    "{method} {path} without a token: {status} {body}"
                );
            }
        }
    }
}
