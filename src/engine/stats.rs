//! `docker stats` figures from the engine's raw stats. Pure.

use bollard::models::ContainerStatsResponse;
use serde::{Deserialize, Serialize};

/// One container's resource use, as `docker stats` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub cpu_percent: f64,
    pub memory_used: u64,
    pub memory_limit: u64,
    pub memory_percent: f64,
    pub net_rx: u64,
    pub net_tx: u64,
    pub block_read: u64,
    pub block_write: u64,
}

/// The CPU counters of one stats reading: what two readings are compared by.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuCounters {
    /// Nanoseconds of CPU the container used, all cores together.
    pub total: u64,
    /// Nanoseconds of CPU the host had, all cores together.
    pub system: u64,
    pub cpus: u64,
}

impl CpuCounters {
    fn of(c: &Option<bollard::models::ContainerCpuStats>) -> CpuCounters {
        let c = c.as_ref();
        CpuCounters {
            total: c
                .and_then(|c| c.cpu_usage.as_ref())
                .and_then(|u| u.total_usage)
                .unwrap_or(0),
            system: c.and_then(|c| c.system_cpu_usage).unwrap_or(0),
            cpus: c
                .and_then(|c| {
                    c.online_cpus.map(u64::from).or_else(|| {
                        c.cpu_usage
                            .as_ref()
                            .and_then(|u| u.percpu_usage.as_ref())
                            .map(|p| p.len() as u64)
                    })
                })
                .unwrap_or(1)
                .max(1),
        }
    }

    /// The reading's own counters (`cpu_stats`).
    pub fn now(r: &ContainerStatsResponse) -> CpuCounters {
        CpuCounters::of(&r.cpu_stats)
    }

    /// CPU % between an earlier reading and this one, as `docker stats`
    /// counts it: 100 per core in use. 0 when the host's counter did not
    /// move (or went back: another container's reading).
    pub fn percent_since(&self, before: &CpuCounters) -> f64 {
        let used = self.total.saturating_sub(before.total);
        let had = self.system.saturating_sub(before.system);
        if had == 0 {
            return 0.0;
        }
        let p = used as f64 / had as f64 * self.cpus as f64 * 100.0;
        (p * 100.0).round() / 100.0
    }
}

/// Docker's stats → the figures `docker stats` prints: CPU % of one core
/// times the cores used, memory without the page cache, summed network and
/// block I/O. A one-shot reading has no earlier counters: its CPU is 0.
pub fn summarize(r: &ContainerStatsResponse) -> Stats {
    let cpu_percent = CpuCounters::now(r).percent_since(&CpuCounters::of(&r.precpu_stats));
    let mem = r.memory_stats.as_ref();
    let usage = mem.and_then(|m| m.usage).unwrap_or(0);
    // cgroup v1 counts the page cache in `usage`; v2 reports inactive_file.
    let cache = mem
        .and_then(|m| m.stats.as_ref())
        .and_then(|s| {
            s.get("total_inactive_file")
                .or_else(|| s.get("inactive_file"))
                .or_else(|| s.get("cache"))
        })
        .copied()
        .unwrap_or(0);
    let memory_used = usage.saturating_sub(cache);
    let memory_limit = mem.and_then(|m| m.limit).unwrap_or(0);
    let memory_percent = if memory_limit > 0 {
        memory_used as f64 / memory_limit as f64 * 100.0
    } else {
        0.0
    };
    let (mut net_rx, mut net_tx) = (0, 0);
    for n in r.networks.iter().flat_map(|n| n.values()) {
        net_rx += n.rx_bytes.unwrap_or(0);
        net_tx += n.tx_bytes.unwrap_or(0);
    }
    let (mut block_read, mut block_write) = (0, 0);
    for e in r
        .blkio_stats
        .as_ref()
        .and_then(|b| b.io_service_bytes_recursive.as_ref())
        .into_iter()
        .flatten()
    {
        match e.op.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("read") => block_read += e.value.unwrap_or(0),
            Some("write") => block_write += e.value.unwrap_or(0),
            _ => {}
        }
    }
    Stats {
        cpu_percent,
        memory_used,
        memory_limit,
        memory_percent: (memory_percent * 100.0).round() / 100.0,
        net_rx,
        net_tx,
        block_read,
        block_write,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{
        ContainerBlkioStatEntry, ContainerBlkioStats, ContainerCpuStats, ContainerCpuUsage,
        ContainerMemoryStats, ContainerNetworkStats,
    };

    fn cpu(total: u64, system: u64) -> Option<ContainerCpuStats> {
        Some(ContainerCpuStats {
            cpu_usage: Some(ContainerCpuUsage {
                total_usage: Some(total),
                ..Default::default()
            }),
            system_cpu_usage: Some(system),
            online_cpus: Some(2),
            ..Default::default()
        })
    }

    #[test]
    fn figures_as_docker_stats_prints_them() {
        let entry = |op: &str, value| ContainerBlkioStatEntry {
            op: Some(op.into()),
            value: Some(value),
            ..Default::default()
        };
        let net = |rx, tx| ContainerNetworkStats {
            rx_bytes: Some(rx),
            tx_bytes: Some(tx),
            ..Default::default()
        };
        let r = ContainerStatsResponse {
            precpu_stats: cpu(1_000, 100_000),
            cpu_stats: cpu(6_000, 200_000),
            memory_stats: Some(ContainerMemoryStats {
                usage: Some(30 << 20),
                limit: Some(1 << 30),
                stats: Some([("inactive_file".to_string(), 10 << 20)].into()),
                ..Default::default()
            }),
            networks: Some(
                [
                    ("eth0".to_string(), net(100, 10)),
                    ("eth1".to_string(), net(5, 1)),
                ]
                .into(),
            ),
            blkio_stats: Some(ContainerBlkioStats {
                io_service_bytes_recursive: Some(vec![
                    entry("read", 4096),
                    entry("write", 512),
                    entry("Read", 4096),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = summarize(&r);
        assert_eq!(s.cpu_percent, 10.0, "5k of 100k system time, 2 cores");
        assert_eq!(s.memory_used, 20 << 20, "page cache left out");
        assert_eq!(s.memory_percent, 1.95);
        assert_eq!((s.net_rx, s.net_tx), (105, 11));
        assert_eq!((s.block_read, s.block_write), (8192, 512));
        assert_eq!(
            summarize(&ContainerStatsResponse::default()),
            Stats::default()
        );
    }
}
