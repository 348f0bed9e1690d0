//! A compose service → the engine's create request for one of its replicas,
//! labelled exactly as docker compose labels its containers (so that
//! `docker-compose ps`, berth's discovery, DNS and rollouts all see the same
//! thing), and the config hash that tells a changed service from an
//! unchanged one. Pure.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, Mount, MountType,
    NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use serde::Serialize;

use crate::compose::model::{MountKind, Project, Service};
use crate::world::{COMPOSE_PROJECT, COMPOSE_SERVICE};

pub const COMPOSE_NUMBER: &str = "com.docker.compose.container-number";
pub const COMPOSE_ONEOFF: &str = "com.docker.compose.oneoff";
pub const COMPOSE_HASH: &str = "com.docker.compose.config-hash";
pub const COMPOSE_VERSION: &str = "com.docker.compose.version";
pub const COMPOSE_WORKING_DIR: &str = "com.docker.compose.project.working_dir";
pub const COMPOSE_CONFIG_FILES: &str = "com.docker.compose.project.config_files";
pub const COMPOSE_NETWORK: &str = "com.docker.compose.network";
pub const COMPOSE_VOLUME: &str = "com.docker.compose.volume";
/// The deploy that created a container, network or volume (berth's own).
pub const DEPLOY_LABEL: &str = "io.berth.deploy";
/// Compose v1 compares this label as a version number: a version is what it
/// must find. Compose 2 semantics are what berth follows.
const VERSION: &str = "2.0.0";

/// The labels of a network or volume berth makes for a project: its own
/// (the file's), then compose's: the project, `kind` (the network or
/// volume label) with its key in the file, the version.
pub fn resource_labels(
    project: &str,
    kind: &str,
    key: &str,
    own: &BTreeMap<String, String>,
) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> =
        own.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    labels.insert(COMPOSE_PROJECT.into(), project.into());
    labels.insert(kind.into(), key.into());
    labels.insert(COMPOSE_VERSION.into(), VERSION.into());
    labels
}

/// `blog-web-1`, as compose 2 names replicas.
pub fn container_name(project: &str, service: &str, number: u32) -> String {
    format!("{project}-{service}-{number}")
}

/// The smallest container number not in `taken` (compose numbers from 1).
pub fn free_number(taken: &[u32]) -> u32 {
    nth_free_number(taken, 0)
}

/// The `n`-th (from 0) container number not in `taken`.
pub fn nth_free_number(taken: &[u32], n: usize) -> u32 {
    (1..)
        .filter(|x| !taken.contains(x))
        .nth(n)
        .unwrap_or(u32::MAX)
}

/// What decides whether a running replica is still what the file asks for:
/// the service's settings without its replica count and source position,
/// the image it runs (by id, so a rebuilt or re-pulled image counts), and
/// the engine names of its networks and volumes. sha256, hex.
pub fn config_hash(project: &Project, service: &Service, image_id: &str) -> String {
    #[derive(Serialize)]
    struct Hashed<'a> {
        service: Service,
        image_id: &'a str,
        networks: Vec<&'a str>,
        volumes: Vec<&'a str>,
    }
    let mut s = service.clone();
    s.replicas = 0;
    s.pos = Default::default();
    // The build's inputs are in the image id it produced.
    s.build = None;
    s.image = None;
    let networks = s
        .networks
        .keys()
        .filter_map(|k| project.networks.get(k).map(|n| n.name.as_str()))
        .collect();
    let volumes = s
        .volumes
        .iter()
        .filter(|m| m.kind == MountKind::Volume)
        .filter_map(|m| m.source.as_ref())
        .filter_map(|k| project.volumes.get(k).map(|v| v.name.as_str()))
        .collect();
    let hashed = Hashed {
        service: s,
        image_id,
        networks,
        volumes,
    };
    let json = serde_json::to_vec(&hashed).unwrap_or_default();
    hex(ring::digest::digest(&ring::digest::SHA256, &json).as_ref())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One replica to create: which, from what, labelled with what.
pub struct Replica<'a> {
    pub project: &'a Project,
    pub service: &'a Service,
    /// The image (id or reference) it runs.
    pub image: &'a str,
    pub number: u32,
    pub hash: &'a str,
    /// The deploy creating it (`<id>`).
    pub deploy: u64,
    /// Labels of the run that creates it, for crash recovery.
    pub extra_labels: Vec<(String, String)>,
}

/// Compose's labels for a replica.
pub fn labels(r: &Replica<'_>) -> HashMap<String, String> {
    let mut l: HashMap<String, String> = r
        .service
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let p = r.project;
    for (k, v) in [
        (COMPOSE_PROJECT, p.name.clone()),
        (COMPOSE_SERVICE, r.service.name.clone()),
        (COMPOSE_NUMBER, r.number.to_string()),
        (COMPOSE_ONEOFF, "False".to_string()),
        (COMPOSE_HASH, r.hash.to_string()),
        (COMPOSE_VERSION, VERSION.to_string()),
        (COMPOSE_WORKING_DIR, p.dir.display().to_string()),
        (COMPOSE_CONFIG_FILES, p.file.display().to_string()),
        (DEPLOY_LABEL, r.deploy.to_string()),
    ] {
        l.insert(k.to_string(), v);
    }
    for (k, v) in &r.extra_labels {
        l.insert(k.clone(), v.clone());
    }
    l
}

/// The networks a replica joins, by engine name, with its aliases (the
/// service name, as compose gives it, then the file's own), in the order
/// the service lists them; the first is the one it is created on.
pub fn networks(r: &Replica<'_>) -> Vec<(String, EndpointSettings)> {
    r.service
        .networks
        .iter()
        .filter_map(|(key, sn)| {
            let net = r.project.networks.get(key)?;
            let mut aliases = vec![r.service.name.clone()];
            aliases.extend(sn.aliases.iter().cloned());
            Some((
                net.name.clone(),
                EndpointSettings {
                    aliases: Some(aliases),
                    ..Default::default()
                },
            ))
        })
        .collect()
}

fn nanos(d: Option<std::time::Duration>) -> Option<i64> {
    d.map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn restart_policy(word: &str) -> RestartPolicy {
    let (name, retries) = match word.split_once(':') {
        Some((n, r)) => (n, r.parse().ok()),
        None => (word, None),
    };
    let name = match name {
        "always" => RestartPolicyNameEnum::ALWAYS,
        "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
        "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
        _ => RestartPolicyNameEnum::NO,
    };
    RestartPolicy {
        name: Some(name),
        maximum_retry_count: retries,
    }
}

/// The create request. Host ports are bound as the file says: a service
/// that publishes one cannot run two replicas at once, which the deploy
/// plan knows ([`runs_twice`]).
pub fn create_body(r: &Replica<'_>) -> ContainerCreateBody {
    let s = r.service;
    let env: Vec<String> = s
        .environment
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut exposed: Vec<String> = s
        .expose
        .iter()
        .map(|e| {
            if e.contains('/') {
                e.clone()
            } else {
                format!("{e}/tcp")
            }
        })
        .collect();
    let mut bindings: BTreeMap<String, Vec<PortBinding>> = BTreeMap::new();
    for p in &s.ports {
        let key = format!("{}/{}", p.target, p.protocol);
        exposed.push(key.clone());
        bindings.entry(key).or_default().push(PortBinding {
            host_ip: p.host_ip.clone(),
            host_port: p.published.map(|n| n.to_string()),
        });
    }
    exposed.sort();
    exposed.dedup();
    let mounts: Vec<Mount> = s
        .volumes
        .iter()
        .map(|m| Mount {
            target: Some(m.target.clone()),
            source: match m.kind {
                MountKind::Volume => m.source.as_ref().map(|k| {
                    r.project
                        .volumes
                        .get(k)
                        .map_or(k.clone(), |v| v.name.clone())
                }),
                MountKind::Bind => m.source.clone(),
                MountKind::Tmpfs => None,
            },
            typ: Some(match m.kind {
                MountKind::Volume => MountType::VOLUME,
                MountKind::Bind => MountType::BIND,
                MountKind::Tmpfs => MountType::TMPFS,
            }),
            read_only: Some(m.read_only),
            ..Default::default()
        })
        .collect();
    let nets = networks(r);
    let first = nets.first().cloned();
    let host = HostConfig {
        port_bindings: (!bindings.is_empty()).then(|| {
            bindings
                .into_iter()
                .map(|(k, v)| (k, Some(v)))
                .collect::<HashMap<_, _>>()
        }),
        mounts: (!mounts.is_empty()).then_some(mounts),
        restart_policy: s.restart.as_deref().map(restart_policy),
        network_mode: first.as_ref().map(|(n, _)| n.clone()),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(r.image.to_string()),
        env: Some(env),
        labels: Some(labels(r)),
        cmd: s.command.clone(),
        entrypoint: s.entrypoint.clone(),
        user: s.user.clone(),
        working_dir: s.working_dir.clone(),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        healthcheck: s.healthcheck.as_ref().map(|h| HealthConfig {
            test: Some(h.test.clone()),
            interval: nanos(h.interval),
            timeout: nanos(h.timeout),
            retries: h.retries.map(i64::from),
            start_period: nanos(h.start_period),
            start_interval: None,
        }),
        stop_timeout: s
            .stop_grace_period
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        host_config: Some(host),
        networking_config: first.map(|(name, ep)| NetworkingConfig {
            endpoints_config: Some([(name, ep)].into()),
        }),
        ..Default::default()
    }
}

/// With `deploy.base_domain`: the route labels a deployed service gets
/// when it has none of its own (`<prefix>.host`, `<prefix>.<name>.host`),
/// by the TCP ports its compose file declares (`expose`, `ports`; never the
/// image's `EXPOSE`, which a worker built from a web image inherits): its
/// first port as `<service>.<project>.<base>`, each other one as
/// `<service>--<port>.<project>.<base>`. Names are made DNS-safe
/// (lowercase, `_` → `-`); a name that is still not a hostname (a label
/// over 63 characters) gets no route, and is returned in the error list
/// with why. Nothing for a service without a port.
pub fn auto_routes(
    prefix: &str,
    base: &str,
    project: &str,
    service: &Service,
) -> (Vec<(String, String)>, Vec<String>) {
    let routed = service.labels.keys().any(|k| {
        k.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('.'))
            .is_some_and(|r| r == "host" || r.ends_with(".host"))
    });
    if routed {
        return (Vec::new(), Vec::new());
    }
    let mut ports: Vec<u16> = Vec::new();
    let tcp = service
        .expose
        .iter()
        .filter(|e| !e.ends_with("/udp"))
        .filter_map(|e| e.trim_end_matches("/tcp").parse().ok())
        .chain(
            service
                .ports
                .iter()
                .filter(|p| p.protocol == "tcp")
                .map(|p| p.target),
        );
    for p in tcp {
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    let dns = |s: &str| s.to_lowercase().replace(['_', '.'], "-");
    let (svc, proj) = (dns(&service.name), dns(project));
    let mut labels = Vec::new();
    let mut bad = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let (key, host) = if i == 0 {
            (prefix.to_string(), format!("{svc}.{proj}.{base}"))
        } else {
            (
                format!("{prefix}.p{port}"),
                format!("{svc}--{port}.{proj}.{base}"),
            )
        };
        if let Err(why) = crate::names::HostPattern::parse(&host) {
            bad.push(format!("{host}: {why}"));
            continue;
        }
        labels.push((format!("{key}.host"), host));
        labels.push((format!("{key}.port"), port.to_string()));
    }
    (labels, bad)
}

/// Whether two replicas of the service can run side by side, as a
/// zero-downtime replacement needs; if not, why. A published host port is
/// held by the running replica; a volume labelled `berth.single-writer`
/// must never have two writers; `berth.deploy.replace: stop-first` asks for
/// it.
pub fn runs_twice(project: &Project, service: &Service) -> Result<(), String> {
    if let Some(p) = service.ports.iter().find(|p| p.published.is_some()) {
        return Err(format!(
            "it publishes host port {}",
            p.published.unwrap_or_default()
        ));
    }
    let single = service
        .volumes
        .iter()
        .filter(|m| m.kind == MountKind::Volume)
        .filter_map(|m| m.source.as_ref())
        .find(|k| {
            project.volumes.get(*k).is_some_and(|v| {
                v.labels
                    .get("berth.single-writer")
                    .is_some_and(|x| x == "true")
            })
        });
    if let Some(v) = single {
        return Err(format!("volume {v} is labelled berth.single-writer"));
    }
    if service
        .labels
        .get("berth.deploy.replace")
        .is_some_and(|v| v == "stop-first")
    {
        return Err("it is labelled berth.deploy.replace=stop-first".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(yaml: &str) -> Project {
        let vars = std::collections::HashMap::new();
        let read = |_: &std::path::Path| -> std::io::Result<String> { Ok(String::new()) };
        crate::compose::load(&crate::compose::Source {
            file: std::path::Path::new("/srv/blog/compose.yaml"),
            text: yaml,
            project: None,
            vars: &vars,
            read: &read,
        })
        .unwrap()
    }

    const BLOG: &str = "name: blog
services:
  web:
    image: blog:1
    command: [\"/bin/sh\", \"/start.sh\"]
    environment: {MODE: prod}
    labels: {berth.host: blog.example.com}
    ports: [\"127.0.0.1:8080:80\"]
    volumes: [data:/data, ./static:/static:ro]
    networks:
      front: {aliases: [www]}
      default: {}
    healthcheck:
      test: [\"CMD\", \"wget\", \"-qO-\", \"http://127.0.0.1/health\"]
      interval: 2s
    restart: on-failure:3
    stop_grace_period: 20s
    deploy: {replicas: 2}
volumes:
  data:
    labels: {berth.single-writer: \"true\"}
networks:
  front: {}
";

    #[test]
    fn a_replica_is_created_as_compose_would_create_it() {
        let p = project(BLOG);
        let s = &p.services["web"];
        let r = Replica {
            project: &p,
            service: s,
            image: "blog:1",
            number: 2,
            hash: "abc",
            deploy: 7,
            extra_labels: vec![("io.berth.unit".into(), "0".into())],
        };
        let body = create_body(&r);
        let labels = body.labels.clone().unwrap();
        for (k, v) in [
            (COMPOSE_PROJECT, "blog"),
            (COMPOSE_SERVICE, "web"),
            (COMPOSE_NUMBER, "2"),
            (COMPOSE_ONEOFF, "False"),
            (COMPOSE_HASH, "abc"),
            (COMPOSE_WORKING_DIR, "/srv/blog"),
            (COMPOSE_CONFIG_FILES, "/srv/blog/compose.yaml"),
            (DEPLOY_LABEL, "7"),
            ("berth.host", "blog.example.com"),
            ("io.berth.unit", "0"),
        ] {
            assert_eq!(labels.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert_eq!(body.env, Some(vec!["MODE=prod".to_string()]));
        assert_eq!(body.exposed_ports, Some(vec!["80/tcp".to_string()]));
        let host = body.host_config.clone().unwrap();
        let binding = &host.port_bindings.unwrap()["80/tcp"].clone().unwrap()[0];
        assert_eq!(
            (binding.host_ip.as_deref(), binding.host_port.as_deref()),
            (Some("127.0.0.1"), Some("8080"))
        );
        let mounts = host.mounts.unwrap();
        assert_eq!(mounts[0].source.as_deref(), Some("blog_data"));
        assert_eq!(mounts[1].source.as_deref(), Some("/srv/blog/static"));
        assert_eq!(mounts[1].read_only, Some(true));
        let restart = host.restart_policy.unwrap();
        assert_eq!(
            (restart.name, restart.maximum_retry_count),
            (Some(RestartPolicyNameEnum::ON_FAILURE), Some(3))
        );
        assert_eq!(body.stop_timeout, Some(20));
        assert_eq!(
            body.healthcheck.unwrap().interval,
            Some(2_000_000_000),
            "nanoseconds"
        );
        assert_eq!(container_name("blog", "web", 2), "blog-web-2");
        let nets = networks(&r);
        let names: Vec<&str> = nets.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["blog_default", "blog_front"]);
        assert_eq!(
            nets[1].1.aliases,
            Some(vec!["web".to_string(), "www".to_string()]),
            "the service name, then the file's aliases"
        );
        assert_eq!(host.network_mode.as_deref(), Some("blog_default"));
    }

    #[test]
    fn the_hash_moves_with_settings_and_image_but_not_the_replica_count() {
        let p = project(BLOG);
        let h = config_hash(&p, &p.services["web"], "sha256:1");
        assert_eq!(h.len(), 64);
        assert_eq!(h, config_hash(&p, &p.services["web"], "sha256:1"));
        assert_ne!(h, config_hash(&p, &p.services["web"], "sha256:2"));
        let more = project(&BLOG.replace("replicas: 2", "replicas: 5"));
        assert_eq!(h, config_hash(&more, &more.services["web"], "sha256:1"));
        let env = project(&BLOG.replace("MODE: prod", "MODE: dev"));
        assert_ne!(h, config_hash(&env, &env.services["web"], "sha256:1"));
    }

    #[test]
    fn what_keeps_a_service_from_running_twice() {
        let p = project(BLOG);
        let why = runs_twice(&p, &p.services["web"]).unwrap_err();
        assert!(why.contains("host port 8080"), "{why}");
        let p = project(&BLOG.replace("    ports: [\"127.0.0.1:8080:80\"]\n", ""));
        let why = runs_twice(&p, &p.services["web"]).unwrap_err();
        assert!(why.contains("volume data"), "{why}");
        let p = project(
            &BLOG
                .replace("    labels: {berth.single-writer: \"true\"}\n", "")
                .replace("    ports: [\"127.0.0.1:8080:80\"]\n", ""),
        );
        assert_eq!(runs_twice(&p, &p.services["web"]), Ok(()));
    }

    #[test]
    fn automatic_hostnames_for_services_without_one() {
        let p = project(
            "name: Shop_1
services:
  web_ui:
    image: shop:1
    expose: [\"3000\", \"9229/udp\"]
    ports: [\"8080:80\"]
  worker:
    image: shop:1
  api:
    image: shop:1
    labels: {berth.api.host: api.shop.example.com}
",
        );
        let routes = |s: &str| auto_routes("berth", "apps.example.com", &p.name, &p.services[s]).0;
        assert_eq!(
            routes("web_ui"),
            [
                ("berth.host", "web-ui.shop-1.apps.example.com"),
                ("berth.port", "3000"),
                ("berth.p80.host", "web-ui--80.shop-1.apps.example.com"),
                ("berth.p80.port", "80"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert!(routes("worker").is_empty(), "no declared port, no route");
        assert!(routes("api").is_empty(), "its own route wins");
        let long = "x".repeat(70);
        let (labels, bad) = auto_routes("berth", "apps.example.com", &long, &p.services["web_ui"]);
        assert!(labels.is_empty());
        assert!(bad[0].contains(&long) && bad[0].contains("63"), "{bad:?}");
    }

    #[test]
    fn container_numbers_fill_the_gaps_first() {
        assert_eq!(free_number(&[]), 1);
        assert_eq!(free_number(&[1, 2, 4]), 3);
        assert_eq!(nth_free_number(&[1, 2, 4], 1), 5);
        assert_eq!(nth_free_number(&[2], 0), 1);
    }
}
