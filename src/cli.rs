//! The operator commands of the CLI (`ps`, `routes`, `logs`, `stats`,
//! `start`/`stop`/`restart`, `problems`): clients of the admin API that print
//! tables, or the API's JSON with `--json`. Exit codes: 0 done, 1 the
//! operation failed (or, for `problems`, there are problems), 2 berth could
//! not be asked, 3 no such target.

use std::io::Write;
use std::process::ExitCode;

use serde_json::Value;

use crate::client::{Client, ClientError};

/// Columns padded to the widest cell; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// Bytes as `docker stats` prints them: 1.5MiB, 12kB-style binary units.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

fn s(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(x)) => x.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

fn fail(e: &ClientError) -> ExitCode {
    eprintln!("berth: {e}");
    ExitCode::from(e.exit_code())
}

fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// Every container berth sees, by deployment and service, like `docker
/// compose ps`, with its health and backend state.
pub async fn ps(client: &Client, json: bool) -> ExitCode {
    let deployments = match client.get("/api/deployments").await {
        Ok(v) => v,
        Err(e) => return fail(&e),
    };
    if json {
        print_json(&deployments);
        return ExitCode::SUCCESS;
    }
    let mut rows = Vec::new();
    for d in deployments.as_array().into_iter().flatten() {
        for svc in d["services"].as_array().into_iter().flatten() {
            for c in svc["containers"].as_array().into_iter().flatten() {
                let routed = c["routed"].as_bool().unwrap_or(false);
                rows.push(vec![
                    s(d, "name"),
                    s(svc, "name"),
                    s(c, "name"),
                    s(c, "image"),
                    s(c, "status"),
                    s(c, "health"),
                    if routed {
                        s(c, "state")
                    } else {
                        format!("{} (dns)", s(c, "state"))
                    },
                    c["ports"]
                        .as_array()
                        .map(|p| {
                            p.iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .unwrap_or_default(),
                ]);
            }
        }
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
                "PORTS"
            ],
            &rows
        )
    );
    ExitCode::SUCCESS
}

pub async fn routes(client: &Client, json: bool) -> ExitCode {
    let routes = match client.get("/api/routes").await {
        Ok(v) => v,
        Err(e) => return fail(&e),
    };
    if json {
        print_json(&routes);
        return ExitCode::SUCCESS;
    }
    let rows: Vec<Vec<String>> = routes
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let backends: Vec<String> = r["backends"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| format!("{} ({})", s(b, "name"), s(b, "addr")))
                .collect();
            vec![
                s(r, "host"),
                s(r, "path"),
                if r["tls"].as_bool().unwrap_or(false) {
                    "auto"
                } else {
                    "off"
                }
                .into(),
                if backends.is_empty() {
                    "(none ready: 503)".into()
                } else {
                    backends.join(", ")
                },
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["HOST", "PATH", "TLS", "READY BACKENDS"], &rows)
    );
    ExitCode::SUCCESS
}

pub async fn problems(client: &Client, json: bool) -> ExitCode {
    let problems = match client.get("/api/problems").await {
        Ok(v) => v,
        Err(e) => return fail(&e),
    };
    let list = problems.as_array().cloned().unwrap_or_default();
    if json {
        print_json(&problems);
    } else if list.is_empty() {
        println!("no problems");
    } else {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|p| {
                let hint = p["hint"]
                    .as_str()
                    .map(|h| format!("; {h}"))
                    .unwrap_or_default();
                vec![
                    s(p, "container"),
                    format!("{}={:?}", s(p, "key"), s(p, "value")),
                    format!("{}{hint}", s(p, "message")),
                ]
            })
            .collect();
        print!("{}", table(&["CONTAINER", "LABEL", "PROBLEM"], &rows));
    }
    if list.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// What a TARGET names: a deployment (compose project, or a container
/// outside compose), optionally one service of it; or a container.
#[derive(Debug, PartialEq)]
pub enum Target {
    Deployment {
        name: String,
        service: Option<String>,
    },
    Container(String),
}

/// Resolves TARGET against `GET /api/deployments`: `project`, `project/service`,
/// a service name unique across projects (or with `project`), or a container
/// name or id.
pub fn resolve(deployments: &Value, target: &str, project: Option<&str>) -> Result<Target, String> {
    let list = deployments.as_array().cloned().unwrap_or_default();
    let name = |d: &Value| d["name"].as_str().unwrap_or_default().to_string();
    let services = |d: &Value| -> Vec<String> {
        d["services"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["name"].as_str().map(str::to_string))
            .collect()
    };
    if let Some((p, svc)) = target.split_once('/') {
        return match list.iter().find(|d| name(d) == p) {
            Some(d) if services(d).iter().any(|s| s == svc) => Ok(Target::Deployment {
                name: p.into(),
                service: Some(svc.into()),
            }),
            Some(_) => Err(format!("deployment {p} has no service {svc}")),
            None => Err(format!("no deployment {p}")),
        };
    }
    if project.is_none() {
        if let Some(d) = list.iter().find(|d| name(d) == target) {
            // A lone container is its own deployment.
            return Ok(Target::Deployment {
                name: name(d),
                service: None,
            });
        }
    }
    let with_service: Vec<&Value> = list
        .iter()
        .filter(|d| d["compose"].as_bool().unwrap_or(false))
        .filter(|d| project.is_none_or(|p| name(d) == p))
        .filter(|d| services(d).iter().any(|s| s == target))
        .collect();
    match with_service.as_slice() {
        [d] => {
            return Ok(Target::Deployment {
                name: name(d),
                service: Some(target.into()),
            })
        }
        [] => {}
        many => {
            return Err(format!(
                "service {target} is in several projects ({}): pass --project or PROJECT/{target}",
                many.iter().map(|d| name(d)).collect::<Vec<_>>().join(", ")
            ))
        }
    }
    for d in &list {
        for svc in d["services"].as_array().into_iter().flatten() {
            for c in svc["containers"].as_array().into_iter().flatten() {
                let id = c["container_id"].as_str().unwrap_or_default();
                if c["name"].as_str() == Some(target)
                    || (target.len() >= 4 && id.starts_with(target))
                {
                    return Ok(Target::Container(
                        c["name"].as_str().unwrap_or(target).into(),
                    ));
                }
            }
        }
    }
    Err(format!(
        "{target}: no deployment, service or container of that name{}",
        project
            .map(|p| format!(" in project {p}"))
            .unwrap_or_default()
    ))
}

/// The deployment a container (by name) belongs to.
fn deployment_of(deployments: &Value, container: &str) -> Option<String> {
    deployments.as_array()?.iter().find_map(|d| {
        let has = d["services"].as_array()?.iter().any(|s| {
            s["containers"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["name"].as_str() == Some(container)))
        });
        has.then(|| d["name"].as_str().unwrap_or_default().to_string())
    })
}

/// The deployments, and what TARGET names among them; exit code 3 when nothing.
async fn target(
    client: &Client,
    target: &str,
    project: Option<&str>,
) -> Result<(Target, Value), ExitCode> {
    let deployments = client.get("/api/deployments").await.map_err(|e| fail(&e))?;
    match resolve(&deployments, target, project) {
        Ok(t) => Ok((t, deployments)),
        Err(e) => {
            eprintln!("berth: {e}");
            Err(ExitCode::from(3))
        }
    }
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", urlencode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn logs(
    client: &Client,
    what: &str,
    project: Option<&str>,
    follow: bool,
    tail: Option<String>,
) -> ExitCode {
    let (deployment, service, container) = match target(client, what, project).await {
        Ok((Target::Deployment { name, service }, _)) => (name, service, None),
        Ok((Target::Container(c), deployments)) => match deployment_of(&deployments, &c) {
            Some(d) => (d, None, Some(c)),
            None => (c.clone(), None, None),
        },
        Err(code) => return code,
    };
    let path = format!(
        "/api/deployments/{}/logs{}",
        urlencode(&deployment),
        query(&[
            ("service", service),
            ("container", container),
            ("tail", tail),
            ("follow", follow.then(|| "true".to_string())),
        ])
    );
    let mut out = std::io::stdout();
    match client
        .get_stream(&path, |chunk| {
            let _ = out.write_all(chunk);
            let _ = out.flush();
        })
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

pub async fn stats(client: &Client, deployment: Option<&str>, json: bool) -> ExitCode {
    let names: Vec<String> = match deployment {
        Some(d) => vec![d.to_string()],
        None => match client.get("/api/deployments").await {
            Ok(v) => v
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| d.to_string().contains("\"status\":\"running\""))
                .filter_map(|d| d["name"].as_str().map(str::to_string))
                .collect(),
            Err(e) => return fail(&e),
        },
    };
    let mut all = Vec::new();
    for n in names {
        match client
            .get(&format!("/api/deployments/{}/stats", urlencode(&n)))
            .await
        {
            Ok(Value::Array(list)) => all.extend(list),
            Ok(other) => {
                eprintln!("berth: unexpected answer: {other}");
                return ExitCode::from(2);
            }
            Err(e) => return fail(&e),
        }
    }
    if json {
        print_json(&Value::Array(all));
        return ExitCode::SUCCESS;
    }
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|c| {
            vec![
                s(c, "container"),
                format!("{:.2}%", f(c, "cpu_percent")),
                format!(
                    "{} / {}",
                    human_bytes(n(c, "memory_used")),
                    human_bytes(n(c, "memory_limit"))
                ),
                format!("{:.2}%", f(c, "memory_percent")),
                format!(
                    "{} / {}",
                    human_bytes(n(c, "net_rx")),
                    human_bytes(n(c, "net_tx"))
                ),
                format!(
                    "{} / {}",
                    human_bytes(n(c, "block_read")),
                    human_bytes(n(c, "block_write"))
                ),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "NAME",
                "CPU %",
                "MEM USAGE / LIMIT",
                "MEM %",
                "NET I/O",
                "BLOCK I/O"
            ],
            &rows
        )
    );
    ExitCode::SUCCESS
}

/// `start`, `stop` or `restart` of a container, or of every container of a
/// deployment or service (`restart` of a deployment is the rolling one).
pub async fn act(
    client: &Client,
    action: &str,
    what: &str,
    project: Option<&str>,
    json: bool,
) -> ExitCode {
    let (t, deployments) = match target(client, what, project).await {
        Ok(found) => found,
        Err(code) => return code,
    };
    let containers: Vec<String> = match &t {
        Target::Container(c) => vec![c.clone()],
        Target::Deployment {
            name,
            service: None,
        } if action == "restart" => {
            return rolling_restart(client, name, json).await;
        }
        Target::Deployment { name, service } => {
            let mut out = Vec::new();
            for d in deployments.as_array().into_iter().flatten() {
                if d["name"].as_str() != Some(name.as_str()) {
                    continue;
                }
                for svc in d["services"].as_array().into_iter().flatten() {
                    if service
                        .as_ref()
                        .is_some_and(|s| svc["name"].as_str() != Some(s.as_str()))
                    {
                        continue;
                    }
                    for c in svc["containers"].as_array().into_iter().flatten() {
                        let running = c["status"].as_str() == Some("running");
                        let wanted = match action {
                            "start" => !running,
                            "stop" => running,
                            _ => true,
                        };
                        if wanted {
                            out.push(s(c, "name"));
                        }
                    }
                }
            }
            out
        }
    };
    let mut code = ExitCode::SUCCESS;
    for c in containers {
        match client
            .call(
                "POST",
                &format!("/api/containers/{}/{action}", urlencode(&c)),
            )
            .await
        {
            Ok(v) if json => println!("{v}"),
            Ok(_) => println!("{action}: {c}"),
            Err(e) => {
                eprintln!("berth: {e}");
                code = ExitCode::from(e.exit_code());
            }
        }
    }
    code
}

async fn rolling_restart(client: &Client, deployment: &str, json: bool) -> ExitCode {
    let path = format!("/api/deployments/{}/restart", urlencode(deployment));
    let last = client
        .post_stream(&path, &Value::Null, |line| {
            if json {
                println!("{line}");
            } else {
                println!("{:<16} {}", s(line, "status"), s(line, "message"));
            }
        })
        .await;
    match last {
        Ok(v) if v["status"].as_str() == Some("completed") => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => fail(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_and_bytes() {
        let t = table(&["A", "BB"], &[vec!["long".into(), "x".into()]]);
        assert_eq!(t, "A      BB\nlong   x\n");
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(1536), "1.5KiB");
        assert_eq!(human_bytes(20 << 20), "20.0MiB");
    }

    #[test]
    fn targets_resolve_like_compose_names() {
        let c =
            |name: &str, id: &str| json!({"name": name, "container_id": id, "status": "running"});
        let d = json!([
            {"name": "blog", "compose": true, "services": [
                {"name": "web", "containers": [c("blog-web-1", "aaaa1111")]},
                {"name": "db", "containers": [c("blog-db-1", "bbbb2222")]}]},
            {"name": "shop", "compose": true, "services": [
                {"name": "web", "containers": [c("shop-web-1", "cccc3333")]}]},
            {"name": "cron", "compose": false, "services": [
                {"name": "cron", "containers": [c("cron", "dddd4444")]}]}
        ]);
        let dep = |n: &str, s: Option<&str>| Target::Deployment {
            name: n.into(),
            service: s.map(str::to_string),
        };
        assert_eq!(resolve(&d, "blog", None), Ok(dep("blog", None)));
        assert_eq!(resolve(&d, "db", None), Ok(dep("blog", Some("db"))));
        assert_eq!(resolve(&d, "shop/web", None), Ok(dep("shop", Some("web"))));
        assert_eq!(
            resolve(&d, "web", Some("shop")),
            Ok(dep("shop", Some("web")))
        );
        assert!(resolve(&d, "web", None).unwrap_err().contains("blog, shop"));
        assert_eq!(resolve(&d, "cron", None), Ok(dep("cron", None)));
        assert_eq!(
            resolve(&d, "blog-web-1", None),
            Ok(Target::Container("blog-web-1".into()))
        );
        assert_eq!(
            resolve(&d, "bbbb22", None),
            Ok(Target::Container("blog-db-1".into()))
        );
        assert!(resolve(&d, "nope", None).is_err());
        assert_eq!(deployment_of(&d, "shop-web-1"), Some("shop".into()));
        assert_eq!(deployment_of(&d, "nope"), None);
        assert!(resolve(&d, "blog/nope", None).is_err());
    }
}
