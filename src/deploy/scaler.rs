//! The autoscaling controller: every `scale.interval` it samples each
//! replica of every autoscaled service (CPU and memory from the engine,
//! requests from berth's own counters), asks [`autoscale::decide`] and
//! carries a scale decision out as a scale run of the deploy controller
//! (the zero-downtime engine), one run per service at a time. What it sees
//! and decided is kept for `GET /api/autoscale`, `berth autoscale` and the
//! metrics; each action is also a run in the deploy history.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::autoscale::{self, Decision, Policy, Replica, ReplicaState, Sample};
use super::{unix_now, Deploys, Kind, Request, Status};
use crate::engine::stats::CpuCounters;
use crate::engine::Engine;
use crate::plan::Snapshot;
use crate::world::BackendState;
use crate::SharedSnapshot;

/// Decisions kept per service.
const DECISIONS: usize = 20;
/// Averages kept per service, for the view.
const RECENT: usize = 60;

/// The averages of one interval over a service's replicas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// % of the CPU limit (or of one core).
    pub cpu: Option<f64>,
    /// % of the memory limit.
    pub memory: Option<f64>,
    /// Requests/s per replica.
    pub requests: Option<f64>,
}

/// One scale action the autoscaler took.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecisionView {
    pub at_unix: u64,
    pub from: u32,
    pub to: u32,
    pub reason: String,
    /// The averages it was decided on.
    pub figures: Figures,
    /// The scale run that carries it out (`berth rollouts`).
    pub run: u64,
}

/// An autoscaled service, as `GET /api/autoscale` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleView {
    pub service: String,
    pub min: u32,
    pub max: u32,
    /// Targets: CPU and memory in %, requests per second per replica.
    pub cpu: Option<f64>,
    pub memory: Option<f64>,
    pub requests: Option<f64>,
    pub interval_secs: f64,
    pub out_samples: usize,
    pub cooldown_secs: f64,
    /// Replicas running now.
    pub replicas: u32,
    /// What autoscaling wants now.
    pub desired: u32,
    /// The latest interval's averages.
    pub figures: Figures,
    /// The averages of the last intervals, oldest first.
    pub recent: Vec<Figures>,
    /// Why it holds, or what it is doing.
    pub state: String,
    /// The last scale actions, oldest first.
    pub decisions: Vec<DecisionView>,
}

/// What one service's controller remembers between intervals.
struct Tracked {
    policy: Arc<Policy>,
    next_sample: Instant,
    /// Per container: the last reading (when, CPU counters, requests
    /// picked), and its samples.
    readings: HashMap<String, (Instant, CpuCounters, Option<u64>)>,
    samples: HashMap<String, VecDeque<Option<Sample>>>,
    /// The run carrying out the last action, and when that action ended.
    run: Option<u64>,
    last_action: Option<Instant>,
    /// The last run failed: no new one before the cooldown.
    failed_at: Option<Instant>,
}

impl Tracked {
    fn new(policy: Arc<Policy>, now: Instant) -> Tracked {
        Tracked {
            policy,
            next_sample: now,
            readings: HashMap::new(),
            samples: HashMap::new(),
            run: None,
            last_action: None,
            failed_at: None,
        }
    }

    /// How many samples a series keeps: a cooldown window and the
    /// scale-out samples.
    fn keep(&self) -> usize {
        let p = &self.policy;
        let window = (p.cooldown.as_secs_f64() / p.interval.as_secs_f64().max(0.001)).ceil();
        window as usize + p.out_samples + 1
    }
}

/// A running replica of a service: its id, whether it is capacity, and
/// its request counter (routed replicas only).
struct Running {
    id: String,
    state: ReplicaState,
    cpu_limit: Option<f64>,
    picked: Option<u64>,
    canary: bool,
}

fn running_replicas(snap: &Snapshot, service: &str) -> Vec<Running> {
    snap.containers
        .values()
        .filter(|c| c.is_running() && c.service_key() == service)
        .map(|c| {
            let backend = snap.backends.get(&c.id);
            Running {
                id: c.id.clone(),
                state: match c.state {
                    BackendState::Starting => ReplicaState::Starting,
                    BackendState::Draining => ReplicaState::Draining,
                    _ => ReplicaState::Ready,
                },
                cpu_limit: c.run.cpu_limit,
                picked: backend.map(|b| b.stats.picked.load(Ordering::Relaxed)),
                canary: c.canary.is_some(),
            }
        })
        .collect()
}

/// Runs the controller until berth stops.
pub async fn run(
    engine: Engine,
    snapshot: SharedSnapshot,
    mut notify: watch::Receiver<u64>,
    deploys: Deploys,
    reviving: Arc<Mutex<HashSet<String>>>,
) {
    let mut tracked: BTreeMap<String, Tracked> = BTreeMap::new();
    loop {
        let now = Instant::now();
        let snap = snapshot.load_full();
        // Services that stopped being autoscaled are forgotten.
        tracked.retain(|s, _| snap.autoscale.contains_key(s));
        {
            let mut views = deploys.autoscale.lock().unwrap_or_else(|e| e.into_inner());
            views.retain(|s, _| snap.autoscale.contains_key(s));
        }
        for (service, policy) in &snap.autoscale {
            let t = tracked
                .entry(service.clone())
                .or_insert_with(|| Tracked::new(policy.clone(), now));
            if t.policy != *policy {
                info!(%service, "autoscale: the policy changed");
                t.policy = policy.clone();
            }
            if now < t.next_sample {
                continue;
            }
            t.next_sample = now + policy.interval;
            step(&engine, &snap, &deploys, &reviving, service, t).await;
        }
        let next = tracked
            .values()
            .map(|t| t.next_sample)
            .min()
            .unwrap_or(now + Duration::from_secs(1))
            .min(Instant::now() + Duration::from_secs(1));
        tokio::select! {
            r = notify.changed() => {
                if r.is_err() {
                    return;
                }
                // A new snapshot alone is no reason to sample early: wait
                // for the next interval (or a new service).
                tokio::time::sleep_until(next.min(Instant::now() + Duration::from_millis(200)).into()).await;
            }
            _ = tokio::time::sleep_until(next.into()) => {}
        }
    }
}

/// One interval of one service: sample, decide, act.
async fn step(
    engine: &Engine,
    snap: &Snapshot,
    deploys: &Deploys,
    reviving: &Mutex<HashSet<String>>,
    service: &str,
    t: &mut Tracked,
) {
    let policy = t.policy.clone();
    let replicas = running_replicas(snap, service);
    // Sample every running replica.
    let ids: HashSet<&str> = replicas.iter().map(|r| r.id.as_str()).collect();
    t.readings.retain(|id, _| ids.contains(id.as_str()));
    t.samples.retain(|id, _| ids.contains(id.as_str()));
    let keep = t.keep();
    // The readings at once: the engine answers each in a few ms, but one
    // slow answer must not stretch the interval for the others.
    let readings = futures_util::future::join_all(
        replicas
            .iter()
            .map(|r| sample(engine, r, t.readings.get(&r.id).copied())),
    )
    .await;
    for (r, sample) in replicas.iter().zip(readings) {
        let (reading, sample) = match sample {
            Some((reading, sample)) => (Some(reading), sample),
            None => (None, None),
        };
        match reading {
            Some(reading) => {
                t.readings.insert(r.id.clone(), reading);
            }
            None => {
                t.readings.remove(&r.id);
            }
        }
        let series = t.samples.entry(r.id.clone()).or_default();
        series.push_back(sample);
        while series.len() > keep {
            series.pop_front();
        }
    }
    let series: Vec<Replica> = replicas
        .iter()
        .map(|r| Replica {
            state: r.state,
            samples: t
                .samples
                .get(&r.id)
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default(),
        })
        .collect();
    let figures = latest_figures(&series);
    debug!(%service, replicas = replicas.len(), figures = %describe(&figures), "autoscale: sampled");

    // Where the last run stands.
    let now = Instant::now();
    if let Some(id) = t.run {
        match deploys.status_of(id) {
            Some(s) if !s.is_final() => {
                let why = format!("scale run {id} under way");
                return show(deploys, service, &policy, &replicas, figures, None, why);
            }
            Some(s) => {
                t.run = None;
                t.last_action = Some(now);
                if s != Status::Completed {
                    t.failed_at = Some(now);
                }
            }
            None => t.run = None,
        }
    }
    let busy = deploys.busy(service);
    let crashed = reviving
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(service);
    let hold = if replicas.is_empty() {
        Some("no replica running (a stopped service stays stopped)".to_string())
    } else if replicas.iter().any(|r| r.canary) {
        Some("a canary is running: no scaling until it ends".to_string())
    } else if let Some(run) = busy {
        Some(format!("run {run} on this service is under way"))
    } else if crashed {
        Some("a crashed replica is being replaced".to_string())
    } else if let Some(at) = t
        .failed_at
        .filter(|at| now.duration_since(*at) < policy.cooldown)
    {
        let left = policy.cooldown.saturating_sub(now.duration_since(at));
        Some(format!(
            "the last scale run failed: next try in {}s",
            left.as_secs()
        ))
    } else {
        None
    };
    if let Some(why) = hold {
        return show(deploys, service, &policy, &replicas, figures, None, why);
    }
    let since = t.last_action.map(|at| now.duration_since(at));
    match autoscale::decide(&policy, &series, since) {
        Decision::Hold(why) => show(deploys, service, &policy, &replicas, figures, None, why),
        Decision::Scale { from, to, reason } => {
            let shown = describe(&figures);
            info!(%service, from, to, figures = %shown, "autoscale: {reason}");
            let request = Request {
                kind: Kind::Scale {
                    replicas: to as usize,
                },
                service: service.to_string(),
                health_timeout: None,
                drain_timeout: None,
            };
            let note = format!("autoscale {from} → {to}: {reason} ({shown})");
            let id = deploys.submit_as(request, "autoscale", note);
            t.run = Some(id);
            // Samples from before the action say nothing about after it.
            t.samples.clear();
            let decision = DecisionView {
                at_unix: unix_now(),
                from,
                to,
                reason: reason.clone(),
                figures,
                run: id,
            };
            show(
                deploys,
                service,
                &policy,
                &replicas,
                figures,
                Some((to, decision)),
                format!("scaling {from} → {to} (run {id}): {reason}"),
            );
        }
    }
}

/// One replica's reading now and its sample since the last one (`None`:
/// no baseline yet, or the engine gave no reading).
async fn sample(
    engine: &Engine,
    r: &Running,
    last: Option<(Instant, CpuCounters, Option<u64>)>,
) -> Option<((Instant, CpuCounters, Option<u64>), Option<Sample>)> {
    let (stats, cpu) = match engine.stats_once(&r.id, &r.id).await {
        Ok(found) => found,
        Err(e) => {
            warn!(container = %crate::names::short_id(&r.id), error = %e, "autoscale: no stats reading");
            return None;
        }
    };
    let now = Instant::now();
    let reading = (now, cpu, r.picked);
    let Some((then, before, picked_before)) = last else {
        return Some((reading, None));
    };
    let secs = now.duration_since(then).as_secs_f64();
    if secs <= 0.0 {
        return Some((reading, None));
    }
    let cores = r.cpu_limit.filter(|c| *c > 0.0).unwrap_or(1.0);
    let requests = match (r.picked, picked_before) {
        (Some(n), Some(b)) => Some(n.saturating_sub(b) as f64 / secs),
        _ => None,
    };
    Some((
        reading,
        Some(Sample {
            cpu: Some(cpu.percent_since(&before) / cores),
            memory: (stats.memory_limit > 0).then_some(stats.memory_percent),
            requests,
        }),
    ))
}

/// The latest interval's averages over the replicas that have a sample.
fn latest_figures(series: &[Replica]) -> Figures {
    let latest: Vec<Sample> = series
        .iter()
        .filter(|r| r.state == ReplicaState::Ready)
        .filter_map(|r| r.samples.last().copied().flatten())
        .collect();
    let avg = |read: fn(&Sample) -> Option<f64>| {
        let v: Vec<f64> = latest.iter().filter_map(read).collect();
        (!v.is_empty()).then(|| (v.iter().sum::<f64>() / v.len() as f64 * 10.0).round() / 10.0)
    };
    Figures {
        cpu: avg(|s| s.cpu),
        memory: avg(|s| s.memory),
        requests: avg(|s| s.requests),
    }
}

/// The figures as a line: `cpu 72.5%, requests 31.0/s`.
pub fn describe(f: &Figures) -> String {
    let mut parts = Vec::new();
    if let Some(c) = f.cpu {
        parts.push(format!("cpu {c:.1}%"));
    }
    if let Some(m) = f.memory {
        parts.push(format!("memory {m:.1}%"));
    }
    if let Some(r) = f.requests {
        parts.push(format!("requests {r:.1}/s per replica"));
    }
    if parts.is_empty() {
        "no figures yet".into()
    } else {
        parts.join(", ")
    }
}

/// Updates the service's view.
fn show(
    deploys: &Deploys,
    service: &str,
    policy: &Policy,
    replicas: &[Running],
    figures: Figures,
    action: Option<(u32, DecisionView)>,
    state: String,
) {
    let mut views = deploys.autoscale.lock().unwrap_or_else(|e| e.into_inner());
    let n = replicas.len() as u32;
    let v = views
        .entry(service.to_string())
        .or_insert_with(|| ScaleView {
            service: service.to_string(),
            min: policy.min,
            max: policy.max,
            cpu: None,
            memory: None,
            requests: None,
            interval_secs: 0.0,
            out_samples: 0,
            cooldown_secs: 0.0,
            replicas: n,
            desired: n,
            figures,
            recent: Vec::new(),
            state: String::new(),
            decisions: Vec::new(),
        });
    v.min = policy.min;
    v.max = policy.max;
    v.cpu = policy.cpu;
    v.memory = policy.memory;
    v.requests = policy.requests;
    v.interval_secs = policy.interval.as_secs_f64();
    v.out_samples = policy.out_samples;
    v.cooldown_secs = policy.cooldown.as_secs_f64();
    v.replicas = n;
    v.figures = figures;
    v.recent.push(figures);
    let excess = v.recent.len().saturating_sub(RECENT);
    v.recent.drain(..excess);
    v.state = state;
    match action {
        Some((to, decision)) => {
            v.desired = to;
            v.decisions.push(decision);
            let excess = v.decisions.len().saturating_sub(DECISIONS);
            v.decisions.drain(..excess);
        }
        // While a run is under way it still wants what it asked for.
        None if v.state.starts_with("scale run") => {}
        None => v.desired = n.clamp(policy.min, policy.max),
    }
}
