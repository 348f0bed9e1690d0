//! Stopping or starting a whole service: its containers one at a time (a
//! routed one drained first, so no request is cut), kept in the run history
//! with its steps like a rollout, the progress streamed as NDJSON. It runs
//! beside the rollout queue, as a container's own stop or start does.

use axum::extract::{Path, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::host::stop_drained;
use super::{json_body, ndjson, resolve_service, service_keys, ApiError, App};
use crate::deploy::{Progress, Status};
use crate::plan::ContainerInfo;

/// The body of `POST /api/services/{service}/stop` and `/start`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceBody {
    pub project: Option<String>,
}

pub async fn stop(
    State(app): State<App>,
    Path(service): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    run(app, service, &body, true).await
}

pub async fn start(
    State(app): State<App>,
    Path(service): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    run(app, service, &body, false).await
}

async fn run(app: App, service: String, body: &[u8], stop: bool) -> Result<Response, ApiError> {
    let b: ServiceBody = json_body(body)?;
    let snap = app.snapshot.load_full();
    let key = resolve_service(&service_keys(&snap), &service, b.project.as_deref())?;
    // Those to act on: the running ones to stop, the others to start.
    let mut targets: Vec<ContainerInfo> = snap
        .containers
        .values()
        .filter(|c| c.service_key() == key && c.is_running() == stop)
        .cloned()
        .collect();
    targets.sort_by(|a, b| a.name.cmp(&b.name));
    let word = if stop { "stop" } else { "start" };
    let (id, rx, reporter) = app.deploys.begin(word, &key);
    let line = {
        let key = key.clone();
        move |status: Status, message: String| Progress {
            id,
            service: key.clone(),
            status,
            message,
        }
    };
    reporter.send(line(
        Status::Queued,
        format!(
            "{word} {} container(s) of {key}, one at a time",
            targets.len()
        ),
    ));
    tokio::spawn(async move {
        let n = targets.len();
        for c in &targets {
            let result = if stop {
                reporter.send(line(
                    Status::Draining,
                    format!("draining and stopping {}", c.name),
                ));
                stop_drained(&app, c, false, None).await
            } else {
                reporter.send(line(Status::Starting, format!("starting {}", c.name)));
                app.engine.start(&c.id, &c.name).await
            };
            if let Err(e) = result {
                let why = format!("{word} {}: {e}", c.name);
                app.deploys.end(&reporter, &key, Status::Failed, why, n);
                return;
            }
        }
        let message = match (n, stop) {
            (0, true) => "nothing to stop: no container of it runs".to_string(),
            (0, false) => "nothing to start: every container of it runs".to_string(),
            (n, true) => format!("stopped {n} container(s)"),
            (n, false) => format!("started {n} container(s); routed ones join once ready"),
        };
        app.deploys
            .end(&reporter, &key, Status::Completed, message, n);
    });
    Ok(ndjson(None, rx))
}
