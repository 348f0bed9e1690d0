//! Route policies: what a route asks of a request before it is proxied (auth,
//! allow-lists, rate limits, body limits), what it rewrites (redirects,
//! prefix, headers, CORS) and how it answers (compression, sticky replicas,
//! timeouts). Labels → [`PolicySpec`] here, pure; the planner turns a spec
//! into a [`RoutePolicy`] (with its live limiter and auth cache) on the
//! route, and the proxy carries it out. A route without policy labels has no
//! `RoutePolicy` and pays nothing.

pub mod auth;
pub mod client;
pub mod limit;
pub mod mode;
pub mod pages;
pub mod spec;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub use spec::{PolicySpec, POLICY_KEYS};

/// A route's policy as the proxy reads it: the parsed spec, and the state
/// that must outlive one request (the rate limiter, verified credentials).
#[derive(Debug)]
pub struct RoutePolicy {
    pub spec: Arc<PolicySpec>,
    pub limiter: Option<Arc<limit::Limiter>>,
    pub auth: Option<auth::Basic>,
    /// Why the route answers 503 (a security label that did not parse).
    pub blocked: Option<String>,
    /// The client that asks the forward-auth service, with its timeouts.
    pub forward: Option<ForwardClient>,
    /// `errors.page` as read from a container of the route (by the error
    /// page loader, off the request path); `None` until then.
    pub page: arc_swap::ArcSwapOption<String>,
}

/// Asks a forward-auth service: its own connection pool, connecting within
/// the route's connect timeout, answering within `wait` in all.
pub struct ForwardClient {
    pub client: Client<HttpConnector, Empty<Bytes>>,
    pub connect: Duration,
    pub wait: Duration,
}

impl std::fmt::Debug for ForwardClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardClient")
            .field("connect", &self.connect)
            .field("wait", &self.wait)
            .finish()
    }
}

impl RoutePolicy {
    /// `limiter`: the one this route had in the last snapshot, if its rate
    /// is unchanged, so that a rebuild does not hand out a fresh burst.
    /// `timeouts`: `proxy.connect_timeout` and `proxy.read_timeout`, where
    /// the route sets none of its own.
    pub fn new(
        spec: Arc<PolicySpec>,
        limiter: Option<Arc<limit::Limiter>>,
        timeouts: (Duration, Duration),
    ) -> RoutePolicy {
        let blocked = (!spec.blocked.is_empty()).then(|| spec.blocked.join("; "));
        let limiter = spec.ratelimit.as_ref().map(|rate| match limiter {
            Some(l) if l.rate() == rate => l,
            _ => Arc::new(limit::Limiter::new(rate.clone())),
        });
        let auth = (!spec.basic.is_empty())
            .then(|| auth::Basic::new(spec.basic.clone(), spec.realm.as_deref()));
        let forward = spec.forward.as_ref().map(|_| {
            let connect = spec.connect_timeout.unwrap_or(timeouts.0);
            let mut connector = HttpConnector::new();
            connector.set_connect_timeout(Some(connect));
            ForwardClient {
                client: Client::builder(TokioExecutor::new()).build(connector),
                connect,
                wait: connect + spec.read_timeout.unwrap_or(timeouts.1),
            }
        });
        RoutePolicy {
            spec,
            limiter,
            auth,
            blocked,
            forward,
            page: arc_swap::ArcSwapOption::empty(),
        }
    }

    /// Whether this policy can stay in place for `spec` under `timeouts`.
    pub fn same(&self, spec: &PolicySpec, timeouts: (Duration, Duration)) -> bool {
        *self.spec == *spec
            && self.forward.as_ref().is_none_or(|f| {
                f.connect == spec.connect_timeout.unwrap_or(timeouts.0)
                    && f.wait == f.connect + spec.read_timeout.unwrap_or(timeouts.1)
            })
    }
}
