//! Docker API types → [`Container`], and merging fresh inspections into the
//! world without losing what only events told us. Pure.

use std::collections::BTreeMap;

use bollard::models::ContainerInspectResponse;

use crate::world::{signal_number, Container, NetAddress, World};

pub fn from_inspect(i: &ContainerInspectResponse) -> Option<Container> {
    let id = i.id.clone()?;
    let config = i.config.as_ref();
    let state = i.state.as_ref();
    let health = state
        .and_then(|s| s.health.as_ref())
        .and_then(|h| h.status)
        .map(|s| s.to_string())
        .filter(|s| !s.is_empty() && s != "none");
    let networks = i
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .map(|nets| {
            nets.iter()
                .map(|(name, ep)| {
                    let ip = ep.ip_address.as_deref().and_then(|a| a.parse().ok());
                    (name.clone(), ip)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut addresses = Vec::new();
    for (network, ep) in i
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .into_iter()
        .flatten()
    {
        let pairs = [
            (ep.ip_address.as_deref(), ep.ip_prefix_len),
            (ep.global_ipv6_address.as_deref(), ep.global_ipv6_prefix_len),
        ];
        for (ip, prefix) in pairs {
            if let (Some(Ok(ip)), Some(prefix)) = (ip.map(str::parse), prefix) {
                addresses.push(NetAddress {
                    network: network.clone(),
                    ip,
                    prefix: prefix.clamp(0, 128) as u8,
                });
            }
        }
    }
    let mut ports: Vec<String> = Vec::new();
    for (port, bindings) in i
        .network_settings
        .as_ref()
        .and_then(|n| n.ports.as_ref())
        .into_iter()
        .flatten()
    {
        let bound: Vec<String> = bindings
            .iter()
            .flatten()
            .filter_map(|b| {
                let host_port = b.host_port.as_deref().filter(|p| !p.is_empty())?;
                let ip = b
                    .host_ip
                    .as_deref()
                    .filter(|ip| !ip.is_empty())
                    .unwrap_or("0.0.0.0");
                Some(if ip.contains(':') {
                    format!("[{ip}]:{host_port}->{port}")
                } else {
                    format!("{ip}:{host_port}->{port}")
                })
            })
            .collect();
        if bound.is_empty() {
            ports.push(port.clone());
        } else {
            ports.extend(bound);
        }
    }
    ports.sort();
    ports.dedup();
    let mut exposed_ports: Vec<u16> = config
        .and_then(|c| c.exposed_ports.as_ref())
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| match p.split_once('/') {
                    Some((n, "tcp")) => n.parse().ok(),
                    None => p.parse().ok(),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    exposed_ports.sort_unstable();
    exposed_ports.dedup();
    Some(Container {
        name: i
            .name
            .as_deref()
            .unwrap_or(&id)
            .trim_start_matches('/')
            .to_string(),
        image: config.and_then(|c| c.image.clone()).unwrap_or_default(),
        labels: config.and_then(|c| c.labels.clone()).unwrap_or_default(),
        status: state
            .and_then(|s| s.status)
            .map(|s| s.to_string())
            .unwrap_or_default(),
        health,
        started_at: state.and_then(|s| s.started_at.clone()).unwrap_or_default(),
        stopping: false,
        stop_signal: config
            .and_then(|c| c.stop_signal.as_deref())
            .and_then(signal_number)
            .unwrap_or(15),
        networks,
        exposed_ports,
        ports,
        addresses,
        id,
    })
}

/// A fresh inspection replaces what we had, except that a stop signal seen for
/// the same run (same start time) still holds: `inspect` keeps saying
/// "running" until the process exits.
pub fn merge(old: Option<&Container>, mut new: Container) -> Container {
    if let Some(old) = old {
        if old.stopping && old.started_at == new.started_at && new.status == "running" {
            new.stopping = true;
        }
    }
    new
}

/// What a full re-list changed, for the log: (added, removed, changed).
pub fn resync(old: &World, fresh: World) -> (World, usize, usize, usize) {
    let mut next = BTreeMap::new();
    let (mut added, mut changed) = (0, 0);
    for (id, c) in fresh {
        let prev = old.get(&id);
        let c = merge(prev, c);
        match prev {
            None => added += 1,
            Some(p) if *p != c => changed += 1,
            Some(_) => {}
        }
        next.insert(id, c);
    }
    let removed = old.keys().filter(|id| !next.contains_key(*id)).count();
    (next, added, removed, changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{
        ContainerConfig, ContainerState, ContainerStateStatusEnum, EndpointSettings, Health,
        HealthStatusEnum, NetworkSettings,
    };

    fn inspect() -> ContainerInspectResponse {
        ContainerInspectResponse {
            id: Some("abc".into()),
            name: Some("/web-1".into()),
            config: Some(ContainerConfig {
                image: Some("img:1".into()),
                labels: Some([("berth.host".to_string(), "a.test".to_string())].into()),
                exposed_ports: Some(vec!["8080/tcp".into(), "53/udp".into()]),
                stop_signal: Some("SIGQUIT".into()),
                ..Default::default()
            }),
            state: Some(ContainerState {
                status: Some(ContainerStateStatusEnum::RUNNING),
                health: Some(Health {
                    status: Some(HealthStatusEnum::HEALTHY),
                    ..Default::default()
                }),
                started_at: Some("t1".into()),
                ..Default::default()
            }),
            network_settings: Some(NetworkSettings {
                networks: Some(
                    [(
                        "net".to_string(),
                        EndpointSettings {
                            ip_address: Some("172.18.0.2".into()),
                            ..Default::default()
                        },
                    )]
                    .into(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn converts_inspect() {
        let c = from_inspect(&inspect()).unwrap();
        assert_eq!(c.name, "web-1");
        assert_eq!(c.status, "running");
        assert_eq!(c.health.as_deref(), Some("healthy"));
        assert_eq!(c.exposed_ports, vec![8080]);
        assert_eq!(c.stop_signal, 3);
        assert_eq!(c.networks["net"], Some("172.18.0.2".parse().unwrap()));
    }

    #[test]
    fn stopping_survives_reinspection_of_the_same_run_only() {
        let mut old = from_inspect(&inspect()).unwrap();
        old.stopping = true;
        let same_run = from_inspect(&inspect()).unwrap();
        assert!(merge(Some(&old), same_run.clone()).stopping);
        let mut new_run = same_run;
        new_run.started_at = "t2".into();
        assert!(!merge(Some(&old), new_run).stopping);
    }

    #[test]
    fn resync_counts_differences() {
        let a = from_inspect(&inspect()).unwrap();
        let old: World = [
            ("abc".to_string(), a.clone()),
            ("gone".to_string(), a.clone()),
        ]
        .into();
        let mut changed = a.clone();
        changed.health = Some("unhealthy".into());
        let mut b = a.clone();
        b.id = "new".into();
        let fresh: World = [("abc".to_string(), changed), ("new".to_string(), b)].into();
        let (w, added, removed, ch) = resync(&old, fresh);
        assert_eq!((w.len(), added, removed, ch), (2, 1, 1, 1));
    }
}
