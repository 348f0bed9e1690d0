//! Policy labels → [`PolicySpec`]. Pure. One key at a time
//! ([`PolicySpec::set`]), then [`PolicySpec::finish`] checks what needs
//! another key (a burst needs a rate, CORS methods need origins).
//!
//! A security label (auth, allow/deny, rate limit, body limit) that does not
//! parse is kept in [`PolicySpec::blocked`]: the route answers 503 with the
//! reason rather than serve unprotected. Any other bad label is left out of
//! the route's policy, with a problem.

use std::net::IpAddr;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use ipnet::IpNet;

use crate::names::parse_duration;

/// Every policy key of a route (after `berth.` or `berth.<route>.`), but the
/// per-header families [`REQUEST_SET`] and [`RESPONSE_SET`].
pub const POLICY_KEYS: &[&str] = &[
    "auth.basic",
    "auth.realm",
    "auth.forward",
    "auth.forward.headers",
    "allow",
    "deny",
    "ratelimit",
    "ratelimit.burst",
    "ratelimit.key",
    "redirect",
    "redirect.www",
    "redirect.code",
    "strip_prefix",
    "headers.request.remove",
    "headers.response.remove",
    "cors.origins",
    "cors.methods",
    "cors.headers",
    "cors.credentials",
    "cors.max_age",
    "compress",
    "body_limit",
    "timeout.read",
    "timeout.connect",
    "sticky",
    "errors.page",
];

/// `headers.request.set.<Header-Name>=value`: one label per header, so a
/// value may hold any character a header may.
pub const REQUEST_SET: &str = "headers.request.set.";
pub const RESPONSE_SET: &str = "headers.response.set.";

/// Whether `key` is a policy key.
pub fn is_policy_key(key: &str) -> bool {
    POLICY_KEYS.contains(&key)
        || [REQUEST_SET, RESPONSE_SET]
            .iter()
            .any(|f| key.strip_prefix(f).is_some_and(|n| !n.is_empty()))
}

/// Keys whose failure must not leave the route open: 503 until fixed.
pub fn is_security_key(key: &str) -> bool {
    key.starts_with("auth.")
        || matches!(key, "allow" | "deny" | "body_limit")
        || key == "ratelimit"
        || key.starts_with("ratelimit.")
}

/// The first parts of policy keys: never route names.
pub fn is_policy_group(name: &str) -> bool {
    POLICY_KEYS
        .iter()
        .chain(&["headers"])
        .any(|k| k.split('.').next() == Some(name))
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct PolicySpec {
    /// Basic auth users: name and bcrypt or argon2 hash. Empty: no basic auth.
    pub basic: Vec<(String, String)>,
    pub realm: Option<String>,
    pub forward: Option<ForwardAuth>,
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
    pub ratelimit: Option<Rate>,
    pub www: Option<Www>,
    pub redirects: Vec<PathRedirect>,
    /// 301, 302, 307 or 308 (default) for `redirect` and `redirect.www`.
    pub redirect_code: Option<u16>,
    pub strip_prefix: bool,
    pub request_set: Vec<(HeaderName, HeaderValue)>,
    pub request_remove: Vec<HeaderName>,
    pub response_set: Vec<(HeaderName, HeaderValue)>,
    pub response_remove: Vec<HeaderName>,
    pub cors: Option<Cors>,
    /// Encodings offered, in berth's order of preference. Empty: off.
    pub compress: Vec<Encoding>,
    pub body_limit: Option<u64>,
    pub read_timeout: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    pub sticky: bool,
    /// An HTML file in the container: the page browsers get for 404, 502,
    /// 503 and 504 on this route (`{{status}}` and `{{message}}` filled in).
    pub error_page: Option<String>,
    /// Security labels that did not parse (`key: why`): the route answers
    /// 503 with them.
    pub blocked: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ForwardAuth {
    /// `http://host:port/path`: asked with the request's method and headers.
    pub url: http::Uri,
    /// Headers of the auth answer copied onto the request upstream.
    pub copy: Vec<HeaderName>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rate {
    /// Requests per `per`.
    pub count: u32,
    pub per: Duration,
    /// Requests a client may send at once after being idle.
    pub burst: u32,
    pub key: RateKey,
}

impl Rate {
    /// The time one request uses up.
    pub fn interval(&self) -> Duration {
        self.per / self.count
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum RateKey {
    /// The client's address (behind a trusted proxy: from X-Forwarded-For).
    Ip,
    /// A request header (an API key); requests without it count by address.
    Header(HeaderName),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Www {
    ToApex,
    ToWww,
}

/// `from:to`: `from` is a path, or a prefix ending in `/*`; `to` a path or
/// an absolute URL, ending in `/*` to carry the rest of the path along.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRedirect {
    pub from: String,
    pub prefix: bool,
    pub to: String,
    pub keep_rest: bool,
}

impl PathRedirect {
    /// Where `path` goes, if this redirect is for it.
    pub fn target(&self, path: &str) -> Option<String> {
        if !self.prefix {
            return (path == self.from).then(|| self.to.clone());
        }
        // `/old/*` covers `/old` and everything under `/old/`.
        let rest = path.strip_prefix(&self.from)?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        Some(if self.keep_rest {
            format!("{}{}", self.to, rest)
        } else {
            self.to.clone()
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cors {
    /// `None`: any origin (`*`).
    pub origins: Option<Vec<String>>,
    pub methods: Vec<Method>,
    pub headers: Vec<HeaderName>,
    pub credentials: bool,
    pub max_age: Duration,
}

impl Cors {
    pub fn allows(&self, origin: &str) -> bool {
        self.origins
            .as_ref()
            .is_none_or(|list| list.iter().any(|o| o.eq_ignore_ascii_case(origin)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gzip,
    Brotli,
    Zstd,
}

impl Encoding {
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
        }
    }
}

/// Policy keys read so far that need a partner, checked by `finish`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Draft {
    rate: Option<(u32, Duration)>,
    burst: Option<u32>,
    rate_key: Option<RateKey>,
    forward_copy: Option<Vec<HeaderName>>,
    cors_origins: Option<Option<Vec<String>>>,
    cors_methods: Option<Vec<Method>>,
    cors_headers: Option<Vec<HeaderName>>,
    cors_credentials: Option<bool>,
    cors_max_age: Option<Duration>,
}

/// A finished spec's problems: the key, and why.
pub type KeyProblem = (String, String);

impl PolicySpec {
    /// Reads one policy label (`key` without the route's prefix). On an
    /// error the key is left unset; a security key also blocks the route.
    pub fn set(&mut self, draft: &mut Draft, key: &str, value: &str) -> Result<(), String> {
        let result = self.set_inner(draft, key, value.trim());
        if let Err(why) = &result {
            if is_security_key(key) {
                self.blocked.push(format!("{key}: {why}"));
            }
        }
        result
    }

    fn set_inner(&mut self, draft: &mut Draft, key: &str, v: &str) -> Result<(), String> {
        if let Some(name) = key.strip_prefix(REQUEST_SET) {
            let pair = header_pair(name, v)?;
            self.request_set.push(pair);
            return Ok(());
        }
        if let Some(name) = key.strip_prefix(RESPONSE_SET) {
            let pair = header_pair(name, v)?;
            self.response_set.push(pair);
            return Ok(());
        }
        match key {
            "auth.basic" => self.basic = basic_users(v)?,
            "auth.realm" => self.realm = Some(realm(v)?),
            "auth.forward" => {
                self.forward = Some(ForwardAuth {
                    url: forward_url(v)?,
                    copy: Vec::new(),
                })
            }
            "auth.forward.headers" => draft.forward_copy = Some(header_names(v)?),
            "allow" => self.allow = networks(v)?,
            "deny" => self.deny = networks(v)?,
            "ratelimit" => draft.rate = Some(rate(v)?),
            "ratelimit.burst" => draft.burst = Some(whole(v, 1, 1_000_000)?),
            "ratelimit.key" => draft.rate_key = Some(rate_key(v)?),
            "redirect" => self.redirects = redirects(v)?,
            "redirect.www" => {
                self.www = Some(match v {
                    "to-apex" => Www::ToApex,
                    "to-www" => Www::ToWww,
                    _ => return Err("use to-apex or to-www".into()),
                })
            }
            "redirect.code" => {
                self.redirect_code = Some(match v {
                    "301" => 301,
                    "302" => 302,
                    "307" => 307,
                    "308" => 308,
                    _ => return Err("use 301, 302, 307 or 308".into()),
                })
            }
            "strip_prefix" => self.strip_prefix = boolean(v)?,
            "headers.request.remove" => self.request_remove = header_names(v)?,
            "headers.response.remove" => self.response_remove = header_names(v)?,
            "cors.origins" => draft.cors_origins = Some(origins(v)?),
            "cors.methods" => {
                draft.cors_methods = Some(
                    list(v)?
                        .into_iter()
                        .map(|m| {
                            Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                                .map_err(|_| format!("'{m}' is not an HTTP method"))
                        })
                        .collect::<Result<_, _>>()?,
                )
            }
            "cors.headers" => draft.cors_headers = Some(header_names(v)?),
            "cors.credentials" => draft.cors_credentials = Some(boolean(v)?),
            "cors.max_age" => draft.cors_max_age = Some(parse_duration(v)?),
            "compress" => self.compress = encodings(v)?,
            "body_limit" => self.body_limit = Some(size(v)?),
            "timeout.read" => self.read_timeout = Some(positive(parse_duration(v)?)?),
            "timeout.connect" => self.connect_timeout = Some(positive(parse_duration(v)?)?),
            "sticky" => {
                self.sticky = match v {
                    "cookie" => true,
                    "off" | "false" => false,
                    _ => return Err("use cookie (or off)".into()),
                }
            }
            "errors.page" => {
                if !v.starts_with('/') || v.len() > 1024 || v.chars().any(char::is_control) {
                    return Err("use the absolute path of an HTML file in the container".into());
                }
                self.error_page = Some(v.to_string());
            }
            _ => return Err("unknown policy label".into()),
        }
        Ok(())
    }

    /// Puts together the keys that go in pairs; returns the keys that are
    /// wrong only together with another (each also blocks the route if it
    /// is a security key).
    pub fn finish(&mut self, draft: Draft) -> Vec<KeyProblem> {
        let mut problems = Vec::new();
        let mut fail = |spec: &mut PolicySpec, key: &str, why: String| {
            if is_security_key(key) {
                spec.blocked.push(format!("{key}: {why}"));
            }
            problems.push((key.to_string(), why));
        };
        match (
            draft.rate,
            self.blocked.iter().any(|b| b.starts_with("ratelimit")),
        ) {
            (Some((count, per)), false) => {
                self.ratelimit = Some(Rate {
                    count,
                    per,
                    burst: draft.burst.unwrap_or(count),
                    key: draft.rate_key.unwrap_or(RateKey::Ip),
                })
            }
            (None, false) if draft.burst.is_some() || draft.rate_key.is_some() => {
                let key = if draft.burst.is_some() {
                    "ratelimit.burst"
                } else {
                    "ratelimit.key"
                };
                fail(self, key, "needs ratelimit (e.g. 100/s)".into());
            }
            _ => {}
        }
        if let Some(copy) = draft.forward_copy {
            match &mut self.forward {
                Some(f) => f.copy = copy,
                None if !self.blocked.iter().any(|b| b.starts_with("auth.forward")) => {
                    fail(self, "auth.forward.headers", "needs auth.forward".into())
                }
                None => {}
            }
        }
        if !self.basic.is_empty() && self.forward.is_some() {
            fail(
                self,
                "auth.forward",
                "a route takes auth.basic or auth.forward, not both".into(),
            );
        }
        match draft.cors_origins {
            Some(origins) => {
                let credentials = draft.cors_credentials.unwrap_or(false);
                if credentials && origins.is_none() {
                    fail(
                        self,
                        "cors.credentials",
                        "browsers refuse credentials with any origin (*): list the origins".into(),
                    );
                } else {
                    self.cors = Some(Cors {
                        origins,
                        methods: draft.cors_methods.unwrap_or_else(|| {
                            [
                                Method::GET,
                                Method::HEAD,
                                Method::POST,
                                Method::PUT,
                                Method::PATCH,
                                Method::DELETE,
                            ]
                            .into()
                        }),
                        headers: draft.cors_headers.unwrap_or_default(),
                        credentials,
                        max_age: draft.cors_max_age.unwrap_or(Duration::from_secs(600)),
                    });
                }
            }
            None => {
                let lone = [
                    ("cors.methods", draft.cors_methods.is_some()),
                    ("cors.headers", draft.cors_headers.is_some()),
                    ("cors.credentials", draft.cors_credentials.is_some()),
                    ("cors.max_age", draft.cors_max_age.is_some()),
                ];
                for (key, set) in lone {
                    if set {
                        fail(self, key, "needs cors.origins".into());
                    }
                }
            }
        }
        problems
    }

    /// Nothing to do: the route carries no policy at all.
    pub fn is_empty(&self) -> bool {
        *self == PolicySpec::default()
    }

    /// The policies in one line each, as `berth routes` and the API show
    /// them (never a password hash).
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.blocked.is_empty() {
            out.push(format!("blocked (503): {}", self.blocked.join("; ")));
        }
        if !self.basic.is_empty() {
            let users: Vec<&str> = self.basic.iter().map(|(u, _)| u.as_str()).collect();
            out.push(format!("auth.basic: {}", users.join(", ")));
        }
        if let Some(f) = &self.forward {
            out.push(format!("auth.forward: {}", f.url));
        }
        if !self.allow.is_empty() {
            out.push(format!("allow: {}", join(&self.allow)));
        }
        if !self.deny.is_empty() {
            out.push(format!("deny: {}", join(&self.deny)));
        }
        if let Some(r) = &self.ratelimit {
            let per = match r.per.as_secs() {
                1 => "s",
                60 => "m",
                _ => "h",
            };
            let key = match &r.key {
                RateKey::Ip => "ip".to_string(),
                RateKey::Header(h) => format!("header:{h}"),
            };
            out.push(format!(
                "ratelimit: {}/{per} burst {} by {key}",
                r.count, r.burst
            ));
        }
        if let Some(w) = self.www {
            let to = if w == Www::ToApex {
                "to-apex"
            } else {
                "to-www"
            };
            out.push(format!("redirect.www: {to}"));
        }
        for r in &self.redirects {
            let star = |yes: bool| if yes { "/*" } else { "" };
            out.push(format!(
                "redirect: {}{} → {}{}",
                r.from,
                star(r.prefix),
                r.to,
                star(r.keep_rest)
            ));
        }
        if self.strip_prefix {
            out.push("strip_prefix".into());
        }
        for (side, set, remove) in [
            ("request", &self.request_set, &self.request_remove),
            ("response", &self.response_set, &self.response_remove),
        ] {
            for (name, value) in set {
                // A request header may carry a credential: its name only.
                let value = match side {
                    "request" => "…".into(),
                    _ => String::from_utf8_lossy(value.as_bytes()),
                };
                out.push(format!("headers.{side}: {name}: {value}"));
            }
            if !remove.is_empty() {
                out.push(format!("headers.{side}.remove: {}", join(remove)));
            }
        }
        if let Some(c) = &self.cors {
            let origins = c.origins.as_ref().map_or("*".into(), |o| o.join(", "));
            out.push(format!("cors: {origins}"));
        }
        if !self.compress.is_empty() {
            let list: Vec<&str> = self.compress.iter().map(|e| e.token()).collect();
            out.push(format!("compress: {}", list.join(", ")));
        }
        if let Some(b) = self.body_limit {
            out.push(format!("body_limit: {b} bytes"));
        }
        if let Some(t) = self.read_timeout {
            out.push(format!(
                "timeout.read: {}",
                crate::names::format_duration(t)
            ));
        }
        if let Some(t) = self.connect_timeout {
            out.push(format!(
                "timeout.connect: {}",
                crate::names::format_duration(t)
            ));
        }
        if self.sticky {
            out.push("sticky: cookie".into());
        }
        if let Some(p) = &self.error_page {
            out.push(format!("errors.page: {p}"));
        }
        out
    }
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A comma-separated list of non-empty items.
fn list(v: &str) -> Result<Vec<&str>, String> {
    let items: Vec<&str> = v.split(',').map(str::trim).collect();
    if items.iter().any(|i| i.is_empty()) {
        return Err("empty item in the list".into());
    }
    Ok(items)
}

/// `true`/`yes`/`1` or `false`/`no`/`0`, any case (labels read the same).
pub(crate) fn boolean(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err("not a boolean: use true or false".into()),
    }
}

pub(crate) fn whole(v: &str, min: u32, max: u32) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("use a whole number from {min} to {max}")),
    }
}

pub(crate) fn positive(d: Duration) -> Result<Duration, String> {
    if d.is_zero() {
        Err("must be more than zero".into())
    } else {
        Ok(d)
    }
}

/// `user:hash,...`. An argon2 hash holds commas (`m=19456,t=2,p=1`): a piece
/// without a `:` belongs to the hash before it.
fn basic_users(v: &str) -> Result<Vec<(String, String)>, String> {
    let mut entries: Vec<String> = Vec::new();
    for piece in v.split(',') {
        let piece = piece.trim();
        match entries.last_mut() {
            Some(last) if !piece.contains(':') => {
                last.push(',');
                last.push_str(piece);
            }
            _ => entries.push(piece.to_string()),
        }
    }
    let mut users: Vec<(String, String)> = Vec::new();
    for entry in entries {
        let Some((user, hash)) = entry.split_once(':') else {
            return Err("use user:hash (htpasswd -nB user makes one)".into());
        };
        if user.is_empty() || user.chars().any(|c| c.is_control()) {
            return Err("an empty user name (use user:hash)".into());
        }
        if users.iter().any(|(u, _)| u == user) {
            return Err(format!("user '{user}' is listed twice"));
        }
        super::auth::check_hash(hash).map_err(|why| format!("user '{user}': {why}"))?;
        users.push((user.to_string(), hash.to_string()));
    }
    if users.is_empty() {
        return Err("no users: use user:hash".into());
    }
    Ok(users)
}

fn realm(v: &str) -> Result<String, String> {
    if v.is_empty() || v.len() > 100 || v.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
        return Err("a realm is 1 to 100 characters without quotes or backslashes".into());
    }
    Ok(v.to_string())
}

fn forward_url(v: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = v
        .parse()
        .map_err(|_| "not a URL: use http://host:port/path".to_string())?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(
            "use an http:// URL with a host (the auth service on a network berth reaches)".into(),
        );
    }
    Ok(uri)
}

fn networks(v: &str) -> Result<Vec<IpNet>, String> {
    list(v)?
        .into_iter()
        .map(|n| {
            n.parse::<IpNet>()
                .or_else(|_| n.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("'{n}' is not an address or a CIDR (10.0.0.0/8)"))
        })
        .collect()
}

/// `100/s`, `30/m`, `1000/h`.
pub(crate) fn rate(v: &str) -> Result<(u32, Duration), String> {
    const FORM: &str = "use a count per second, minute or hour: 100/s, 30/m, 1000/h";
    let (count, unit) = v.split_once('/').ok_or_else(|| FORM.to_string())?;
    let count = whole(count.trim(), 1, 1_000_000).map_err(|_| FORM.to_string())?;
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(FORM.into()),
    };
    Ok((count, per))
}

fn rate_key(v: &str) -> Result<RateKey, String> {
    if v == "ip" {
        return Ok(RateKey::Ip);
    }
    match v.strip_prefix("header:") {
        Some(name) => Ok(RateKey::Header(header_name(name.trim())?)),
        None => Err("use ip or header:NAME".into()),
    }
}

fn redirects(v: &str) -> Result<Vec<PathRedirect>, String> {
    list(v)?
        .into_iter()
        .map(|pair| {
            let (from, to) = pair
                .split_once(':')
                .ok_or_else(|| format!("'{pair}': use /from:/to"))?;
            let (from, to) = (from.trim(), to.trim());
            if !from.starts_with('/') || from.chars().any(|c| c.is_control() || c == ' ') {
                return Err(format!("'{from}' is not a path: it starts with /"));
            }
            let absolute = to.starts_with("http://") || to.starts_with("https://");
            if !(to.starts_with('/') || absolute)
                || to.chars().any(|c| c.is_control() || c == ' ')
                || HeaderValue::from_str(to).is_err()
            {
                return Err(format!(
                    "'{to}' is not a path or an http(s):// URL to redirect to"
                ));
            }
            let (from, prefix) = match from.strip_suffix("/*") {
                Some(f) => (f, true),
                None => (from, false),
            };
            let (to, keep_rest) = match to.strip_suffix("/*") {
                Some(t) if prefix => (t, true),
                Some(_) => return Err(format!("'{to}': /* in the target needs /* in the path")),
                None => (to, false),
            };
            Ok(PathRedirect {
                from: from.to_string(),
                prefix,
                to: to.to_string(),
                keep_rest,
            })
        })
        .collect()
}

fn header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("'{name}' is not a header name"))
}

fn header_names(v: &str) -> Result<Vec<HeaderName>, String> {
    list(v)?.into_iter().map(header_name).collect()
}

fn header_pair(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let name = header_name(name)?;
    // Headers berth itself keeps right: framing and the connection.
    if matches!(
        name.as_str(),
        "host" | "content-length" | "transfer-encoding" | "connection" | "upgrade"
    ) {
        return Err(format!("{name} is berth's to set"));
    }
    let value = HeaderValue::from_str(value)
        .map_err(|_| "a header value holds no control characters".to_string())?;
    Ok((name, value))
}

fn origins(v: &str) -> Result<Option<Vec<String>>, String> {
    if v == "*" {
        return Ok(None);
    }
    let list = list(v)?
        .into_iter()
        .map(|o| {
            let uri: http::Uri = o
                .parse()
                .map_err(|_| format!("'{o}' is not an origin (https://app.example.com)"))?;
            let plain = matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.host().is_some()
                && uri.path() == "/"
                && !o.ends_with('/');
            if !plain {
                return Err(format!(
                    "'{o}' is not an origin: scheme://host[:port], no path"
                ));
            }
            Ok(o.to_string())
        })
        .collect::<Result<_, _>>()?;
    Ok(Some(list))
}

fn encodings(v: &str) -> Result<Vec<Encoding>, String> {
    match v {
        "off" | "false" => return Ok(Vec::new()),
        "true" | "on" => return Ok(vec![Encoding::Zstd, Encoding::Brotli, Encoding::Gzip]),
        _ => {}
    }
    let mut out = Vec::new();
    for e in list(v)? {
        let enc = match e {
            "gzip" => Encoding::Gzip,
            "br" => Encoding::Brotli,
            "zstd" => Encoding::Zstd,
            _ => return Err(format!("'{e}': use gzip, br and/or zstd")),
        };
        if !out.contains(&enc) {
            out.push(enc);
        }
    }
    Ok(out)
}

/// `10MB`, `512KB`, `1GB`, `1048576`: units of 1024 (nginx's
/// `client_max_body_size 10m` reads the same).
pub fn size(v: &str) -> Result<u64, String> {
    const FORM: &str = "use bytes or a size with a unit: 512KB, 10MB, 1GB";
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let num: u64 = num.parse().map_err(|_| FORM.to_string())?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return Err(FORM.into()),
    };
    let bytes = num.checked_mul(mult).ok_or_else(|| FORM.to_string())?;
    if bytes == 0 {
        return Err("must be more than zero".into());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets every pair, finishes, and returns the spec with every problem.
    fn parse(pairs: &[(&str, &str)]) -> (PolicySpec, Vec<String>) {
        let mut spec = PolicySpec::default();
        let mut draft = Draft::default();
        let mut problems = Vec::new();
        for (k, v) in pairs {
            if let Err(why) = spec.set(&mut draft, k, v) {
                problems.push(format!("{k}: {why}"));
            }
        }
        for (k, why) in spec.finish(draft) {
            problems.push(format!("{k}: {why}"));
        }
        (spec, problems)
    }

    const HASH: &str = "$2y$05$pQid562aaK.6oz2XeQEu4eYNpBIaQFBBTC5nmE4UBiAYQCwXSqlGi";

    #[test]
    fn every_key_parses() {
        let users = format!("alice:{HASH}, bob:$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG");
        let (spec, problems) = parse(&[
            ("auth.basic", &users),
            ("auth.realm", "staff only"),
            ("allow", "127.0.0.1, 10.0.0.0/8"),
            ("deny", "10.6.6.0/24"),
            ("ratelimit", "100/m"),
            ("ratelimit.burst", "20"),
            ("ratelimit.key", "header:X-Api-Key"),
            ("redirect", "/old:/new, /blog/*:https://blog.test/*"),
            ("redirect.www", "to-apex"),
            ("redirect.code", "301"),
            ("strip_prefix", "true"),
            ("headers.request.set.X-Team", "a, b; c"),
            ("headers.request.remove", "Cookie"),
            (
                "headers.response.set.Content-Security-Policy",
                "default-src 'self'; img-src *",
            ),
            ("headers.response.remove", "Server, X-Powered-By"),
            ("cors.origins", "https://app.test, http://localhost:3000"),
            ("cors.methods", "get, post"),
            ("cors.credentials", "true"),
            ("compress", "br, gzip"),
            ("body_limit", "10MB"),
            ("timeout.read", "5s"),
            ("timeout.connect", "500ms"),
            ("sticky", "cookie"),
        ]);
        assert_eq!(problems, Vec::<String>::new());
        assert_eq!(spec.basic.len(), 2);
        assert!(
            spec.basic[1].1.contains("m=19456,t=2,p=1"),
            "{:?}",
            spec.basic[1]
        );
        let rate = spec.ratelimit.clone().unwrap();
        assert_eq!((rate.count, rate.burst), (100, 20));
        assert_eq!(rate.interval(), Duration::from_millis(600));
        assert_eq!(
            rate.key,
            RateKey::Header(HeaderName::from_static("x-api-key"))
        );
        assert_eq!(spec.redirects[0].target("/old").as_deref(), Some("/new"));
        assert_eq!(spec.redirects[0].target("/old/x"), None);
        assert_eq!(
            spec.redirects[1].target("/blog/2024/post").as_deref(),
            Some("https://blog.test/2024/post")
        );
        assert_eq!(
            spec.redirects[1].target("/blog").as_deref(),
            Some("https://blog.test")
        );
        assert_eq!(spec.redirects[1].target("/blogs"), None);
        assert_eq!(spec.request_set[0].1, "a, b; c");
        assert_eq!(spec.response_remove.len(), 2);
        let cors = spec.cors.clone().unwrap();
        assert!(cors.allows("https://app.test") && !cors.allows("https://evil.test"));
        assert_eq!(cors.methods, vec![Method::GET, Method::POST]);
        assert_eq!(spec.compress, vec![Encoding::Brotli, Encoding::Gzip]);
        assert_eq!(spec.body_limit, Some(10 << 20));
        assert!(spec.sticky && spec.blocked.is_empty());
        let shown = spec.describe().join("\n");
        assert!(shown.contains("auth.basic: alice, bob"), "{shown}");
        assert!(!shown.contains("$2y$"), "a hash is never shown: {shown}");
        assert!(
            shown.contains("ratelimit: 100/m burst 20 by header:x-api-key"),
            "{shown}"
        );
    }

    #[test]
    fn a_bad_security_label_blocks_the_route_others_are_left_out() {
        for (key, value, needle) in [
            ("auth.basic", "alice:secret", "plain passwords are refused"),
            ("auth.basic", "alice:$apr1$x$y", "MD5"),
            (
                "auth.basic",
                &format!("alice:{HASH},alice:{HASH}"),
                "listed twice",
            ),
            ("auth.basic", "$2y$05$nouser", "use user:hash"),
            ("auth.forward", "https://auth.test/", "http:// URL"),
            ("allow", "10.0.0.0/33", "not an address or a CIDR"),
            ("deny", "", "empty item"),
            ("ratelimit", "100", "100/s"),
            ("ratelimit", "0/s", "100/s"),
            ("body_limit", "10XB", "512KB"),
        ] {
            let (spec, problems) = parse(&[(key, value)]);
            assert_eq!(problems.len(), 1, "{key}={value}: {problems:?}");
            assert!(problems[0].contains(needle), "{key}={value}: {problems:?}");
            assert_eq!(spec.blocked.len(), 1, "{key}={value} blocks the route");
            assert!(spec.blocked[0].starts_with(key), "{:?}", spec.blocked);
        }
        for (key, value, needle) in [
            ("redirect.www", "apex", "to-apex"),
            ("redirect", "old:/new", "not a path"),
            ("redirect", "/old:/new/*", "needs /* in the path"),
            ("redirect.code", "302x", "301"),
            ("headers.response.set.X Bad", "1", "not a header name"),
            ("headers.response.set.Content-Length", "1", "berth's to set"),
            ("headers.request.set.X-A", "a\u{1}b", "control"),
            ("cors.origins", "https://app.test/path", "no path"),
            ("compress", "deflate", "gzip, br"),
            ("timeout.read", "0s", "more than zero"),
            ("sticky", "ip", "cookie"),
            ("strip_prefix", "maybe", "boolean"),
        ] {
            let (spec, problems) = parse(&[(key, value)]);
            assert_eq!(problems.len(), 1, "{key}={value}: {problems:?}");
            assert!(problems[0].contains(needle), "{key}={value}: {problems:?}");
            assert!(
                spec.blocked.is_empty(),
                "{key}={value} only leaves itself out"
            );
            assert!(spec.is_empty(), "{key}={value}: {spec:?}");
        }
    }

    #[test]
    fn keys_that_need_a_partner() {
        let (spec, problems) = parse(&[("ratelimit.burst", "5")]);
        assert_eq!(
            problems,
            vec!["ratelimit.burst: needs ratelimit (e.g. 100/s)"]
        );
        assert_eq!(
            spec.blocked.len(),
            1,
            "a rate limit that cannot apply blocks"
        );
        let (spec, problems) = parse(&[("cors.methods", "GET")]);
        assert_eq!(problems, vec!["cors.methods: needs cors.origins"]);
        assert!(spec.blocked.is_empty() && spec.cors.is_none());
        let (spec, problems) = parse(&[("cors.origins", "*"), ("cors.credentials", "true")]);
        assert!(problems[0].contains("list the origins"), "{problems:?}");
        assert!(spec.cors.is_none());
        let (spec, problems) = parse(&[
            ("auth.basic", &format!("a:{HASH}")),
            ("auth.forward", "http://auth:9000/check"),
        ]);
        assert!(problems[0].contains("not both"), "{problems:?}");
        assert_eq!(spec.blocked.len(), 1);
        // A bad rate and its burst: one problem, the rate's.
        let (spec, problems) = parse(&[("ratelimit", "fast"), ("ratelimit.burst", "5")]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(spec.ratelimit.is_none() && spec.blocked.len() == 1);
        // A rate alone: burst as large as the count, keyed by address.
        let (spec, _) = parse(&[("ratelimit", "10/s")]);
        let rate = spec.ratelimit.unwrap();
        assert_eq!((rate.burst, rate.key), (10, RateKey::Ip));
    }

    #[test]
    fn sizes() {
        assert_eq!(size("1048576"), Ok(1 << 20));
        assert_eq!(size("512KB"), Ok(512 << 10));
        assert_eq!(size("10m"), Ok(10 << 20));
        assert_eq!(size("1GiB"), Ok(1 << 30));
        assert!(size("0").is_err());
        assert!(size("99999999999999GB").is_err());
        assert!(size("-1").is_err());
    }
}
