//! The create request for a clone of a replica (rollout, scale-up): the new
//! container gets the old one's labels, env, command, networks, volumes,
//! healthcheck and restart policy, except where those only came from the old
//! image, so that the new image's own defaults apply. Host port bindings are
//! dropped: the old replica still holds them, and traffic comes through berth
//! anyway. Each clone is labelled with the run that made it (and its unit in
//! that run), so that after a crash berth finds that run's new replicas.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, ImageConfig, NetworkingConfig,
};

use crate::deploy::project::spec::{hex, COMPOSE_HASH, COMPOSE_NUMBER};

/// The run that made a clone: `<deploy id>@<its start, unix seconds>` (the
/// start tells runs apart when a lost history made ids start over).
pub const OPERATION_LABEL: &str = "io.berth.operation";
/// Which unit of that run the clone is for.
pub const UNIT_LABEL: &str = "io.berth.unit";

/// Who makes a clone: the run's [`OPERATION_LABEL`] value and the unit;
/// for a compose replica, the container number it gets.
#[derive(Debug, Clone, Copy)]
pub struct MadeBy<'a> {
    pub operation: &'a str,
    pub unit: usize,
    pub number: Option<u32>,
    /// A canary replica, with its share of traffic (percent); any other
    /// clone is none, whatever its template was.
    pub canary: Option<u32>,
}

/// Takes the container's value unless it equals what the image set.
fn own<T: PartialEq>(container: Option<T>, image: Option<&T>) -> Option<T> {
    match (container, image) {
        (Some(c), Some(i)) if c == *i => None,
        (c, _) => c,
    }
}

/// The create request for a clone of `old` running `image`, made by `by`
/// (pure). A clone of a clone carries its own run's labels, not its template's.
pub fn clone_body(
    old: &ContainerInspectResponse,
    old_image: Option<&ImageConfig>,
    image: &str,
    by: MadeBy<'_>,
) -> ContainerCreateBody {
    let cfg = old.config.clone().unwrap_or_default();
    let img = old_image.cloned().unwrap_or_default();
    let image_env: Vec<String> = img.env.clone().unwrap_or_default();
    let env: Vec<String> = cfg
        .env
        .unwrap_or_default()
        .into_iter()
        .filter(|e| !image_env.contains(e))
        .collect();
    let image_labels = img.labels.clone().unwrap_or_default();
    let mut labels: HashMap<String, String> = cfg
        .labels
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, v)| image_labels.get(k) != Some(v))
        .collect();
    labels.insert(OPERATION_LABEL.into(), by.operation.into());
    labels.insert(UNIT_LABEL.into(), by.unit.to_string());
    labels.remove(crate::deploy::canary::CANARY_LABEL);
    if let Some(percent) = by.canary {
        labels.insert(
            crate::deploy::canary::CANARY_LABEL.into(),
            percent.to_string(),
        );
    }
    if let Some(n) = by.number {
        labels.insert(COMPOSE_NUMBER.into(), n.to_string());
    }
    // Another image is another config: say so to compose, whose `up` would
    // otherwise call the clone up to date with a file that names the old
    // image (it then recreates it from the file, which owns the project).
    let old_image = cfg.image.clone().unwrap_or_default();
    if image != old_image {
        if let Some(h) = labels.get(COMPOSE_HASH).cloned() {
            let moved = format!("{h}\nimage={image}");
            labels.insert(
                COMPOSE_HASH.into(),
                hex(ring::digest::digest(&ring::digest::SHA256, moved.as_bytes()).as_ref()),
            );
        }
    }
    let mut host = old.host_config.clone().unwrap_or_default();
    host.port_bindings = None;
    host.publish_all_ports = None;
    let nets = first_network(old);
    ContainerCreateBody {
        image: Some(image.to_string()),
        env: Some(env),
        labels: Some(labels),
        cmd: own(cfg.cmd, img.cmd.as_ref()),
        entrypoint: own(cfg.entrypoint, img.entrypoint.as_ref()),
        healthcheck: own(cfg.healthcheck, img.healthcheck.as_ref()),
        working_dir: own(cfg.working_dir, img.working_dir.as_ref()),
        user: own(cfg.user, img.user.as_ref()),
        stop_signal: own(cfg.stop_signal, img.stop_signal.as_ref()),
        exposed_ports: own(cfg.exposed_ports, img.exposed_ports.as_ref()),
        volumes: own(cfg.volumes, img.volumes.as_ref()),
        stop_timeout: cfg.stop_timeout,
        tty: cfg.tty,
        open_stdin: cfg.open_stdin,
        stdin_once: cfg.stdin_once,
        domainname: cfg.domainname,
        host_config: Some(host),
        networking_config: nets.map(|(name, ep)| NetworkingConfig {
            endpoints_config: Some([(name, ep)].into()),
        }),
        ..Default::default()
    }
}

/// The container's networks, sorted, as endpoint settings for a new container:
/// aliases kept but for the old container's own id, fixed addresses dropped.
pub(super) fn networks(old: &ContainerInspectResponse) -> Vec<(String, EndpointSettings)> {
    let id = old.id.clone().unwrap_or_default();
    let mut nets: Vec<(String, EndpointSettings)> = old
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|(name, ep)| {
            let aliases = ep.aliases.map(|a| {
                a.into_iter()
                    .filter(|a| !id.starts_with(a.as_str()))
                    .collect()
            });
            (
                name,
                EndpointSettings {
                    aliases,
                    links: ep.links,
                    driver_opts: ep.driver_opts,
                    ..Default::default()
                },
            )
        })
        .collect();
    nets.sort_by(|a, b| a.0.cmp(&b.0));
    nets
}

pub(super) fn first_network(old: &ContainerInspectResponse) -> Option<(String, EndpointSettings)> {
    // The network the container was created on (HostConfig.NetworkMode) first:
    // API 1.41 accepts one network at create, the rest are connected after.
    let mode = old
        .host_config
        .as_ref()
        .and_then(|h| h.network_mode.clone());
    let nets = networks(old);
    nets.iter()
        .find(|(n, _)| Some(n) == mode.as_ref())
        .or(nets.first())
        .cloned()
}

/// `blog-web-1` → `blog-web-1-b5f3a2`, and a clone of that → `blog-web-1-b91c07`.
pub fn clone_name(old: &str, tag: &str) -> String {
    let base = match old.rsplit_once("-b") {
        Some((b, suffix)) if suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_hexdigit()) => {
            b
        }
        _ => old,
    };
    format!("{base}-b{tag}")
}

pub(super) fn fresh_tag(n: usize) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:06x}",
        (nanos as u64).wrapping_add(n as u64 * 7919) & 0xff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{
        ContainerConfig, HostConfig, NetworkSettings, PortBinding, RestartPolicy,
        RestartPolicyNameEnum,
    };

    fn old() -> ContainerInspectResponse {
        ContainerInspectResponse {
            id: Some("abcdef1234567890".into()),
            name: Some("/blog-web-1".into()),
            config: Some(ContainerConfig {
                image: Some("blog:1".into()),
                env: Some(vec!["PATH=/bin".into(), "DB=postgres://db".into()]),
                cmd: Some(vec!["/bin/sh".into(), "/start.sh".into()]),
                labels: Some(
                    [
                        ("berth.host", "blog.test"),
                        ("org.opencontainers.image.version", "1"),
                        (OPERATION_LABEL, "3@1700000000"),
                        (COMPOSE_HASH, "h1"),
                        (UNIT_LABEL, "2"),
                    ]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ),
                ..Default::default()
            }),
            host_config: Some(HostConfig {
                network_mode: Some("blog_default".into()),
                port_bindings: Some(
                    [("80/tcp".to_string(), Some(vec![PortBinding::default()]))].into(),
                ),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            network_settings: Some(NetworkSettings {
                networks: Some(
                    [
                        (
                            "blog_default".to_string(),
                            EndpointSettings {
                                aliases: Some(vec!["web".into(), "abcdef123456".into()]),
                                ip_address: Some("172.20.0.5".into()),
                                ..Default::default()
                            },
                        ),
                        ("a_backend".to_string(), EndpointSettings::default()),
                    ]
                    .into(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn image() -> ImageConfig {
        ImageConfig {
            env: Some(vec!["PATH=/bin".into()]),
            cmd: Some(vec!["/bin/sh".into(), "/start.sh".into()]),
            labels: Some(
                [(
                    "org.opencontainers.image.version".to_string(),
                    "1".to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn clone_keeps_what_the_container_set_and_leaves_image_defaults_to_the_new_image() {
        let by = MadeBy {
            operation: "7@1700000100",
            unit: 0,
            number: Some(3),
            canary: None,
        };
        let body = clone_body(&old(), Some(&image()), "blog:2", by);
        assert_eq!(body.image.as_deref(), Some("blog:2"));
        assert_eq!(body.env, Some(vec!["DB=postgres://db".to_string()]));
        assert_eq!(body.cmd, None, "the command came from the image");
        let labels = body.labels.unwrap();
        assert_eq!(
            labels.get("berth.host").map(String::as_str),
            Some("blog.test")
        );
        assert!(!labels.contains_key("org.opencontainers.image.version"));
        assert_eq!(labels[COMPOSE_NUMBER], "3", "the next free number");
        assert_ne!(
            labels[COMPOSE_HASH], "h1",
            "another image: compose must not call it up to date"
        );
        let same = clone_body(&old(), Some(&image()), "blog:1", by);
        assert_eq!(same.labels.unwrap()[COMPOSE_HASH], "h1");
        // A canary clone carries its share; no other clone does, even of a
        // canary replica.
        let canary = MadeBy {
            canary: Some(10),
            ..by
        };
        let body_c = clone_body(&old(), Some(&image()), "blog:2", canary);
        let canary_labels = body_c.labels.unwrap();
        assert_eq!(canary_labels[crate::deploy::canary::CANARY_LABEL], "10");
        let mut was_canary = old();
        if let Some(cfg) = was_canary.config.as_mut() {
            cfg.labels
                .get_or_insert_with(Default::default)
                .insert(crate::deploy::canary::CANARY_LABEL.into(), "10".into());
        }
        let plain = clone_body(&was_canary, Some(&image()), "blog:2", by);
        assert!(!plain
            .labels
            .unwrap()
            .contains_key(crate::deploy::canary::CANARY_LABEL));
        assert_eq!(
            (
                labels[OPERATION_LABEL].as_str(),
                labels[UNIT_LABEL].as_str()
            ),
            ("7@1700000100", "0"),
            "the clone of a clone names the run that made it"
        );
        let host = body.host_config.unwrap();
        assert_eq!(
            host.port_bindings, None,
            "host ports are still held by the old replica"
        );
        assert_eq!(
            host.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );
        let nets = body.networking_config.unwrap().endpoints_config.unwrap();
        let ep = &nets["blog_default"];
        assert_eq!(
            ep.aliases,
            Some(vec!["web".to_string()]),
            "the old id alias is dropped"
        );
        assert_eq!(ep.ip_address, None);
        assert_eq!(nets.len(), 1, "other networks are connected after create");
    }

    #[test]
    fn clone_names() {
        assert_eq!(clone_name("blog-web-1", "a1b2c3"), "blog-web-1-ba1b2c3");
        assert_eq!(
            clone_name("blog-web-1-ba1b2c3", "000fff"),
            "blog-web-1-b000fff"
        );
        assert_eq!(clone_name("x-bz", "000001"), "x-bz-b000001");
        assert_eq!(fresh_tag(1).len(), 6);
    }
}
