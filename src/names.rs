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
            let (label, parent) = host.split_once('.')?;
            // One label: not `.a.test`, nor `x/y.a.test` (a redirect to
            // `https://x/y.a.test/` would leave for host `x`).
            check_label(label, true).ok()?;
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

/// A request path as routes and backends should read it, when it is not
/// already: percent-encoded unreserved characters decoded (`%61` → `a`),
/// runs of `/` merged, `.` and `..` segments resolved (RFC 3986 §5.2.4;
/// never above the root). Otherwise `/x/../admin` or `/%61dmin` would miss
/// the `/admin` route (and its policy) and reach a backend that reads them
/// as `/admin`. `None`: the path is fine as it is (the common case, found
/// with one scan).
pub fn normalize_path(path: &str) -> Option<String> {
    let b = path.as_bytes();
    let suspect = b.contains(&b'%') || b.windows(2).any(|w| w == b"//" || w == b"/.");
    if !suspect {
        return None;
    }
    // Decode the unreserved characters only: `%2F` stays a byte of a segment.
    let mut bytes = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(c) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                    bytes.push(c);
                    i += 3;
                    continue;
                }
            }
        }
        bytes.push(b[i]);
        i += 1;
    }
    let decoded = String::from_utf8_lossy(&bytes);
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing = false;
    for (n, seg) in segments.iter().enumerate() {
        match *seg {
            "" if n != last => {}
            "." => trailing = n == last,
            ".." => {
                out.pop();
                trailing = n == last;
            }
            s => {
                out.push(s);
                trailing = false;
            }
        }
    }
    let mut normal = format!("/{}", out.join("/"));
    if trailing && normal != "/" {
        normal.push('/');
    }
    (normal != path).then_some(normal)
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

/// The longest duration berth reads: ten years. Anything longer is a typo,
/// and deadlines computed from it would overflow.
const MAX_DURATION_MS: u128 = 10 * 365 * 24 * 3_600_000;

const DURATION_FORM: &str = "use a number and a unit: ms, s, m or h (e.g. 250ms, 5s, 1.5s, 2m)";

/// `250ms`, `5s`, `1.5s`, `2m`, `1h`: a number, which may have a fraction,
/// and a unit, which is required. Whole milliseconds, from 0 to ten years
/// (whether 0 makes sense is the caller's business).
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(format!("empty: {DURATION_FORM}"));
    }
    if s.starts_with('-') {
        return Err("negative: a duration is 0 or more".into());
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (num.contains('.') && !digits(frac)) {
        return Err(format!("not a duration: {DURATION_FORM}"));
    }
    let unit_ms: u128 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" => return Err(format!("add a unit: {num}s (or ms, m, h)")),
        _ => return Err(format!("unknown unit '{unit}': use ms, s, m or h")),
    };
    let too_long = || {
        format!(
            "too long: at most {}h (ten years)",
            MAX_DURATION_MS / 3_600_000
        )
    };
    // Exact decimal arithmetic: 0.1s is 100 ms, not 99.
    let whole: u128 = match whole.trim_start_matches('0') {
        "" => 0,
        w if w.len() > 20 => return Err(too_long()),
        w => w.parse().map_err(|_| too_long())?,
    };
    let frac = frac.trim_end_matches('0');
    let finer = || "finer than a millisecond: berth counts whole milliseconds".to_string();
    if frac.len() > 12 {
        return Err(finer());
    }
    let scale = 10u128.pow(frac.len() as u32);
    let frac_ms = match frac {
        "" => 0,
        f => f.parse::<u128>().map_err(|_| finer())? * unit_ms,
    };
    if frac_ms % scale != 0 {
        return Err(finer());
    }
    let ms = whole * unit_ms + frac_ms / scale;
    if ms > MAX_DURATION_MS {
        return Err(too_long());
    }
    let ms = u64::try_from(ms).map_err(|_| too_long())?;
    Ok(Duration::from_millis(ms))
}

/// A duration as [`parse_duration`] reads it back: whole seconds as `30s`,
/// anything else as `1500ms` (berth never reads finer than a millisecond, so
/// a finer rest is dropped).
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
    fn paths_are_read_as_backends_read_them() {
        for (raw, want) in [
            ("/", None),
            ("/api/users?x=1", None),
            ("/x/../admin", Some("/admin")),
            ("/%61dmin", Some("/admin")),
            ("//admin", Some("/admin")),
            ("/a/./b/", Some("/a/b/")),
            ("/a/b/..", Some("/a/")),
            ("/../../etc", Some("/etc")),
            ("/a%2Fb", None),
            ("/a%2fb/%7euser", Some("/a%2fb/~user")),
            ("/%zz", None),
            ("/50%", None),
            ("/.well-known/acme-challenge/t", None),
        ] {
            assert_eq!(normalize_path(raw).as_deref(), want, "{raw}");
        }
    }

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
        for not_a_label in [".test", "x/y.test", "x@y.test", "a b.test"] {
            assert_eq!(m.get(not_a_label), None, "{not_a_label:?}");
        }
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
    fn durations_need_a_unit_and_take_fractions() {
        let ms = Duration::from_millis;
        for (raw, want) in [
            ("250ms", ms(250)),
            ("5s", ms(5_000)),
            (" 5s ", ms(5_000)),
            ("0s", ms(0)),
            ("0ms", ms(0)),
            ("2m", ms(120_000)),
            ("1h", ms(3_600_000)),
            ("1.5s", ms(1_500)),
            ("0.25s", ms(250)),
            ("0.1s", ms(100)),
            ("1.5m", ms(90_000)),
            ("0.5h", ms(1_800_000)),
            ("1.500s", ms(1_500)),
            ("007s", ms(7_000)),
            ("8760h", ms(8760 * 3_600_000)),
            ("87600h", ms(87600 * 3_600_000)),
        ] {
            assert_eq!(parse_duration(raw), Ok(want), "{raw:?}");
        }
        for (raw, needle) in [
            ("5", "add a unit: 5s"),
            ("0", "add a unit: 0s"),
            ("1.5", "add a unit: 1.5s"),
            ("5x", "unknown unit 'x'"),
            ("5 s", "unknown unit ' s'"),
            ("5S", "unknown unit 'S'"),
            ("", "empty"),
            ("  ", "empty"),
            ("s", "not a duration"),
            ("NaN", "not a duration"),
            ("nans", "not a duration"),
            ("inf", "not a duration"),
            (".5s", "not a duration"),
            ("1.s", "not a duration"),
            ("1.2.3s", "not a duration"),
            ("+1s", "not a duration"),
            ("-1s", "negative"),
            ("-0.5s", "negative"),
            ("1.5ms", "finer than a millisecond"),
            ("0.0001s", "finer than a millisecond"),
            ("0.0000000000001h", "finer than a millisecond"),
            ("87601h", "too long"),
            ("99999999999999999999999999s", "too long"),
            ("18446744073709551616ms", "too long"),
        ] {
            let e = parse_duration(raw).expect_err(raw);
            assert!(e.contains(needle), "{raw:?}: {e}");
        }
    }

    #[test]
    fn durations_format_as_they_read_back() {
        for d in [
            0,
            1,
            250,
            1_000,
            1_500,
            30_000,
            90_000,
            3_600_000,
            87600 * 3_600_000,
        ] {
            let d = Duration::from_millis(d);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{d:?}");
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn suggestions() {
        let keys = ["host", "port", "path", "network"];
        assert_eq!(suggest("hots", keys), Some("host"));
        assert_eq!(suggest("prot", keys), Some("port"));
        assert_eq!(suggest("netwrok", keys), Some("network"));
        assert_eq!(suggest("colour", keys), None);
        let proxy = [
            "threads",
            "connect_timeout",
            "read_timeout",
            "idle_timeout",
            "retry_after",
        ];
        for (typo, want) in [
            ("conect_timeout", Some("connect_timeout")),
            ("connect_timout", Some("connect_timeout")),
            ("read_timeot", Some("read_timeout")),
            ("thread", Some("threads")),
            ("retry", None),
            ("timeout", None),
        ] {
            assert_eq!(suggest(typo, proxy), want, "{typo}");
        }
    }
}
