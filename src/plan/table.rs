//! The routing table the proxy reads on every request: host + path → route.
//! Built off the request path by the planner; lookups take no lock and
//! allocate only for a Host header that needs lowercasing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::names::{normalize_host, HostMap, HostPattern, PathPrefix};
use crate::policy::mode::ServiceMode;
use crate::policy::RoutePolicy;

#[derive(Debug, Clone)]
pub struct Backend {
    pub addr: SocketAddr,
    /// Container name, or `static` for config routes.
    pub name: Arc<str>,
    /// Container id, or `static:<addr>`.
    pub id: Arc<str>,
    /// Shared by every snapshot, so counts survive rebuilds.
    pub stats: Arc<BackendStats>,
    /// What a sticky cookie names it by: a hash of its id, stable across
    /// snapshots and berth restarts, that does not show the id.
    pub token: u64,
    /// A canary replica: its share of the route's traffic, in percent.
    pub canary: Option<u32>,
}

impl Backend {
    pub fn new(
        addr: SocketAddr,
        name: Arc<str>,
        id: Arc<str>,
        stats: Arc<BackendStats>,
    ) -> Backend {
        Backend {
            token: sticky_token(&id),
            canary: None,
            addr,
            name,
            id,
            stats,
        }
    }
}

/// FNV-1a of a backend id: the same in every berth process.
fn sticky_token(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl PartialEq for Backend {
    fn eq(&self, other: &Self) -> bool {
        self.addr == other.addr && self.name == other.name
    }
}

/// Live counters of one backend, written by the proxy.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Requests between backend choice and the end of the response.
    pub inflight: AtomicUsize,
    /// Requests sent to it, on every route: what autoscaling on requests
    /// per second reads.
    pub picked: AtomicU64,
    /// Connect failures since the last success.
    pub connect_failures: AtomicU32,
    /// Answers, 5xx answers and response times by bucket
    /// ([`crate::deploy::canary::BUCKETS_MS`]): counted on routes with a
    /// canary only, for its verdict.
    pub answered: AtomicU64,
    pub errors: AtomicU64,
    pub latency: [AtomicU64; 16],
}

impl BackendStats {
    pub fn record(&self, status: u16, elapsed: std::time::Duration) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        if status >= 500 || status == 0 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency[crate::deploy::canary::bucket(elapsed)].fetch_add(1, Ordering::Relaxed);
    }

    /// Answers, 5xx answers, and the latency counts, now.
    pub fn figures(&self) -> (u64, u64, [u64; 16]) {
        let mut latency = [0u64; 16];
        for (out, c) in latency.iter_mut().zip(&self.latency) {
            *out = c.load(Ordering::Relaxed);
        }
        (
            self.answered.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            latency,
        )
    }
}

#[derive(Debug)]
pub struct Route {
    pub host: HostPattern,
    pub prefix: PathPrefix,
    /// Ready backends only; empty means "known, nothing ready" (503).
    pub backends: Vec<Backend>,
    /// Round-robin position; shared across snapshots so membership changes
    /// don't reset the rotation.
    pub next: Arc<AtomicUsize>,
    /// HTTPS wanted (not `tls=off`): redirected there once a certificate exists.
    pub tls: bool,
    /// `host` + `prefix`, as metrics name the route (made once per snapshot,
    /// not per request).
    pub label: Arc<str>,
    /// Its policies from labels; `None` for a route without any.
    pub policy: Option<Arc<RoutePolicy>>,
    /// Maintenance or pause of a service routed here.
    pub mode: Option<Arc<ServiceMode>>,
    /// A canary among the backends: they come after the stable ones.
    pub canary: Option<CanarySplit>,
}

/// How a route with a canary splits its traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CanarySplit {
    /// The canary's share, in percent.
    pub percent: u32,
    /// `backends[..stable]` are the stable ones, the rest the canary.
    pub stable: usize,
    /// Tells this canary's cookies from an earlier one's: a hash of its
    /// first replica's id.
    pub generation: u32,
}

impl Route {
    /// The backend for the `attempt`-th try of a request whose first pick was
    /// `start`: retries walk on round the ring (the caller bounds attempts).
    pub fn backend(&self, start: usize, attempt: usize) -> Option<&Backend> {
        let n = self.backends.len();
        if n == 0 {
            return None;
        }
        self.backends.get(start.wrapping_add(attempt) % n)
    }

    pub fn start(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// The position of the backend a sticky cookie names, if it is in
    /// rotation.
    pub fn sticky(&self, token: u64) -> Option<usize> {
        self.backends.iter().position(|b| b.token == token)
    }

    pub fn specificity(&self) -> Specificity {
        Specificity {
            exact_host: matches!(self.host, HostPattern::Exact(_)),
            prefix_len: self.prefix.len(),
        }
    }
}

/// Which of two matching routes wins: an exact host beats a wildcard, then a
/// longer path prefix beats a shorter one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Specificity {
    pub exact_host: bool,
    pub prefix_len: usize,
}

/// Routes by host, each host's list most specific first.
#[derive(Debug, Default)]
pub struct RouteTable {
    hosts: HostMap<Vec<Arc<Route>>>,
}

impl RouteTable {
    pub fn new(routes: impl IntoIterator<Item = Route>) -> RouteTable {
        let mut hosts: HostMap<Vec<Arc<Route>>> = HostMap::default();
        for r in routes {
            hosts.entry(&r.host).push(Arc::new(r));
        }
        for list in hosts.values_mut() {
            list.sort_by_key(|r| std::cmp::Reverse(r.specificity()));
        }
        RouteTable { hosts }
    }

    /// The most specific route for a Host header value (any case, with or
    /// without port) and a request path: the exact host's routes, then the
    /// wildcard's, the longest matching prefix of each.
    pub fn find(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        let host = normalize_host(host);
        let found = self
            .hosts
            .candidates(&host)
            .find_map(|list| list.iter().find(|r| r.prefix.matches(path)));
        found
    }

    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.hosts.values().flatten()
    }

    pub fn len(&self) -> usize {
        self.routes().count()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: &str, prefix: &str, port: u16) -> Route {
        Route {
            host: HostPattern::parse(host).unwrap(),
            prefix: PathPrefix::parse(prefix).unwrap(),
            backends: vec![Backend::new(
                SocketAddr::from(([127, 0, 0, 1], port)),
                Arc::from(format!("{host}{prefix}")),
                Arc::from(format!("{host}{prefix}")),
                Arc::default(),
            )],
            next: Arc::default(),
            tls: true,
            label: Arc::from(format!("{host}{prefix}")),
            policy: None,
            mode: None,
            canary: None,
        }
    }

    fn port(t: &RouteTable, host: &str, path: &str) -> Option<u16> {
        t.find(host, path).map(|r| r.backends[0].addr.port())
    }

    #[test]
    fn precedence_is_an_order() {
        let exact_root = Specificity {
            exact_host: true,
            prefix_len: 1,
        };
        let exact_api = Specificity {
            exact_host: true,
            prefix_len: 4,
        };
        let wild_long = Specificity {
            exact_host: false,
            prefix_len: 20,
        };
        assert!(exact_root > wild_long, "exact host beats any wildcard");
        assert!(exact_api > exact_root, "longer prefix beats shorter");
        let mut v = vec![wild_long, exact_root, exact_api];
        v.sort();
        assert_eq!(v, vec![wild_long, exact_root, exact_api]);
    }

    #[test]
    fn exact_then_wildcard_then_longest_prefix() {
        let t = RouteTable::new([
            route("a.test", "/", 1),
            route("a.test", "/api", 2),
            route("a.test", "/api/v2", 3),
            route("*.test", "/", 4),
            route("*.test", "/static", 5),
        ]);
        assert_eq!(port(&t, "a.test", "/"), Some(1));
        assert_eq!(port(&t, "a.test", "/api/users"), Some(2));
        assert_eq!(port(&t, "a.test", "/api/v2/x"), Some(3));
        assert_eq!(port(&t, "a.test", "/apix"), Some(1));
        assert_eq!(port(&t, "b.test", "/static/a.css"), Some(5));
        assert_eq!(port(&t, "b.test", "/"), Some(4));
        assert_eq!(
            port(&t, "x.y.test", "/"),
            None,
            "a wildcard covers one label"
        );
        assert_eq!(port(&t, "other", "/"), None);
    }

    #[test]
    fn exact_host_without_matching_path_falls_back_to_wildcard() {
        let t = RouteTable::new([route("a.test", "/api", 1), route("*.test", "/", 2)]);
        assert_eq!(port(&t, "a.test", "/api"), Some(1));
        assert_eq!(port(&t, "a.test", "/"), Some(2));
    }

    #[test]
    fn host_header_forms() {
        let t = RouteTable::new([route("a.test", "/", 1)]);
        for h in ["a.test", "A.Test", "a.test:8080", "a.test.", "A.TEST.:80"] {
            assert_eq!(port(&t, h, "/"), Some(1), "{h}");
        }
    }

    #[test]
    fn retries_walk_the_ring() {
        let mut r = route("a.test", "/", 1);
        r.backends.push(route("b", "/", 2).backends.remove(0));
        r.backends.push(route("c", "/", 3).backends.remove(0));
        let ports: Vec<u16> = (0..4)
            .filter_map(|a| r.backend(1, a))
            .map(|b| b.addr.port())
            .collect();
        assert_eq!(ports, vec![2, 3, 1, 2]);
        r.backends.clear();
        assert!(r.backend(0, 0).is_none());
    }
}
