//! The autoscaling controller: every `scale.interval` it samples each
//! replica of every autoscaled service (CPU and memory from the engine,
//! requests from berth's own counters), asks [`autoscale::decide`] and
//! carries a scale decision out as a scale run of the deploy controller
//! (the zero-downtime engine), one run per service at a time. What it sees
//! and decided is kept for `GET /api/autoscale`, `berth autoscale` and the
//! metrics; each action is also a run in the deploy history.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
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
    /// Per container: its last reading, and its samples.
    readings: HashMap<String, Reading>,
    samples: HashMap<String, VecDeque<Option<Sample>>>,
    /// The run carrying out the last action, and when that action ended
    /// (or when the service was first seen: no scale-in before a cooldown
    /// of figures after berth starts).
    run: Option<u64>,
    last_action: Instant,
    /// The last run failed (when, and how many in a row): the next waits
    /// the cooldown, doubled for each failure in a row (at most an hour).
    failed: Option<(Instant, u32)>,
}

/// One reading of a replica.
#[derive(Debug, Clone)]
struct Reading {
    /// Its run: a restart resets the engine's counters.
    run: String,
    at: Instant,
    cpu: CpuCounters,
    picked: Option<u64>,
}

/// The most samples a series keeps, whatever the policy.
const MAX_KEEP: usize = 2000;
/// How long a stats reading may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

impl Tracked {
    fn new(policy: Arc<Policy>, now: Instant) -> Tracked {
        Tracked {
            policy,
            next_sample: now,
            readings: HashMap::new(),
            samples: HashMap::new(),
            run: None,
            last_action: now,
            failed: None,
        }
    }

    /// How many samples a series keeps: a cooldown window and the
    /// scale-out samples.
    fn keep(&self) -> usize {
        let p = &self.policy;
        let window = (p.cooldown.as_secs_f64() / p.interval.as_secs_f64().max(1.0)).ceil();
        (window as usize + p.out_samples + 1).min(MAX_KEEP)
    }

    /// The wait after a failed run, if one is due now.
    fn failed_wait(&self, now: Instant) -> Option<Duration> {
        let (at, streak) = self.failed?;
        let wait = (self.policy.cooldown * 2u32.saturating_pow(streak.saturating_sub(1).min(12)))
            .min(Duration::from_secs(3600));
        let left = wait.saturating_sub(now.duration_since(at));
        (!left.is_zero()).then_some(left)
    }
}

/// A running replica of a service: its id and run, whether it is
/// capacity, and its request counter (routed replicas only).
struct Running {
    id: String,
    run: String,
    state: ReplicaState,
    cpu_limit: Option<f64>,
    memory_limited: bool,
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
                run: c.started_at.clone(),
                state: match c.state {
                    BackendState::Starting => ReplicaState::Starting,
                    BackendState::Draining => ReplicaState::Draining,
                    BackendState::Down => ReplicaState::Down,
                    _ => ReplicaState::Ready,
                },
                cpu_limit: c.run.cpu_limit,
                memory_limited: c.run.memory_limited,
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
        let due: Vec<String> = snap
            .autoscale
            .iter()
            .filter_map(|(service, policy)| {
                let t = tracked
                    .entry(service.clone())
                    .or_insert_with(|| Tracked::new(policy.clone(), now));
                if t.policy != *policy {
                    info!(%service, "autoscale: the policy changed");
                    t.policy = policy.clone();
                }
                (now >= t.next_sample).then(|| service.clone())
            })
            .collect();
        // The services due step together: a slow engine answer (at most
        // READ_TIMEOUT) delays the others' next round, never their readings
        // in this one.
        let steps = tracked
            .iter_mut()
            .filter(|(service, _)| due.contains(service))
            .map(|(service, t)| {
                t.next_sample = now + t.policy.interval;
                step(&engine, &snap, &deploys, service, t)
            });
        futures_util::future::join_all(steps).await;
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
async fn step(engine: &Engine, snap: &Snapshot, deploys: &Deploys, service: &str, t: &mut Tracked) {
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
            .map(|r| sample(engine, r, t.readings.get(&r.id).cloned())),
    )
    .await;
    for (r, (reading, sample)) in replicas.iter().zip(readings) {
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
                t.last_action = now;
                t.failed = match (s, t.failed) {
                    (Status::Completed, _) => None,
                    (_, Some((_, n))) => Some((now, n + 1)),
                    (_, None) => Some((now, 1)),
                };
            }
            None => {
                t.run = None;
                t.last_action = now;
            }
        }
    }
    // Replicas that crashed and wait to be restarted: counted as down ones
    // (replicas, not capacity), since they will be back.
    let crashed = deploys
        .reviving
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(service)
        .copied()
        .unwrap_or(0);
    let hold = if replicas.iter().any(|r| r.canary) {
        Some("a canary is running: no scaling until it ends".to_string())
    } else if let Some(run) = deploys.busy(service) {
        Some(format!("run {run} on this service is under way"))
    } else if let Some(left) = t.failed_wait(now) {
        Some(format!(
            "the last {} scale run(s) failed: next try in {}s",
            t.failed.map_or(1, |(_, n)| n),
            left.as_secs()
        ))
    } else {
        None
    };
    if let Some(why) = hold {
        return show(deploys, service, &policy, &replicas, figures, None, why);
    }
    // Without a memory limit Docker's figure is a share of the host's
    // memory: that target is left out rather than waited for.
    let mut why_memory = String::new();
    let mut used = policy.clone();
    if policy.memory.is_some() && replicas.iter().any(|r| !r.memory_limited) {
        why_memory = " (scale.memory needs a memory limit on the containers: not read)".into();
        used = Arc::new(Policy {
            memory: None,
            ..(*policy).clone()
        });
    }
    let mut series = series;
    series.extend((0..crashed).map(|_| Replica {
        state: ReplicaState::Down,
        samples: Vec::new(),
    }));
    let since = Some(now.duration_since(t.last_action));
    match autoscale::decide(&used, &series, since) {
        // The scale engine counts running replicas only: the crashed ones
        // come back beside what it makes.
        Decision::Scale { to, .. }
            if crashed > 0 && to.saturating_sub(crashed) <= replicas.len() as u32 =>
        {
            let why = format!("{crashed} crashed replica(s) being restarted cover it");
            show(deploys, service, &policy, &replicas, figures, None, why)
        }
        Decision::Hold(why) => {
            let why = format!("{why}{why_memory}");
            show(deploys, service, &policy, &replicas, figures, None, why)
        }
        Decision::Scale { from, to, reason } => {
            let shown = describe(&figures);
            info!(%service, from, to, figures = %shown, "autoscale: {reason}");
            let request = Request {
                kind: Kind::Scale {
                    replicas: to.saturating_sub(crashed) as usize,
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

/// One replica's reading now (`None`: the engine gave none in time) and
/// its sample since the last one (`None`: no baseline for this run yet).
async fn sample(
    engine: &Engine,
    r: &Running,
    last: Option<Reading>,
) -> (Option<Reading>, Option<Sample>) {
    let read = tokio::time::timeout(READ_TIMEOUT, engine.stats_once(&r.id, &r.id)).await;
    let (stats, cpu) = match read {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            warn!(container = %crate::names::short_id(&r.id), error = %e, "autoscale: no stats reading");
            return (None, None);
        }
        Err(_) => {
            warn!(container = %crate::names::short_id(&r.id), "autoscale: no stats reading within 5s");
            return (None, None);
        }
    };
    let now = Instant::now();
    let reading = Reading {
        run: r.run.clone(),
        at: now,
        cpu,
        picked: r.picked,
    };
    let Some(last) = last.filter(|l| l.run == r.run) else {
        return (Some(reading), None);
    };
    let secs = now.duration_since(last.at).as_secs_f64();
    if secs <= 0.0 {
        return (Some(reading), None);
    }
    let cores = r.cpu_limit.filter(|c| *c > 0.0).unwrap_or(1.0);
    let requests = match (r.picked, last.picked) {
        (Some(n), Some(b)) => Some(n.saturating_sub(b) as f64 / secs),
        _ => None,
    };
    let sample = Sample {
        cpu: Some(cpu.percent_since(&last.cpu) / cores),
        // Without a limit, Docker's figure is of the host's memory.
        memory: r.memory_limited.then_some(stats.memory_percent),
        requests,
    };
    (Some(reading), Some(sample))
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
