//! The dashboard: static pages compiled into the binary and served on the
//! admin listener, fed by the admin API and one Server-Sent Events stream
//! (`live`). A browser logs in with the admin token and gets a session
//! cookie (`session`); API clients keep sending the token in a header.
//! Every page answers 401 with the login form without a session; every
//! answer carries a strict Content-Security-Policy (scripts and styles from
//! berth's origin only, no inline code, nothing else reachable).

pub mod live;
pub mod samples;
pub mod session;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use crate::api::{token, App};
use crate::config::Config;
use session::{Session, Sessions};

/// What the dashboard keeps beside the API's state.
pub struct Ui {
    pub sessions: Sessions,
    pub hub: live::Hub,
    pub samples: Arc<samples::Samples>,
}

impl Ui {
    /// `state`: where sessions are kept across restarts (none in tests of
    /// other parts).
    pub fn new(config: &Config, state: Option<crate::state::StateDir>) -> Ui {
        Ui {
            sessions: Sessions::load(state),
            hub: live::Hub::default(),
            samples: Arc::new(samples::Samples::new(
                config.admin.stats_interval,
                config.admin.stats_history,
            )),
        }
    }
}

/// Every asset: its name under `/ui/`, its type, its text.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", JS, include_str!("assets/app.js")),
    ("views.js", JS, include_str!("assets/views.js")),
    ("charts.js", JS, include_str!("assets/charts.js")),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("assets/style.css"),
    ),
];
const JS: &str = "text/javascript; charset=utf-8";
const INDEX: &str = include_str!("assets/index.html");
const LOGIN: &str = include_str!("assets/login.html");

/// The one asset a visitor without a session may load: the login form's look.
const PUBLIC_ASSET: &str = "style.css";

/// Scripts, styles, images and connections from berth's origin only; no
/// inline code, no frames, forms post only here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The dashboard's routes (merged into the admin router).
pub fn routes() -> Router<App> {
    Router::new()
        .route("/", get(page))
        .route("/service/{*rest}", get(page))
        .route("/logs/{*rest}", get(page))
        .route("/routes", get(page))
        .route("/dns", get(page))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/ui/{file}", get(asset))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
}

/// The headers every dashboard answer carries.
fn secured(mut resp: Response, content_type: &'static str) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: with it a browser sends `Origin: null` on the
    // login form's POST, and berth could not tell its own page from another
    // site's.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

fn html(status: StatusCode, body: String) -> Response {
    let mut r = secured((status, body).into_response(), "text/html; charset=utf-8");
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// HTML-escapes text for the templates.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Where to go after login: a page of the dashboard, nothing else (an
/// open redirect would send a fresh session's browser anywhere).
pub fn safe_next(next: Option<&str>) -> String {
    let Some(n) = next else { return "/".into() };
    let path = n.split(['?', '#']).next().unwrap_or("");
    let page = path == "/"
        || path == "/routes"
        || path == "/dns"
        || path.starts_with("/service/")
        || path.starts_with("/logs/");
    let clean = !n.contains("//") && !n.contains('\\') && n.chars().all(|c| !c.is_control());
    if page && clean {
        n.to_string()
    } else {
        "/".into()
    }
}

fn login_html(status: StatusCode, error: &str, next: &str) -> Response {
    let body = LOGIN
        .replace("{{error}}", &escape(error))
        .replace("{{next}}", &escape(&safe_next(Some(next))));
    html(status, body)
}

/// The session of a request, if it has one made with the current token.
pub fn session_of(app: &App, headers: &HeaderMap) -> Option<Session> {
    let cookies = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
    app.ui.sessions.find(cookies, &app.token.load())
}

/// A page: the app with the session's CSRF token, or the login form with
/// 401.
async fn page(State(app): State<App>, req: Request) -> Response {
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    match session_of(&app, req.headers()) {
        Some(s) => html(StatusCode::OK, INDEX.replace("{{csrf}}", &escape(&s.csrf))),
        None => login_html(StatusCode::UNAUTHORIZED, "", &target),
    }
}

async fn login_page(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let next = q.get("next").map(String::as_str);
    if session_of(&app, &headers).is_some() {
        return redirect(&safe_next(next), None);
    }
    // The pages send a browser whose session was refused here with `ended`.
    let why = if q.contains_key("ended") {
        "Your session ended (it expired, you logged out elsewhere, or the admin token changed): sign in again."
    } else {
        ""
    };
    login_html(StatusCode::OK, why, next.unwrap_or("/"))
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
    next: Option<String>,
}

fn redirect(to: &str, cookie: Option<String>) -> Response {
    let mut r = secured(
        (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response(),
        "text/plain; charset=utf-8",
    );
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

/// Whether the browser reached the dashboard over HTTPS: the admin listener
/// speaks plain HTTP on loopback, so HTTPS means a TLS proxy in front of it
/// (berth's own, with a route to the admin address, or another), which says
/// so in `X-Forwarded-Proto`. Its cookie is then `Secure`. A client that
/// sends the header itself over plain HTTP only loses its own session.
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn origin_ok(headers: &HeaderMap) -> bool {
    let get = |h| headers.get(h).and_then(|v: &HeaderValue| v.to_str().ok());
    session::same_origin(get(header::ORIGIN), get(header::HOST))
}

/// The login form's answer: the token is checked in constant time; a wrong
/// one waits a moment (a guessing script gets a few tries a second per
/// connection) and is refused with 401.
async fn login(State(app): State<App>, headers: HeaderMap, Form(f): Form<LoginForm>) -> Response {
    let next = f.next.as_deref().unwrap_or("/");
    if !origin_ok(&headers) {
        return login_html(
            StatusCode::FORBIDDEN,
            "login from another site refused",
            next,
        );
    }
    let current = app.token.load();
    if !token::matches(f.token.trim(), &current) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        tracing::warn!("dashboard login refused: wrong token");
        return login_html(StatusCode::UNAUTHORIZED, "Wrong token.", next);
    }
    let ttl = app.snapshot.load().config.admin.session_ttl;
    match app.ui.sessions.open(&current, ttl) {
        Ok((cookie, _)) => redirect(
            &safe_next(Some(next)),
            Some(session::set_cookie(&cookie, ttl, over_tls(&headers))),
        ),
        Err(e) => login_html(StatusCode::INTERNAL_SERVER_ERROR, &e, next),
    }
}

#[derive(Deserialize)]
pub struct LogoutForm {
    csrf: Option<String>,
}

/// Ends the session; needs its CSRF token (form field or header).
async fn logout(State(app): State<App>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let form: LogoutForm = serde_urlencoded::from_bytes(&body).unwrap_or(LogoutForm { csrf: None });
    let given = form.csrf.or_else(|| {
        headers
            .get(session::CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    });
    let Some(s) = session_of(&app, &headers) else {
        return redirect("/login", Some(session::clear_cookie(over_tls(&headers))));
    };
    if !origin_ok(&headers) || !session::csrf_ok(&s, given.as_deref()) {
        return forbidden_csrf();
    }
    let cookies = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
    app.ui.sessions.close(cookies);
    redirect("/login", Some(session::clear_cookie(over_tls(&headers))))
}

/// 403 for a change without the session's CSRF token.
pub fn forbidden_csrf() -> Response {
    crate::api::ApiError(
        StatusCode::FORBIDDEN,
        format!(
            "missing or wrong CSRF token: a change made with the dashboard's session needs the {} header from the page",
            session::CSRF_HEADER
        ),
    )
    .into_response()
}

/// Whether a cookie-authenticated request may go on: reads pass, changes
/// need the session's CSRF token and a same-origin `Origin` (if sent).
pub fn csrf_passes(s: &Session, method: &Method, headers: &HeaderMap) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    let given = headers
        .get(session::CSRF_HEADER)
        .and_then(|v| v.to_str().ok());
    origin_ok(headers) && session::csrf_ok(s, given)
}

/// `/ui/<file>`: the stylesheet for anyone, the scripts with a session.
async fn asset(State(app): State<App>, Path(file): Path<String>, headers: HeaderMap) -> Response {
    let Some((name, kind, text)) = ASSETS.iter().find(|(n, _, _)| *n == file) else {
        return crate::api::ApiError(StatusCode::NOT_FOUND, format!("no asset {file:?}"))
            .into_response();
    };
    if *name != PUBLIC_ASSET && session_of(&app, &headers).is_none() {
        return crate::api::ApiError(
            StatusCode::UNAUTHORIZED,
            "log in first (/login) or send the bearer token".into(),
        )
        .into_response();
    }
    let mut r = secured((StatusCode::OK, *text).into_response(), kind);
    // Same URL, new binary: the browser asks again (cheap: on loopback).
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// Bytes of every asset together: the dashboard's whole weight.
pub fn weight() -> usize {
    ASSETS.iter().map(|(_, _, t)| t.len()).sum::<usize>() + INDEX.len() + LOGIN.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_the_dashboard() {
        assert_eq!(safe_next(Some("/service/blog/web")), "/service/blog/web");
        assert_eq!(
            safe_next(Some("/logs/a/b?container=x")),
            "/logs/a/b?container=x"
        );
        assert_eq!(safe_next(Some("/routes")), "/routes");
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil.example",
            "/api/containers",
            "/service//evil",
            "javascript:alert(1)",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn templates_are_escaped_and_filled() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert!(
            INDEX.contains("{{csrf}}"),
            "the page carries the CSRF token"
        );
        assert!(LOGIN.contains("{{error}}") && LOGIN.contains("{{next}}"));
    }

    #[test]
    fn the_dashboard_stays_small_and_self_contained() {
        assert!(weight() < 150 * 1024, "{} bytes", weight());
        for (name, _, text) in ASSETS
            .iter()
            .chain([("index.html", "", INDEX), ("login.html", "", LOGIN)].iter())
        {
            // The SVG namespace is a name, not a place.
            let text = text.replace("http://www.w3.org/", "");
            for needle in [
                "http://", "https://", "style=\"", "<script>", "onclick=", "onload=",
            ] {
                assert!(
                    !text.contains(needle),
                    "{name} contains {needle:?}: the CSP allows nothing but berth's origin and no inline code"
                );
            }
        }
    }
}
