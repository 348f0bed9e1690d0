//! The small values every part shares, parsed and compared in one place:
//! hostnames (and the exact → wildcard lookup routing, certificates and DNS
//! all use), path prefixes, durations, container ids. Pure: errors are plain
//! messages that the caller wraps with the key and value it was reading.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// A hostname a route answers for: an exact name, or `*.suffix` matching exactly
/// one more label (like a wildcard certificate).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    Exact(String),
    /// Holds the suffix without the leading `*.`.
    Wildcard(String),
}

impl HostPattern {
    pub fn parse(raw: &str) -> Result<HostPattern, String> {
        let s = raw.trim().trim_end_matches('.').to_ascii_lowercase();
        if s.is_empty() {
            return Err("empty hostname".into());
        }
        if s.contains("://") {
            return Err("a hostname, not a URL: drop the scheme".into());
        }
        if s.contains('/') {
            return Err("a hostname has no path: use the path label for that".into());
        }
        if s.contains(':') {
            return Err("a hostname has no port: use the port label for the container port".into());
        }
        let (wild, rest) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, s.clone()),
        };
        if s.len() > 253 {
            return Err("longer than 253 characters".into());
        }
        for label in rest.split('.') {
            check_label(label, true)?;
        }
        Ok(if wild {
            HostPattern::Wildcard(rest)
        } else {
            HostPattern::Exact(rest)
        })
    }
}

/// One label of a DNS name: 1-63 letters, digits and inner hyphens (and
/// underscores where `underscore`: hostnames of containers have them).
pub fn check_label(label: &str, underscore: bool) -> Result<(), String> {
    if label.is_empty() {
        return Err("empty label between dots".into());
    }
    if label.len() > 63 {
        return Err(format!("label '{label}' is longer than 63 characters"));
    }
    if let Some(c) = label
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || c == '-' || (underscore && c == '_')))
    {
        return Err(format!("character '{c}' is not allowed in a hostname"));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!("label '{label}' starts or ends with '-'"));
    }
    Ok(())
}

/// A DNS name as berth compares names: lowercase, without the trailing dot.
/// Borrows when it is already so (the request path calls this).
pub fn canonical_name(name: &str) -> Cow<'_, str> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        Cow::Borrowed(trimmed)
    }
}

/// A Host header (or SNI, or authority) as routes are matched:
/// `Example.COM:8080.` → `example.com`; `[::1]:80` → `[::1]`.
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let no_port = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    canonical_name(no_port)
}

/// What is wrong with a Host header value (as sent: `name`, `name:port`,
/// `[v6]:port`), if anything: a port that is not a number from 1 to 65535,
/// or an empty name. Control and non-ASCII characters never get this far
/// (the header is not readable as text).
pub fn host_header_problem(host: &str) -> Option<&'static str> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((_, "")) => (rest, None),
            Some((_, tail)) => match tail.strip_prefix(':') {
                Some(port) => (rest, Some(port)),
                None => return Some("text after the IPv6 address"),
            },
            None => return Some("an IPv6 address without its closing bracket"),
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    if name.is_empty() {
        return Some("no name");
    }
    match port.map(|p| p.parse::<u16>()) {
        Some(Ok(0)) | Some(Err(_)) => Some("the port is not a number from 1 to 65535"),
        _ => None,
    }
}

/// A value from outside (a label, a header) for a log line or an error:
/// at most 200 characters, with how long it really was.
pub fn excerpt(value: &str) -> String {
    const MAX: usize = 200;
    match value.char_indices().nth(MAX) {
        None => value.to_string(),
        Some((cut, _)) => format!("{}… ({} bytes)", &value[..cut], value.len()),
    }
}

/// Values by host pattern, looked up by a normalized name: the exact name
/// first, then the wildcard of its parent (`*.example.com` covers one label).
#[derive(Debug, Clone)]
pub struct HostMap<V> {
    exact: HashMap<String, V>,
    wildcard: HashMap<String, V>,
}

impl<V> Default for HostMap<V> {
    fn default() -> Self {
        HostMap {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        }
    }
}

impl<V> HostMap<V> {
    pub fn insert(&mut self, pattern: HostPattern, value: V) {
        match pattern {
            HostPattern::Exact(h) => self.exact.insert(h, value),
            HostPattern::Wildcard(s) => self.wildcard.insert(s, value),
        };
    }

    pub fn entry(&mut self, pattern: &HostPattern) -> &mut V
    where
        V: Default,
    {
        match pattern {
            HostPattern::Exact(h) => self.exact.entry(h.clone()).or_default(),
            HostPattern::Wildcard(s) => self.wildcard.entry(s.clone()).or_default(),
        }
    }

    /// What `host` (normalized) matches, most specific first: its exact
    /// entry, then its parent's wildcard.
    pub fn candidates<'s, 'h>(
        &'s self,
        host: &'h str,
    ) -> impl Iterator<Item = &'s V> + use<'s, 'h, V> {
        // The wildcard is looked up only when the exact entry did not do.
        let wild = std::iter::once_with(move || {
            let (_, parent) = host.split_once('.')?;
            self.wildcard.get(parent)
        })
        .flatten();
        self.exact.get(host).into_iter().chain(wild)
    }

    /// The most specific value for `host` (normalized).
    pub fn get(&self, host: &str) -> Option<&V> {
        self.candidates(host).next()
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.exact.values().chain(self.wildcard.values())
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.exact.values_mut().chain(self.wildcard.values_mut())
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }
}

/// A container id as `docker ps` shows it: its first 12 characters.
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// An id prefix names a container only from this many characters on.
pub const MIN_ID_PREFIX: usize = 4;

/// Whether `target` names the container `id` by id prefix.
pub fn id_prefix_of(target: &str, id: &str) -> bool {
    target.len() >= MIN_ID_PREFIX && id.starts_with(target)
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

/// A path prefix matched segment by segment: `/api` matches `/api`, `/api/x` and
/// `/api?q`, never `/apix`. A prefix ending in `/` matches anything below it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathPrefix(String);

impl PathPrefix {
    pub fn root() -> PathPrefix {
        PathPrefix("/".into())
    }

    pub fn parse(raw: &str) -> Result<PathPrefix, String> {
        let s = raw.trim();
        if !s.starts_with('/') {
            return Err("a path prefix starts with '/'".into());
        }
        if s.contains(['?', '#', ' ', '*']) {
            return Err("a path prefix has no query, fragment, space or '*'".into());
        }
        if s.chars().any(char::is_control) {
            return Err("a path prefix has no control characters (a newline?)".into());
        }
        Ok(PathPrefix(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, path: &str) -> bool {
        let p = self.0.as_str();
        if p == "/" {
            return true;
        }
        match path.strip_prefix(p) {
            None => false,
            Some(rest) => p.ends_with('/') || rest.is_empty() || rest.starts_with(['/', '?']),
        }
    }
}

impl fmt::Display for PathPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `250ms`, `5s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let s = raw.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| "not a duration: use a number with ms, s, m or h (e.g. 5s)".to_string())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("unknown unit '{unit}': use ms, s, m or h")),
    };
    Ok(d)
}

pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else {
        format!("{}s", ms / 1000)
    }
}

/// The closest candidate within a small edit distance, for "did you mean".
pub fn suggest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (input.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| (edit_distance(input, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance with adjacent transpositions counted as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse_and_normalise() {
        assert_eq!(
            HostPattern::parse(" Blog.Example.COM. "),
            Ok(HostPattern::Exact("blog.example.com".into()))
        );
        assert_eq!(
            HostPattern::parse("*.example.com"),
            Ok(HostPattern::Wildcard("example.com".into()))
        );
        for bad in [
            "",
            "http://a.com",
            "a.com/x",
            "a.com:80",
            "a..com",
            "a b.com",
            "-a.com",
            "a.*.com",
        ] {
            assert!(
                HostPattern::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn host_forms_normalise_and_the_map_prefers_exact_names() {
        for h in ["a.test", "A.Test", "a.test:8080", "a.test.", "A.TEST.:80"] {
            assert_eq!(normalize_host(h), "a.test", "{h}");
        }
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
        assert!(matches!(normalize_host("a.test:1"), Cow::Borrowed(_)));
        let mut m = HostMap::default();
        m.insert(HostPattern::parse("a.test").unwrap(), 1);
        m.insert(HostPattern::parse("*.test").unwrap(), 2);
        assert_eq!(m.candidates("a.test").collect::<Vec<_>>(), vec![&1, &2]);
        assert_eq!(m.get("b.test"), Some(&2));
        assert_eq!(m.get("x.y.test"), None, "a wildcard covers one label");
        assert_eq!(m.get("test"), None);
        assert_eq!(check_label("a_b", true), Ok(()));
        assert!(check_label("a_b", false).is_err());
        assert_eq!(short_id("0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
        assert!(id_prefix_of("abcd", "abcdef") && !id_prefix_of("abc", "abcdef"));
    }

    #[test]
    fn host_headers_with_a_bad_port_or_no_name() {
        for (h, ok) in [
            ("a.test", true),
            ("a.test:8080", true),
            ("[::1]", true),
            ("[::1]:80", true),
            ("a.test:abc", false),
            ("a.test:99999", false),
            ("a.test:0", false),
            ("a.test:", false),
            (":80", false),
            ("[::1", false),
            ("[::1]x", false),
            ("[::1]:", false),
        ] {
            assert_eq!(host_header_problem(h).is_none(), ok, "{h}");
        }
        assert_eq!(excerpt("short"), "short");
        let long = "x".repeat(100_000);
        let e = excerpt(&long);
        assert!(e.len() < 230 && e.ends_with("(100000 bytes)"), "{e}");
        assert_eq!(
            excerpt(&"é".repeat(300))
                .chars()
                .filter(|&c| c == 'é')
                .count(),
            200
        );
    }

    #[test]
    fn path_prefix_matches_whole_segments() {
        let api = PathPrefix::parse("/api").unwrap();
        assert!(api.matches("/api"));
        assert!(api.matches("/api/users"));
        assert!(api.matches("/api?x=1"));
        assert!(!api.matches("/apix"));
        assert!(!api.matches("/"));
        let slash = PathPrefix::parse("/static/").unwrap();
        assert!(slash.matches("/static/a.css"));
        assert!(!slash.matches("/static"));
        assert!(PathPrefix::root().matches("/anything"));
        assert!(PathPrefix::parse("api").is_err());
        assert!(PathPrefix::parse("/api\nx").is_err(), "a newline inside");
        assert!(PathPrefix::parse("/a\tb").is_err());
        assert!(PathPrefix::parse("/a?b").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
    }

    #[test]
    fn suggestions() {
        let keys = ["host", "port", "path", "network"];
        assert_eq!(suggest("hots", keys), Some("host"));
        assert_eq!(suggest("prot", keys), Some("port"));
        assert_eq!(suggest("netwrok", keys), Some("network"));
        assert_eq!(suggest("colour", keys), None);
    }
}
