//! Prometheus metrics. Counters and histograms the proxy updates per request
//! live in [`Metrics`]; the rest (backend states, Docker sync, deploys,
//! certificates, DNS) is read from the snapshot and the other services at
//! scrape time, so it can never drift from what berth actually holds.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::deploy::Record;
use crate::dns::DnsCounters;
use crate::plan::Snapshot;
use crate::tls::acme::HostStatus;
use crate::world::BackendState;

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    connect_errors: IntCounterVec,
    retries: IntCounterVec,
}

const NO_LABELS: &[&str] = &[];

/// Latency buckets (seconds): 1 ms to 30 s.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "berth_http_requests_total",
                "HTTP requests answered, by route (host + path prefix, empty: no route) and status class",
            ),
            &["route", "code"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "berth_http_request_duration_seconds",
                "Time from the request to the end of the response, by route",
            )
            .buckets(BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let connect_errors = IntCounterVec::new(
            Opts::new(
                "berth_upstream_connect_errors_total",
                "Failed connections to a replica, by route",
            ),
            &["route"],
        )
        .expect("valid metric");
        let retries = IntCounterVec::new(
            Opts::new(
                "berth_upstream_retries_total",
                "Requests sent again to another replica, by route",
            ),
            &["route"],
        )
        .expect("valid metric");
        for m in [&requests, &connect_errors, &retries] {
            registry
                .register(Box::new(m.clone()))
                .expect("metric registered once");
        }
        registry
            .register(Box::new(duration.clone()))
            .expect("metric registered once");
        Metrics {
            registry,
            requests,
            duration,
            connect_errors,
            retries,
        }
    }

    /// One finished request.
    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        let code = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "none",
        };
        self.requests.with_label_values(&[route, code]).inc();
        self.duration.with_label_values(&[route]).observe(seconds);
    }

    /// Requests answered so far per route (empty: no route): all of them,
    /// then by status class 2xx, 3xx, 4xx, 5xx.
    pub fn request_totals(&self) -> BTreeMap<String, [u64; 5]> {
        use prometheus::core::Collector;
        let mut out: BTreeMap<String, [u64; 5]> = BTreeMap::new();
        for family in self.requests.collect() {
            for m in family.get_metric() {
                let (mut route, mut code) = ("", "");
                for l in m.get_label() {
                    match l.name() {
                        "route" => route = l.value(),
                        "code" => code = l.value(),
                        _ => {}
                    }
                }
                let n = m.get_counter().get_value() as u64;
                let e = out.entry(route.to_string()).or_default();
                e[0] += n;
                match code {
                    "2xx" => e[1] += n,
                    "3xx" => e[2] += n,
                    "4xx" => e[3] += n,
                    "5xx" => e[4] += n,
                    _ => {}
                }
            }
        }
        out
    }

    pub fn connect_error(&self, route: &str) {
        self.connect_errors.with_label_values(&[route]).inc();
    }

    pub fn retry(&self, route: &str) {
        self.retries.with_label_values(&[route]).inc();
    }

    /// The text exposition: the per-request metrics, then what is read from
    /// the rest of berth now.
    pub fn render(&self, now: &Scrape<'_>) -> String {
        let mut families = self.registry.gather();
        families.extend(scrape_time(now).gather());
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&families, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// What the scrape-time metrics are read from.
pub struct Scrape<'a> {
    pub snapshot: &'a Snapshot,
    pub deploys: &'a [Record],
    pub certs: &'a [HostStatus],
    pub dns: Option<&'a DnsCounters>,
    pub autoscale: &'a [crate::deploy::scaler::ScaleView],
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

fn int_gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

fn scrape_time(now: &Scrape<'_>) -> Registry {
    let r = Registry::new();
    routing(&r, now.snapshot);
    engine(&r, now.snapshot);
    history(&r, now);
    autoscale(&r, now.autoscale);
    r
}

/// Autoscaled services: the replicas autoscaling wants, and those running.
fn autoscale(r: &Registry, services: &[crate::deploy::scaler::ScaleView]) {
    if services.is_empty() {
        return;
    }
    let desired = int_gauge(
        r,
        "berth_autoscale_desired_replicas",
        "Replicas autoscaling wants per service",
        &["service"],
    );
    let actual = int_gauge(
        r,
        "berth_autoscale_replicas",
        "Replicas running per autoscaled service",
        &["service"],
    );
    for s in services {
        desired
            .with_label_values(&[&s.service])
            .set(i64::from(s.desired));
        actual
            .with_label_values(&[&s.service])
            .set(i64::from(s.replicas));
    }
}

/// Backends by state, in-flight requests, routes, problems.
fn routing(r: &Registry, s: &Snapshot) {
    let backends = int_gauge(
        r,
        "berth_backends",
        "Routed containers by backend state",
        &["state"],
    );
    let mut by_state: BTreeMap<&str, i64> =
        BackendState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for b in s.backends.values() {
        *by_state.entry(b.state.as_str()).or_default() += 1;
    }
    for (state, n) in by_state {
        backends.with_label_values(&[state]).set(n);
    }
    let inflight = int_gauge(
        r,
        "berth_backend_inflight_requests",
        "Requests in flight to each routed container",
        &["container"],
    );
    for b in s.backends.values() {
        inflight
            .with_label_values(&[&b.name])
            .set(b.stats.inflight.load(Ordering::Relaxed) as i64);
    }
    let routes = int_gauge(r, "berth_routes", "Routes in the routing table", &[]);
    routes
        .with_label_values(NO_LABELS)
        .set(s.table.len() as i64);
    let problems = int_gauge(r, "berth_label_problems", "Label problems now", &[]);
    problems
        .with_label_values(NO_LABELS)
        .set(s.problems.len() as i64);
}

/// The watcher's view of the engine, and snapshots published.
fn engine(r: &Registry, s: &Snapshot) {
    let docker = int_gauge(
        r,
        "berth_docker_synced",
        "1 once the engine was listed since start",
        &[],
    );
    docker
        .with_label_values(NO_LABELS)
        .set(s.docker.synced as i64);
    let connected = int_gauge(
        r,
        "berth_docker_connected",
        "1 while the event stream is up",
        &[],
    );
    connected
        .with_label_values(NO_LABELS)
        .set(s.docker.connected as i64);
    if let Some(t) = s.docker.last_sync_unix {
        let g = gauge(
            r,
            "berth_docker_last_sync_timestamp_seconds",
            "When the engine was last listed in full",
            &[],
        );
        g.with_label_values(NO_LABELS).set(t as f64);
    }
    if let Some(us) = s.docker.last_event_lag_us {
        let g = gauge(
            r,
            "berth_docker_event_lag_seconds",
            "Docker event to snapshot published, for the last event",
            &[],
        );
        g.with_label_values(NO_LABELS).set(us as f64 / 1e6);
    }
    let generation = int_gauge(
        r,
        "berth_snapshot_generation",
        "Snapshots published since start",
        &[],
    );
    generation
        .with_label_values(NO_LABELS)
        .set(s.generation as i64);
}

/// Deploys, certificates and DNS queries.
fn history(r: &Registry, now: &Scrape<'_>) {
    let deploys = int_gauge(
        r,
        "berth_deploys",
        "Rollouts, scale runs and restarts in the recent history, by kind and status",
        &["kind", "status"],
    );
    for d in now.deploys {
        deploys
            .with_label_values(&[d.kind.as_str(), d.status.as_str()])
            .inc();
    }

    if !now.certs.is_empty() {
        let expiry = gauge(
            r,
            "berth_certificate_expiry_timestamp_seconds",
            "When each host's certificate expires (unix time; 0: none yet)",
            &["host"],
        );
        let failures = int_gauge(
            r,
            "berth_certificate_order_failures",
            "Failed ACME orders in a row per host",
            &["host"],
        );
        for c in now.certs {
            expiry
                .with_label_values(&[&c.host])
                .set(c.valid_until.unwrap_or(0) as f64);
            failures
                .with_label_values(&[&c.host])
                .set(c.failures as i64);
        }
    }

    if let Some(d) = now.dns {
        let q = IntCounterVec::new(
            Opts::new("berth_dns_queries_total", "DNS queries by result"),
            &["result"],
        )
        .expect("valid metric");
        r.register(Box::new(q.clone()))
            .expect("metric registered once");
        let v = d.view();
        for (k, n) in [
            ("answered", v.answered),
            ("nodata", v.nodata),
            ("nxdomain", v.nxdomain),
            ("forwarded", v.forwarded),
            ("refused", v.refused),
            ("failed", v.failed),
        ] {
            q.with_label_values(&[k]).inc_by(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_scrape_time_families_render() {
        let m = Metrics::new();
        m.request("a.test/", 200, 0.003);
        m.request("a.test/", 503, 0.001);
        m.request("", 404, 0.0005);
        m.connect_error("a.test/");
        let snap = Snapshot::default();
        let scaled = crate::deploy::scaler::ScaleView {
            service: "p/web".into(),
            min: 1,
            max: 3,
            cpu: Some(50.0),
            memory: None,
            requests: None,
            interval_secs: 15.0,
            out_samples: 3,
            cooldown_secs: 300.0,
            replicas: 1,
            desired: 2,
            figures: Default::default(),
            recent: vec![],
            state: "scaling".into(),
            decisions: vec![],
        };
        let text = m.render(&Scrape {
            snapshot: &snap,
            deploys: &[],
            certs: &[],
            dns: Some(&DnsCounters::default()),
            autoscale: &[scaled],
        });
        assert!(text.contains(r#"berth_autoscale_desired_replicas{service="p/web"} 2"#));
        assert!(text.contains(r#"berth_autoscale_replicas{service="p/web"} 1"#));
        assert!(
            text.contains(r#"berth_http_requests_total{code="2xx",route="a.test/"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"berth_http_requests_total{code="4xx",route=""} 1"#));
        assert!(text.contains(
            r#"berth_http_request_duration_seconds_bucket{route="a.test/",le="0.005"} 2"#
        ));
        assert!(text.contains(r#"berth_upstream_connect_errors_total{route="a.test/"} 1"#));
        assert!(text.contains(r#"berth_backends{state="ready"} 0"#));
        assert!(text.contains("berth_docker_synced 0"));
        assert!(text.contains(r#"berth_dns_queries_total{result="answered"} 0"#));
    }
}
