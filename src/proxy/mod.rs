//! The HTTP data plane: a Pingora `ProxyHttp` that reads the published
//! snapshot once per request (lock-free), asks [`decide`] what the request
//! gets, answers 400/404/503/308 and ACME challenges itself, and sends the
//! rest round robin to the route's ready backends, retrying on the next one
//! when a backend refuses or drops a request before answering.

pub mod conn;
pub mod decide;
pub mod fail;
pub mod policy;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::prelude::{HttpPeer, Session};
use pingora::proxy::{FailToProxy, ProxyHttp};
use pingora::{Error, ErrorSource, ErrorType, Result};
use tracing::{info, warn};

use crate::deploy::canary;
use crate::metrics::Metrics;
use crate::plan::{BackendStats, CanarySplit, ProxySettings, Route, Snapshot};
use crate::policy::client::is_trusted;
use crate::policy::mode::{ModeSpec, NotReleased};
use crate::resources::{self, Burst};
use crate::shutdown::{Open, Requests};
use crate::tls::Https;
use crate::world::Input;
use crate::{Inputs, SharedSnapshot};
use decide::{decide, Decision, HostField, RequestLine};

/// What the proxies of every listener share with the rest of berth.
#[derive(Clone)]
pub struct Shared {
    pub snapshot: SharedSnapshot,
    /// Where passive connect failures are reported.
    pub inputs: Inputs,
    pub metrics: Arc<Metrics>,
    /// Requests in flight, for a graceful stop.
    pub requests: Arc<Requests>,
    /// Until when requests wait for the first Docker sync (and first checks)
    /// instead of getting a 404 or 503, and how many may wait at once.
    pub hold: Hold,
}

pub struct BerthProxy {
    snapshot: SharedSnapshot,
    inputs: Inputs,
    https: Option<Arc<Https>>,
    /// This instance serves the HTTPS listener.
    tls_listener: bool,
    metrics: Arc<Metrics>,
    requests: Arc<Requests>,
    hold: Hold,
}

/// Holding requests at start: berth has not listed the containers yet (or
/// not checked them once), so "no route" or "no ready backend" would be
/// berth's ignorance, not the truth.
#[derive(Clone)]
pub struct Hold {
    /// Snapshot generations: a held request looks again at each one.
    pub notified: tokio::sync::watch::Receiver<u64>,
    /// No request waits past this instant (start + `proxy.startup_hold`).
    pub until: Instant,
    /// Requests waiting now, and the cap on them.
    pub waiting: Arc<std::sync::atomic::AtomicUsize>,
    pub max: usize,
}

/// What a held request waits for.
fn warming(snap: &Snapshot, decision: &Decision) -> bool {
    match decision {
        Decision::NoRoute => !snap.docker.synced,
        Decision::NotReady(_) => !snap.docker.synced || snap.unchecked > 0,
        _ => false,
    }
}

/// Connects berth could not even try (out of file descriptors or memory),
/// every listener together: logged once per burst.
static OWN_SHORTAGE: Burst = Burst::new(Duration::from_secs(10), Duration::from_secs(60));

/// Connect failures in a row after which a backend is taken out (passive check).
const PASSIVE_FAILURES: u32 = 3;

pub struct Ctx {
    /// Counts this request as in flight until the context is dropped.
    _open: Open,
    /// The settings of the snapshot this request was decided on.
    settings: Arc<ProxySettings>,
    started: Instant,
    upstream: Option<std::net::SocketAddr>,
    route: Option<Arc<Route>>,
    /// The backend this request is on now; its in-flight count includes us.
    current: Option<Arc<BackendStats>>,
    /// The round-robin pick of the first attempt; retries walk on from it.
    start: usize,
    /// Backends handed out so far for this request.
    attempt: usize,
    response_started: bool,
    /// The one retry allowed after a request reached a backend.
    late_retry_used: bool,
    backend_id: Option<Arc<str>>,
    /// What the route's policy keeps between phases; `None` without one.
    policy: Option<Box<policy::State>>,
    /// The canary cookie to set: the side this client was put on.
    canary_cookie: Option<bool>,
}

impl Ctx {
    fn new(open: Open) -> Ctx {
        Ctx {
            _open: open,
            settings: Arc::default(),
            started: Instant::now(),
            upstream: None,
            route: None,
            current: None,
            start: 0,
            attempt: 0,
            response_started: false,
            late_retry_used: false,
            backend_id: None,
            policy: None,
            canary_cookie: None,
        }
    }

    /// The route as metrics name it: host + path prefix; empty without one.
    fn route_label(&self) -> &str {
        self.route.as_ref().map_or("", |r| &r.label)
    }

    fn untried_left(&self) -> bool {
        self.route
            .as_ref()
            .is_some_and(|r| self.attempt < r.backends.len())
    }

    /// Moves this request's in-flight count to another backend (or none).
    fn switch_to(&mut self, stats: Option<Arc<BackendStats>>) {
        if let Some(old) = self.current.take() {
            old.inflight.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(new) = &stats {
            new.inflight.fetch_add(1, Ordering::Relaxed);
            new.picked.fetch_add(1, Ordering::Relaxed);
        }
        self.current = stats;
    }
}

impl BerthProxy {
    pub fn new(shared: Shared, https: Option<Arc<Https>>, tls_listener: bool) -> BerthProxy {
        let Shared {
            snapshot,
            inputs,
            metrics,
            requests,
            hold,
        } = shared;
        BerthProxy {
            snapshot,
            inputs,
            https,
            tls_listener,
            metrics,
            requests,
            hold,
        }
    }

    fn decide(&self, session: &Session) -> (Arc<Snapshot>, Decision) {
        let snap = self.snapshot.load_full();
        let req = session.req_header();
        let line = RequestLine {
            host: request_host(req),
            path: req.uri.path(),
            path_and_query: req.uri.path_and_query().map_or("/", |p| p.as_str()),
        };
        let decision = decide(&snap, self.https.as_deref(), self.tls_listener, &line);
        (snap, decision)
    }

    /// Waits, while berth is starting, for a snapshot that knows better
    /// than "no route" or "no ready backend"; bounded in time and count.
    async fn hold(
        &self,
        session: &Session,
        first: (Arc<Snapshot>, Decision),
    ) -> (Arc<Snapshot>, Decision) {
        let (mut snap, mut decision) = first;
        if !warming(&snap, &decision) || Instant::now() >= self.hold.until {
            return (snap, decision);
        }
        let waiting = &self.hold.waiting;
        if waiting.fetch_add(1, Ordering::Relaxed) >= self.hold.max {
            waiting.fetch_sub(1, Ordering::Relaxed);
            return (snap, decision);
        }
        let mut notified = self.hold.notified.clone();
        let until = tokio::time::Instant::from_std(self.hold.until);
        while warming(&snap, &decision) {
            match tokio::time::timeout_at(until, notified.changed()).await {
                Ok(Ok(())) => (snap, decision) = self.decide(session),
                _ => break,
            }
        }
        waiting.fetch_sub(1, Ordering::Relaxed);
        (snap, decision)
    }
}

/// The Host of a request: the URI's authority (HTTP/2), else the Host
/// header. (An HTTP/1 absolute-form target must come with a Host that
/// matches it: Pingora refuses it otherwise, and keeps only its path in the
/// URI.)
fn request_host(req: &RequestHeader) -> HostField<'_> {
    if let Some(h) = req.uri.host() {
        return HostField::Given(h);
    }
    match req.headers.get(header::HOST) {
        Some(v) => v.to_str().map_or(HostField::Unreadable, HostField::Given),
        None => HostField::Missing,
    }
}

/// A route with a canary: the client's side (its cookie, else the even
/// share), then round robin within that side.
fn canary_pick(session: &Session, ctx: &mut Ctx, route: &Route, split: CanarySplit) {
    let n = ctx.start;
    let cookie = canary_cookie(session.req_header(), split.generation);
    let to_canary = cookie.unwrap_or_else(|| canary::goes_to_canary(n, split.percent));
    // Requests each side had before this one: round robin within a side
    // that does not depend on how the sides alternate.
    let canary_before = n * split.percent as usize / 100;
    let (first, len, turn) = if to_canary {
        (
            split.stable,
            route.backends.len() - split.stable,
            canary_before,
        )
    } else {
        (0, split.stable, n - canary_before)
    };
    if len > 0 {
        ctx.start = first + turn % len;
    }
    if cookie != Some(to_canary) {
        ctx.canary_cookie = Some(to_canary);
    }
}

/// The side a `berth_canary` cookie of this canary keeps the client on (a
/// cookie of an earlier canary counts for nothing).
fn canary_cookie(req: &RequestHeader, generation: u32) -> Option<bool> {
    policy::cookies(req, canary::COOKIE).find_map(|v| {
        let (side, g) = v.split_once('-')?;
        if u32::from_str_radix(g, 16).ok()? != generation {
            return None;
        }
        match side {
            "1" => Some(true),
            "0" => Some(false),
            _ => None,
        }
    })
}

/// Stopping, or handing over to a new berth: the client must not send
/// another request on this connection.
fn close_if_stopping(session: &mut Session, response: &mut ResponseHeader) -> Result<()> {
    if session.is_process_shutting_down() || crate::shutdown::handing_over() {
        session.set_keepalive(None);
        response.insert_header(header::CONNECTION, "close")?;
    }
    Ok(())
}

/// Answers the request itself; `extra` (Retry-After, Location) goes along.
async fn respond(
    session: &mut Session,
    status: u16,
    body: String,
    extra: &[(header::HeaderName, &str)],
) -> Result<bool> {
    respond_as(session, status, "text/plain; charset=utf-8", body, extra).await
}

/// [`respond`] with another content type.
async fn respond_as(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: String,
    extra: &[(header::HeaderName, &str)],
) -> Result<bool> {
    let mut resp = ResponseHeader::build(status, Some(4 + extra.len()))?;
    if status != 204 {
        resp.insert_header(header::CONTENT_TYPE, content_type)?;
    }
    close_if_stopping(session, &mut resp)?;
    // A 204 has neither a body nor its length (RFC 9110 §8.6).
    if status != 204 {
        resp.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
    }
    resp.insert_header(header::CACHE_CONTROL, "no-store")?;
    for (name, value) in extra {
        resp.insert_header(name.clone(), *value)?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await?;
    Ok(true)
}

#[async_trait]
impl ProxyHttp for BerthProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new(self.requests.open())
    }

    /// No downstream modules: Pingora's default adds a (disabled) compression
    /// module that still runs on every request and response chunk.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn early_request_filter(&self, session: &mut Session, _ctx: &mut Ctx) -> Result<()> {
        conn::header_read(session);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        // A client that pipelines (request N+1 sent before response N) gets
        // every answer, in order, rather than EOF after the first one.
        session.set_pipelining_enabled(true);
        // Routes, policies and the backend read one path: `/x/../admin` is
        // `/admin` everywhere.
        if let Some(normal) = crate::names::normalize_path(session.req_header().uri.path()) {
            let query = session.req_header().uri.query().map(|q| format!("?{q}"));
            let target = format!("{normal}{}", query.unwrap_or_default());
            session.req_header_mut().set_raw_path(target.as_bytes())?;
        }
        // HTTP/1.1 keeps a connection for ever by default: bounded idle time
        // between requests (Connection: close from the client still wins).
        let first = self.decide(session);
        let (mut snap, mut decision) = self.hold(session, first).await;
        // A service in maintenance answers; a paused one holds the request,
        // then it is decided again (a new version may be in, or a
        // maintenance) at most once more.
        for _ in 0..2 {
            let Some(mode) = decision.route().and_then(|r| r.mode.clone()) else {
                break;
            };
            let custom = decision
                .route()
                .and_then(|r| policy::error_page(Some(r), &snap.settings));
            let retry = snap.settings.retry_after.clone();
            match &mode.spec {
                ModeSpec::Maintenance { message } => {
                    return policy::maintenance(session, message.as_deref(), &retry, custom).await;
                }
                ModeSpec::Paused { max_ms } => {
                    let max = Duration::from_millis(*max_ms);
                    match mode.gate.wait(max).await {
                        Ok(()) => (snap, decision) = self.decide(session),
                        Err(NotReleased::Maintenance(message)) => {
                            return policy::maintenance(
                                session,
                                message.as_deref(),
                                &retry,
                                custom,
                            )
                            .await;
                        }
                        Err(why) => return policy::still_paused(session, why, max).await,
                    }
                    if decision
                        .route()
                        .and_then(|r| r.mode.as_ref())
                        .is_some_and(|m| Arc::ptr_eq(m, &mode))
                    {
                        // The same pause, let through.
                        break;
                    }
                }
            }
        }
        session.set_keepalive(Some(snap.settings.keepalive_secs));
        // A body that stops coming: 408 after this long without a byte
        // (not for an upgrade: its reads are the tunnel's).
        if !session.is_upgrade_req() {
            session.set_read_timeout(Some(snap.config.proxy.body_timeout));
        }
        ctx.settings = snap.settings.clone();
        match decision {
            Decision::Proxy(route) => {
                ctx.start = route.start();
                if let Some(split) = route.canary {
                    canary_pick(session, ctx, &route, split);
                }
                // Set first: metrics and the access log name the route of
                // an answer its policy gave.
                let policy = route.policy.clone();
                ctx.route = Some(route);
                if let (Some(p), Some(route)) = (policy, ctx.route.clone()) {
                    if policy::on_request(session, ctx, &route, &p, self.tls_listener).await? {
                        return Ok(true);
                    }
                }
                // Keeps a small request body so that a retry can replay it.
                session.enable_retry_buffering();
                Ok(false)
            }
            Decision::Challenge(Some(key_auth)) => respond(session, 200, key_auth, &[]).await,
            Decision::Challenge(None) => {
                let body = "berth: unknown ACME challenge\n".to_string();
                respond(session, 404, body, &[]).await
            }
            Decision::NoHost => {
                respond(session, 400, "berth: request has no Host\n".into(), &[]).await
            }
            Decision::BadHost(why) => {
                let body = format!("berth: bad Host: {why}\n");
                respond(session, 400, body, &[]).await
            }
            Decision::NoRoute if !snap.docker.synced => {
                // Not a 404 for a host that may well exist: berth has not
                // listed the containers yet.
                let body = "berth: starting, the containers are not listed yet\n".to_string();
                let retry = [(header::RETRY_AFTER, snap.settings.retry_after.as_str())];
                respond(session, 503, body, &retry).await
            }
            Decision::NoRoute => {
                let host = request_host(session.req_header())
                    .as_str()
                    .unwrap_or_default();
                let body = format!("berth: no route for {host}\n");
                policy::error_answer(session, 404, body, &[], None, &snap.settings).await
            }
            Decision::NotReady(route) => {
                let body = format!(
                    "berth: no ready backend for {}{}\n",
                    route.host, route.prefix
                );
                let retry = [(header::RETRY_AFTER, snap.settings.retry_after.as_str())];
                policy::error_answer(session, 503, body, &retry, Some(&route), &snap.settings).await
            }
            Decision::Redirect(to) => {
                let body = format!("berth: moved to {to}\n");
                respond(session, 308, body, &[(header::LOCATION, to.as_str())]).await
            }
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let route = ctx.route.as_ref().ok_or_else(|| {
            Error::explain(ErrorType::InternalError, "upstream_peer without a route")
        })?;
        let backend = route
            .backend(ctx.start, ctx.attempt)
            .ok_or_else(|| Error::explain(ErrorType::HTTPStatus(503), "route has no backend"))?;
        ctx.attempt += 1;
        let stats = backend.stats.clone();
        let mut peer = HttpPeer::new(backend.addr, false, String::new());
        let id = backend.id.clone();
        ctx.backend_id = Some(id);
        ctx.upstream = Some(backend.addr);
        let spec = route.policy.as_ref().map(|p| &*p.spec);
        peer.options.connection_timeout = Some(
            spec.and_then(|s| s.connect_timeout)
                .unwrap_or(ctx.settings.connect_timeout),
        );
        peer.options.read_timeout = Some(
            spec.and_then(|s| s.read_timeout)
                .unwrap_or(ctx.settings.read_timeout),
        );
        ctx.switch_to(Some(stats));
        peer.options.idle_timeout = Some(ctx.settings.idle_timeout);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if resources::in_chain(&e) {
            // berth could not open a socket: not the backend's failure, and
            // the next backend would meet the same shortage.
            if let Some(before) = OWN_SHORTAGE.note() {
                warn!(error = %e, failed_before = before, "cannot connect to backends: berth is out of file descriptors or memory; answering 503, backends keep their state");
            }
            return Error::because(
                ErrorType::HTTPStatus(503),
                "berth is out of file descriptors or memory",
                e,
            );
        }
        if let (Some(stats), Some(id)) = (&ctx.current, &ctx.backend_id) {
            let failures = stats.connect_failures.fetch_add(1, Ordering::Relaxed) + 1;
            if failures == PASSIVE_FAILURES {
                let _ = self
                    .inputs
                    .send(Input::ConnectFailures { id: id.to_string() });
            }
        }
        self.metrics.connect_error(ctx.route_label());
        // Nothing reached the backend: any request may go to the next one.
        if ctx.untried_left() {
            e.set_retry(true);
            self.metrics.retry(ctx.route_label());
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let replayable = session.req_header().method.is_idempotent()
            || !session.as_ref().retry_buffer_truncated();
        if !replayable || ctx.response_started {
            e.set_retry(false);
        } else if !ctx.late_retry_used && ctx.untried_left() {
            // A replica that is exiting reset the request before answering:
            // once, try it on another replica.
            ctx.late_retry_used = true;
            e.set_retry(true);
            self.metrics.retry(ctx.route_label());
        } else {
            // A stale pooled connection: Pingora's own rule.
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // An absolute-form target (`GET http://host/x`) reaches the backend
        // in origin-form, as servers expect (RFC 9112 §3.2.1).
        if upstream
            .raw_path()
            .first()
            .is_some_and(|&b| b != b'/' && b != b'*')
        {
            let origin = upstream
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string());
            if let Some(origin) = origin {
                upstream.set_raw_path(origin.as_bytes())?;
            }
        }
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let trusted = !ctx.settings.trusted_proxies.is_empty()
            && peer.is_some_and(|ip| is_trusted(ip, &ctx.settings.trusted_proxies));
        let proto = if self.tls_listener { "https" } else { "http" };
        if trusted {
            // A proxy in front of berth: its chain goes on, with it as the
            // last hop, and the client is who it says.
            let peer = peer.map(|ip| ip.to_string()).unwrap_or_default();
            let chain = match policy::forwarded_for(&upstream.headers) {
                Some(before) => format!("{}, {peer}", String::from_utf8_lossy(&before)),
                None => peer,
            };
            upstream.insert_header("x-forwarded-for", &chain)?;
            if let Some(ip) = policy::client(session, &ctx.settings) {
                upstream.insert_header("x-real-ip", ip.to_string())?;
            }
            if !upstream.headers.contains_key("x-forwarded-proto") {
                upstream.insert_header("x-forwarded-proto", proto)?;
            }
        } else {
            // Incoming X-Forwarded-* are not trusted: berth is the edge.
            if let Some(ip) = peer.map(|ip| ip.to_string()) {
                upstream.insert_header("x-forwarded-for", &ip)?;
                upstream.insert_header("x-real-ip", &ip)?;
            }
            upstream.insert_header("x-forwarded-proto", proto)?;
        }
        if let Some(host) = request_host(session.req_header())
            .as_str()
            .map(str::to_string)
        {
            upstream.insert_header("x-forwarded-host", &host)?;
        }
        if ctx.route.as_ref().is_some_and(|r| r.policy.is_some()) {
            if let Some(route) = ctx.route.clone() {
                if let Some(p) = &route.policy {
                    policy::upstream_request(upstream, ctx, &route, p)?;
                }
            }
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if ctx.policy.is_some() {
            policy::request_body(ctx, body)?;
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if ctx.policy.is_some() {
            policy::response_body(ctx, body, end_of_stream);
        }
        Ok(None)
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.response_started = true;
        if let Some(stats) = &ctx.current {
            if stats.connect_failures.load(Ordering::Relaxed) != 0 {
                stats.connect_failures.store(0, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        close_if_stopping(session, response)?;
        if self.tls_listener {
            if let Some(hsts) = ctx.settings.hsts.as_deref() {
                response.insert_header(header::STRICT_TRANSPORT_SECURITY, hsts)?;
            }
        }
        if ctx.route.as_ref().is_some_and(|r| r.policy.is_some()) {
            if let Some(route) = ctx.route.clone() {
                if let Some(p) = &route.policy {
                    policy::response(session, response, ctx, &route, p, self.tls_listener)?;
                }
            }
        }
        if let (Some(canary), Some(route)) = (ctx.canary_cookie, &ctx.route) {
            if let Some(split) = route.canary {
                let secure = if self.tls_listener { "; Secure" } else { "" };
                let cookie = format!(
                    "{}={}-{:08x}; Path={}; HttpOnly; SameSite=Lax{secure}",
                    canary::COOKIE,
                    u8::from(canary),
                    split.generation,
                    route.prefix.as_str()
                );
                response.append_header(header::SET_COOKIE, cookie)?;
            }
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        conn::request_done(session);
        let elapsed = ctx.started.elapsed();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        // A canary's verdict compares the replicas of its route.
        if ctx.route.as_ref().is_some_and(|r| r.canary.is_some()) {
            if let Some(stats) = &ctx.current {
                stats.record(status, elapsed);
            }
        }
        ctx.switch_to(None);
        self.metrics
            .request(ctx.route_label(), status, elapsed.as_secs_f64());
        if ctx.settings.access_log
            && tracing::enabled!(target: "berth::access", tracing::Level::INFO)
        {
            let req = session.req_header();
            let upstream = ctx.upstream.map(|a| a.to_string()).unwrap_or_default();
            let client = session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            info!(
                target: "berth::access",
                method = %req.method,
                host = request_host(req).as_str().unwrap_or(""),
                path = req.uri.path(),
                status,
                upstream,
                duration_ms = (elapsed.as_secs_f64() * 1e5).round() / 100.0,
                bytes = session.body_bytes_sent(),
                client,
                tls = self.tls_listener,
                "request"
            );
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, e: &Error) -> bool {
        // Clients that hang up are routine, not errors of berth's; berth's
        // own shortages are logged once per burst (`fail_to_connect`).
        matches!(e.esource(), ErrorSource::Downstream) || resources::in_chain(e)
    }

    /// Pingora's answers ([`fail::classify`]), but a stalled request body is
    /// the client's 408 and berth's own shortage a 503.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let (mut status, fault) = fail::classify(e, session.is_body_done());
        // An answer that has begun cannot change its status.
        if session.response_written().is_some() {
            status = 0;
        }
        if fault == fail::Fault::Client && fail::stalled_body(e, session.is_body_done()) {
            let client = session
                .client_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            info!(
                client,
                route = ctx.route_label(),
                body_bytes = session.body_bytes_read(),
                answered = status,
                error = %e,
                "the client stopped sending its request body"
            );
        }
        if status > 0 {
            // No next request on this connection: the rest of a body may
            // still be on its way.
            session.set_keepalive(None);
            let route = ctx.route.clone();
            let paged =
                policy::failure_page(session, status, route.as_deref(), &ctx.settings).await;
            // A browser gets the error page when one is set.
            if !matches!(paged, Ok(true)) {
                if let Err(e) = session.respond_error(status).await {
                    info!(error = %e, status, "could not answer the failed request");
                }
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }
}
