//! What a command's TARGET names among the deployments of `GET
//! /api/deployments`: a deployment (compose project, or a container outside
//! compose), one service of it, or one container. Pure.

use std::fmt;

use super::{Abort, Exit};
use crate::api::host::{DeploymentView, ServiceView};
use crate::names::id_prefix_of;
use crate::plan::ContainerInfo;

#[derive(Debug)]
pub enum Target<'a> {
    Deployment {
        deployment: &'a DeploymentView,
        /// `None`: all of it.
        service: Option<&'a ServiceView>,
    },
    Container(&'a ContainerInfo),
}

impl<'a> Target<'a> {
    /// The containers it names, in the API's order.
    pub fn containers(&self) -> Vec<&'a ContainerInfo> {
        match self {
            Target::Container(c) => vec![*c],
            Target::Deployment {
                service: Some(s), ..
            } => s.containers.iter().collect(),
            Target::Deployment { deployment, .. } => deployment
                .services
                .iter()
                .flat_map(|s| &s.containers)
                .collect(),
        }
    }
}

/// `blog`, `blog/web`, or `container blog-web-1`.
impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Deployment {
                deployment,
                service: None,
            } => f.write_str(&deployment.name),
            Target::Deployment {
                deployment,
                service: Some(s),
            } => write!(f, "{}/{}", deployment.name, s.name),
            Target::Container(c) => write!(f, "container {}", c.name),
        }
    }
}

/// Resolves TARGET, in this order: `PROJECT/SERVICE`; a deployment's name
/// (unless `project` is given); a service name in exactly one compose
/// project (or in `project`); a container's name or id prefix
/// ([`id_prefix_of`], the API's rule). Nothing: exit 3; several: exit 2.
pub fn resolve<'a>(
    deployments: &'a [DeploymentView],
    target: &str,
    project: Option<&str>,
) -> Result<Target<'a>, Abort> {
    let named = |name: &str| deployments.iter().find(|d| d.name == name);
    if let Some((p, svc)) = target.split_once('/') {
        let deployment = named(p).ok_or_else(|| no_target(format!("no deployment {p}")))?;
        let service = service_of(deployment, svc)
            .ok_or_else(|| no_target(format!("deployment {p} has no service {svc}")))?;
        return Ok(Target::Deployment {
            deployment,
            service: Some(service),
        });
    }
    if let (None, Some(deployment)) = (project, named(target)) {
        return Ok(Target::Deployment {
            deployment,
            service: None,
        });
    }
    let scope: Vec<&DeploymentView> = deployments
        .iter()
        .filter(|d| project.is_none_or(|p| d.name == p))
        .collect();
    if let Some(t) = by_service(&scope, target)? {
        return Ok(t);
    }
    // Containers are found by name or id in every deployment, `--project` or not.
    let everywhere: Vec<&DeploymentView> = deployments.iter().collect();
    by_container(&everywhere, target)?.ok_or_else(|| {
        no_target(format!(
            "{target}: no deployment, service or container of that name{}",
            project
                .map(|p| format!(" in project {p}"))
                .unwrap_or_default()
        ))
    })
}

fn service_of<'a>(d: &'a DeploymentView, name: &str) -> Option<&'a ServiceView> {
    d.services.iter().find(|s| s.name == name)
}

/// The compose service of that name, if exactly one project has it.
fn by_service<'a>(scope: &[&'a DeploymentView], name: &str) -> Result<Option<Target<'a>>, Abort> {
    let mut found: Vec<Target<'a>> = scope
        .iter()
        .filter(|d| d.compose)
        .filter_map(|d| {
            service_of(d, name).map(|s| Target::Deployment {
                deployment: d,
                service: Some(s),
            })
        })
        .collect();
    if found.len() > 1 {
        let names: Vec<String> = found.iter().map(Target::to_string).collect();
        return Err(Abort::new(
            Exit::NotAsked,
            format!(
                "service {name} is in several projects ({}): pass --project or PROJECT/{name}",
                names.join(", ")
            ),
        ));
    }
    Ok(found.pop())
}

/// The container of that name, or the one whose id starts so.
fn by_container<'a>(
    scope: &[&'a DeploymentView],
    target: &str,
) -> Result<Option<Target<'a>>, Abort> {
    let all = || {
        scope
            .iter()
            .flat_map(|d| &d.services)
            .flat_map(|s| &s.containers)
    };
    if let Some(c) = all().find(|c| c.name == target) {
        return Ok(Some(Target::Container(c)));
    }
    let by_id: Vec<&ContainerInfo> = all().filter(|c| id_prefix_of(target, &c.id)).collect();
    match by_id.as_slice() {
        [] => Ok(None),
        [c] => Ok(Some(Target::Container(c))),
        many => Err(Abort::new(
            Exit::NotAsked,
            format!(
                "{target}: the id prefix matches {} containers: give more of the id",
                many.len()
            ),
        )),
    }
}

fn no_target(message: String) -> Abort {
    Abort::new(Exit::NoTarget, message)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::world::BackendState;

    pub fn container(name: &str, id: &str, status: &str) -> ContainerInfo {
        ContainerInfo {
            id: id.into(),
            name: name.into(),
            image: "img".into(),
            project: None,
            service: None,
            status: status.into(),
            health: None,
            state: BackendState::Ready,
            routed: true,
            ports: vec![],
            networks: BTreeMap::new(),
            started_at: String::new(),
            config_hash: None,
            exit_code: None,
            canary: None,
            run: Default::default(),
            restarts: 0,
        }
    }

    /// A container: (name, id, status).
    type ContainerSpec<'a> = (&'a str, &'a str, &'a str);
    /// A service: (name, containers).
    type ServiceSpec<'a> = (&'a str, &'a [ContainerSpec<'a>]);

    /// Deployments as the API groups them: (name, compose, services).
    pub fn deployments(spec: &[(&str, bool, &[ServiceSpec])]) -> Vec<DeploymentView> {
        spec.iter()
            .map(|(name, compose, services)| DeploymentView {
                name: name.to_string(),
                compose: *compose,
                owned: false,
                services: services
                    .iter()
                    .map(|(svc, cs)| ServiceView {
                        name: svc.to_string(),
                        containers: cs
                            .iter()
                            .map(|(n, id, status)| ContainerInfo {
                                project: compose.then(|| name.to_string()),
                                service: compose.then(|| svc.to_string()),
                                ..container(n, id, status)
                            })
                            .collect(),
                        drift: None,
                    })
                    .collect(),
            })
            .collect()
    }

    pub fn host() -> Vec<DeploymentView> {
        deployments(&[
            (
                "blog",
                true,
                &[
                    ("db", &[("blog-db-1", "bbbb2222", "exited")]),
                    (
                        "web",
                        &[
                            ("blog-web-1", "aaaa1111", "running"),
                            ("blog-web-2", "aaaa1122", "running"),
                        ],
                    ),
                ],
            ),
            (
                "cron",
                false,
                &[("cron", &[("cron", "dddd4444", "exited")])],
            ),
            (
                "shop",
                true,
                &[("web", &[("shop-web-1", "cccc3333", "running")])],
            ),
        ])
    }

    #[test]
    fn targets_resolve_like_compose_names() {
        let d = host();
        let cases: [(&str, Option<&str>, Result<&str, Exit>); 16] = [
            ("blog", None, Ok("blog")),
            ("db", None, Ok("blog/db")),
            ("shop/web", None, Ok("shop/web")),
            ("web", Some("shop"), Ok("shop/web")),
            ("web", None, Err(Exit::NotAsked)),
            ("cron", None, Ok("cron")),
            ("blog-web-1", None, Ok("container blog-web-1")),
            ("blog-web-1", Some("blog"), Ok("container blog-web-1")),
            ("blog-web-1", Some("shop"), Ok("container blog-web-1")),
            ("bbbb22", None, Ok("container blog-db-1")),
            ("aaaa11", None, Err(Exit::NotAsked)),
            ("aaaa111", None, Ok("container blog-web-1")),
            ("bbb", None, Err(Exit::NoTarget)),
            ("nope", None, Err(Exit::NoTarget)),
            ("blog/nope", None, Err(Exit::NoTarget)),
            ("nope/web", None, Err(Exit::NoTarget)),
        ];
        for (target, project, want) in cases {
            let got = resolve(&d, target, project)
                .map(|t| t.to_string())
                .map_err(|a| a.exit);
            assert_eq!(got.as_deref().map_err(|e| *e), want, "{target} {project:?}");
        }
        let err = resolve(&d, "web", None).unwrap_err().message;
        assert!(err.contains("blog/web, shop/web"), "{err}");
    }

    #[test]
    fn a_target_names_its_containers() {
        let d = host();
        let names = |t: &str| -> Vec<String> {
            let t = resolve(&d, t, None).unwrap();
            t.containers().iter().map(|c| c.name.clone()).collect()
        };
        assert_eq!(names("blog"), ["blog-db-1", "blog-web-1", "blog-web-2"]);
        assert_eq!(names("blog/web"), ["blog-web-1", "blog-web-2"]);
        assert_eq!(names("aaaa1122"), ["blog-web-2"]);
        let Target::Container(c) = resolve(&d, "shop-web-1", None).unwrap() else {
            panic!("a container")
        };
        assert_eq!(c.deployment(), "shop");
    }
}
