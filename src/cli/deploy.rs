//! Rollouts, scaling and their history: `rollout` and `scale` stream the
//! API's progress, one line per step, and end with its final status
//! (rolling restarts too); `rollouts` lists the recent runs.

use serde::Serialize;

use super::{or_dash, table, Abort, Exit, Outcome};
use crate::api::{RolloutBody, ScaleBody};
use crate::client::{encode, Client};
use crate::deploy::{Progress, Record, Status};

/// The timeouts a rollout or scale run may override (e.g. `60s`); the API
/// parses them.
#[derive(Debug, Clone, Default)]
pub struct DeployTimeouts {
    /// How long each new replica may take to become ready.
    pub health_timeout: Option<String>,
    /// How long an old replica's in-flight requests may take.
    pub drain_timeout: Option<String>,
}

/// `--canary 10% [--auto [--window 5m]]`.
#[derive(Debug, Clone, Default)]
pub struct CanaryArgs {
    pub share: Option<String>,
    pub auto: bool,
    pub window: Option<String>,
}

/// Replaces every replica of `service` with a fresh one (`image`: `None`,
/// the image they run now), `batch` at a time; or starts a canary.
pub async fn rollout(
    client: Client,
    service: &str,
    project: Option<String>,
    image: Option<String>,
    batch: usize,
    canary: CanaryArgs,
    timeouts: DeployTimeouts,
) -> Outcome {
    let path = format!("/api/services/{}/rollout", encode(service));
    let body = RolloutBody {
        project,
        image,
        batch: Some(batch),
        health_timeout: timeouts.health_timeout,
        drain_timeout: timeouts.drain_timeout,
        auto: (canary.share.is_some() || canary.auto).then_some(canary.auto),
        canary: canary.share,
        window: canary.window,
    };
    follow_progress(&client, &path, Some(&body), false).await
}

/// `berth rollout promote|abort SERVICE`: ends the service's canary.
pub async fn canary_end(
    client: Client,
    service: &str,
    project: Option<String>,
    promote: bool,
    timeouts: DeployTimeouts,
) -> Outcome {
    let what = if promote { "promote" } else { "abort" };
    let path = format!("/api/services/{}/canary/{what}", encode(service));
    let body = crate::api::CanaryEndBody {
        project,
        health_timeout: timeouts.health_timeout,
        drain_timeout: timeouts.drain_timeout,
    };
    follow_progress(&client, &path, Some(&body), false).await
}

/// `SERVICE=N`: sets the number of replicas of the service.
pub async fn scale(
    client: Client,
    spec: &str,
    project: Option<String>,
    timeouts: DeployTimeouts,
) -> Outcome {
    let (service, replicas) = parse_scale(spec)?;
    let path = format!("/api/services/{}/scale", encode(service));
    let body = ScaleBody {
        project,
        replicas,
        health_timeout: timeouts.health_timeout,
        drain_timeout: timeouts.drain_timeout,
    };
    follow_progress(&client, &path, Some(&body), false).await
}

fn parse_scale(spec: &str) -> Result<(&str, usize), Abort> {
    let bad = |why: String| Abort::new(Exit::NotAsked, format!("scale {spec:?}: {why}"));
    let (service, n) = spec
        .split_once('=')
        .ok_or_else(|| bad("use SERVICE=N, e.g. web=3".into()))?;
    let service = service.trim();
    if service.is_empty() {
        return Err(bad("no service before the =".into()));
    }
    let n = n
        .trim()
        .parse()
        .map_err(|_| bad(format!("{n:?} is not a number of replicas")))?;
    Ok((service, n))
}

/// POSTs to a path that answers NDJSON progress, prints each line as it
/// comes (with `json`, the line itself), and ends by the last line's status.
pub(super) async fn follow_progress(
    client: &Client,
    path: &str,
    body: Option<&impl Serialize>,
    json: bool,
) -> Outcome {
    let last = client
        .post_progress(path, body, |p| {
            if json {
                match serde_json::to_string(p) {
                    Ok(line) => println!("{line}"),
                    Err(_) => println!("{}", progress_line(p)),
                }
            } else {
                println!("{}", progress_line(p));
            }
        })
        .await?;
    outcome(last.as_ref())
}

/// `[1] waiting_healthy waiting healthy`.
fn progress_line(p: &Progress) -> String {
    format!("[{}] {:<15} {}", p.id, p.status, p.message)
}

/// How a run ended by its last progress line: completed is done, failed or
/// rolled back is exit 1, a stream that stopped before a final status is 2.
fn outcome(last: Option<&Progress>) -> Outcome {
    match last.map(|p| p.status) {
        Some(Status::Completed) => Ok(Exit::Done),
        Some(Status::Failed | Status::RolledBack | Status::BuildFailed) => Ok(Exit::Failed),
        Some(status) => Err(Abort::new(
            Exit::NotAsked,
            format!("the progress stream ended at {status}, before a final status: see `berth rollouts`"),
        )),
        None => Err(Abort::new(
            Exit::NotAsked,
            "the progress stream ended before its first line",
        )),
    }
}

/// The recent rollouts, scale runs and restarts.
pub async fn rollouts(client: Client) -> Outcome {
    let list: Vec<Record> = client.get("/api/rollouts").await?;
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.kind.clone(),
                r.service.clone(),
                r.status.to_string(),
                r.replicas.to_string(),
                or_dash(r.reason.as_deref()),
            ]
        })
        .collect();
    let headers = ["ID", "KIND", "SERVICE", "STATUS", "REPLICAS", "REASON"];
    print!("{}", table(&headers, &rows));
    Ok(Exit::Done)
}

/// `12s ago`, `5m ago`, `3h ago` for a unix time.
fn ago(unix: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match now.saturating_sub(unix) {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s => format!("{}h ago", s / 3600),
    }
}

/// Autoscaled services: one row each, then each one's last actions.
pub async fn autoscale(client: Client, json: bool) -> Outcome {
    use crate::deploy::scaler::{describe, ScaleView};
    let list: Vec<ScaleView> = client.get("/api/autoscale").await?;
    if json {
        return super::print_json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            let mut targets = Vec::new();
            if let Some(c) = s.cpu {
                targets.push(format!("cpu {c}%"));
            }
            if let Some(m) = s.memory {
                targets.push(format!("memory {m}%"));
            }
            if let Some(r) = s.requests {
                targets.push(format!("{r} req/s"));
            }
            vec![
                s.service.clone(),
                format!("{}-{}", s.min, s.max),
                targets.join(", "),
                s.replicas.to_string(),
                s.desired.to_string(),
                describe(&s.figures),
                s.state.clone(),
            ]
        })
        .collect();
    let headers = [
        "SERVICE", "MIN-MAX", "TARGETS", "RUNNING", "WANTED", "NOW", "STATE",
    ];
    print!("{}", table(&headers, &rows));
    for s in &list {
        for d in &s.decisions {
            println!(
                "{} {}: {} → {} ({}; run {}): {}",
                s.service,
                ago(d.at_unix),
                d.from,
                d.to,
                describe(&d.figures),
                d.run,
                d.reason
            );
        }
    }
    Ok(Exit::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_exits_by_its_last_status() {
        let p = |status: Status| Progress {
            id: 7,
            service: "blog/web".into(),
            status,
            message: "m".into(),
        };
        for (last, want) in [
            (Some(Status::Completed), Ok(Exit::Done)),
            (Some(Status::Failed), Ok(Exit::Failed)),
            (Some(Status::RolledBack), Ok(Exit::Failed)),
            (Some(Status::Draining), Err(Exit::NotAsked)),
            (None, Err(Exit::NotAsked)),
        ] {
            let last = last.map(p);
            let got = outcome(last.as_ref()).map_err(|a| a.exit);
            assert_eq!(got, want, "{last:?}");
        }
        assert_eq!(
            progress_line(&p(Status::WaitingHealthy)),
            "[7] waiting_healthy m"
        );
        assert_eq!(progress_line(&p(Status::Queued)), "[7] queued          m");
    }

    #[test]
    fn scale_specs() {
        for (spec, want) in [
            ("web=3", Some(("web", 3))),
            (" web = 0 ", Some(("web", 0))),
            ("web", None),
            ("=3", None),
            ("web=three", None),
            ("web=-1", None),
        ] {
            let got = parse_scale(spec);
            assert_eq!(got.as_ref().ok().copied(), want, "{spec}");
            if let Err(a) = got {
                assert_eq!(a.exit, Exit::NotAsked);
                assert!(a.message.contains(spec), "{}", a.message);
            }
        }
    }
}
