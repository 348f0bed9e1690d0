//! Container labels → what berth should do with the container. Pure: takes the
//! label map, returns a [`LabelSpec`] holding only the parts that parsed, and a
//! problem for every label that did not (key, value, message, "did you mean").

use std::collections::HashMap;
use std::time::Duration;

use crate::names::{excerpt, parse_duration, suggest, HostPattern, PathPrefix};
use crate::policy::spec::{self as policy, boolean, positive, whole, PolicySpec};

/// Keys of a route: `<prefix>.<key>` for the default route,
/// `<prefix>.<name>.<key>` for a named one. Its policy keys
/// ([`crate::policy::POLICY_KEYS`]) go the same way.
pub const ROUTE_KEYS: &[&str] = &["host", "port", "path", "tls"];

/// A key of a route: where it goes, or a policy.
pub fn is_route_key(key: &str) -> bool {
    ROUTE_KEYS.contains(&key) || policy::is_policy_key(key)
}
/// Keys that apply to the whole container.
pub const CONTAINER_KEYS: &[&str] = &[
    "enable",
    "network",
    "dns",
    "drain_timeout",
    "health.path",
    "health.interval",
    "health.timeout",
    "health.rise",
    "health.fall",
    "autoheal",
    "deploy.replace",
];

pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Auto,
    Off,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    /// Empty for the default route.
    pub name: String,
    pub hosts: Vec<HostPattern>,
    pub port: Option<u16>,
    pub path: PathPrefix,
    pub tls: Option<TlsMode>,
    /// What the route asks of requests; empty for most.
    pub policy: PolicySpec,
}

/// The active HTTP check: on when `path` is set.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSpec {
    pub path: Option<PathPrefix>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Passes in a row to be healthy, failures in a row to be down.
    pub rise: u32,
    pub fall: u32,
}

impl Default for HealthSpec {
    fn default() -> Self {
        HealthSpec {
            path: None,
            interval: DEFAULT_CHECK_INTERVAL,
            timeout: DEFAULT_CHECK_TIMEOUT,
            rise: 1,
            fall: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LabelSpec {
    pub enabled: bool,
    pub routes: Vec<RouteSpec>,
    pub network: Option<String>,
    pub dns: Vec<String>,
    pub drain_timeout: Duration,
    pub health: HealthSpec,
    /// Restart the container when it stays unhealthy.
    pub autoheal: bool,
    /// Autoscaling of its service (`scale.*`), when asked for and valid.
    pub scale: Option<crate::deploy::autoscale::Policy>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelProblem {
    pub key: String,
    pub value: String,
    pub message: String,
    pub hint: Option<String>,
}

#[derive(Default)]
struct RouteDraft {
    hosts: Option<Vec<HostPattern>>,
    port: Option<u16>,
    path: Option<PathPrefix>,
    tls: Option<TlsMode>,
    policy: PolicySpec,
    policy_draft: policy::Draft,
    bad: bool,
    /// The first label seen for this route, to name it when the host is missing.
    first_key: Option<(String, String)>,
}

/// Parse the labels under `prefix` (e.g. `berth`). Labels outside the prefix are
/// ignored. Routes with a bad label are left out; a bad container-wide label
/// falls back to its default (a bad `enable` disables the container).
pub fn parse(prefix: &str, labels: &HashMap<String, String>) -> (LabelSpec, Vec<LabelProblem>) {
    let mut p = Parser {
        prefix,
        dotted: format!("{prefix}."),
        spec: LabelSpec {
            enabled: true,
            routes: Vec::new(),
            network: None,
            dns: Vec::new(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            health: HealthSpec::default(),
            autoheal: true,
            scale: None,
        },
        problems: Vec::new(),
        drafts: Vec::new(),
        scale: Vec::new(),
        all_bad: false,
        labels,
    };
    // Sorted so problems come out in a stable order.
    let mut keys: Vec<(&String, &String)> = labels.iter().collect();
    keys.sort();
    for (key, value) in keys {
        p.label(key, value);
    }
    p.finish()
}

/// One parse: what was read so far.
struct Parser<'a> {
    prefix: &'a str,
    /// `prefix.`
    dotted: String,
    spec: LabelSpec,
    problems: Vec<LabelProblem>,
    /// Routes by name (empty: the default route), in the order first seen.
    drafts: Vec<(String, RouteDraft)>,
    /// A container-wide label is wrong: no route is served on its default.
    all_bad: bool,
    labels: &'a HashMap<String, String>,
    /// `scale.*` keys (without `scale.`) and their values.
    scale: Vec<(&'a str, &'a str)>,
}

impl<'a> Parser<'a> {
    fn problem(&mut self, key: &str, value: &str, message: String, hint: Option<String>) {
        // A password (hashed, or plain by mistake) is not repeated in logs.
        let redacted;
        let shown = [".auth.realm", ".auth.forward", ".auth.forward.headers"];
        let value = if key.contains(".auth.") && !shown.iter().any(|s| key.ends_with(s)) {
            redacted = redact_passwords(value);
            redacted.as_str()
        } else {
            value
        };
        self.problems.push(LabelProblem {
            key: excerpt(key),
            // A label may hold anything, 100 KB or a forged log line: the
            // problem keeps a bounded excerpt.
            value: excerpt(value),
            message,
            hint,
        });
    }

    /// One label: a container key, a route key, or a problem.
    fn label(&mut self, key: &'a str, value: &'a str) {
        let Some(rest) = key.strip_prefix(self.dotted.as_str()) else {
            return;
        };
        // Autoscaling is the service's, not a route's: a bad key leaves
        // the service unscaled and its routes served.
        if let Some(k) = rest.strip_prefix("scale.") {
            self.scale.push((k, value));
            return;
        }
        if CONTAINER_KEYS.contains(&rest) {
            if let Err(m) = container_key(&mut self.spec, rest, value) {
                if rest == "enable" {
                    self.spec.enabled = false;
                }
                // Every route would run on a default the user did not ask for.
                self.all_bad = true;
                self.problem(key, value, m, None);
            }
            return;
        }
        let (name, rkey) = match rest.split_once('.') {
            _ if is_route_key(rest) => ("", rest),
            None => ("", rest),
            // `berth.auth.basik`: a typo of the default route's policy.
            Some((n, _)) if policy::is_policy_group(n) => ("", rest),
            Some((n, k)) => (n, k),
        };
        let named_ok = name.is_empty() || valid_route_name(name);
        if !is_route_key(rkey) || !named_ok {
            // Fail safe: what the label meant is unknown, so the route it
            // sits on (the default one for `berth.pth`, `api` for
            // `berth.api.pth`; every route for a container-wide typo) is
            // left out rather than served on defaults.
            if named_ok {
                self.draft(name).bad = true;
            } else {
                self.all_bad = true;
            }
            let hint = unknown_hint(self.prefix, rest);
            self.problem(key, value, "unknown label".into(), hint);
            return;
        }
        let d = self.draft(name);
        d.first_key
            .get_or_insert_with(|| (key.to_string(), value.to_string()));
        if policy::is_policy_key(rkey) {
            // A bad policy label leaves that policy out, and a security
            // one blocks the route (503): the route itself stays known.
            if let Err(m) = d.policy.set(&mut d.policy_draft, rkey, value) {
                let hint = policy_hint(rkey);
                self.problem(key, value, m, hint);
            }
            return;
        }
        if let Err(m) = route_key(d, rkey, value) {
            d.bad = true;
            self.problem(key, value, m, None);
        }
    }

    /// The route of that name, as read so far.
    fn draft(&mut self, name: &str) -> &mut RouteDraft {
        let idx = match self.drafts.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                self.drafts.push((name.to_string(), RouteDraft::default()));
                self.drafts.len() - 1
            }
        };
        &mut self.drafts[idx].1
    }

    /// The routes that parsed whole; a named route without a host is a problem.
    fn finish(mut self) -> (LabelSpec, Vec<LabelProblem>) {
        match crate::deploy::autoscale::policy_from(&self.scale) {
            Ok(policy) => self.spec.scale = policy,
            Err(errors) => {
                for (key, message) in errors {
                    let full = format!("{}.{key}", self.prefix);
                    let value = self.labels.get(&full).cloned().unwrap_or_default();
                    self.problem(&full, &value, message, None);
                }
            }
        }
        for (name, mut d) in std::mem::take(&mut self.drafts) {
            if d.bad || self.all_bad {
                continue;
            }
            for (key, why) in d.policy.finish(std::mem::take(&mut d.policy_draft)) {
                let full = match name.as_str() {
                    "" => format!("{}.{key}", self.prefix),
                    n => format!("{}.{n}.{key}", self.prefix),
                };
                let value = self.labels.get(&full).cloned().unwrap_or_default();
                self.problem(&full, &value, why, None);
            }
            let Some(hosts) = d.hosts else {
                // A port or path alone is not a route (berth.port may serve other
                // purposes); a named route without a host is a mistake.
                if !name.is_empty() {
                    self.no_host(&name, d.first_key.unwrap_or_default());
                }
                continue;
            };
            self.spec.routes.push(RouteSpec {
                name,
                hosts,
                port: d.port,
                path: d.path.unwrap_or_else(PathPrefix::root),
                tls: d.tls,
                policy: d.policy,
            });
        }
        if !self.spec.enabled {
            self.spec.routes.clear();
        }
        (self.spec, self.problems)
    }

    fn no_host(&mut self, name: &str, (key, value): (String, String)) {
        let prefix = self.prefix;
        // `berth.helth.path` reads as a route named "helth": say what
        // was more likely meant.
        let rest = key.strip_prefix(&self.dotted).unwrap_or(&key);
        let (message, hint) = match suggest(rest, CONTAINER_KEYS.iter().copied()) {
            Some(k) => (
                "unknown label".to_string(),
                format!("did you mean {prefix}.{k}?"),
            ),
            None => (
                format!("route '{name}' has no host"),
                format!("add {prefix}.{name}.host"),
            ),
        };
        self.problem(&key, &value, message, Some(hint));
    }
}

/// Whether any label under `prefix` is a security policy (`auth.*`,
/// `allow`, `deny`, `ratelimit*`, `body_limit`) of any route, read or not.
pub fn has_security_labels(prefix: &str, labels: &HashMap<String, String>) -> bool {
    let dotted = format!("{prefix}.");
    labels
        .keys()
        .filter_map(|k| k.strip_prefix(&dotted))
        .any(|rest| {
            policy::is_security_key(rest)
                || rest
                    .split_once('.')
                    .is_some_and(|(_, k)| policy::is_security_key(k))
        })
}

/// A route name: lowercase letters, digits, `-`, `_`, and not the first
/// part of a container-wide key.
pub fn valid_route_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && !CONTAINER_KEYS
            .iter()
            .any(|k| k.split('.').next() == Some(name))
        && !policy::is_policy_group(name)
}

/// `alice:secret,bob:$2y$...` → `alice:…,bob:…`.
fn redact_passwords(value: &str) -> String {
    value
        .split(',')
        .filter_map(|entry| {
            entry
                .split_once(':')
                .map(|(user, _)| format!("{}:…", user.trim()))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// How to write the per-header labels.
fn policy_hint(key: &str) -> Option<String> {
    key.starts_with("headers.")
        .then(|| "one label per header: headers.response.set.<Header-Name>=value".to_string())
}

fn unknown_hint(prefix: &str, rest: &str) -> Option<String> {
    let mut candidates: Vec<String> = ROUTE_KEYS
        .iter()
        .chain(policy::POLICY_KEYS)
        .chain(CONTAINER_KEYS)
        .map(|k| k.to_string())
        .collect();
    if let Some((name, _)) = rest.split_once('.') {
        candidates.extend(
            ROUTE_KEYS
                .iter()
                .chain(policy::POLICY_KEYS)
                .map(|k| format!("{name}.{k}")),
        );
        if rest.starts_with("headers.") {
            return Some(format!(
                "one label per header: {prefix}.headers.response.set.<Header-Name>=value"
            ));
        }
    }
    suggest(rest, candidates.iter().map(String::as_str))
        .map(|s| format!("did you mean {prefix}.{s}?"))
}

fn container_key(spec: &mut LabelSpec, key: &str, value: &str) -> Result<(), String> {
    let v = value.trim();
    match key {
        "enable" => spec.enabled = boolean(v)?,
        "autoheal" => spec.autoheal = boolean(v)?,
        "network" => {
            if v.is_empty() {
                return Err("empty network name".into());
            }
            spec.network = Some(v.to_string());
        }
        "dns" => {
            for name in v.split(',') {
                match HostPattern::parse(name)? {
                    HostPattern::Exact(n) => spec.dns.push(n),
                    HostPattern::Wildcard(_) => return Err("DNS names cannot be wildcards".into()),
                }
            }
        }
        "drain_timeout" => spec.drain_timeout = parse_duration(v)?,
        "health.path" => spec.health.path = Some(PathPrefix::parse(v)?),
        "health.interval" => spec.health.interval = positive(parse_duration(v)?)?,
        "health.timeout" => spec.health.timeout = positive(parse_duration(v)?)?,
        "health.rise" => spec.health.rise = count(v)?,
        "health.fall" => spec.health.fall = count(v)?,
        // Read by the deploy planner from the compose file; checked here so
        // that a typo shows as a problem.
        "deploy.replace" => {
            if !matches!(v, "stop-first" | "start-first") {
                return Err("use stop-first or start-first".into());
            }
        }
        _ => unreachable!("container_key is called only with CONTAINER_KEYS"),
    }
    Ok(())
}

/// Passes or failures in a row: 1 to 100.
fn count(v: &str) -> Result<u32, String> {
    whole(v, 1, 100)
}

fn route_key(d: &mut RouteDraft, key: &str, value: &str) -> Result<(), String> {
    let v = value.trim();
    match key {
        "host" => {
            let hosts = v
                .split(',')
                .map(HostPattern::parse)
                .collect::<Result<Vec<_>, _>>()?;
            d.hosts = Some(hosts);
        }
        "port" => {
            d.port = Some(match v.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err("not a port: use a number from 1 to 65535".into()),
            })
        }
        "path" => d.path = Some(PathPrefix::parse(v)?),
        "tls" => {
            d.tls = Some(match v {
                "auto" => TlsMode::Auto,
                "off" => TlsMode::Off,
                _ => return Err("use auto or off".into()),
            })
        }
        _ => unreachable!("route_key is called only with ROUTE_KEYS"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn default_route_with_all_keys() {
        let (spec, problems) = parse(
            "berth",
            &labels(&[
                ("berth.host", "blog.example.com, www.blog.example.com"),
                ("berth.port", "8080"),
                ("berth.path", "/app"),
                ("berth.tls", "off"),
                ("berth.drain_timeout", "10s"),
                ("com.docker.compose.service", "web"),
            ]),
        );
        assert_eq!(problems, vec![]);
        assert_eq!(spec.routes.len(), 1);
        let r = &spec.routes[0];
        assert_eq!(r.hosts.len(), 2);
        assert_eq!(r.port, Some(8080));
        assert_eq!(r.path.as_str(), "/app");
        assert_eq!(r.tls, Some(TlsMode::Off));
        assert_eq!(spec.drain_timeout, Duration::from_secs(10));
    }

    #[test]
    fn named_routes_stand_beside_the_default() {
        let (spec, problems) = parse(
            "berth",
            &labels(&[
                ("berth.host", "app.test"),
                ("berth.admin.host", "admin.app.test"),
                ("berth.admin.port", "9000"),
            ]),
        );
        assert_eq!(problems, vec![]);
        assert_eq!(spec.routes.len(), 2);
        let admin = spec.routes.iter().find(|r| r.name == "admin").unwrap();
        assert_eq!(admin.port, Some(9000));
    }

    #[test]
    fn scale_labels_make_a_policy_and_a_bad_one_leaves_the_routes_alone() {
        let (spec, problems) = parse(
            "berth",
            &labels(&[
                ("berth.host", "app.test"),
                ("berth.scale.min", "1"),
                ("berth.scale.max", "3"),
                ("berth.scale.cpu", "50"),
            ]),
        );
        assert_eq!(problems, vec![]);
        let p = spec.scale.expect("a policy");
        assert_eq!((p.min, p.max, p.cpu), (1, 3, Some(50.0)));

        let (spec, problems) = parse(
            "berth",
            &labels(&[("berth.host", "app.test"), ("berth.scale.max", "abc")]),
        );
        assert_eq!(spec.scale, None, "no autoscaling on a bad policy");
        assert_eq!(spec.routes.len(), 1, "the route is still served");
        assert_eq!(problems.len(), 1);
        assert_eq!(
            (problems[0].key.as_str(), problems[0].value.as_str()),
            ("berth.scale.max", "abc")
        );
        assert!(problems[0].message.contains("whole number"), "{problems:?}");
    }

    #[test]
    fn misspelled_label_gets_a_suggestion() {
        let (spec, problems) = parse("berth", &labels(&[("berth.hots", "a.test")]));
        assert!(spec.routes.is_empty());
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "berth.hots");
        assert_eq!(problems[0].value, "a.test");
        assert_eq!(
            problems[0].hint.as_deref(),
            Some("did you mean berth.host?")
        );

        let (_, problems) = parse("berth", &labels(&[("berth.api.prot", "1")]));
        assert_eq!(
            problems[0].hint.as_deref(),
            Some("did you mean berth.api.port?")
        );
        let (_, problems) = parse("berth", &labels(&[("berth.helth.path", "/h")]));
        assert_eq!(
            problems[0].hint.as_deref(),
            Some("did you mean berth.health.path?")
        );
    }

    #[test]
    fn a_bad_route_does_not_take_the_other_route_down() {
        let (spec, problems) = parse(
            "berth",
            &labels(&[
                ("berth.host", "good.test"),
                ("berth.api.host", "api.test"),
                ("berth.api.port", "http"),
            ]),
        );
        assert_eq!(spec.routes.len(), 1);
        assert_eq!(spec.routes[0].name, "");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "berth.api.port");
        assert!(problems[0].message.contains("not a port"));
    }

    #[test]
    fn bad_values_are_problems() {
        for (k, v) in [
            ("berth.host", "http://a.test"),
            ("berth.port", "0"),
            ("berth.port", "70000"),
            ("berth.path", "api"),
            ("berth.tls", "on"),
            ("berth.drain_timeout", "soon"),
            ("berth.health.interval", "0s"),
            ("berth.health.rise", "0"),
            ("berth.autoheal", "maybe"),
            ("berth.dns", "*.x"),
        ] {
            let (_, problems) = parse("berth", &labels(&[("berth.host", "a.test"), (k, v)]));
            let p = problems.iter().find(|p| p.key == k);
            assert!(p.is_some(), "{k}={v} should be a problem");
            assert_eq!(p.unwrap().value, v);
        }
    }

    #[test]
    fn enable_false_and_bad_enable_disable() {
        let (spec, p) = parse(
            "berth",
            &labels(&[("berth.host", "a.test"), ("berth.enable", "false")]),
        );
        assert!(p.is_empty() && !spec.enabled && spec.routes.is_empty());
        let (spec, p) = parse(
            "berth",
            &labels(&[("berth.host", "a.test"), ("berth.enable", "flase")]),
        );
        assert_eq!(p.len(), 1);
        assert!(!spec.enabled && spec.routes.is_empty());
    }

    #[test]
    fn named_route_without_host_and_reserved_names() {
        let (spec, p) = parse("berth", &labels(&[("berth.api.port", "9000")]));
        assert!(spec.routes.is_empty());
        assert_eq!(p[0].message, "route 'api' has no host");
        // "health" is a container key group, not a route name
        let (_, p) = parse("berth", &labels(&[("berth.health.host", "x.test")]));
        assert_eq!(p[0].message, "unknown label");
    }

    #[test]
    fn a_route_with_any_label_problem_is_left_out_never_served_on_defaults() {
        let routes = |pairs: &[(&str, &str)]| -> Vec<String> {
            let (spec, problems) = parse("berth", &labels(pairs));
            assert!(!problems.is_empty(), "{pairs:?}");
            spec.routes.iter().map(|r| r.name.clone()).collect()
        };
        let both = [
            ("berth.host", "shop.test"),
            ("berth.api.host", "api.shop.test"),
        ];
        let with = |extra: (&'static str, &'static str)| {
            let mut v = both.to_vec();
            v.push(extra);
            v
        };
        // `berth.pth` meant `berth.path`: the default route would serve `/`.
        assert_eq!(routes(&with(("berth.pth", "/api"))), vec!["api"]);
        assert_eq!(routes(&with(("berth.api.pth", "/v1"))), vec![""]);
        assert_eq!(routes(&with(("berth.api.port", "http"))), vec![""]);
        // Container-wide: every route.
        assert!(routes(&with(("berth.drain_timeout", "soon"))).is_empty());
        assert!(routes(&with(("berth.health.pth", "/h"))).is_empty());
        assert!(routes(&with(("berth.Bad.key", "x"))).is_empty());
    }

    #[test]
    fn control_characters_and_huge_values_are_problems_kept_short() {
        let huge = "a".repeat(100_000);
        let (spec, p) = parse(
            "berth",
            &labels(&[
                ("berth.host", "a.test"),
                ("berth.path", "/api\nforged"),
                ("berth.admin.host", &huge),
            ]),
        );
        assert!(spec.routes.is_empty(), "{:?}", spec.routes);
        let path = p.iter().find(|p| p.key == "berth.path").unwrap();
        assert!(path.message.contains("control"), "{}", path.message);
        let host = p.iter().find(|p| p.key == "berth.admin.host").unwrap();
        assert!(host.value.len() < 300, "{}", host.value.len());
    }

    #[test]
    fn policies_on_default_and_named_routes() {
        let hash = "$2y$05$pQid562aaK.6oz2XeQEu4eYNpBIaQFBBTC5nmE4UBiAYQCwXSqlGi";
        let (spec, problems) = parse(
            "berth",
            &labels(&[
                ("berth.host", "app.test"),
                ("berth.auth.basic", &format!("alice:{hash}")),
                ("berth.headers.response.set.X-Frame-Options", "DENY"),
                ("berth.api.host", "api.app.test"),
                ("berth.api.ratelimit", "10/s"),
                ("berth.api.headers.request.set.X-Api", "1"),
            ]),
        );
        assert_eq!(problems, vec![]);
        let default = spec.routes.iter().find(|r| r.name.is_empty()).unwrap();
        assert_eq!(default.policy.basic.len(), 1);
        assert_eq!(default.policy.response_set.len(), 1);
        assert!(default.policy.ratelimit.is_none());
        let api = spec.routes.iter().find(|r| r.name == "api").unwrap();
        assert!(api.policy.ratelimit.is_some() && api.policy.basic.is_empty());
        assert_eq!(api.policy.request_set[0].0.as_str(), "x-api");
    }

    #[test]
    fn a_bad_auth_label_keeps_the_route_blocked_other_routes_untouched() {
        let (spec, problems) = parse(
            "berth",
            &labels(&[
                ("berth.host", "app.test"),
                ("berth.auth.basic", "alice:plaintext"),
                ("berth.compress", "deflate"),
                ("berth.api.host", "api.app.test"),
            ]),
        );
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, vec!["berth.auth.basic", "berth.compress"]);
        assert_eq!(problems[0].value, "alice:…", "no password in a problem");
        let default = spec.routes.iter().find(|r| r.name.is_empty()).unwrap();
        assert_eq!(default.policy.blocked.len(), 1, "served 503, never open");
        assert!(default.policy.compress.is_empty());
        let api = spec.routes.iter().find(|r| r.name == "api").unwrap();
        assert!(api.policy.is_empty());
        // A typo in a policy key: the route it sits on is left out.
        let (spec, problems) = parse(
            "berth",
            &labels(&[("berth.host", "a.test"), ("berth.auth.basik", "x")]),
        );
        assert!(spec.routes.is_empty());
        assert_eq!(
            problems[0].hint.as_deref(),
            Some("did you mean berth.auth.basic?")
        );
        let (_, problems) = parse(
            "berth",
            &labels(&[
                ("berth.host", "a.test"),
                ("berth.headers.response.set", "X: 1"),
            ]),
        );
        assert!(
            problems[0]
                .hint
                .as_deref()
                .unwrap()
                .contains("one label per header"),
            "{problems:?}"
        );
        // Policy words are not route names.
        assert!(!valid_route_name("auth") && !valid_route_name("headers"));
        let (_, problems) = parse(
            "berth",
            &labels(&[("berth.host", "a.test"), ("berth.ratelimit.burst", "5")]),
        );
        assert_eq!(problems[0].key, "berth.ratelimit.burst");
        assert_eq!(problems[0].value, "5");
    }

    #[test]
    fn other_prefixes_are_ignored() {
        let (spec, p) = parse(
            "edge",
            &labels(&[("berth.host", "a.test"), ("edge.host", "b.test")]),
        );
        assert!(p.is_empty());
        assert_eq!(spec.routes[0].hosts[0].to_string(), "b.test");
    }
}
