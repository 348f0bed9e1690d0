//! The containers on the host: `ps`, `logs`, `stats`, and `start`, `stop`,
//! `restart` of a container, a service or a deployment (the API drains a
//! routed container before it stops it).

use std::io::Write;

use crate::api::host::ActionView;

use super::deploy::follow_progress;
use super::target::{resolve, Target};
use super::{human_bytes, or_dash, print_json, table, Abort, Exit, Outcome};
use crate::api::host::{DeploymentView, StatsView};
use crate::client::{encode, query, Client};
use crate::plan::ContainerInfo;

async fn deployments(client: &Client) -> Result<Vec<DeploymentView>, Abort> {
    Ok(client.get("/api/deployments").await?)
}

/// Every container berth sees, by deployment and service, like `docker
/// compose ps`, with its health and backend state.
pub async fn ps(client: Client, json: bool) -> Outcome {
    let list = deployments(&client).await?;
    if json {
        return print_json(&list);
    }
    print!(
        "{}",
        table(
            &[
                "DEPLOYMENT",
                "SERVICE",
                "NAME",
                "IMAGE",
                "STATUS",
                "HEALTH",
                "BACKEND",
                "RESTARTS",
                "PORTS"
            ],
            &ps_rows(&list)
        )
    );
    for d in &list {
        for s in &d.services {
            if let Some(drift) = &s.drift {
                println!(
                    "drift: {}/{}: {drift} (berth deploy brings it back to the file)",
                    d.name, s.name
                );
            }
        }
    }
    Ok(Exit::Done)
}

fn ps_rows(list: &[DeploymentView]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for d in list {
        for s in &d.services {
            for c in &s.containers {
                rows.push(vec![
                    d.name.clone(),
                    s.name.clone(),
                    c.name.clone(),
                    or_dash(Some(&c.image)),
                    or_dash(Some(&c.status)),
                    or_dash(c.health.as_deref()),
                    // Not routed: its state only decides its DNS answers.
                    if c.routed {
                        c.state.to_string()
                    } else {
                        format!("{} (dns)", c.state)
                    },
                    c.restarts.to_string(),
                    c.ports.join(", "),
                ]);
            }
        }
    }
    rows
}

/// Log lines of a target's containers as they come, each prefixed with its
/// container; `follow` keeps streaming until interrupted.
pub async fn logs(
    client: Client,
    target: &str,
    project: Option<&str>,
    follow: bool,
    tail: Option<String>,
) -> Outcome {
    let list = deployments(&client).await?;
    let (deployment, service, container) = match resolve(&list, target, project)? {
        Target::Deployment {
            deployment,
            service,
        } => (
            deployment.name.as_str(),
            service.map(|s| s.name.clone()),
            None,
        ),
        Target::Container(c) => (c.deployment(), None, Some(c.name.clone())),
    };
    let path = format!(
        "/api/deployments/{}/logs{}",
        encode(deployment),
        query(&[
            ("service", service),
            ("container", container),
            ("tail", tail),
            ("follow", follow.then(|| "true".to_string())),
        ])
    );
    let mut out = std::io::stdout();
    client
        .get_stream(&path, |chunk| {
            // A closed stdout (`| head`) only ends the output.
            let _ = out.write_all(chunk).and_then(|()| out.flush());
        })
        .await?;
    Ok(Exit::Done)
}

/// One sample of CPU, memory, network and block I/O of the running
/// containers of a deployment, or of every deployment.
pub async fn stats(
    client: Client,
    target: Option<&str>,
    project: Option<&str>,
    json: bool,
) -> Outcome {
    let list = deployments(&client).await?;
    // (deployment, only this service, only this container)
    let wanted: Vec<(String, Option<String>, Option<String>)> = match target {
        None => running_deployments(&list)
            .into_iter()
            .map(|d| (d, None, None))
            .collect(),
        Some(t) => vec![match resolve(&list, t, project)? {
            Target::Deployment {
                deployment,
                service,
            } => (
                deployment.name.clone(),
                service.map(|s| s.name.clone()),
                None,
            ),
            Target::Container(c) => (c.deployment().to_string(), None, Some(c.id.clone())),
        }],
    };
    let mut all: Vec<StatsView> = Vec::new();
    for (d, service, container) in wanted {
        let path = format!("/api/deployments/{}/stats", encode(&d));
        let sampled = client.get::<Vec<StatsView>>(&path).await?;
        all.extend(sampled.into_iter().filter(|s| {
            service.as_ref().is_none_or(|x| &s.service == x)
                && container.as_ref().is_none_or(|x| &s.container_id == x)
        }));
    }
    if json {
        return print_json(&all);
    }
    let pair = |a: u64, b: u64| format!("{} / {}", human_bytes(a), human_bytes(b));
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|c| {
            let s = &c.stats;
            vec![
                c.container.clone(),
                format!("{:.2}%", s.cpu_percent),
                pair(s.memory_used, s.memory_limit),
                format!("{:.2}%", s.memory_percent),
                pair(s.net_rx, s.net_tx),
                pair(s.block_read, s.block_write),
            ]
        })
        .collect();
    let headers = [
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "NET I/O",
        "BLOCK I/O",
    ];
    print!("{}", table(&headers, &rows));
    Ok(Exit::Done)
}

/// The deployments with a running container: the ones with stats to show.
fn running_deployments(list: &[DeploymentView]) -> Vec<String> {
    list.iter()
        .filter(|d| {
            d.services
                .iter()
                .flat_map(|s| &s.containers)
                .any(|c| c.is_running())
        })
        .map(|d| d.name.clone())
        .collect()
}

/// What `start`, `stop` and `restart` ask of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
}

impl Action {
    fn word(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
        }
    }

    /// Whether it applies to this container when it comes with others (a
    /// container named alone is always asked).
    fn wants(self, c: &ContainerInfo) -> bool {
        let running = c.is_running();
        match self {
            Action::Start => !running,
            Action::Stop => running,
            Action::Restart => true,
        }
    }
}

/// `start`, `stop` or `restart` of a container, or of every container of a
/// service or deployment it applies to, one after the other; `restart` of a
/// whole deployment is the API's rolling restart. With several containers,
/// a failure does not stop the others; the exit is the last failure's.
pub async fn act(
    client: Client,
    action: Action,
    target: &str,
    project: Option<&str>,
    json: bool,
) -> Outcome {
    let list = deployments(&client).await?;
    let target = resolve(&list, target, project)?;
    let containers: Vec<&ContainerInfo> = match &target {
        Target::Deployment {
            deployment,
            service: None,
        } if action == Action::Restart => {
            return rolling_restart(&client, &deployment.name, None, json).await;
        }
        Target::Deployment {
            deployment,
            service: Some(service),
        } if action == Action::Restart && deployment.compose => {
            let name = Some(service.name.as_str());
            return rolling_restart(&client, &deployment.name, name, json).await;
        }
        Target::Container(c) => vec![*c],
        Target::Deployment { .. } => target
            .containers()
            .into_iter()
            .filter(|c| action.wants(c))
            .collect(),
    };
    if containers.is_empty() {
        println!("{}: nothing to do in {target}", action.word());
        return Ok(Exit::Done);
    }
    let mut exit = Exit::Done;
    for c in containers {
        let path = format!("/api/containers/{}/{}", encode(&c.id), action.word());
        match client.post::<ActionView>(&path).await {
            // One line per container.
            Ok(answer) if json => println!("{}", serde_json::json!(answer)),
            Ok(_) => println!("{}: {}", action.word(), c.name),
            Err(e) => {
                eprintln!("berth: {}", e.message);
                exit = Exit::from(&e);
            }
        }
    }
    Ok(exit)
}

/// Each running container of the deployment (or of one service of it)
/// drained, restarted and Ready before the next; progress lines like a
/// rollout's.
async fn rolling_restart(
    client: &Client,
    deployment: &str,
    service: Option<&str>,
    json: bool,
) -> Outcome {
    let mut path = format!("/api/deployments/{}/restart", encode(deployment));
    if let Some(s) = service {
        path.push_str(&format!("?service={}", encode(s)));
    }
    follow_progress(client, &path, None::<&()>, json).await
}

#[cfg(test)]
mod tests {
    use super::super::target::tests::{deployments, host};
    use super::*;

    #[test]
    fn stats_ask_only_deployments_with_a_running_container() {
        assert_eq!(running_deployments(&host()), ["blog", "shop"]);
        let stopped = deployments(&[
            ("a", true, &[("web", &[("a-web-1", "a1a1", "exited")])]),
            ("b", false, &[("b", &[("b", "b1b1", "created")])]),
            (
                "c",
                true,
                &[
                    ("db", &[("c-db-1", "c1c1", "exited")]),
                    ("web", &[("c-web-1", "c2c2", "running")]),
                ],
            ),
        ]);
        assert_eq!(running_deployments(&stopped), ["c"]);
        assert!(running_deployments(&[]).is_empty());
    }

    #[test]
    fn ps_rows_keep_their_columns() {
        let mut list = host();
        let db = &mut list[0].services[0].containers[0];
        db.routed = false;
        db.health = Some("healthy".into());
        db.ports = vec!["5432/tcp".into()];
        db.restarts = 2;
        let rows = ps_rows(&list);
        assert_eq!(rows.len(), 5);
        assert_eq!(
            rows[0],
            [
                "blog",
                "db",
                "blog-db-1",
                "img",
                "exited",
                "healthy",
                "ready (dns)",
                "2",
                "5432/tcp"
            ]
        );
        assert_eq!(rows[1][5..7], ["-", "ready"]);
        // Split on whitespace, the name is the third column.
        let out = table(&["A", "B", "NAME", "D", "E", "F", "G", "H"], &rows);
        for (line, row) in out.lines().skip(1).zip(&rows) {
            assert_eq!(line.split_whitespace().nth(2), Some(row[2].as_str()));
        }
    }

    #[test]
    fn actions_pick_the_containers_they_apply_to() {
        let c = |status| super::super::target::tests::container("x", "x1x1", status);
        for (action, status, want) in [
            (Action::Start, "exited", true),
            (Action::Start, "running", false),
            (Action::Stop, "running", true),
            (Action::Stop, "created", false),
            (Action::Restart, "exited", true),
            (Action::Restart, "running", true),
        ] {
            assert_eq!(action.wants(&c(status)), want, "{action:?} {status}");
        }
    }
}
