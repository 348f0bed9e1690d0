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
pub mod spec;

use std::sync::Arc;

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
}

impl RoutePolicy {
    /// `limiter`: the one this route had in the last snapshot, if its rate
    /// is unchanged, so that a rebuild does not hand out a fresh burst.
    pub fn new(spec: Arc<PolicySpec>, limiter: Option<Arc<limit::Limiter>>) -> RoutePolicy {
        let blocked = (!spec.blocked.is_empty()).then(|| spec.blocked.join("; "));
        let limiter = spec.ratelimit.as_ref().map(|rate| match limiter {
            Some(l) if l.rate() == rate => l,
            _ => Arc::new(limit::Limiter::new(rate.clone())),
        });
        let auth = (!spec.basic.is_empty())
            .then(|| auth::Basic::new(spec.basic.clone(), spec.realm.as_deref()));
        RoutePolicy {
            spec,
            limiter,
            auth,
            blocked,
        }
    }
}
