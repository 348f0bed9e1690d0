//! Maintenance and pause of a service (`berth maintenance`, `berth pause`,
//! `berth resume`): the API sets the mode in [`crate::policy::mode::Modes`],
//! which saves it and tells the planner; the proxy carries it out.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{bad, json_body, resolve_service, service_keys, ApiError, App};
use crate::names::parse_duration;
use crate::policy::mode::{ModeSpec, DEFAULT_PAUSE};

/// `POST /api/services/{service}/maintenance`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceBody {
    pub project: Option<String>,
    /// On (default) or off.
    #[serde(default = "yes")]
    pub on: bool,
    /// Shown on the 503 page.
    pub message: Option<String>,
}

fn yes() -> bool {
    true
}

/// `POST /api/services/{service}/pause`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseBody {
    pub project: Option<String>,
    /// The longest a request is held (`30s` by default).
    pub max: Option<String>,
}

/// `POST /api/services/{service}/resume`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeBody {
    pub project: Option<String>,
}

/// A service's mode, as `GET /api/modes` lists it and the calls above answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModeView {
    pub service: String,
    /// `maintenance`, `paused`, or `normal`.
    pub mode: String,
    pub message: Option<String>,
    /// A pause's longest hold, in milliseconds.
    pub max_ms: Option<u64>,
    /// Since when (unix seconds).
    pub since: Option<u64>,
    /// Requests held now by a pause.
    pub held: usize,
}

/// The longest message berth puts on its page.
const MESSAGE_MAX: usize = 2000;

pub async fn maintenance(
    State(app): State<App>,
    Path(service): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<ModeView>, ApiError> {
    let b: MaintenanceBody = json_body(&body)?;
    let key = service_key(&app, &service, b.project.as_deref())?;
    if let Some(m) = &b.message {
        if m.len() > MESSAGE_MAX || m.chars().any(|c| c.is_control() && c != '\n') {
            return Err(bad(format!(
                "message: at most {MESSAGE_MAX} bytes of text without control characters"
            )));
        }
    }
    let spec = b.on.then(|| ModeSpec::Maintenance {
        message: b.message.clone().filter(|m| !m.trim().is_empty()),
    });
    if !b.on && !is_in(&app, &key, |s| matches!(s, ModeSpec::Maintenance { .. })) {
        return Ok(Json(view(&app, &key)));
    }
    set(&app, &key, spec).await
}

pub async fn pause(
    State(app): State<App>,
    Path(service): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<ModeView>, ApiError> {
    let b: PauseBody = json_body(&body)?;
    let key = service_key(&app, &service, b.project.as_deref())?;
    let max = match &b.max {
        None => DEFAULT_PAUSE,
        Some(raw) => {
            let d = parse_duration(raw).map_err(|e| bad(format!("max: {raw:?}: {e}")))?;
            if d.is_zero() || d > Duration::from_secs(3600) {
                return Err(bad(format!("max: {raw:?}: from 1ms to 1h")));
            }
            d
        }
    };
    let spec = ModeSpec::Paused {
        max_ms: max.as_millis() as u64,
    };
    set(&app, &key, Some(spec)).await
}

pub async fn resume(
    State(app): State<App>,
    Path(service): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<ModeView>, ApiError> {
    let b: ResumeBody = json_body(&body)?;
    let key = service_key(&app, &service, b.project.as_deref())?;
    if !is_in(&app, &key, |s| matches!(s, ModeSpec::Paused { .. })) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("{key} is not paused"),
        ));
    }
    set(&app, &key, None).await
}

pub async fn list(State(app): State<App>) -> Json<Vec<ModeView>> {
    let all = app.modes.all();
    Json(all.keys().map(|k| view(&app, k)).collect())
}

fn service_key(app: &App, service: &str, project: Option<&str>) -> Result<String, ApiError> {
    let snap = app.snapshot.load();
    let mut keys = service_keys(&snap);
    // A service in a mode stays addressable while none of its containers
    // exist (stopped for the maintenance it is in).
    keys.extend(app.modes.all().into_keys());
    resolve_service(&keys, service, project)
}

fn is_in(app: &App, key: &str, what: impl Fn(&ModeSpec) -> bool) -> bool {
    app.modes.get(key).is_some_and(|m| what(&m.spec))
}

/// Sets the mode, and answers once a snapshot with it is published (at
/// most 2 s): the caller's next request already meets the new mode.
async fn set(app: &App, key: &str, spec: Option<ModeSpec>) -> Result<Json<ModeView>, ApiError> {
    let mut notified = app.notified.clone();
    notified.borrow_and_update();
    app.modes.set(key, spec).map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("saving the mode: {e}"),
        )
    })?;
    // An unchanged mode publishes nothing: the wait ends at its bound.
    let _ = tokio::time::timeout(Duration::from_secs(2), notified.changed()).await;
    Ok(Json(view(app, key)))
}

fn view(app: &App, key: &str) -> ModeView {
    let mode = app.modes.get(key);
    let (word, message, max_ms) = match mode.as_ref().map(|m| &m.spec) {
        None => ("normal", None, None),
        Some(ModeSpec::Maintenance { message }) => ("maintenance", message.clone(), None),
        Some(ModeSpec::Paused { max_ms }) => ("paused", None, Some(*max_ms)),
    };
    ModeView {
        service: key.to_string(),
        mode: word.into(),
        message,
        max_ms,
        since: mode.as_ref().map(|m| m.since),
        held: mode.map_or(0, |m| m.gate.held()),
    }
}
