//! What the admin API and the deploy controller do to containers: drain before
//! stopping, start/stop/restart/remove, logs and stats. The Docker calls are
//! thin; [`summarize`] (stats → figures) is pure.

use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use bollard::models::ContainerStatsResponse;
use bollard::query_parameters::{
    LogsOptions, RemoveContainerOptions, RestartContainerOptions, StartContainerOptions,
    StatsOptions, StopContainerOptions,
};
use bollard::Docker;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::Serialize;

use super::{Input, Inputs};
use crate::world::BackendState;
use crate::SharedSnapshot;

/// A Docker call that failed, with the engine's HTTP status when it gave one.
#[derive(Debug)]
pub struct OpError {
    pub status: Option<u16>,
    pub message: String,
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn op_error(what: &str, name: &str, e: bollard::errors::Error) -> OpError {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => OpError {
            status: Some(status_code),
            message: format!("{what} {name}: {message}"),
        },
        other => OpError {
            status: None,
            message: format!("{what} {name}: {other}"),
        },
    }
}

/// A drain in force. Dropped without [`Drained::keep`] (the stop or restart
/// it was for failed, or the caller went away), it puts the container back in
/// rotation.
pub struct Drained {
    id: String,
    inputs: Inputs,
    /// Requests still open when the wait ended (drain timeout).
    pub open: usize,
    kept: bool,
}

impl Drained {
    /// The action went through: the drain lasts until the container's run ends.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Drained {
    fn drop(&mut self) {
        if !self.kept {
            let _ = self.inputs.send(Input::Undrain {
                id: std::mem::take(&mut self.id),
            });
        }
    }
}

/// Takes a routed, running container out of rotation and waits until the
/// proxy has stopped sending it requests and its in-flight ones are done, or
/// its drain timeout passed. `None`: berth does not route it.
pub async fn drain(snapshot: &SharedSnapshot, inputs: &Inputs, id: &str) -> Option<Drained> {
    let b = snapshot.load().backends.get(id).cloned()?;
    if b.state == BackendState::Stopped {
        return None;
    }
    let _ = inputs.send(Input::Drain { id: id.to_string() });
    let mut guard = Drained {
        id: id.to_string(),
        inputs: inputs.clone(),
        open: 0,
        kept: false,
    };
    let deadline = Instant::now() + b.drain_timeout;
    loop {
        let snap = snapshot.load();
        let draining = snap
            .backends
            .get(id)
            .is_none_or(|b| b.state != BackendState::Ready);
        guard.open = b.stats.inflight.load(std::sync::atomic::Ordering::Relaxed);
        if (draining && guard.open == 0) || Instant::now() >= deadline {
            return Some(guard);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn start(docker: &Docker, id: &str, name: &str) -> Result<(), OpError> {
    docker
        .start_container(id, None::<StartContainerOptions>)
        .await
        .map_err(|e| op_error("start", name, e))
}

/// `timeout`: seconds the process gets after its stop signal; `None`: the
/// container's own stop timeout (compose `stop_grace_period`).
pub async fn stop(
    docker: &Docker,
    id: &str,
    name: &str,
    timeout: Option<i32>,
) -> Result<(), OpError> {
    docker
        .stop_container(
            id,
            Some(StopContainerOptions {
                t: timeout,
                signal: None,
            }),
        )
        .await
        .map_err(|e| op_error("stop", name, e))
}

pub async fn restart(
    docker: &Docker,
    id: &str,
    name: &str,
    timeout: Option<i32>,
) -> Result<(), OpError> {
    docker
        .restart_container(
            id,
            Some(RestartContainerOptions {
                t: timeout,
                signal: None,
            }),
        )
        .await
        .map_err(|e| op_error("restart", name, e))
}

pub async fn remove(docker: &Docker, id: &str, name: &str, force: bool) -> Result<(), OpError> {
    docker
        .remove_container(
            id,
            Some(RemoveContainerOptions {
                force,
                v: false,
                link: false,
            }),
        )
        .await
        .map_err(|e| op_error("remove", name, e))
}

/// The container's log lines (stdout and stderr), each prefixed with
/// `prefix`; with `follow`, new lines as they are written. Chunks are cut into
/// whole lines per stream (stdout and stderr apart); a last line without a
/// newline is still shown when the log ends.
pub fn logs(
    docker: &Docker,
    id: &str,
    prefix: String,
    tail: Option<u64>,
    follow: bool,
) -> impl Stream<Item = Bytes> + Send + 'static {
    let stream = docker
        .logs(
            id,
            Some(LogsOptions {
                follow,
                stdout: true,
                stderr: true,
                tail: tail.map_or("all".to_string(), |t| t.to_string()),
                ..Default::default()
            }),
        )
        .boxed();
    let lines = Lines {
        prefix,
        partial: [Vec::new(), Vec::new()],
    };
    futures_util::stream::unfold(Some((stream, lines)), |state| async move {
        let (mut stream, mut lines) = state?;
        loop {
            match stream.next().await {
                Some(Ok(chunk)) => {
                    let out = lines.push(&chunk);
                    if !out.is_empty() {
                        return Some((out, Some((stream, lines))));
                    }
                }
                // The end, or the engine went away: what is left, then stop.
                _ => {
                    let rest = lines.finish();
                    return (!rest.is_empty()).then_some((rest, None));
                }
            }
        }
    })
}

/// Cuts log chunks into prefixed lines, one buffer per stream.
struct Lines {
    prefix: String,
    /// stdout (and console), stderr.
    partial: [Vec<u8>; 2],
}

impl Lines {
    fn push(&mut self, chunk: &LogOutput) -> Bytes {
        let (i, data) = match chunk {
            LogOutput::StdErr { message } => (1, message),
            LogOutput::StdOut { message }
            | LogOutput::Console { message }
            | LogOutput::StdIn { message } => (0, message),
        };
        let buf = &mut self.partial[i];
        buf.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(n) = buf.iter().position(|&b| b == b'\n') {
            out.extend_from_slice(self.prefix.as_bytes());
            out.extend(buf.drain(..=n));
        }
        Bytes::from(out)
    }

    fn finish(&mut self) -> Bytes {
        let mut out = Vec::new();
        for buf in &mut self.partial {
            if !buf.is_empty() {
                out.extend_from_slice(self.prefix.as_bytes());
                out.append(buf);
                out.push(b'\n');
            }
        }
        Bytes::from(out)
    }
}

/// One container's resource use, as `docker stats` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
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

/// One sample of a running container (Docker samples twice, about a second
/// apart, for the CPU figure).
pub async fn stats(docker: &Docker, id: &str, name: &str) -> Result<Stats, OpError> {
    let mut s = docker.stats(
        id,
        Some(StatsOptions {
            stream: false,
            one_shot: false,
        }),
    );
    match s.next().await {
        Some(Ok(r)) => Ok(summarize(&r)),
        Some(Err(e)) => Err(op_error("stats", name, e)),
        None => Err(OpError {
            status: None,
            message: format!("stats {name}: the engine sent nothing"),
        }),
    }
}

/// Docker's stats → the figures `docker stats` prints: CPU % of one core
/// times the cores used, memory without the page cache, summed network and
/// block I/O.
pub fn summarize(r: &ContainerStatsResponse) -> Stats {
    let total = |c: &Option<bollard::models::ContainerCpuStats>| {
        c.as_ref()
            .and_then(|c| c.cpu_usage.as_ref())
            .and_then(|u| u.total_usage)
            .unwrap_or(0)
    };
    let system = |c: &Option<bollard::models::ContainerCpuStats>| {
        c.as_ref().and_then(|c| c.system_cpu_usage).unwrap_or(0)
    };
    let cpu_delta = total(&r.cpu_stats).saturating_sub(total(&r.precpu_stats));
    let system_delta = system(&r.cpu_stats).saturating_sub(system(&r.precpu_stats));
    let cpus = r
        .cpu_stats
        .as_ref()
        .and_then(|c| {
            c.online_cpus.map(u64::from).or_else(|| {
                c.cpu_usage
                    .as_ref()
                    .and_then(|u| u.percpu_usage.as_ref())
                    .map(|p| p.len() as u64)
            })
        })
        .unwrap_or(1)
        .max(1);
    let cpu_percent = if system_delta > 0 {
        cpu_delta as f64 / system_delta as f64 * cpus as f64 * 100.0
    } else {
        0.0
    };
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
        cpu_percent: (cpu_percent * 100.0).round() / 100.0,
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
    fn a_drain_not_kept_is_undone() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let guard = |id: &str| Drained {
            id: id.into(),
            inputs: tx.clone(),
            open: 0,
            kept: false,
        };
        drop(guard("failed-stop"));
        guard("stopped").keep();
        match rx.try_recv() {
            Ok(Input::Undrain { id }) => assert_eq!(id, "failed-stop"),
            other => panic!("{other:?}"),
        }
        assert!(rx.try_recv().is_err(), "a kept drain stays");
    }

    #[test]
    fn log_chunks_become_whole_prefixed_lines_per_stream() {
        let mut l = Lines {
            prefix: "web-1 | ".into(),
            partial: [Vec::new(), Vec::new()],
        };
        let out = |m: &str| LogOutput::StdOut {
            message: Bytes::from(m.to_string()),
        };
        let err = |m: &str| LogOutput::StdErr {
            message: Bytes::from(m.to_string()),
        };
        assert_eq!(l.push(&out("one\ntw")), "web-1 | one\n");
        assert_eq!(l.push(&err("oops\n")), "web-1 | oops\n", "stderr apart");
        assert_eq!(l.push(&out("o\nthree")), "web-1 | two\n");
        assert_eq!(
            l.finish(),
            "web-1 | three\n",
            "the last line without newline"
        );
        assert_eq!(l.finish(), "");
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
