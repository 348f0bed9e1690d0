//! The dashboard's short history: every container's stats and every route's
//! request counts, sampled each `admin.stats_interval` and kept for
//! `admin.stats_history` in fixed-size rings. Memory is bounded: a
//! container sample is 48 bytes, so the default 360 samples are 17 KiB per
//! container (3.4 MiB for 200 containers); a route sample is 48 bytes too.
//! A container's ring goes when the container does.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::stats::CpuCounters;
use crate::engine::Stats;

/// A queue that forgets its oldest item beyond `cap`.
#[derive(Debug, Clone)]
pub struct Ring<T> {
    cap: usize,
    items: VecDeque<T>,
}

impl<T: Clone> Ring<T> {
    pub fn new(cap: usize) -> Ring<T> {
        Ring {
            cap: cap.max(1),
            items: VecDeque::with_capacity(cap.clamp(1, 64)),
        }
    }

    pub fn push(&mut self, item: T) {
        if self.items.len() == self.cap {
            self.items.pop_front();
        }
        self.items.push_back(item);
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }
}

/// One reading of a container.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StatSample {
    /// Unix seconds.
    pub t: u64,
    pub cpu_percent: f32,
    pub memory_used: u64,
    pub memory_limit: u64,
    /// Bytes received and sent since the container started.
    pub net_rx: u64,
    pub net_tx: u64,
}

/// The requests a route answered in one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficSample {
    pub t: u64,
    pub requests: u64,
    pub c2xx: u64,
    pub c3xx: u64,
    pub c4xx: u64,
    pub c5xx: u64,
}

struct Series {
    container: String,
    service: String,
    ring: Ring<StatSample>,
    /// The last reading's CPU counters: the next one's CPU % is counted
    /// from them.
    cpu: Option<CpuCounters>,
}

/// `GET /api/deployments/{name}/stats/history`.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatsHistory {
    pub interval_secs: u64,
    pub history_secs: u64,
    pub containers: Vec<ContainerHistory>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ContainerHistory {
    pub container: String,
    pub container_id: String,
    pub service: String,
    pub samples: Vec<StatSample>,
}

/// Route traffic over the kept history, per `host/path` (`""`: requests
/// that matched no route).
#[derive(Debug, Serialize, Deserialize)]
pub struct TrafficHistory {
    pub interval_secs: u64,
    pub history_secs: u64,
    pub routes: BTreeMap<String, Vec<TrafficSample>>,
}

/// One interval's traffic of every route that had some.
#[derive(Debug, Serialize, Deserialize)]
pub struct TrafficTick {
    pub t: u64,
    pub routes: BTreeMap<String, TrafficSample>,
}

pub struct Samples {
    pub interval: Duration,
    pub history: Duration,
    cap: usize,
    containers: Mutex<HashMap<String, Series>>,
    routes: Mutex<BTreeMap<String, Ring<TrafficSample>>>,
    /// The counters at the last tick; `None` before the first.
    totals: Mutex<Option<BTreeMap<String, [u64; 5]>>>,
}

impl Samples {
    pub fn new(interval: Duration, history: Duration) -> Samples {
        let cap = (history.as_millis() / interval.as_millis().max(1)).max(1) as usize;
        Samples {
            interval,
            history,
            cap,
            containers: Mutex::default(),
            routes: Mutex::default(),
            totals: Mutex::default(),
        }
    }

    /// A reading of container `id` at unix time `t`.
    pub fn record(
        &self,
        id: &str,
        container: &str,
        service: &str,
        t: u64,
        stats: &Stats,
        cpu: CpuCounters,
    ) {
        let mut all = self.containers.lock().unwrap_or_else(|e| e.into_inner());
        let s = all.entry(id.to_string()).or_insert_with(|| Series {
            container: container.to_string(),
            service: service.to_string(),
            ring: Ring::new(self.cap),
            cpu: None,
        });
        // The first reading has nothing to compare with: its CPU is the
        // engine's own (0 for a one-shot reading), so it is not kept.
        if let Some(before) = s.cpu {
            s.ring.push(StatSample {
                t,
                cpu_percent: cpu.percent_since(&before) as f32,
                memory_used: stats.memory_used,
                memory_limit: stats.memory_limit,
                net_rx: stats.net_rx,
                net_tx: stats.net_tx,
            });
        }
        s.container = container.to_string();
        s.cpu = Some(cpu);
    }

    /// Forgets the containers that are gone.
    pub fn retain(&self, ids: &HashSet<&str>) {
        let mut all = self.containers.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|id, _| ids.contains(id.as_str()));
    }

    /// The kept samples of these containers (by id) after unix time `since`.
    pub fn stats_history(&self, ids: &[&str], since: Option<u64>) -> StatsHistory {
        let all = self.containers.lock().unwrap_or_else(|e| e.into_inner());
        let containers = ids
            .iter()
            .filter_map(|id| {
                let s = all.get(*id)?;
                Some(ContainerHistory {
                    container: s.container.clone(),
                    container_id: id.to_string(),
                    service: s.service.clone(),
                    samples: s
                        .ring
                        .iter()
                        .filter(|x| since.is_none_or(|since| x.t > since))
                        .copied()
                        .collect(),
                })
            })
            .collect();
        StatsHistory {
            interval_secs: self.interval.as_secs().max(1),
            history_secs: self.history.as_secs(),
            containers,
        }
    }

    /// The request counters now (from [`crate::metrics::Metrics::request_totals`])
    /// → what each route answered since the last tick, kept and returned.
    /// The first tick only sets where counting starts.
    pub fn traffic_tick(&self, totals: BTreeMap<String, [u64; 5]>, t: u64) -> TrafficTick {
        let mut last = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        let mut tick = TrafficTick {
            t,
            routes: BTreeMap::new(),
        };
        if let Some(before) = last.as_ref() {
            let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
            for (route, now) in &totals {
                let was = before.get(route).copied().unwrap_or_default();
                let d = |i: usize| now[i].saturating_sub(was[i]);
                let sample = TrafficSample {
                    t,
                    requests: d(0),
                    c2xx: d(1),
                    c3xx: d(2),
                    c4xx: d(3),
                    c5xx: d(4),
                };
                routes
                    .entry(route.clone())
                    .or_insert_with(|| Ring::new(self.cap))
                    .push(sample);
                if sample.requests > 0 {
                    tick.routes.insert(route.clone(), sample);
                }
            }
        }
        *last = Some(totals);
        tick
    }

    /// Every route's kept traffic.
    pub fn traffic(&self) -> TrafficHistory {
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        TrafficHistory {
            interval_secs: self.interval.as_secs().max(1),
            history_secs: self.history.as_secs(),
            routes: routes
                .iter()
                .map(|(k, r)| (k.clone(), r.iter().copied().collect()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(total: u64, system: u64) -> CpuCounters {
        CpuCounters {
            total,
            system,
            cpus: 2,
        }
    }

    #[test]
    fn rings_forget_the_oldest() {
        let mut r = Ring::new(3);
        for i in 0..5 {
            r.push(i);
        }
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), vec![2, 3, 4]);
    }

    #[test]
    fn cpu_is_counted_between_readings_and_history_is_bounded() {
        let s = Samples::new(Duration::from_secs(10), Duration::from_secs(30));
        let stats = Stats {
            memory_used: 5 << 20,
            memory_limit: 1 << 30,
            ..Stats::default()
        };
        s.record("a", "web-1", "p/web", 100, &stats, cpu(0, 0));
        assert!(s.stats_history(&["a"], None).containers[0]
            .samples
            .is_empty());
        // 1,000 of 4,000 host nanoseconds on a 2-core host: 50 %.
        s.record("a", "web-1", "p/web", 110, &stats, cpu(1_000, 4_000));
        for t in [120, 130, 140, 150] {
            s.record("a", "web-1", "p/web", t, &stats, cpu(1_000, 4_000 + t));
        }
        let h = s.stats_history(&["a", "gone"], None);
        assert_eq!(h.containers.len(), 1);
        let got: Vec<(u64, f32)> = h.containers[0]
            .samples
            .iter()
            .map(|x| (x.t, x.cpu_percent))
            .collect();
        assert_eq!(got, vec![(130, 0.0), (140, 0.0), (150, 0.0)], "3 kept");
        let h = s.stats_history(&["a"], Some(140));
        assert_eq!(h.containers[0].samples.len(), 1);
        assert_eq!(h.containers[0].samples[0].memory_used, 5 << 20);

        let s = Samples::new(Duration::from_secs(10), Duration::from_secs(30));
        s.record("a", "web-1", "p/web", 100, &stats, cpu(0, 0));
        s.record("a", "web-1", "p/web", 110, &stats, cpu(1_000, 4_000));
        let h = s.stats_history(&["a"], None);
        assert_eq!(h.containers[0].samples[0].cpu_percent, 50.0);
        s.retain(&HashSet::new());
        assert!(s.stats_history(&["a"], None).containers.is_empty());
    }

    #[test]
    fn traffic_is_counted_per_interval_from_the_second_tick() {
        let s = Samples::new(Duration::from_secs(1), Duration::from_secs(60));
        let totals = |n: u64, errors: u64| {
            BTreeMap::from([("a.test/".to_string(), [n + errors, n, 0, 0, errors])])
        };
        assert!(s.traffic_tick(totals(100, 0), 1).routes.is_empty());
        let tick = s.traffic_tick(totals(150, 2), 2);
        assert_eq!(
            tick.routes["a.test/"],
            TrafficSample {
                t: 2,
                requests: 52,
                c2xx: 50,
                c3xx: 0,
                c4xx: 0,
                c5xx: 2
            }
        );
        // A quiet interval is kept (a zero on the chart) but not sent.
        assert!(s.traffic_tick(totals(150, 2), 3).routes.is_empty());
        let h = s.traffic();
        assert_eq!(
            h.routes["a.test/"]
                .iter()
                .map(|x| x.requests)
                .collect::<Vec<_>>(),
            vec![52, 0]
        );
    }
}
