//! Container labels → `labels::parse` → the planner's snapshot.
//!
//! Input: text, one `key=value` label a line (`\n` in a key or value stands
//! for a newline); a line `---` starts the next label set of the same compose
//! service, planned by the same `Planner` (so the last-good fallback runs).
//! Beside it, a second service with good labels must keep its route whatever
//! the fuzzed one says.
#![no_main]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use berth::config::Config;
use berth::labels::{self, LabelSpec};
use berth::labels::{valid_route_name, CONTAINER_KEYS};
use berth::names::HostPattern;
use berth::plan::{Planner, Snapshot};
use berth::world::{CheckState, Container, NetAddress, Signals, World};
use libfuzzer_sys::fuzz_target;

const PREFIX: &str = "berth";
const FUZZED_IP: [u8; 4] = [10, 0, 0, 2];
const OTHER_IP: [u8; 4] = [10, 0, 0, 9];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut planner = Planner::new(Arc::new(Config::default()));
    let mut last_good: Option<LabelSpec> = None;
    for step in text.split("\n---\n").take(8) {
        let labels = label_map(step);
        let (spec, problems) = labels::parse(PREFIX, &labels);
        check_spec(&spec, &problems);
        if problems.is_empty() {
            last_good = Some(spec.clone());
        }
        let (world, signals) = world(labels);
        let snapshot = planner.build(&world, &signals);
        check_snapshot(&snapshot, &spec, problems.is_empty(), last_good.as_ref());
    }
});

fn unescape(s: &str) -> String {
    s.replace("\\n", "\n")
}

fn label_map(step: &str) -> HashMap<String, String> {
    step.lines()
        .take(64)
        .map(|line| match line.split_once('=') {
            Some((k, v)) => (unescape(k), unescape(v)),
            None => (unescape(line), String::new()),
        })
        .collect()
}

/// The parse on its own: what a route holds is normalised and in range, and
/// a route with a problem is left out, never served on defaults.
fn check_spec(spec: &LabelSpec, problems: &[labels::LabelProblem]) {
    if !spec.enabled {
        assert!(spec.routes.is_empty(), "a disabled container has routes");
    }
    for r in &spec.routes {
        assert!(!r.hosts.is_empty());
        for h in &r.hosts {
            assert_normalized(h);
        }
        assert!(r.port != Some(0), "port 0 accepted");
        let p = r.path.as_str();
        assert!(
            p.starts_with('/') && !p.chars().any(char::is_control),
            "path {p:?}"
        );
    }
    for p in problems {
        assert!(!p.message.is_empty(), "a problem without a message: {p:?}");
        // Values from outside are kept as bounded excerpts.
        assert!(
            p.key.chars().count() <= 240 && p.value.chars().count() <= 240,
            "{p:?}"
        );
        // Where the excerpt cut the key, the route it names is unknown.
        let Some(rest) = p.key.strip_prefix("berth.") else {
            panic!("a problem for a label outside the prefix: {p:?}");
        };
        if p.key.contains("… (") {
            continue;
        }
        if CONTAINER_KEYS.contains(&rest) {
            assert!(
                spec.routes.is_empty(),
                "{p:?} left routes {:?}",
                spec.routes
            );
            continue;
        }
        let name = rest.split_once('.').map_or("", |(n, _)| n);
        if name.is_empty() || valid_route_name(name) {
            assert!(
                spec.routes.iter().all(|r| r.name != name),
                "route {name:?} kept despite {p:?}"
            );
        } else {
            assert!(
                spec.routes.is_empty(),
                "{p:?} left routes {:?}",
                spec.routes
            );
        }
    }
}

fn assert_normalized(h: &HostPattern) {
    let shown = h.to_string();
    assert_eq!(shown, shown.to_ascii_lowercase(), "host not lowercase");
    assert!(!shown.ends_with('.') && !shown.is_empty(), "host {shown:?}");
    assert_eq!(
        HostPattern::parse(&shown).as_ref(),
        Ok(h),
        "host {shown:?} does not parse back to itself"
    );
}

fn container(name: &str, ip: [u8; 4], labels: HashMap<String, String>) -> Container {
    let ip = IpAddr::from(ip);
    Container {
        id: format!("{name}-0123456789abcdef"),
        name: name.into(),
        image: "img".into(),
        labels,
        status: "running".into(),
        started_at: "t0".into(),
        stop_signal: 15,
        networks: [("net".to_string(), Some(ip))].into(),
        exposed_ports: vec![8080],
        addresses: vec![NetAddress {
            network: "net".into(),
            ip,
            prefix: 24,
        }],
        ..Default::default()
    }
}

/// The fuzzed container (compose service `fz/web`) and a good one
/// (`fz/other`), both running and past every check.
fn world(mut labels: HashMap<String, String>) -> (World, Signals) {
    labels.insert("com.docker.compose.project".into(), "fz".into());
    labels.insert("com.docker.compose.service".into(), "web".into());
    let other: HashMap<String, String> = [
        ("berth.host", "other.test"),
        ("com.docker.compose.project", "fz"),
        ("com.docker.compose.service", "other"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut signals = Signals::default();
    let mut world = World::new();
    for c in [
        container("fz-web-1", FUZZED_IP, labels),
        container("fz-other-1", OTHER_IP, other),
    ] {
        let passed = CheckState {
            started_at: c.started_at.clone(),
            healthy: true,
            ever_healthy: true,
            ok_streak: 1,
            ..Default::default()
        };
        signals.checks.insert(c.id.clone(), passed);
        world.insert(c.id.clone(), c);
    }
    (world, signals)
}

fn check_snapshot(s: &Snapshot, spec: &LabelSpec, clean: bool, last_good: Option<&LabelSpec>) {
    // No label of one service touches another's route.
    let other = SocketAddr::from((OTHER_IP, 8080));
    let found = s
        .table
        .find("other.test", "/")
        .expect("other.test lost its route");
    assert!(
        found.backends.iter().any(|b| b.addr == other),
        "other.test lost its backend: {found:?}"
    );
    for r in s.table.routes() {
        assert_normalized(&r.host);
        assert!(r.prefix.as_str().starts_with('/'));
    }
    // What is served for the fuzzed service: its labels when clean, else
    // the last clean ones.
    let served = if clean { Some(spec) } else { last_good };
    let Some(served) = served.filter(|s| s.enabled) else {
        return;
    };
    if served.network.as_deref().is_some_and(|n| n != "net") {
        return; // a problem of its own: not attached to that network
    }
    for r in &served.routes {
        let addr = SocketAddr::from((FUZZED_IP, r.port.unwrap_or(8080)));
        for h in &r.hosts {
            let host = match h {
                HostPattern::Exact(h) => h.clone(),
                HostPattern::Wildcard(suffix) => format!("zz-fuzz-probe.{suffix}"),
            };
            let found = s
                .table
                .find(&host, r.path.as_str())
                .unwrap_or_else(|| panic!("no route for {host} {} of {r:?}", r.path));
            assert!(
                found.backends.iter().any(|b| b.addr == addr),
                "{host}{} does not reach {addr}: {found:?}",
                r.path
            );
        }
    }
}
