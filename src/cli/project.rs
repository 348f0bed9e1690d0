//! Deployments berth owns: `deploy`, `deployments`, `history`, `rollback`,
//! `down` and `env`. Deploys stream the API's progress like rollouts do;
//! the compose file is read by the berth server, so a path is sent
//! absolute.

use std::path::{Path, PathBuf};

use super::deploy::follow_progress;
use super::{or_dash, table, Abort, Exit, Outcome};
use crate::api::deployments::{DeployBody, DeploymentInfo, EnvBody, GitBody, RollbackBody};
use crate::client::{encode, Client};
use crate::deploy::project::store::{DeployRecord, EnvView};
use crate::source::COMPOSE_FILE_NAMES;

/// What `berth deploy` was given.
#[derive(Debug, Clone, Default)]
pub struct DeployArgs {
    /// `-f`: the compose file (with `--git`, its name in the repository).
    pub file: Option<PathBuf>,
    pub project: Option<String>,
    pub dry_run: bool,
    pub git: Option<String>,
    pub branch: Option<String>,
    /// With `--git`: the directory of the compose file in the repository.
    pub path: Option<String>,
    pub json: bool,
}

fn not_asked(m: String) -> Abort {
    Abort::new(Exit::NotAsked, m)
}

/// The compose file in `dir` when none is named: the first of compose's
/// default names that exists.
fn default_file(dir: &Path) -> Result<PathBuf, Abort> {
    COMPOSE_FILE_NAMES
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            not_asked(format!(
                "no compose file here ({}): name one with -f",
                COMPOSE_FILE_NAMES.join(", ")
            ))
        })
}

/// The request body for these arguments (pure but for finding the file).
pub fn deploy_body(a: &DeployArgs, cwd: &Path) -> Result<DeployBody, Abort> {
    if a.git.is_none() && (a.branch.is_some() || a.path.is_some()) {
        return Err(not_asked("--branch and --path go with --git URL".into()));
    }
    let (file, git) = match &a.git {
        Some(url) => (
            None,
            Some(GitBody {
                url: url.clone(),
                branch: a.branch.clone(),
                path: a.path.clone(),
                file: a.file.as_ref().map(|f| f.display().to_string()),
            }),
        ),
        None => {
            let f = match &a.file {
                Some(f) if f.is_absolute() => f.clone(),
                Some(f) => cwd.join(f),
                None => default_file(cwd)?,
            };
            if !f.is_file() {
                return Err(not_asked(format!("-f {}: no such file", f.display())));
            }
            (Some(f), None)
        }
    };
    Ok(DeployBody {
        name: a.project.clone(),
        file,
        git,
        dry_run: a.dry_run,
    })
}

pub async fn deploy(client: Client, args: DeployArgs) -> Outcome {
    let cwd = std::env::current_dir().map_err(|e| not_asked(format!("current directory: {e}")))?;
    let body = deploy_body(&args, &cwd)?;
    follow_progress(&client, "/api/deployments", Some(&body), args.json).await
}

/// The deployments berth owns.
pub async fn deployments(client: Client, json: bool) -> Outcome {
    let list: Vec<DeploymentInfo> = client.get("/api/deployments/owned").await?;
    if json {
        return super::print_json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|d| {
            let source = match &d.source {
                crate::source::SourceSpec::File { path } => path.display().to_string(),
                crate::source::SourceSpec::Git { url, branch, .. } => {
                    format!("{url}@{}", branch.as_deref().unwrap_or("HEAD"))
                }
            };
            let (last, status) = match &d.last_deploy {
                Some(r) => (r.id.to_string(), r.status.to_string()),
                None => ("-".into(), "-".into()),
            };
            vec![
                d.name.clone(),
                source,
                d.services.len().to_string(),
                last,
                status,
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["NAME", "SOURCE", "SERVICES", "LAST DEPLOY", "STATUS"],
            &rows
        )
    );
    Ok(Exit::Done)
}

/// A deployment's deploys, oldest first.
pub async fn history(client: Client, name: &str, json: bool) -> Outcome {
    let list: Vec<DeployRecord> = client
        .get(&format!("/api/deployments/{}/history", encode(name)))
        .await?;
    if json {
        return super::print_json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                if r.dry_run {
                    format!("{} (dry run)", r.trigger)
                } else {
                    r.trigger.clone()
                },
                r.status.to_string(),
                or_dash(r.commit.as_deref().map(|c| &c[..c.len().min(12)])),
                r.total_seconds.map_or("-".into(), |s| format!("{s:.1}s")),
                or_dash(
                    r.reason
                        .as_deref()
                        .map(|x| x.lines().next().unwrap_or_default()),
                ),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["ID", "TRIGGER", "STATUS", "COMMIT", "TOOK", "REASON"],
            &rows
        )
    );
    Ok(Exit::Done)
}

pub async fn rollback(client: Client, name: &str, to: Option<u64>, json: bool) -> Outcome {
    let path = format!("/api/deployments/{}/rollback", encode(name));
    follow_progress(&client, &path, Some(&RollbackBody { to }), json).await
}

pub async fn down(client: Client, name: &str, volumes: bool, json: bool) -> Outcome {
    let path = format!(
        "/api/deployments/{}/down{}",
        encode(name),
        if volumes { "?volumes=true" } else { "" }
    );
    follow_progress(&client, &path, None::<&()>, json).await
}

/// `KEY=VALUE` → (key, value).
fn parse_pair(pair: &str) -> Result<(&str, &str), Abort> {
    pair.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| not_asked(format!("{pair:?}: use KEY=VALUE")))
}

/// `berth env set PROJECT [--secret] KEY=VALUE...`: kept for the next
/// deploy; a secret's value is never printed.
pub async fn env_set(client: Client, name: &str, pairs: &[String], secret: bool) -> Outcome {
    if pairs.is_empty() {
        return Err(not_asked("env set: give at least one KEY=VALUE".into()));
    }
    for pair in pairs {
        let (key, value) = parse_pair(pair)?;
        let path = format!("/api/deployments/{}/env/{}", encode(name), encode(key));
        let body = EnvBody {
            value: value.to_string(),
            secret,
        };
        let v: EnvView = client.send_json("PUT", &path, &body).await?;
        println!("{} set{}", v.key, if v.secret { " (secret)" } else { "" });
    }
    println!("applied on the next deploy of {name}");
    Ok(Exit::Done)
}

pub async fn env_unset(client: Client, name: &str, keys: &[String]) -> Outcome {
    for key in keys {
        let path = format!("/api/deployments/{}/env/{}", encode(name), encode(key));
        client.send_only("DELETE", &path).await?;
        println!("{key} unset");
    }
    Ok(Exit::Done)
}

pub async fn env_list(client: Client, name: &str, json: bool) -> Outcome {
    let list: Vec<EnvView> = client
        .get(&format!("/api/deployments/{}/env", encode(name)))
        .await?;
    if json {
        return super::print_json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|v| {
            vec![
                v.key.clone(),
                match (&v.value, v.secret) {
                    (_, true) => "(secret)".into(),
                    (Some(x), false) => x.clone(),
                    (None, false) => "-".into(),
                },
            ]
        })
        .collect();
    print!("{}", table(&["KEY", "VALUE"], &rows));
    Ok(Exit::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_bodies() {
        let dir = std::env::temp_dir().join(format!("berth-cli-deploy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let none = deploy_body(&DeployArgs::default(), &dir).unwrap_err();
        assert!(
            none.message.contains("no compose file here"),
            "{}",
            none.message
        );
        std::fs::write(dir.join("docker-compose.yml"), "services: {}\n").unwrap();
        let b = deploy_body(&DeployArgs::default(), &dir).unwrap();
        assert_eq!(b.file, Some(dir.join("docker-compose.yml")));
        let rel = DeployArgs {
            file: Some("docker-compose.yml".into()),
            dry_run: true,
            ..Default::default()
        };
        let b = deploy_body(&rel, &dir).unwrap();
        assert!(b.file.unwrap().is_absolute() && b.dry_run);
        let git = DeployArgs {
            git: Some("https://example.com/a/site.git".into()),
            branch: Some("main".into()),
            file: Some("deploy/compose.yaml".into()),
            ..Default::default()
        };
        let b = deploy_body(&git, &dir).unwrap();
        assert_eq!(b.file, None);
        assert_eq!(b.git.unwrap().file.as_deref(), Some("deploy/compose.yaml"));
        let stray = DeployArgs {
            branch: Some("main".into()),
            ..Default::default()
        };
        assert!(deploy_body(&stray, &dir).is_err());
        std::fs::remove_dir_all(dir).unwrap();
        assert_eq!(parse_pair("A=b=c").unwrap(), ("A", "b=c"));
        assert!(parse_pair("=x").is_err() && parse_pair("A").is_err());
    }
}
