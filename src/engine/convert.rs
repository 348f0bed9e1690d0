//! Docker's inspection of a container → the World's [`Container`]. Pure.

use std::collections::BTreeMap;
use std::net::IpAddr;

use bollard::models::ContainerInspectResponse;

use crate::world::{signal_number, Container, NetAddress};

pub fn from_inspect(i: &ContainerInspectResponse) -> Option<Container> {
    let id = i.id.clone()?;
    let config = i.config.as_ref();
    let state = i.state.as_ref();
    let health = state
        .and_then(|s| s.health.as_ref())
        .and_then(|h| h.status)
        .map(|s| s.to_string())
        .filter(|s| !s.is_empty() && s != "none");
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
        // Docker reports 0 for a container that never ran: only an exited
        // one's code means anything.
        exit_code: state
            .filter(|s| s.running != Some(true))
            .and_then(|s| s.exit_code),
        stopping: false,
        stop_pending: false,
        restart_policy: i
            .host_config
            .as_ref()
            .and_then(|h| h.restart_policy.as_ref())
            .and_then(|p| p.name)
            .map(|n| n.to_string())
            .unwrap_or_default(),
        oom_killed: state.and_then(|s| s.oom_killed).unwrap_or(false),
        cpu_limit: cpu_limit(i.host_config.as_ref()),
        memory_limited: i
            .host_config
            .as_ref()
            .and_then(|h| h.memory)
            .is_some_and(|m| m > 0),
        stop_signal: config
            .and_then(|c| c.stop_signal.as_deref())
            .and_then(signal_number)
            .unwrap_or(15),
        networks: networks(i),
        exposed_ports: exposed_ports(config.and_then(|c| c.exposed_ports.as_ref())),
        ports: ports(i),
        addresses: addresses(i),
        id,
    })
}

/// The CPU limit in cores: `--cpus` (NanoCpus), else a CFS quota over its
/// period.
fn cpu_limit(h: Option<&bollard::models::HostConfig>) -> Option<f64> {
    let h = h?;
    if let Some(n) = h.nano_cpus.filter(|n| *n > 0) {
        return Some(n as f64 / 1e9);
    }
    match (h.cpu_quota, h.cpu_period) {
        (Some(q), Some(p)) if q > 0 && p > 0 => Some(q as f64 / p as f64),
        (Some(q), _) if q > 0 => Some(q as f64 / 100_000.0),
        _ => None,
    }
}

type Endpoints = std::collections::HashMap<String, bollard::models::EndpointSettings>;

fn endpoints(i: &ContainerInspectResponse) -> Option<&Endpoints> {
    i.network_settings.as_ref()?.networks.as_ref()
}

/// Network name → the container's IPv4 address on it.
fn networks(i: &ContainerInspectResponse) -> BTreeMap<String, Option<IpAddr>> {
    endpoints(i)
        .into_iter()
        .flatten()
        .map(|(name, ep)| {
            let ip = ep.ip_address.as_deref().and_then(|a| a.parse().ok());
            (name.clone(), ip)
        })
        .collect()
}

/// Every address (IPv4 and IPv6) with its network's prefix length.
fn addresses(i: &ContainerInspectResponse) -> Vec<NetAddress> {
    let mut addresses = Vec::new();
    for (network, ep) in endpoints(i).into_iter().flatten() {
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
    addresses
}

/// Ports as `docker ps` shows them: `0.0.0.0:8080->80/tcp`, `80/tcp`.
fn ports(i: &ContainerInspectResponse) -> Vec<String> {
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
    ports
}

/// Exposed TCP ports, sorted.
fn exposed_ports(exposed: Option<&Vec<String>>) -> Vec<u16> {
    let mut ports: Vec<u16> = exposed
        .into_iter()
        .flatten()
        .filter_map(|p| match p.split_once('/') {
            Some((n, "tcp")) => n.parse().ok(),
            None => p.parse().ok(),
            _ => None,
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
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
}
