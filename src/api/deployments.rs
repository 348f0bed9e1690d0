//! Deployments berth owns: deploy (a compose file on the host or a git
//! repository), history, rollback, down, env and secrets, and the push
//! webhook. Deploys, rollbacks and `down` queue behind every other rollout
//! and stream their progress as NDJSON; the webhook is authenticated by its
//! HMAC signature instead of the bearer token.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{bad, json_body, stream_with, ApiError, App};
use crate::deploy::project::store::{DeployRecord, Deployment, EnvValue, EnvView};
use crate::deploy::project::{name_from_url, normalise, Order};
use crate::deploy::{Kind, Progress, Request as DeployRequest, Status};
use crate::source::webhook::{self, Hook};
use crate::source::SourceSpec;

/// The body of `POST /api/deployments`, as the CLI sends it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployBody {
    /// The deployment (compose project) name; default: the file's `name:`,
    /// its directory, or the repository's name.
    pub name: Option<String>,
    /// A compose file on berth's host, absolute.
    pub file: Option<PathBuf>,
    /// A git repository instead.
    pub git: Option<GitBody>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitBody {
    pub url: String,
    pub branch: Option<String>,
    /// The directory of the compose file in the repository.
    pub path: Option<String>,
    /// The compose file's name there.
    pub file: Option<String>,
}

/// A deployment as `GET /api/deployments/{name}` shows it (never its
/// webhook secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentInfo {
    pub name: String,
    pub source: SourceSpec,
    pub webhook: bool,
    pub created_unix: u64,
    pub services: BTreeMap<String, crate::deploy::project::store::Deployed>,
    pub last_deploy: Option<DeployRecord>,
}

fn info(d: &Deployment, last: Option<DeployRecord>) -> DeploymentInfo {
    DeploymentInfo {
        name: d.name.clone(),
        source: d.source.clone(),
        webhook: d.webhook_secret.is_some(),
        created_unix: d.created_unix,
        services: d.services.clone(),
        last_deploy: last,
    }
}

fn valid_name(key: &str, name: &str) -> Result<String, ApiError> {
    let n = normalise(name);
    if n.is_empty() || n != name {
        return Err(bad(format!(
            "{key} {name:?}: a deployment name is lowercase letters, digits, - and _"
        )));
    }
    Ok(n)
}

fn not_found(name: &str) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!("no deployment named {name:?} (berth deploy makes one)"),
    )
}

/// `POST /api/deployments`: deploy (or, `dry_run`, plan) a compose project.
/// A new git deployment's webhook secret is the first progress line, and
/// shown only then.
pub async fn deploy(
    State(app): State<App>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let from_cli = headers
        .get(axum::http::header::USER_AGENT)
        .is_some_and(|v| v.as_bytes() == crate::client::CLI_AGENT.as_bytes());
    let b: DeployBody = json_body(&body)?;
    let source = match (&b.file, &b.git) {
        (Some(path), None) => SourceSpec::File { path: path.clone() },
        (None, Some(g)) => SourceSpec::Git {
            url: g.url.clone(),
            branch: g.branch.clone(),
            path: g.path.clone(),
            file: g.file.clone(),
        },
        (Some(_), Some(_)) => return Err(bad("file and git: give one source, not both")),
        (None, None) => {
            return Err(bad(
                "a deploy needs file (a compose file on berth's host) or git",
            ))
        }
    };
    source.validate().map_err(bad)?;
    if let SourceSpec::File { path } = &source {
        if !path.is_file() {
            return Err(bad(format!(
                "file {}: no such file on berth's host",
                path.display()
            )));
        }
    }
    let name = match &b.name {
        Some(n) => Some(valid_name("name", n)?),
        None => match &source {
            SourceSpec::Git { url, .. } => Some(name_from_url(url)).filter(|n| !n.is_empty()),
            SourceSpec::File { .. } => None,
        },
    };
    // A git deployment seen for the first time gets its webhook secret.
    let mut first = None;
    let mut secret = None;
    if let (SourceSpec::Git { .. }, Some(n), false) = (&source, &name, b.dry_run) {
        let known = app
            .deploys
            .projects
            .lock()
            .map(|s| {
                s.deployments
                    .get(n)
                    .is_some_and(|d| d.webhook_secret.is_some())
            })
            .unwrap_or(false);
        if !known {
            let s = webhook::new_secret()
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
            first = Some(Progress {
                id: 0,
                service: n.clone(),
                status: Status::Queued,
                message: format!(
                    "webhook: POST /api/deployments/{n}/hooks/git with secret {s} (X-Hub-Signature-256; shown only now)"
                ),
            });
            secret = Some(s);
        }
    }
    let order = Order {
        name: name.clone(),
        source: Some(source),
        dry_run: b.dry_run,
        trigger: if from_cli { "cli" } else { "api" }.into(),
        commit: None,
        images: None,
        secret,
    };
    Ok(stream_with(&app, submit_request(name, order), first))
}

fn submit_request(name: Option<String>, order: Order) -> DeployRequest {
    DeployRequest {
        kind: Kind::Deploy(Box::new(order)),
        service: name.unwrap_or_default(),
        health_timeout: None,
        drain_timeout: None,
    }
}

/// `GET /api/deployments/{name}`.
pub async fn show(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Json<DeploymentInfo>, ApiError> {
    let st = app.deploys.projects.lock().map_err(|_| poisoned())?;
    let d = st.deployments.get(&name).ok_or_else(|| not_found(&name))?;
    let last = d
        .last_deploy
        .and_then(|id| st.deploys.iter().find(|r| r.id == id).cloned())
        .or_else(|| st.history(&name).into_iter().rev().find(|r| !r.dry_run));
    Ok(Json(info(d, last)))
}

/// `GET /api/deployments/owned`: every deployment berth owns.
pub async fn owned(State(app): State<App>) -> Result<Json<Vec<DeploymentInfo>>, ApiError> {
    let st = app.deploys.projects.lock().map_err(|_| poisoned())?;
    Ok(Json(
        st.deployments
            .values()
            .map(|d| {
                info(
                    d,
                    st.history(&d.name).into_iter().rev().find(|r| !r.dry_run),
                )
            })
            .collect(),
    ))
}

fn poisoned() -> ApiError {
    ApiError(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the deployment store is unavailable".into(),
    )
}

/// `GET /api/deployments/{name}/history`: its deploys, oldest first.
pub async fn history(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Json<Vec<DeployRecord>>, ApiError> {
    let st = app.deploys.projects.lock().map_err(|_| poisoned())?;
    let h = st.history(&name);
    if h.is_empty() && !st.deployments.contains_key(&name) {
        return Err(not_found(&name));
    }
    Ok(Json(h))
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    /// The deploy whose images to run again; default: the one before the
    /// last completed deploy.
    pub to: Option<u64>,
}

/// `POST /api/deployments/{name}/rollback`: redeploys the images of an
/// earlier completed deploy (the current file's settings), zero downtime.
pub async fn rollback(
    State(app): State<App>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let b: RollbackBody = json_body(&body)?;
    let (done, last) = {
        let st = app.deploys.projects.lock().map_err(|_| poisoned())?;
        let d = st.deployments.get(&name).ok_or_else(|| not_found(&name))?;
        let done: Vec<DeployRecord> = st
            .history(&name)
            .into_iter()
            .filter(|r| r.status == Status::Completed && !r.dry_run && !r.images.is_empty())
            .collect();
        (done, d.last_deploy)
    };
    let target = match b.to {
        Some(id) => done.iter().find(|r| r.id == id).cloned().ok_or_else(|| {
            bad(format!(
                "to: {id}: not a completed deploy of {name} (see berth history {name})"
            ))
        })?,
        None => {
            // The newest completed deploy whose images (by id: a rebuild of
            // the same source is the same image under another tag) differ
            // from the current deploy's, and are all still there.
            let ids = |r: &DeployRecord| {
                let engine = app.engine.clone();
                let images = r.images.clone();
                async move {
                    let mut out = BTreeMap::new();
                    for (service, reference) in images {
                        out.insert(service, engine.image_id(&reference).await.ok().flatten());
                    }
                    out
                }
            };
            let current = match done.iter().find(|r| Some(r.id) == last) {
                Some(r) => Some(ids(r).await),
                None => None,
            };
            let mut found = None;
            for r in done.iter().rev().filter(|r| Some(r.id) != last) {
                let these = ids(r).await;
                if these.values().all(Option::is_some) && Some(&these) != current.as_ref() {
                    found = Some(r.clone());
                    break;
                }
            }
            found.ok_or_else(|| {
                ApiError(
                    StatusCode::CONFLICT,
                    format!("{name} has no earlier deploy with other images (still on the engine) to roll back to"),
                )
            })?
        }
    };
    let first = Progress {
        id: 0,
        service: name.clone(),
        status: Status::Queued,
        message: format!(
            "rolling back to deploy {} ({})",
            target.id,
            target
                .images
                .iter()
                .map(|(s, i)| format!("{s}: {i}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let order = Order {
        name: Some(name.clone()),
        source: None,
        dry_run: false,
        trigger: format!("rollback to {}", target.id),
        commit: target.commit.clone(),
        images: Some(target.images.clone()),
        secret: None,
    };
    Ok(stream_with(
        &app,
        submit_request(Some(name), order),
        Some(first),
    ))
}

/// `DELETE /api/deployments/{name}` (and `POST .../down`): containers and
/// networks go, volumes too with `?volumes=true`.
pub async fn down(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let volumes = match q.get("volumes").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") | Some("") => true,
        Some(v) => return Err(bad(format!("volumes: {v:?}: use true or false"))),
    };
    if let Some(k) = q.keys().find(|k| *k != "volumes") {
        return Err(bad(format!(
            "query parameter {k:?} is unknown here; known: volumes"
        )));
    }
    let known = volumes
        || app
            .deploys
            .projects
            .lock()
            .map(|s| s.deployments.contains_key(&name))
            .unwrap_or(false)
        || app
            .snapshot
            .load()
            .containers
            .values()
            .any(|c| c.project.as_deref() == Some(&name));
    if !known {
        return Err(not_found(&name));
    }
    let request = DeployRequest {
        kind: Kind::Down { volumes },
        service: name,
        health_timeout: None,
        drain_timeout: None,
    };
    Ok(stream_with(&app, request, None))
}

/// `GET /api/deployments/{name}/env`: secrets without their values.
pub async fn env_list(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Json<Vec<EnvView>>, ApiError> {
    valid_name("deployment", &name)?;
    let st = app.deploys.projects.lock().map_err(|_| poisoned())?;
    Ok(Json(st.env_view(&name)))
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvBody {
    pub value: String,
    #[serde(default)]
    pub secret: bool,
}

/// `PUT /api/deployments/{name}/env/{key}`: applied on the next deploy.
pub async fn env_set(
    State(app): State<App>,
    Path((name, key)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<EnvView>, ApiError> {
    valid_name("deployment", &name)?;
    crate::deploy::project::store::valid_env_key(&key).map_err(bad)?;
    let b: EnvBody = json_body(&body)?;
    if b.value.contains('\0') {
        return Err(bad(format!("value of {key}: contains a NUL byte")));
    }
    let mut st = app.deploys.projects.lock().map_err(|_| poisoned())?;
    st.set_env(
        &name,
        &key,
        EnvValue {
            value: b.value.clone(),
            secret: b.secret,
        },
    )
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(Json(EnvView {
        key,
        value: (!b.secret).then_some(b.value),
        secret: b.secret,
    }))
}

/// `DELETE /api/deployments/{name}/env/{key}`.
pub async fn env_unset(
    State(app): State<App>,
    Path((name, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    valid_name("deployment", &name)?;
    let mut st = app.deploys.projects.lock().map_err(|_| poisoned())?;
    match st.unset_env(&name, &key) {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("{name} has no env key {key:?}"),
        )),
        Err(e) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e)),
    }
}

/// What the webhook answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HookAnswer {
    pub deploy: Option<u64>,
    pub message: String,
}

/// `POST /api/deployments/{name}/hooks/git`: a push to the tracked branch
/// redeploys that commit (queued behind any deploy in progress); other
/// branches are ignored (202 says so). Authenticated by the signature
/// alone: a wrong or missing one is 401 and changes nothing.
pub async fn git_hook(
    State(app): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    let unauthorized = |why: String| ApiError(StatusCode::UNAUTHORIZED, why);
    let (secret, branch) = {
        let st = app.deploys.projects.lock().map_err(|_| poisoned())?;
        // Unknown deployment and wrong signature answer alike: a caller
        // without the secret learns nothing.
        let d = st.deployments.get(&name);
        let secret = d.and_then(|d| d.webhook_secret.clone());
        let branch = match d.map(|d| &d.source) {
            Some(SourceSpec::Git { branch, .. }) => branch.clone(),
            _ => None,
        };
        (secret, branch)
    };
    let Some(secret) = secret else {
        return Err(unauthorized(format!(
            "webhook of {name:?}: no such git deployment, or a wrong signature"
        )));
    };
    let verified = match header("x-gitlab-token") {
        Some(t) if header("x-hub-signature-256").is_none() => {
            webhook::verify_token(&secret, Some(t))
        }
        _ => webhook::verify_signature(&secret, &body, header("x-hub-signature-256")),
    };
    if let Err(e) = verified {
        tracing::warn!(deployment = %name, error = %e, "webhook refused");
        return Err(unauthorized(format!("webhook of {name:?}: {e}")));
    }
    let event = header("x-github-event")
        .or(header("x-gitea-event"))
        .or(header("x-gitlab-event"));
    let push = match webhook::parse_push(event, &body).map_err(bad)? {
        Hook::Ping => {
            return Ok((
                StatusCode::OK,
                Json(HookAnswer {
                    deploy: None,
                    message: "pong".into(),
                }),
            )
                .into_response())
        }
        Hook::Push(p) => p,
    };
    if !push.moves(branch.as_deref()) {
        let what = match (&push.branch, push.deleted) {
            (Some(b), true) => format!("branch {b} was deleted"),
            (Some(b), false) => format!("a push to {b}"),
            (None, _) => "a push that is not to a branch".into(),
        };
        let tracked = branch
            .or(push.default_branch.clone())
            .unwrap_or_else(|| "its default branch".into());
        return Ok((
            StatusCode::ACCEPTED,
            Json(HookAnswer {
                deploy: None,
                message: format!("{what}: ignored, {name} follows {tracked}"),
            }),
        )
            .into_response());
    }
    let order = Order {
        name: Some(name.clone()),
        source: None,
        dry_run: false,
        trigger: "webhook".into(),
        commit: push.commit.clone(),
        images: None,
        secret: None,
    };
    let (id, _rx) = app
        .deploys
        .submit(submit_request(Some(name.clone()), order));
    Ok((
        StatusCode::ACCEPTED,
        Json(HookAnswer {
            deploy: Some(id),
            message: format!(
                "deploy {id} of {name} queued for {}",
                push.commit.as_deref().unwrap_or("the branch tip")
            ),
        }),
    )
        .into_response())
}
