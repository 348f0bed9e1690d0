//! What the proxy does with a request, decided from the snapshot and the TLS
//! settings alone: answer an ACME challenge, refuse (400/404/503), redirect to
//! HTTPS, or proxy to a route. No I/O; `request_filter` carries it out.

use std::sync::Arc;

use crate::names::{host_header_problem, normalize_host};
use crate::plan::{Route, Snapshot};
use crate::tls::Https;

/// The host a request names: the URI's authority (HTTP/2, absolute form),
/// else its Host header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostField<'a> {
    Missing,
    /// A Host header that is not visible ASCII (control or non-ASCII bytes).
    Unreadable,
    Given(&'a str),
}

impl<'a> HostField<'a> {
    pub fn as_str(self) -> Option<&'a str> {
        match self {
            HostField::Given(h) => Some(h),
            HostField::Missing | HostField::Unreadable => None,
        }
    }
}

/// The parts of a request the decision reads.
#[derive(Debug, Clone, Copy)]
pub struct RequestLine<'a> {
    pub host: HostField<'a>,
    pub path: &'a str,
    /// Path and query, for a redirect.
    pub path_and_query: &'a str,
}

#[derive(Debug)]
pub enum Decision {
    /// An ACME HTTP-01 request: the key authorization, or `None` for a token
    /// berth is not waiting for (404).
    Challenge(Option<String>),
    /// 400: the request names no host.
    NoHost,
    /// 400: the host it names is not one (why).
    BadHost(&'static str),
    /// 404: no route for the host.
    NoRoute,
    /// 503 with Retry-After: the route exists, no backend is ready.
    NotReady(Arc<Route>),
    /// 308 to this HTTPS URL.
    Redirect(String),
    /// To the route's ready backends.
    Proxy(Arc<Route>),
}

impl Decision {
    /// The route it is about: proxied to, or known with nothing ready.
    pub fn route(&self) -> Option<&Arc<Route>> {
        match self {
            Decision::Proxy(r) | Decision::NotReady(r) => Some(r),
            _ => None,
        }
    }
}

/// The decision for `req` arriving on the HTTP listener, or on the HTTPS one
/// when `tls_listener`.
pub fn decide(
    snapshot: &Snapshot,
    https: Option<&Https>,
    tls_listener: bool,
    req: &RequestLine<'_>,
) -> Decision {
    // ACME HTTP-01 is answered before routing, on the HTTP listener only.
    if let (Some(https), false) = (https, tls_listener) {
        if let Some(answer) = https.challenge(req.path) {
            return Decision::Challenge(answer);
        }
    }
    let host = match req.host {
        HostField::Given(h) => h,
        HostField::Missing => return Decision::NoHost,
        HostField::Unreadable => return Decision::BadHost("not ASCII text"),
    };
    if let Some(why) = host_header_problem(host) {
        return Decision::BadHost(why);
    }
    let Some(route) = snapshot.table.find(host, req.path) else {
        return Decision::NoRoute;
    };
    if route.backends.is_empty() {
        return Decision::NotReady(route.clone());
    }
    if let (Some(https), false) = (https, tls_listener) {
        // Plain HTTP to a route that wants HTTPS and has a certificate.
        if snapshot.settings.redirect
            && route.tls
            && https.store.lookup(&normalize_host(host)).is_some()
        {
            return Decision::Redirect(https.redirect_to(host, req.path_and_query));
        }
    }
    Decision::Proxy(route.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{HostPattern, PathPrefix};
    use crate::plan::{Backend, ProxySettings, RouteTable};
    use crate::tls::{store::self_signed, CertStore, Challenges};

    fn route(host: &str, ready: bool, tls: bool) -> Route {
        Route {
            host: HostPattern::parse(host).unwrap(),
            prefix: PathPrefix::root(),
            backends: ready
                .then(|| {
                    Backend::new(
                        ([127, 0, 0, 1], 9000).into(),
                        Arc::from("web-1"),
                        Arc::from("id"),
                        Arc::default(),
                    )
                })
                .into_iter()
                .collect(),
            next: Arc::default(),
            tls,
            label: Arc::from(host),
            policy: None,
            mode: None,
            canary: None,
        }
    }

    /// The HTTPS side, and whether `tls.redirect` is on.
    fn https(redirect: bool, port: u16) -> (Https, bool) {
        let store = CertStore::new(self_signed("berth.invalid").unwrap());
        store.set("secure.test", Some(self_signed("secure.test").unwrap()));
        store.set("plain.test", Some(self_signed("plain.test").unwrap()));
        let challenges = Challenges::default();
        challenges
            .lock()
            .unwrap()
            .insert("tok".into(), "tok.key".into());
        let https = Https {
            store: Arc::new(store),
            challenges,
            port,
        };
        (https, redirect)
    }

    fn word(d: &Decision) -> String {
        match d {
            Decision::Challenge(Some(k)) => format!("challenge {k}"),
            Decision::Challenge(None) => "challenge 404".into(),
            Decision::NoHost => "400".into(),
            Decision::BadHost(why) => format!("400 {why}"),
            Decision::NoRoute => "404".into(),
            Decision::NotReady(r) => format!("503 {}", r.host),
            Decision::Redirect(to) => format!("308 {to}"),
            Decision::Proxy(r) => format!("proxy {}", r.host),
        }
    }

    #[test]
    fn decisions_by_table() {
        let snap = |redirect: bool| Snapshot {
            table: RouteTable::new([
                route("secure.test", true, true),
                route("plain.test", true, false),
                route("nocert.test", true, true),
                route("down.test", false, true),
            ]),
            settings: Arc::new(ProxySettings {
                redirect,
                ..ProxySettings::default()
            }),
            ..Snapshot::default()
        };
        let on = https(true, 8443);
        let std_port = https(true, 443);
        let off = https(false, 443);
        let req = |host: Option<&'static str>, path: &'static str| RequestLine {
            host: host.map_or(HostField::Missing, HostField::Given),
            path,
            path_and_query: if path == "/a" { "/a?b=1" } else { path },
        };
        let challenge = "/.well-known/acme-challenge/tok";
        let unknown = "/.well-known/acme-challenge/other";
        type Side = (Https, bool);
        #[rustfmt::skip]
        let cases: Vec<(Option<&Side>, bool, RequestLine, &str)> = vec![
            (Some(&on), false, req(Some("secure.test"), challenge), "challenge tok.key"),
            (Some(&on), false, req(None, challenge), "challenge tok.key"),
            (Some(&on), false, req(Some("x.test"), unknown), "challenge 404"),
            (Some(&on), true, req(Some("secure.test"), challenge), "proxy secure.test"),
            (None, false, req(Some("secure.test"), challenge), "proxy secure.test"),
            (Some(&on), false, req(None, "/"), "400"),
            (Some(&on), false, req(Some("secure.test:abc"), "/"), "400 the port is not a number from 1 to 65535"),
            (Some(&on), false, req(Some("secure.test:99999"), "/"), "400 the port is not a number from 1 to 65535"),
            (Some(&on), false, RequestLine { host: HostField::Unreadable, path: "/", path_and_query: "/" }, "400 not ASCII text"),
            (Some(&on), false, req(Some("nowhere.test"), "/"), "404"),
            (Some(&on), false, req(Some("down.test"), "/"), "503 down.test"),
            (Some(&on), true, req(Some("down.test"), "/"), "503 down.test"),
            (Some(&on), false, req(Some("Secure.TEST:8080"), "/a"), "308 https://secure.test:8443/a?b=1"),
            (Some(&std_port), false, req(Some("secure.test"), "/a"), "308 https://secure.test/a?b=1"),
            (Some(&on), true, req(Some("secure.test"), "/a"), "proxy secure.test"),
            (Some(&off), false, req(Some("secure.test"), "/"), "proxy secure.test"),
            (Some(&on), false, req(Some("plain.test"), "/"), "proxy plain.test"),
            (Some(&on), false, req(Some("nocert.test"), "/"), "proxy nocert.test"),
            (None, false, req(Some("secure.test"), "/"), "proxy secure.test"),
        ];
        for (https, tls_listener, r, want) in cases {
            let snap = snap(https.is_none_or(|h| h.1));
            let got = word(&decide(&snap, https.map(|h| &h.0), tls_listener, &r));
            assert_eq!(got, want, "{r:?} tls_listener={tls_listener}");
        }
    }
}
