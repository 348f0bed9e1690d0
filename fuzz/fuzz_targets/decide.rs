//! A request's target and Host header → `proxy::decide::decide` on a
//! snapshot the planner built (static routes, a wildcard, nested path
//! prefixes, a service with nothing ready, one with `tls=off`).
//!
//! Input: one byte choosing the listener (`0` HTTP with HTTPS on 8443, `1`
//! HTTP with HTTPS on 443, `2` HTTP without HTTPS, `3` the HTTPS listener,
//! `4` HTTP with `tls.redirect: false`), the request target up to the first
//! newline, then the Host header's bytes (none without a newline).
//!
//! `decide` never panics, a route it picks matches the host and the path,
//! and a redirect stays on the host the route answered for.
#![no_main]

use std::sync::{Arc, OnceLock};

use berth::config::Config;
use berth::names::{normalize_host, HostPattern};
use berth::plan::{Planner, Route, Snapshot};
use berth::proxy::decide::{decide, Decision, HostField, RequestLine};
use berth::tls::store::self_signed;
use berth::tls::{CertStore, Challenges, Https, CHALLENGE_PREFIX};
use berth::world::{Container, NetAddress, Signals, World};
use http::header::HeaderValue;
use http::Uri;
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = "
tls:
  redirect: REDIRECT
routes:
  - host: secure.test, nocert.test, 127.0.0.1
    backends: [127.0.0.1:9000]
  - host: \"*.wild.test\"
    backends: [127.0.0.1:9001]
  - host: api.test
    path: /api
    backends: [127.0.0.1:9002]
  - host: api.test
    path: /api/v1/
    backends: [127.0.0.1:9003]
  - host: api.test
    backends: [127.0.0.1:9004]
";

struct Rig {
    /// `tls.redirect` on, off.
    snapshots: [Snapshot; 2],
    /// HTTPS on 8443, on 443.
    https: [Https; 2],
}

fn container(name: &str, ip: u8, health: &str, labels: &[(&str, &str)]) -> Container {
    let ip = std::net::IpAddr::from([10, 0, 0, ip]);
    Container {
        id: format!("{name}-0123456789abcdef"),
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        status: "running".into(),
        health: Some(health.into()),
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

fn snapshot(redirect: bool) -> Snapshot {
    let yaml = CONFIG.replace("REDIRECT", if redirect { "true" } else { "false" });
    let config = Config::parse(&yaml, "decide.yaml").expect("the rig's config parses");
    let world: World = [
        container(
            "plain-1",
            2,
            "healthy",
            &[("berth.host", "plain.test"), ("berth.tls", "off")],
        ),
        container("down-1", 3, "starting", &[("berth.host", "down.test")]),
    ]
    .into_iter()
    .map(|c| (c.id.clone(), c))
    .collect();
    Planner::new(Arc::new(config)).build(&world, &Signals::default())
}

fn https(port: u16) -> Https {
    let store = CertStore::new(self_signed("berth.invalid").expect("a certificate"));
    for name in [
        "secure.test",
        "plain.test",
        "*.wild.test",
        "api.test",
        "127.0.0.1",
    ] {
        store.set(name, Some(self_signed(name).expect("a certificate")));
    }
    let challenges = Challenges::default();
    challenges
        .lock()
        .expect("not poisoned")
        .insert("tok".into(), "tok.key".into());
    Https {
        store: Arc::new(store),
        challenges,
        port,
    }
}

fn rig() -> &'static Rig {
    static RIG: OnceLock<Rig> = OnceLock::new();
    RIG.get_or_init(|| Rig {
        snapshots: [snapshot(true), snapshot(false)],
        https: [https(8443), https(443)],
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let rig = rig();
    let (snapshot, https, tls_listener) = match mode.wrapping_sub(b'0') % 5 {
        0 => (&rig.snapshots[0], Some(&rig.https[0]), false),
        1 => (&rig.snapshots[0], Some(&rig.https[1]), false),
        2 => (&rig.snapshots[0], None, false),
        3 => (&rig.snapshots[0], Some(&rig.https[0]), true),
        _ => (&rig.snapshots[1], Some(&rig.https[0]), false),
    };
    let (target, host) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    // What Pingora hands over: a target `http::Uri` takes (else a 400
    // before berth sees it), a header value `http` takes.
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let header = match host.map(HeaderValue::from_bytes) {
        Some(Err(_)) => return,
        Some(Ok(v)) => Some(v),
        None => None,
    };
    // proxy/mod.rs `request_host`: the URI's authority, else the Host header.
    let field = match (uri.host(), &header) {
        (Some(h), _) => HostField::Given(h),
        (None, Some(v)) => v.to_str().map_or(HostField::Unreadable, HostField::Given),
        (None, None) => HostField::Missing,
    };
    let req = RequestLine {
        host: field,
        path: uri.path(),
        path_and_query: uri.path_and_query().map_or("/", |p| p.as_str()),
    };
    let decision = decide(snapshot, https, tls_listener, &req);
    check(&decision, &req, https.is_some() && !tls_listener, snapshot);
});

fn check(d: &Decision, req: &RequestLine<'_>, plain_with_https: bool, snapshot: &Snapshot) {
    match d {
        Decision::Challenge(_) => {
            assert!(plain_with_https, "a challenge answered where there is none");
            assert!(req.path.starts_with(CHALLENGE_PREFIX));
        }
        Decision::NoHost => assert_eq!(req.host, HostField::Missing),
        Decision::BadHost(why) => assert!(!why.is_empty()),
        Decision::NoRoute => {}
        Decision::NotReady(r) => {
            assert!(r.backends.is_empty(), "503 with backends ready");
            check_route(r, req);
        }
        Decision::Proxy(r) => {
            assert!(!r.backends.is_empty(), "proxied to no backend");
            check_route(r, req);
        }
        Decision::Redirect(to) => {
            assert!(plain_with_https && snapshot.settings.redirect);
            let host = req
                .host
                .as_str()
                .expect("a redirect for a request with a host");
            let host = normalize_host(host);
            assert!(
                HeaderValue::from_str(to).is_ok(),
                "Location {to:?} is no header value"
            );
            // Where a browser goes: the host the route answered for.
            let uri: Uri = to
                .parse()
                .unwrap_or_else(|e| panic!("Location {to:?}: {e}"));
            assert_eq!(uri.scheme_str(), Some("https"), "{to:?}");
            assert_eq!(uri.host(), Some(&*host), "Location {to:?} leaves {host:?}");
        }
    }
}

/// The route answers for the request's host and path.
fn check_route(r: &Route, req: &RequestLine<'_>) {
    let host = req
        .host
        .as_str()
        .expect("a route for a request with a host");
    let host = normalize_host(host);
    // A hostname (as a route's own host is), one label more for a wildcard.
    assert_eq!(
        HostPattern::parse(&host),
        Ok(HostPattern::Exact(host.to_string())),
        "route {} for {host:?}, which is no hostname",
        r.host
    );
    let matches = match &r.host {
        HostPattern::Exact(h) => *h == host,
        HostPattern::Wildcard(suffix) => host
            .split_once('.')
            .is_some_and(|(_, parent)| parent == suffix),
    };
    assert!(matches, "route {} for host {host:?}", r.host);
    assert!(
        r.prefix.matches(req.path),
        "route {}{} for {:?}",
        r.host,
        r.prefix,
        req.path
    );
}
