//! Carries out a route's policy ([`crate::policy`]) on a request: refuses
//! it (403, 429, 413, 401, 503 for a blocked route), redirects it, answers a
//! CORS preflight, asks a forward-auth service; then rewrites what goes
//! upstream and what comes back. Called only for routes that have a policy.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method};
use http_body_util::{BodyExt, Empty, Limited};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::Session;
use pingora::protocols::http::compression::{Algorithm, ResponseCompressionCtx};
use pingora::Result;

use super::{request_host, respond, Ctx};
use crate::plan::{ProxySettings, Route};
use crate::policy::auth::Verdict;
use crate::policy::client::{allowed, client_ip};
use crate::policy::limit::{retry_after, Outcome};
use crate::policy::spec::{Encoding, ForwardAuth, RateKey, Www};
use crate::policy::{ForwardClient, RoutePolicy};

/// The sticky cookie: it names a backend by its token.
const STICKY: &str = "berth_sticky";
/// Bodies smaller than this are not worth compressing.
const COMPRESS_MIN: usize = 256;
/// The most of a forward-auth answer's body berth passes on.
const FORWARD_BODY_MAX: usize = 64 * 1024;

/// What the policy keeps between the phases of one request.
#[derive(Default)]
pub struct State {
    /// `Origin` to allow on the answer (a CORS request from a listed origin).
    cors_origin: Option<HeaderValue>,
    /// The backend the client's sticky cookie names, if any.
    sticky: Option<u64>,
    /// Headers from the forward-auth answer, for the request upstream.
    forwarded: Vec<(HeaderName, HeaderValue)>,
    /// Body bytes still allowed, for a body without Content-Length.
    body_left: Option<u64>,
    compress: Option<Box<ResponseCompressionCtx>>,
    /// The route's error page, in place of the backend's error body.
    replace_body: Option<Bytes>,
}

/// The client's address: the peer, or behind a trusted proxy what it says.
pub fn client(session: &Session, settings: &ProxySettings) -> Option<IpAddr> {
    let peer = session.client_addr()?.as_inet()?.ip();
    if settings.trusted_proxies.is_empty() {
        return Some(peer);
    }
    let chain = forwarded_for(&session.req_header().headers);
    Some(client_ip(peer, chain.as_deref(), &settings.trusted_proxies))
}

/// Every `X-Forwarded-For` line of a request as one chain, in order: a
/// proxy may add a line of its own rather than extend the client's.
pub fn forwarded_for(headers: &http::HeaderMap) -> Option<std::borrow::Cow<'_, [u8]>> {
    let mut lines = headers.get_all("x-forwarded-for").iter();
    let first = lines.next()?;
    let Some(second) = lines.next() else {
        return Some(std::borrow::Cow::Borrowed(first.as_bytes()));
    };
    let mut all = first.as_bytes().to_vec();
    for line in std::iter::once(second).chain(lines) {
        all.extend_from_slice(b", ");
        all.extend_from_slice(line.as_bytes());
    }
    Some(std::borrow::Cow::Owned(all))
}

/// Before the request goes upstream: `Ok(true)` when berth has answered it.
pub async fn on_request(
    session: &mut Session,
    ctx: &mut Ctx,
    route: &Route,
    policy: &RoutePolicy,
    tls_listener: bool,
) -> Result<bool> {
    let spec = &policy.spec;
    if policy.blocked.is_some() {
        // The reason (label values) is for `berth problems`, not the world.
        let body = format!(
            "berth: {}{} is closed until its labels are fixed (berth problems says why)\n",
            route.host,
            route.prefix.as_str()
        );
        let settings = ctx.settings.clone();
        return error_answer(session, 503, body, &[], Some(route), &settings).await;
    }
    let mut state = Box::<State>::default();
    let ip = client(session, &ctx.settings);
    if !spec.allow.is_empty() || !spec.deny.is_empty() {
        let pass = ip.is_some_and(|ip| allowed(ip, &spec.allow, &spec.deny));
        if !pass {
            let who = ip.map_or("this client".to_string(), |ip| ip.to_string());
            let body = format!("berth: {who} may not use this route\n");
            return respond(session, 403, body, &[]).await;
        }
    }
    if let Some(limiter) = &policy.limiter {
        let req = session.req_header();
        let header = match &limiter.rate().key {
            RateKey::Header(name) => req.headers.get(name).map(|v| v.as_bytes()),
            RateKey::Ip => None,
        };
        // The address's bytes, on the stack.
        let mut octets = [0u8; 16];
        let key: &[u8] = match (header, ip) {
            (Some(h), _) => h,
            (None, Some(IpAddr::V4(a))) => {
                octets[..4].copy_from_slice(&a.octets());
                &octets[..4]
            }
            // An IPv6 client usually holds a whole /64: counted as one.
            (None, Some(IpAddr::V6(a))) => {
                octets = a.octets();
                &octets[..8]
            }
            (None, None) => &[],
        };
        if let Outcome::Deny(wait) = limiter.check(key, Instant::now()) {
            let wait = retry_after(wait);
            let body = format!("berth: too many requests, try again in {wait}s\n");
            return respond(session, 429, body, &[(header::RETRY_AFTER, &wait)]).await;
        }
    }
    let code = spec.redirect_code.unwrap_or(308);
    if let Some(www) = spec.www {
        if let Some(to) = www_target(session.req_header(), www, tls_listener) {
            let body = format!("berth: moved to {to}\n");
            return respond(session, code, body, &[(header::LOCATION, &to)]).await;
        }
    }
    if !spec.redirects.is_empty() {
        let uri = &session.req_header().uri;
        let to = spec.redirects.iter().find_map(|r| r.target(uri.path()));
        if let Some(mut to) = to {
            if let (Some(q), false) = (uri.query(), to.contains('?')) {
                to = format!("{to}?{q}");
            }
            let body = format!("berth: moved to {to}\n");
            return respond(session, code, body, &[(header::LOCATION, &to)]).await;
        }
    }
    if let Some(cors) = &spec.cors {
        let req = session.req_header();
        if let Some(origin) = req.headers.get(header::ORIGIN).cloned() {
            let listed = origin.to_str().is_ok_and(|o| cors.allows(o));
            let preflight = req.method == Method::OPTIONS
                && req
                    .headers
                    .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
            if preflight {
                return preflight_answer(session, cors, &origin, listed).await;
            }
            if listed {
                state.cors_origin = Some(origin);
            }
        }
    }
    if let Some(limit) = spec.body_limit {
        let req = session.req_header();
        let length = req
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        match length {
            Some(n) if n > limit => {
                // The body is not read: no next request on this connection.
                session.set_keepalive(None);
                let body = format!("berth: the request body is over {limit} bytes\n");
                return respond(session, 413, body, &[]).await;
            }
            Some(_) => {}
            // Counted as it comes: a chunked body (or HTTP/2's); never the
            // bytes of an upgraded connection.
            None if !session.is_upgrade_req()
                && (req.headers.contains_key(header::TRANSFER_ENCODING)
                    || req.version == http::Version::HTTP_2) =>
            {
                state.body_left = Some(limit)
            }
            None => {}
        }
    }
    if let Some(basic) = &policy.auth {
        let header = session
            .req_header()
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        if basic.verify(header.as_deref()).await == Verdict::Challenge {
            let challenge = basic.challenge.to_str().unwrap_or("Basic");
            let body = "berth: this route needs a user name and password\n".to_string();
            return respond(session, 401, body, &[(header::WWW_AUTHENTICATE, challenge)]).await;
        }
    }
    if let (Some(forward), Some(client)) = (&spec.forward, &policy.forward) {
        match ask_forward(session, forward, client, ip, tls_listener).await {
            Forward::Pass(headers) => state.forwarded = headers,
            Forward::Answer(resp, body) => {
                session.set_keepalive(None);
                session.write_response_header(resp, false).await?;
                session.write_response_body(Some(body), true).await?;
                return Ok(true);
            }
            Forward::Unreachable(why) => {
                tracing::info!(route = %route.label, auth = %forward.url, error = %why, "the forward-auth service did not answer: 503");
                let body = "berth: the auth service did not answer\n".to_string();
                return respond(session, 503, body, &[]).await;
            }
        }
    }
    if spec.sticky {
        state.sticky = sticky_cookie(session.req_header());
        if let Some(i) = state.sticky.and_then(|t| route.sticky(t)) {
            ctx.start = i;
        }
    }
    ctx.policy = Some(state);
    Ok(false)
}

/// A service in maintenance: 503 with the message, a page for browsers.
pub async fn maintenance(
    session: &mut Session,
    message: Option<&str>,
    retry_after: &str,
    custom: Option<Arc<String>>,
) -> Result<bool> {
    let message = message.unwrap_or("This service is down for maintenance. Please try again soon.");
    let retry = [(header::RETRY_AFTER, retry_after)];
    if wants_html(session.req_header()) {
        let page = match custom {
            Some(custom) => fill(&custom, 503, message),
            None => page("Down for maintenance", message),
        };
        return super::respond_as(session, 503, HTML, page, &retry).await;
    }
    respond(session, 503, format!("{message}\n"), &retry).await
}

const HTML: &str = "text/html; charset=utf-8";

/// The error page for a request on `route`: the route's own (`errors.page`,
/// once loaded), else `proxy.error_page`.
pub fn error_page(route: Option<&Route>, settings: &ProxySettings) -> Option<Arc<String>> {
    route
        .and_then(|r| r.policy.as_ref())
        .and_then(|p| p.page.load_full())
        .or_else(|| settings.error_page.clone())
}

/// berth's own error answer: the error page for a browser when there is
/// one, else `body` as text.
pub async fn error_answer(
    session: &mut Session,
    status: u16,
    body: String,
    extra: &[(HeaderName, &str)],
    route: Option<&Route>,
    settings: &ProxySettings,
) -> Result<bool> {
    if wants_html(session.req_header()) {
        if let Some(page) = error_page(route, settings) {
            let html = fill(&page, status, body.trim().trim_start_matches("berth: "));
            return super::respond_as(session, status, HTML, html, extra).await;
        }
    }
    respond(session, status, body, extra).await
}

/// A page with `{{status}}` and `{{message}}` filled in (the message
/// escaped).
pub fn fill(page: &str, status: u16, message: &str) -> String {
    page.replace("{{status}}", &status.to_string())
        .replace("{{message}}", &escape(message))
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An error page instead of Pingora's empty error answer (502, 504 ...),
/// for a browser, when one is set: `Ok(true)` when written.
pub async fn failure_page(
    session: &mut Session,
    status: u16,
    route: Option<&Route>,
    settings: &ProxySettings,
) -> Result<bool> {
    if !wants_html(session.req_header()) {
        return Ok(false);
    }
    let Some(page) = error_page(route, settings) else {
        return Ok(false);
    };
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let html = Bytes::from(fill(&page, status, reason));
    let mut resp = ResponseHeader::build(status, Some(3))?;
    resp.insert_header(header::CONTENT_TYPE, HTML)?;
    resp.insert_header(header::CONTENT_LENGTH, html.len().to_string())?;
    resp.insert_header(header::CACHE_CONTROL, "no-store")?;
    session.write_error_response(resp, html).await?;
    Ok(true)
}

/// A held request that was not released: 503.
pub async fn still_paused(
    session: &mut Session,
    why: crate::policy::mode::NotReleased,
    max: std::time::Duration,
) -> Result<bool> {
    use crate::policy::mode::{NotReleased, HELD_MAX};
    let body = match why {
        NotReleased::TimedOut => format!(
            "berth: this service is paused; the request waited {} and was not let through\n",
            crate::names::format_duration(max)
        ),
        NotReleased::Full => {
            format!("berth: this service is paused and {HELD_MAX} requests wait already\n")
        }
        NotReleased::Maintenance(_) => "berth: this service is down for maintenance\n".into(),
    };
    respond(session, 503, body, &[(header::RETRY_AFTER, "1")]).await
}

/// A browser asks for HTML first.
fn wants_html(req: &RequestHeader) -> bool {
    req.headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// berth's own page: a title and a message, escaped.
pub fn page(title: &str, message: &str) -> String {
    let esc = escape;
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{t}</title><style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:15vh auto;padding:0 1rem;color:#222}}h1{{font-size:1.4rem}}</style></head><body><h1>{t}</h1><p>{m}</p></body></html>\n",
        t = esc(title),
        m = esc(message).replace('\n', "<br>")
    )
}

/// `www.example.com` ↔ `example.com`, keeping scheme, port, path and query.
fn www_target(req: &RequestHeader, www: Www, tls: bool) -> Option<String> {
    let host = request_host(req).as_str()?;
    let to = match (www, host.strip_prefix("www.")) {
        (Www::ToApex, Some(apex)) => apex.to_string(),
        (Www::ToWww, None) => format!("www.{host}"),
        _ => return None,
    };
    let scheme = if tls { "https" } else { "http" };
    let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
    Some(format!("{scheme}://{to}{path}"))
}

async fn preflight_answer(
    session: &mut Session,
    cors: &crate::policy::spec::Cors,
    origin: &HeaderValue,
    listed: bool,
) -> Result<bool> {
    if !listed {
        let body = format!(
            "berth: origin {} may not call this route (cors.origins)\n",
            String::from_utf8_lossy(origin.as_bytes())
        );
        return respond(session, 403, body, &[(header::VARY, "Origin")]).await;
    }
    let allow_origin = match (&cors.origins, cors.credentials) {
        (None, false) => "*".to_string(),
        _ => String::from_utf8_lossy(origin.as_bytes()).into_owned(),
    };
    let methods = cors
        .methods
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let asked = session
        .req_header()
        .headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let headers = if cors.headers.is_empty() {
        asked
    } else {
        cors.headers
            .iter()
            .map(HeaderName::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let max_age = cors.max_age.as_secs().to_string();
    let mut extra = vec![
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin.as_str()),
        (header::ACCESS_CONTROL_ALLOW_METHODS, methods.as_str()),
        (header::ACCESS_CONTROL_MAX_AGE, max_age.as_str()),
        (header::VARY, "Origin"),
    ];
    if !headers.is_empty() {
        extra.push((header::ACCESS_CONTROL_ALLOW_HEADERS, headers.as_str()));
    }
    if cors.credentials {
        extra.push((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true"));
    }
    respond(session, 204, String::new(), &extra).await
}

/// The token of a `berth_sticky` cookie.
fn sticky_cookie(req: &RequestHeader) -> Option<u64> {
    cookies(req, STICKY).find_map(|v| u64::from_str_radix(v, 16).ok())
}

/// The values of the request's cookies named `name`, in order.
pub fn cookies<'r>(req: &'r RequestHeader, name: &'r str) -> impl Iterator<Item = &'r str> {
    req.headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |c| c.trim().strip_prefix(name)?.strip_prefix('='))
        .map(str::trim)
}

enum Forward {
    /// 2xx: the headers to copy upstream.
    Pass(Vec<(HeaderName, HeaderValue)>),
    /// Anything else: what the client gets.
    Answer(Box<ResponseHeader>, Bytes),
    Unreachable(String),
}

/// Hop-by-hop headers, and the framing of a request that goes without its body.
fn not_forwarded(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
            | "expect"
    )
}

/// Asks the forward-auth service about this request: its method and headers
/// (not its body), and where it was going in `X-Forwarded-*`.
async fn ask_forward(
    session: &Session,
    forward: &ForwardAuth,
    client: &ForwardClient,
    ip: Option<IpAddr>,
    tls: bool,
) -> Forward {
    let req = session.req_header();
    let mut ask = http::Request::builder()
        .method(req.method.clone())
        .uri(forward.url.clone());
    for (name, value) in req.headers.iter() {
        if !not_forwarded(name) && !name.as_str().starts_with("x-forwarded-") {
            ask = ask.header(name, value);
        }
    }
    let uri = req.uri.path_and_query().map_or("/", |p| p.as_str());
    ask = ask
        .header("x-forwarded-method", req.method.as_str())
        .header("x-forwarded-proto", if tls { "https" } else { "http" })
        .header("x-forwarded-uri", uri);
    if let Some(host) = request_host(req).as_str() {
        ask = ask.header("x-forwarded-host", host);
    }
    if let Some(ip) = ip {
        ask = ask.header("x-forwarded-for", ip.to_string());
    }
    let ask = match ask.body(Empty::new()) {
        Ok(a) => a,
        Err(e) => return Forward::Unreachable(e.to_string()),
    };
    let wait = client.wait;
    let answer = match tokio::time::timeout(wait, client.client.request(ask)).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return Forward::Unreachable(e.to_string()),
        Err(_) => return Forward::Unreachable(format!("no answer within {wait:?}")),
    };
    let (parts, body) = answer.into_parts();
    if parts.status.is_success() {
        let copied = forward
            .copy
            .iter()
            .filter_map(|name| Some((name.clone(), parts.headers.get(name)?.clone())))
            .collect();
        return Forward::Pass(copied);
    }
    let body =
        match tokio::time::timeout(wait, Limited::new(body, FORWARD_BODY_MAX).collect()).await {
            Ok(Ok(b)) => b.to_bytes(),
            _ => Bytes::new(),
        };
    let Ok(mut resp) = ResponseHeader::build(parts.status, Some(parts.headers.len() + 2)) else {
        return Forward::Unreachable("an unreadable answer".into());
    };
    for (name, value) in parts.headers.iter() {
        if !not_forwarded(name) {
            let _ = resp.append_header(name.clone(), value.clone());
        }
    }
    let _ = resp.insert_header(header::CONTENT_LENGTH, body.len().to_string());
    Forward::Answer(Box::new(resp), body)
}

/// The request as it goes upstream: prefix stripped, headers set and removed.
pub fn upstream_request(
    upstream: &mut RequestHeader,
    ctx: &mut Ctx,
    route: &Route,
    policy: &RoutePolicy,
) -> Result<()> {
    let spec = &policy.spec;
    if spec.strip_prefix && route.prefix.len() > 1 {
        let prefix = route.prefix.as_str();
        let pq = upstream
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        if let Some(rest) = pq.strip_prefix(prefix) {
            let rest = if rest.starts_with('/') {
                rest.to_string()
            } else {
                format!("/{rest}")
            };
            upstream.set_raw_path(rest.as_bytes())?;
            upstream.insert_header("x-forwarded-prefix", prefix)?;
        }
    }
    for name in &spec.request_remove {
        upstream.remove_header(name);
    }
    for (name, value) in &spec.request_set {
        upstream.insert_header(name.clone(), value.clone())?;
    }
    if let Some(forward) = &spec.forward {
        // What the auth service vouches for comes from it alone, never
        // from the client.
        for name in &forward.copy {
            upstream.remove_header(name);
        }
    }
    if let Some(state) = &mut ctx.policy {
        for (name, value) in std::mem::take(&mut state.forwarded) {
            upstream.insert_header(name, value)?;
        }
    }
    Ok(())
}

/// A piece of a body without Content-Length: 413 once it is over the limit.
pub fn request_body(ctx: &mut Ctx, body: &Option<Bytes>) -> Result<()> {
    let Some(state) = &mut ctx.policy else {
        return Ok(());
    };
    let (Some(left), Some(chunk)) = (state.body_left, body) else {
        return Ok(());
    };
    match left.checked_sub(chunk.len() as u64) {
        Some(rest) => {
            state.body_left = Some(rest);
            Ok(())
        }
        None => Err(pingora::Error::explain(
            pingora::ErrorType::HTTPStatus(413),
            "the request body is over the route's body_limit",
        )),
    }
}

/// The answer as it goes to the client: headers, CORS, the sticky cookie,
/// compression.
pub fn response(
    session: &Session,
    response: &mut ResponseHeader,
    ctx: &mut Ctx,
    route: &Route,
    policy: &RoutePolicy,
    tls: bool,
) -> Result<()> {
    let spec = &policy.spec;
    for name in &spec.response_remove {
        response.remove_header(name);
    }
    for (name, value) in &spec.response_set {
        response.insert_header(name.clone(), value.clone())?;
    }
    let Some(state) = &mut ctx.policy else {
        return Ok(());
    };
    if matches!(response.status.as_u16(), 404 | 502 | 503 | 504) {
        if let Some(page) = policy.page.load_full() {
            if wants_html(session.req_header()) && has_body(session, response) {
                let html = Bytes::from(fill(&page, response.status.as_u16(), reason(response)));
                for name in [
                    header::CONTENT_ENCODING,
                    header::TRANSFER_ENCODING,
                    header::ETAG,
                    header::LAST_MODIFIED,
                ] {
                    response.remove_header(&name);
                }
                response.insert_header(header::CONTENT_TYPE, HTML)?;
                response.insert_header(header::CONTENT_LENGTH, html.len().to_string())?;
                state.replace_body = Some(html);
            }
        }
    }
    if let (Some(origin), false) = (
        state.cors_origin.clone(),
        response.status.is_informational(),
    ) {
        let any = spec
            .cors
            .as_ref()
            .is_some_and(|c| c.origins.is_none() && !c.credentials);
        if any {
            response.insert_header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")?;
        } else {
            response.insert_header(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin)?;
            response.append_header(header::VARY, "Origin")?;
        }
        if spec.cors.as_ref().is_some_and(|c| c.credentials) {
            response.insert_header(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true")?;
        }
    }
    if spec.sticky {
        let used = route
            .backends
            .iter()
            .find(|b| Some(b.id.as_ref()) == ctx.backend_id.as_deref());
        if let Some(b) = used {
            if state.sticky != Some(b.token) {
                let secure = if tls { "; Secure" } else { "" };
                let cookie = format!(
                    "{STICKY}={:016x}; Path={}; HttpOnly; SameSite=Lax{secure}",
                    b.token,
                    route.prefix.as_str()
                );
                response.append_header(header::SET_COOKIE, cookie)?;
            }
        }
    }
    if !spec.compress.is_empty() && state.replace_body.is_none() {
        state.compress = compressor(session, response, &spec.compress);
    }
    Ok(())
}

/// An answer that will have body pieces (the body filter is called).
fn has_body(session: &Session, response: &ResponseHeader) -> bool {
    if session.req_header().method == Method::HEAD {
        return false;
    }
    let length = response
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match length {
        Some(n) => n > 0,
        None => response.headers.contains_key(header::TRANSFER_ENCODING),
    }
}

fn reason(response: &ResponseHeader) -> &'static str {
    response.status.canonical_reason().unwrap_or("Error")
}

/// A compressor for this answer, when the client accepts one of the
/// route's encodings and the answer is worth it.
fn compressor(
    session: &Session,
    response: &mut ResponseHeader,
    offered: &[Encoding],
) -> Option<Box<ResponseCompressionCtx>> {
    let req = session.req_header();
    // Only a whole 200: a 206's Content-Range counts the bytes as they are.
    if req.method == Method::HEAD || response.status != http::StatusCode::OK {
        return None;
    }
    let small = response
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n < COMPRESS_MIN);
    if small {
        return None;
    }
    let accepted = accepted_encodings(req);
    let Some(chosen) = offered.iter().find(|e| accepted.contains(e)) else {
        // Another client may get it compressed: caches must tell them apart.
        let _ = response.append_header(header::VARY, "Accept-Encoding");
        return None;
    };
    let (algorithm, level) = match chosen {
        Encoding::Gzip => (Algorithm::Gzip, 5),
        Encoding::Brotli => (Algorithm::Brotli, 5),
        Encoding::Zstd => (Algorithm::Zstd, 3),
    };
    let mut ctx = ResponseCompressionCtx::new(0, false, false);
    ctx.adjust_algorithm_level(algorithm, level);
    // Pingora's negotiation then sees only the encoding berth chose.
    let mut asked = RequestHeader::build(Method::GET, b"/", Some(1)).ok()?;
    asked
        .insert_header(header::ACCEPT_ENCODING, chosen.token())
        .ok()?;
    ctx.request_filter(&asked);
    ctx.response_header_filter(response, false);
    Some(Box::new(ctx))
}

/// The encodings of `Accept-Encoding` with a weight above zero.
fn accepted_encodings(req: &RequestHeader) -> Vec<Encoding> {
    let mut out = Vec::new();
    for value in req.headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let token = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            let enc = match token.as_str() {
                "gzip" | "x-gzip" => Encoding::Gzip,
                "br" => Encoding::Brotli,
                "zstd" => Encoding::Zstd,
                _ => continue,
            };
            if !refused && !out.contains(&enc) {
                out.push(enc);
            }
        }
    }
    out
}

/// A piece of the answer, compressed when the route compresses it.
pub fn response_body(ctx: &mut Ctx, body: &mut Option<Bytes>, end: bool) {
    let Some(state) = ctx.policy.as_mut() else {
        return;
    };
    if let Some(page) = &state.replace_body {
        *body = end.then(|| page.clone());
        return;
    }
    let Some(c) = state.compress.as_mut() else {
        return;
    };
    if let Some(out) = c.response_body_filter(body.as_ref(), end) {
        *body = Some(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(Method::GET, b"/a?b=1", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn www_redirects_keep_path_port_and_scheme() {
        let r = req(&[("host", "www.example.com:8080")]);
        assert_eq!(
            www_target(&r, Www::ToApex, false).as_deref(),
            Some("http://example.com:8080/a?b=1")
        );
        assert_eq!(www_target(&r, Www::ToWww, true), None);
        let r = req(&[("host", "example.com")]);
        assert_eq!(
            www_target(&r, Www::ToWww, true).as_deref(),
            Some("https://www.example.com/a?b=1")
        );
        assert_eq!(www_target(&r, Www::ToApex, true), None);
    }

    #[test]
    fn sticky_cookie_among_others() {
        let r = req(&[("cookie", "a=1; berth_sticky=00000000000000ff; b=2")]);
        assert_eq!(sticky_cookie(&r), Some(255));
        let r = req(&[("cookie", "a=1"), ("cookie", "berth_sticky=zz")]);
        assert_eq!(sticky_cookie(&r), None);
        let r = req(&[("cookie", "berth_stickyx=10")]);
        assert_eq!(sticky_cookie(&r), None);
    }

    #[test]
    fn accept_encoding_weights() {
        let r = req(&[("accept-encoding", "gzip;q=0, br;q=0.5, zstd")]);
        assert_eq!(
            accepted_encodings(&r),
            vec![Encoding::Brotli, Encoding::Zstd]
        );
        let r = req(&[("accept-encoding", "identity")]);
        assert!(accepted_encodings(&r).is_empty());
        assert!(accepted_encodings(&req(&[])).is_empty());
    }
}
