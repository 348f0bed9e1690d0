//! berth's configuration: one YAML file, parsed with serde-saphyr into raw
//! structs that reject unknown keys, then validated into [`Config`]. Every
//! error names the file, line, column, key and value.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::names::{HostPattern, PathPrefix};

mod validate;
mod yaml_error;

use validate::Validator;
use yaml_error::parse_error;

/// The embedded default configuration (`config/berth.yaml`).
pub const DEFAULT_YAML: &str = include_str!("../../config/berth.yaml");

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub http_listen: SocketAddr,
    pub docker: DockerConfig,
    pub label_prefix: String,
    pub proxy: ProxyConfig,
    pub routes: Vec<StaticRoute>,
    pub admin: AdminConfig,
    pub deploy: DeployConfig,
    pub tls: TlsConfig,
    pub acme: AcmeConfig,
    pub dns: DnsConfig,
    pub log_level: String,
    /// One line per proxied request.
    pub access_log: bool,
    /// Logs as JSON lines instead of text.
    pub log_json: bool,
    /// How long requests in flight may take to finish once berth is asked
    /// to stop.
    pub shutdown_grace: Duration,
    /// Where what must survive a restart is kept (last good labels, the
    /// deploy history); `None`: the user's state directory
    /// (`state::default_dir`).
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DnsConfig {
    /// UDP and TCP addresses of the DNS server; empty: no DNS server.
    pub listen: Vec<SocketAddr>,
    /// The zone answered from the snapshot, lowercase, no trailing dot.
    pub zone: String,
    /// TTL of the answers in the zone (and of negative answers).
    pub ttl: Duration,
    /// Other names go to the upstream resolvers; off: REFUSED.
    pub forward: bool,
    /// Upstream resolvers; empty: the host's resolv.conf.
    pub upstreams: Vec<SocketAddr>,
    pub allow: DnsAllow,
}

/// Who may ask: everyone else gets REFUSED, so berth is never an open resolver.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsAllow {
    pub loopback: bool,
    /// The subnets of the Docker networks berth's containers are on.
    pub docker: bool,
    pub nets: Vec<ipnet::IpNet>,
}

impl DnsConfig {
    /// Whether `up` is berth's own DNS listener: forwarding to it would
    /// loop. `up_is_local`: the address belongs to this host (an unspecified
    /// listen address takes every local address).
    pub fn is_own_address(&self, up: SocketAddr, up_is_local: bool) -> bool {
        is_own_address(&self.listen, up, up_is_local)
    }
}

fn is_own_address(listen: &[SocketAddr], up: SocketAddr, up_is_local: bool) -> bool {
    let up_ip = up.ip().to_canonical();
    listen.iter().any(|l| {
        l.port() == up.port() && (l.ip() == up_ip || (l.ip().is_unspecified() && up_is_local))
    })
}

impl DnsAllow {
    /// Whether `ip` may ask, given the Docker subnets berth knows now.
    pub fn allows(&self, ip: std::net::IpAddr, docker_subnets: &[ipnet::IpNet]) -> bool {
        (self.loopback && ip.is_loopback())
            || (self.docker && docker_subnets.iter().any(|n| n.contains(&ip)))
            || self.nets.iter().any(|n| n.contains(&ip))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// `None`: no HTTPS listener.
    pub listen: Option<SocketAddr>,
    /// Your PEM pairs (`name.crt` + `name.key`), and ACME state under `acme/`.
    pub certs_dir: PathBuf,
    /// HTTP → HTTPS (308) for hosts that have a certificate.
    pub redirect: bool,
    /// `Strict-Transport-Security` max-age on HTTPS answers; `None`: not sent.
    pub hsts: Option<Duration>,
    /// Certificates for names no route lists, ordered at the first
    /// handshake when the `ask` URL allows them.
    pub on_demand: Option<OnDemandConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OnDemandConfig {
    /// Asked `GET ask?domain=NAME`; 200 allows the name, anything else
    /// (or no answer) refuses it.
    pub ask: String,
    /// At most this many asks per period (`10/m`), bursting to the count.
    pub rate: (u32, Duration),
    /// How long a handshake waits for the new certificate before it gets
    /// the default one (the order goes on).
    pub wait: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AcmeConfig {
    /// ACME is off until an email is set.
    pub email: Option<String>,
    /// The CAs to order from, in order of preference (at least one).
    pub issuers: Vec<Issuer>,
    /// Renew when this much validity is left; `None`: a third of the lifetime.
    pub renew_before: Option<Duration>,
    pub orders_per_hour: u32,
    /// The challenge types to use, in order of preference; each name gets
    /// the first one that can work for it (dns-01 only in a zone of `dns`),
    /// and the next one after a failed order.
    pub challenges: Vec<ChallengeKind>,
    pub key_type: KeyType,
    /// DNS providers for DNS-01, by zone.
    pub dns: Vec<DnsProvider>,
}

/// One ACME CA.
#[derive(Clone, PartialEq)]
pub struct Issuer {
    /// How berth names it (`berth certs`, the account file).
    pub name: String,
    pub directory: String,
    /// A PEM root to trust for the directory (pebble, a private CA).
    pub ca_root: Option<PathBuf>,
    /// External account binding (ZeroSSL, Google): key id and HMAC key.
    pub eab: Option<(String, Vec<u8>)>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("name", &self.name)
            .field("directory", &self.directory)
            .field("ca_root", &self.ca_root)
            .field("eab_kid", &self.eab.as_ref().map(|(kid, _)| kid))
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChallengeKind {
    Http01,
    TlsAlpn01,
    Dns01,
}

impl ChallengeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeKind::Http01 => "http-01",
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
            ChallengeKind::Dns01 => "dns-01",
        }
    }

    pub fn parse(s: &str) -> Option<ChallengeKind> {
        match s.trim().to_ascii_lowercase().as_str() {
            "http-01" => Some(ChallengeKind::Http01),
            "tls-alpn-01" => Some(ChallengeKind::TlsAlpn01),
            "dns-01" => Some(ChallengeKind::Dns01),
            _ => None,
        }
    }
}

/// The key of ordered certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyType {
    #[default]
    EcdsaP256,
    EcdsaP384,
    Rsa2048,
    Rsa4096,
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa4096 => "rsa-4096",
        }
    }

    pub fn parse(s: &str) -> Option<KeyType> {
        [
            KeyType::EcdsaP256,
            KeyType::EcdsaP384,
            KeyType::Rsa2048,
            KeyType::Rsa4096,
        ]
        .into_iter()
        .find(|k| k.as_str() == s.trim().to_ascii_lowercase())
    }
}

/// Where berth writes DNS-01 TXT records for the names of one zone.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsProvider {
    /// Lowercase, no trailing dot.
    pub zone: String,
    pub kind: DnsProviderKind,
    /// The servers asked whether the record is visible; empty: the zone's
    /// primary for rfc2136, its NS records for exec.
    pub nameservers: Vec<SocketAddr>,
    /// How long to wait for the record to be visible on all of them.
    pub propagation_timeout: Duration,
    /// TTL of the TXT record.
    pub ttl: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DnsProviderKind {
    /// RFC 2136 dynamic update signed with TSIG (RFC 8945).
    Rfc2136 { server: SocketAddr, key: TsigKey },
    /// `command present|cleanup FQDN VALUE` (lego's exec convention).
    Exec {
        command: Vec<String>,
        timeout: Duration,
    },
}

#[derive(Clone, PartialEq)]
pub struct TsigKey {
    /// The key's name, as the server knows it (no trailing dot).
    pub name: String,
    /// `hmac-sha256`, `hmac-sha384`, `hmac-sha512` or `hmac-sha1`.
    pub algorithm: String,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// The most samples kept per container or route for the dashboard: with
/// 40 bytes a sample, 1,440 samples are 56 KiB per container.
pub const MAX_STATS_SAMPLES: u64 = 1440;

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// `None`: the admin API is off.
    pub listen: Option<SocketAddr>,
    /// A token set in the config (or $BERTH_TOKEN at run time).
    pub token: Option<String>,
    /// Where a generated token is kept (mode 0600) and the CLI looks for it;
    /// `None`: the default place in the user's state directory
    /// (`api::token::token_file`).
    pub token_file: Option<PathBuf>,
    /// How long a dashboard login lasts.
    pub session_ttl: Duration,
    /// How often container stats and route traffic are sampled for the
    /// dashboard's charts.
    pub stats_interval: Duration,
    /// How much of those samples is kept (per container and per route).
    pub stats_history: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeployConfig {
    /// How long a new replica may take to become Ready in a rollout.
    pub health_timeout: Duration,
    /// How long a container may stay unhealthy before autoheal restarts it.
    pub autoheal_grace: Duration,
    /// Deployed services without `berth.host` are routed as
    /// `<service>.<project>.<base_domain>`; `None`: off.
    pub base_domain: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DockerConfig {
    /// `unix:///path` or `tcp://host:port`; `None` means $DOCKER_HOST or the
    /// default socket.
    pub host: Option<String>,
    pub constraint: Option<(String, String)>,
    pub resync_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    pub threads: usize,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub idle_timeout: Duration,
    pub retry_after: Duration,
    /// How long a client's keep-alive connection (HTTP/1.1 or HTTP/2) may
    /// stay idle between requests.
    pub keepalive_timeout: Duration,
    /// At start, how long a request may wait for berth to list the
    /// containers (and check them once) rather than get a 404 or 503.
    pub startup_hold: Duration,
    /// How long a client may take to send a whole request header: from
    /// its connection for the first request, from the previous answer
    /// (plus `keepalive_timeout`) for the next ones. Then it is closed.
    pub header_timeout: Duration,
    /// How long a request body may pause (no byte) before the request is
    /// answered 408.
    pub body_timeout: Duration,
    /// Client connections open at once, every listener together; more are
    /// closed as soon as they are accepted.
    pub max_connections: usize,
    /// Peers whose X-Forwarded-For berth believes (a load balancer or CDN
    /// in front of it); from anyone else the header is replaced.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `proxy.error_page`: the file, and the HTML read from it when the
    /// configuration was loaded.
    pub error_page: Option<(std::path::PathBuf, Arc<String>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StaticRoute {
    pub hosts: Vec<HostPattern>,
    pub path: PathPrefix,
    pub backends: Vec<SocketAddr>,
    /// Policies, as labels give them to container routes.
    pub policy: crate::policy::PolicySpec,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{origin}: cannot read: {source}")]
    Read {
        origin: String,
        source: std::io::Error,
    },
    /// YAML that is not well-formed, or a mistake about no key in particular
    /// (the file is a list, not a mapping). `line` 0: not known.
    #[error("{origin}: {}{message}", place(*line, *column))]
    Parse {
        origin: String,
        line: u64,
        column: u64,
        message: String,
    },
    /// A key's value (or the key itself: unknown, twice, missing).
    #[error("{origin}: line {line} column {column}: {key}: {value:?}: {message}")]
    Invalid {
        origin: String,
        line: u64,
        column: u64,
        key: String,
        value: String,
        message: String,
    },
}

fn place(line: u64, column: u64) -> String {
    if line == 0 {
        String::new()
    } else {
        format!("line {line} column {column}: ")
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            docker: DockerConfig {
                host: None,
                constraint: None,
                resync_interval: Duration::from_secs(60),
            },
            label_prefix: "berth".into(),
            proxy: ProxyConfig {
                threads: 1,
                connect_timeout: Duration::from_secs(2),
                read_timeout: Duration::from_secs(60),
                idle_timeout: Duration::from_secs(60),
                retry_after: Duration::from_secs(5),
                keepalive_timeout: Duration::from_secs(75),
                startup_hold: Duration::from_secs(10),
                header_timeout: Duration::from_secs(60),
                body_timeout: Duration::from_secs(60),
                max_connections: 10_000,
                trusted_proxies: Vec::new(),
                error_page: None,
            },
            routes: Vec::new(),
            admin: AdminConfig {
                listen: Some(SocketAddr::from(([127, 0, 0, 1], 8090))),
                token: None,
                token_file: None,
                session_ttl: Duration::from_secs(12 * 3600),
                stats_interval: Duration::from_secs(10),
                stats_history: Duration::from_secs(3600),
            },
            deploy: DeployConfig {
                health_timeout: Duration::from_secs(60),
                autoheal_grace: Duration::from_secs(30),
                base_domain: None,
            },
            tls: TlsConfig {
                listen: Some(SocketAddr::from(([0, 0, 0, 0], 8443))),
                certs_dir: PathBuf::from("certs"),
                redirect: true,
                hsts: None,
                on_demand: None,
            },
            acme: AcmeConfig {
                email: None,
                issuers: vec![Issuer {
                    name: "letsencrypt".into(),
                    directory: LETS_ENCRYPT.into(),
                    ca_root: None,
                    eab: None,
                }],
                renew_before: None,
                orders_per_hour: 20,
                challenges: vec![ChallengeKind::Dns01, ChallengeKind::Http01],
                key_type: KeyType::EcdsaP256,
                dns: Vec::new(),
            },
            dns: DnsConfig {
                listen: vec![SocketAddr::from(([127, 0, 0, 1], 5353))],
                zone: "internal".into(),
                ttl: Duration::from_secs(5),
                forward: true,
                upstreams: Vec::new(),
                allow: DnsAllow {
                    loopback: true,
                    docker: true,
                    nets: Vec::new(),
                },
            },
            log_level: "info".into(),
            access_log: true,
            log_json: false,
            shutdown_grace: Duration::from_secs(30),
            state_dir: None,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    http: Option<RawHttp>,
    docker: Option<RawDocker>,
    labels: Option<RawLabels>,
    proxy: Option<RawProxy>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    admin: Option<RawAdmin>,
    deploy: Option<RawDeploy>,
    tls: Option<RawTls>,
    acme: Option<RawAcme>,
    dns: Option<RawDns>,
    log: Option<RawLog>,
    shutdown: Option<RawShutdown>,
    state_dir: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShutdown {
    grace: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    listen: Option<Spanned<String>>,
    zone: Option<Spanned<String>>,
    ttl: Option<Spanned<String>>,
    forward: Option<bool>,
    upstreams: Option<Vec<Spanned<String>>>,
    allow: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    listen: Option<Spanned<String>>,
    certs_dir: Option<Spanned<String>>,
    redirect: Option<bool>,
    hsts: Option<Spanned<String>>,
    on_demand: Option<RawOnDemand>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOnDemand {
    ask: Spanned<String>,
    rate: Option<Spanned<String>>,
    wait: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAcme {
    email: Option<Spanned<String>>,
    directory: Option<Spanned<String>>,
    staging: Option<bool>,
    ca_root: Option<Spanned<String>>,
    renew_before: Option<Spanned<String>>,
    orders_per_hour: Option<Spanned<u32>>,
    issuers: Option<Vec<RawIssuer>>,
    challenge: Option<Spanned<String>>,
    key_type: Option<Spanned<String>>,
    dns: Option<Vec<RawDnsProvider>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    directory: Spanned<String>,
    name: Option<Spanned<String>>,
    ca_root: Option<Spanned<String>>,
    eab_kid: Option<Spanned<String>>,
    eab_hmac_key: Option<Spanned<String>>,
    eab_hmac_key_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDnsProvider {
    zone: Spanned<String>,
    provider: Spanned<String>,
    server: Option<Spanned<String>>,
    tsig_key: Option<Spanned<String>>,
    tsig_secret_file: Option<Spanned<String>>,
    tsig_algorithm: Option<Spanned<String>>,
    command: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    nameservers: Option<Vec<Spanned<String>>>,
    propagation_timeout: Option<Spanned<String>>,
    ttl: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<Spanned<String>>,
    token: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    session_ttl: Option<Spanned<String>>,
    stats_interval: Option<Spanned<String>>,
    stats_history: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeploy {
    health_timeout: Option<Spanned<String>>,
    autoheal_grace: Option<Spanned<String>>,
    base_domain: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocker {
    host: Option<Spanned<String>>,
    constraint: Option<Spanned<String>>,
    resync_interval: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLabels {
    prefix: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    threads: Option<Spanned<u32>>,
    connect_timeout: Option<Spanned<String>>,
    read_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    retry_after: Option<Spanned<String>>,
    keepalive_timeout: Option<Spanned<String>>,
    startup_hold: Option<Spanned<String>>,
    header_timeout: Option<Spanned<String>>,
    body_timeout: Option<Spanned<String>>,
    max_connections: Option<Spanned<u32>>,
    trusted_proxies: Option<Vec<Spanned<String>>>,
    error_page: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    host: Spanned<String>,
    path: Option<Spanned<String>>,
    backends: Vec<Spanned<String>>,
    /// The route's policies: the keys of the labels (`auth.basic`,
    /// `ratelimit`, ...), values as the labels write them.
    policy: Option<std::collections::BTreeMap<String, Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<Spanned<String>>,
    access: Option<bool>,
    format: Option<Spanned<String>>,
}

impl Config {
    /// The embedded default, or the file at `path`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            None => Config::parse(DEFAULT_YAML, "embedded default config"),
            Some(p) => {
                let origin = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    origin: origin.clone(),
                    source,
                })?;
                Config::parse(&text, &origin)
            }
        }
    }

    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let raw: Raw = if text.trim().is_empty() {
            Raw::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| parse_error(text, origin, &e))?
        };
        Validator { origin }.config(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_the_code_default() {
        assert_eq!(Config::load(None).unwrap(), Config::default());
        assert_eq!(Config::parse("", "empty").unwrap(), Config::default());
    }

    #[test]
    fn every_table_rejects_unknown_keys() {
        for (yaml, key, value, hint) in [
            ("colour: red\n", "colour", "red", "known keys here: http, docker, labels, proxy, routes, admin, deploy, tls, acme, dns, log, shutdown, state_dir"),
            ("http:\n  listen: 0.0.0.0:80\n  lisen: 1\n", "http.lisen", "1", "did you mean http.listen?"),
            ("docker:\n  sock: x\n", "docker.sock", "x", "known keys here: host, constraint, resync_interval"),
            ("labels:\n  prefx: x\n", "labels.prefx", "x", "did you mean labels.prefix?"),
            ("proxy:\n  thread: 2\n", "proxy.thread", "2", "did you mean proxy.threads?"),
            (
                "routes:\n  - host: a.com\n    backend: [127.0.0.1:1]\n",
                "routes[0].backend",
                "[127.0.0.1:1]",
                "did you mean routes[0].backends?",
            ),
            ("log:\n  levle: info\n", "log.levle", "info", "did you mean log.level?"),
            ("admin:\n  tokn: x\n", "admin.tokn", "x", "did you mean admin.token?"),
            ("deploy:\n  timeout: 1s\n", "deploy.timeout", "1s", "known keys here: health_timeout, autoheal_grace, base_domain"),
            ("tls:\n  port: 443\n", "tls.port", "443", "known keys here: listen, certs_dir, redirect, hsts, on_demand"),
            ("acme:\n  dns:\n    - zone: a.test\n      providr: exec\n", "acme.dns[0].providr", "exec", "did you mean acme.dns[0].provider?"),
            ("acme:\n  issuers:\n    - directory: https://a.test/\n      eab_key: x\n", "acme.issuers[0].eab_key", "x", "did you mean acme.issuers[0].eab_kid?"),
            ("acme:\n  issuers:\n    - directory: https://a.test/\n      eab_hmac: s3cr3t\n", "acme.issuers[0].eab_hmac", "(hidden)", "known keys here: directory, name, ca_root, eab_kid, eab_hmac_key, eab_hmac_key_file"),
            ("tls:\n  on_demand:\n    ask: http://a.test/\n    rates: 1/s\n", "tls.on_demand.rates", "1/s", "did you mean tls.on_demand.rate?"),
            ("acme:\n  mail: a@b.c\n", "acme.mail", "a@b.c", "did you mean acme.email?"),
            ("dns:\n  forwrd: true\n", "dns.forwrd", "true", "did you mean dns.forward?"),
            ("shutdown:\n  grase: 5s\n", "shutdown.grase", "5s", "did you mean shutdown.grace?"),
        ] {
            let e = Config::parse(yaml, "t.yaml").unwrap_err();
            assert!(matches!(e, ConfigError::Invalid { .. }), "{e}");
            let leaf = key.rsplit(['.', ']']).next().unwrap();
            let want = format!("{key}: {value:?}: unknown field `{leaf}`: {hint}");
            let e = e.to_string();
            assert!(e.starts_with("t.yaml: line ") && e.ends_with(&want), "{yaml:?} gave\n{e}\nnot\n{want}");
        }
    }

    #[test]
    fn yaml_errors_have_the_one_shape_too() {
        for (yaml, want) in [
            // The key path from the block or flow style, the value as written.
            (
                "http:\n  listen: 127.0.0.1:1\nproxy:\n  threads: 1\n  conect_timeout: 2s\n",
                "line 5 column 3: proxy.conect_timeout: \"2s\": unknown field `conect_timeout`: did you mean proxy.connect_timeout?",
            ),
            (
                "proxy: {threads: 1, conect_timeout: \"2s\"}\n",
                "line 1 column 21: proxy.conect_timeout: \"2s\": unknown field `conect_timeout`: did you mean proxy.connect_timeout?",
            ),
            (
                "prxy:\n  threads: 2\n",
                "line 1 column 1: prxy: \"{threads: 2}\": unknown field `prxy`: did you mean proxy?",
            ),
            // `y` is a key here, not YAML 1.1's `true`.
            (
                "proxy:\n  y: 1\n",
                "line 2 column 3: proxy.y: \"1\": unknown field `y`: known keys here: threads, connect_timeout, read_timeout, idle_timeout, retry_after, keepalive_timeout, startup_hold, header_timeout, body_timeout, max_connections, trusted_proxies, error_page",
            ),
            (
                "proxy:\n  threads: 1\n  threads: 2\n",
                "line 3 column 3: proxy.threads: \"2\": set twice in the same mapping: keep one",
            ),
            (
                "routes:\n  - host: a.com\n",
                "line 2 column 5: routes[0].backends: \"\": missing field `backends`: it is required",
            ),
            // A value of the wrong kind.
            (
                "proxy:\n  threads: lots\n",
                "line 2 column 12: proxy.threads: \"lots\": `threads` takes a whole number from 0 to 4294967295",
            ),
            (
                "proxy:\n  threads: -1\n",
                "line 2 column 12: proxy.threads: \"-1\": `threads` takes a whole number from 0 to 4294967295",
            ),
            (
                "tls:\n  redirect: maybe\n",
                "line 2 column 13: tls.redirect: \"maybe\": `redirect` takes true or false",
            ),
            (
                "proxy: 3\n",
                "line 1 column 8: proxy: \"3\": `proxy` takes a mapping (indented `key: value` lines)",
            ),
            (
                "routes:\n  - host: a.com\n    backends: 127.0.0.1:1\n",
                "line 3 column 15: routes[0].backends: \"127.0.0.1:1\": `backends` takes a list, e.g. [a, b]",
            ),
            (
                "proxy:\n  connect_timeout: [1s]\n",
                "line 2 column 20: proxy.connect_timeout: \"[1s]\": `connect_timeout` takes a single value, not a list or mapping",
            ),
            (
                "routes: [{host: a.com, backends: [127.0.0.1:1, {x: 1}]}]\n",
                "line 1 column 48: routes[0].backends[1]: \"{x: 1}\": `backends` takes a single value, not a list or mapping",
            ),
            // Not about a key: line and column.
            (
                "- proxy\n",
                "line 1 column 1: expected a mapping (indented `key: value` lines)",
            ),
        ] {
            let e = Config::parse(yaml, "t.yaml").unwrap_err().to_string();
            assert_eq!(e, format!("t.yaml: {want}"), "{yaml:?}");
        }
        for (yaml, at, needle) in [
            ("proxy:\n\tthreads: 1\n", "line 2 column 2: ", "tab"),
            ("proxy: \"x\n", "line 2 column 1: ", "quoted"),
            ("proxy: [1\n", "line 1 column 8: ", "unclosed bracket"),
            (
                "proxy:\n  threads: [1\n",
                "line 2 column 12: ",
                "unclosed bracket",
            ),
        ] {
            let e = Config::parse(yaml, "t.yaml").unwrap_err();
            assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
            let e = e.to_string();
            assert!(e.starts_with(&format!("t.yaml: {at}")), "{yaml:?}: {e}");
            assert!(e.contains(needle) && !e.contains('\n'), "{yaml:?}: {e}");
            assert!(!e.contains("<input>"), "{e}");
        }
    }

    #[test]
    fn static_routes_take_policies_and_refuse_bad_ones() {
        let yaml = |policy: &str| {
            format!(
                "routes:\n  - host: a.test\n    backends: [127.0.0.1:9000]\n    policy:\n{policy}"
            )
        };
        let c = Config::parse(
            &yaml("      ratelimit: 10/s\n      body_limit: 1024\n      headers.response.set.X-Frame-Options: DENY\n"),
            "t.yaml",
        )
        .unwrap();
        let p = &c.routes[0].policy;
        assert_eq!(p.ratelimit.as_ref().unwrap().count, 10);
        assert_eq!(p.body_limit, Some(1024));
        assert_eq!(p.response_set.len(), 1);
        for (policy, want) in [
            (
                "      ratelimt: 10/s\n",
                "routes[0].policy.ratelimt: \"10/s\": unknown policy key (did you mean ratelimit?)",
            ),
            (
                "      auth.basic: alice:secret\n",
                "routes[0].policy.auth.basic: \"(hidden)\": user 'alice': not a bcrypt or argon2 hash",
            ),
            (
                "      ratelimit.burst: \"5\"\n",
                "routes[0].policy.ratelimit.burst: \"5\": needs ratelimit",
            ),
        ] {
            let e = Config::parse(&yaml(policy), "t.yaml").unwrap_err().to_string();
            assert!(e.contains(want), "{policy:?}: {e}");
        }
    }

    #[test]
    fn durations_need_a_unit_and_zero_only_where_it_means_something() {
        // (section, key, 0 allowed)
        let keys = [
            ("docker", "resync_interval", false),
            ("proxy", "connect_timeout", false),
            ("proxy", "read_timeout", false),
            ("proxy", "idle_timeout", false),
            ("proxy", "retry_after", false),
            ("proxy", "header_timeout", false),
            ("proxy", "body_timeout", false),
            ("deploy", "health_timeout", false),
            ("deploy", "autoheal_grace", false),
            ("tls", "hsts", true),
            ("acme", "renew_before", false),
            ("dns", "ttl", true),
            ("shutdown", "grace", true),
        ];
        for (section, key, zero_ok) in keys {
            let yaml = |v: &str| format!("{section}:\n  {key}: {v}\n");
            let at = format!("t.yaml: line 2 column {}: {section}.{key}: ", key.len() + 5);
            let e = Config::parse(&yaml("5"), "t.yaml").unwrap_err().to_string();
            assert_eq!(e, format!("{at}\"5\": add a unit: 5s (or ms, m, h)"));
            let c = Config::parse(&yaml("1.5s"), "t.yaml").unwrap();
            let got = match key {
                "resync_interval" => c.docker.resync_interval,
                "connect_timeout" => c.proxy.connect_timeout,
                "read_timeout" => c.proxy.read_timeout,
                "idle_timeout" => c.proxy.idle_timeout,
                "retry_after" => c.proxy.retry_after,
                "header_timeout" => c.proxy.header_timeout,
                "body_timeout" => c.proxy.body_timeout,
                "health_timeout" => c.deploy.health_timeout,
                "autoheal_grace" => c.deploy.autoheal_grace,
                "hsts" => c.tls.hsts.unwrap(),
                "renew_before" => c.acme.renew_before.unwrap(),
                "ttl" => c.dns.ttl,
                _ => c.shutdown_grace,
            };
            assert_eq!(got, Duration::from_millis(1500), "{section}.{key}");
            match Config::parse(&yaml("0s"), "t.yaml") {
                Ok(_) => assert!(zero_ok, "{section}.{key}: 0s accepted"),
                Err(e) => {
                    let e = e.to_string();
                    assert!(!zero_ok, "{section}.{key}: {e}");
                    assert!(e.starts_with(&format!("{at}\"0s\": ")), "{e}");
                    assert!(e.contains("more than 0") || e.contains("1s minimum"), "{e}");
                }
            }
        }
        let e = Config::parse("proxy:\n  connect_timeout: 0ms\n", "t.yaml").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.yaml: line 2 column 20: proxy.connect_timeout: \"0ms\": must be more than 0, e.g. 2s"
        );
        let c = Config::parse(
            "tls:\n  hsts: 0s\ndns:\n  ttl: 0s\nshutdown:\n  grace: 0s\n",
            "t.yaml",
        )
        .unwrap();
        assert_eq!(
            (c.tls.hsts, c.dns.ttl, c.shutdown_grace),
            (Some(Duration::ZERO), Duration::ZERO, Duration::ZERO)
        );
        for (yaml, needle) in [
            (
                "proxy:\n  read_timeout: -5s\n",
                "proxy.read_timeout: \"-5s\": negative",
            ),
            (
                "proxy:\n  read_timeout: .nan\n",
                "proxy.read_timeout: \".nan\": not a duration",
            ),
            (
                "proxy:\n  read_timeout: \"\"\n",
                "proxy.read_timeout: \"\": empty",
            ),
            ("tls:\n  hsts: 100000h\n", "tls.hsts: \"100000h\": too long"),
            (
                "dns:\n  ttl: 1.5ms\n",
                "dns.ttl: \"1.5ms\": finer than a millisecond",
            ),
        ] {
            let e = Config::parse(yaml, "t.yaml").unwrap_err().to_string();
            assert!(e.contains(needle), "{yaml:?}: {e}");
        }
    }

    #[test]
    fn bad_values_name_line_column_key_and_value() {
        let e = Config::parse("proxy:\n  connect_timeout: 5x\n", "t.yaml").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("t.yaml: line 2 column 20: proxy.connect_timeout: \"5x\""),
            "{msg}"
        );
        let e = Config::parse("routes:\n  - host: a.com\n    backends: [nope]\n", "t.yaml")
            .unwrap_err();
        assert!(
            e.to_string().contains("routes[0].backends: \"nope\""),
            "{e}"
        );
        let e = Config::parse("proxy:\n  threads: many\n", "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("t.yaml: line 2 column 12: proxy.threads: \"many\": `threads` takes"),
            "{e}"
        );
        let e = Config::parse(
            "routes:\n  - host: http://a.com\n    backends: [127.0.0.1:1]\n",
            "t.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("routes[0].host") && e.contains("scheme"), "{e}");
        for (yaml, want) in [
            (
                "proxy:\n  max_connections: 0\n",
                "t.yaml: line 2 column 20: proxy.max_connections: \"0\": at least 1",
            ),
            (
                "proxy:\n  max_connections: 1.5\n",
                "t.yaml: line 2 column 20: proxy.max_connections: \"1.5\": `max_connections` takes a whole number from 0 to 4294967295",
            ),
        ] {
            let e = Config::parse(yaml, "t.yaml").unwrap_err().to_string();
            assert_eq!(e, want, "{yaml:?}");
        }
        let c = Config::parse("proxy:\n  max_connections: 512\n", "t.yaml").unwrap();
        assert_eq!(c.proxy.max_connections, 512);
    }

    #[test]
    fn dashboard_sampling_is_bounded() {
        for (yaml, want) in [
            (
                "admin:\n  stats_interval: 10s\n  stats_history: 5s\n",
                "t.yaml: line 3 column 18: admin.stats_history: \"5s\": shorter than admin.stats_interval: no sample would be kept",
            ),
            (
                "admin:\n  stats_interval: 1s\n",
                "t.yaml: line 2 column 19: admin.stats_interval: \"1s\": 3600 samples of admin.stats_interval; at most 1440: sample less often or keep less",
            ),
            (
                "admin:\n  session_ttl: 0s\n",
                "t.yaml: line 2 column 16: admin.session_ttl: \"0s\": must be more than 0, e.g. 43200s",
            ),
        ] {
            let e = Config::parse(yaml, "t.yaml").unwrap_err().to_string();
            assert_eq!(e, want, "{yaml:?}");
        }
        let c = Config::parse(
            "admin:\n  stats_interval: 1s\n  stats_history: 10m\n",
            "t.yaml",
        )
        .unwrap();
        assert_eq!(c.admin.stats_interval, Duration::from_secs(1));
        assert_eq!(c.admin.stats_history, Duration::from_secs(600));
    }

    #[test]
    fn checks_across_keys_name_line_and_column_too() {
        for (yaml, want) in [
            (
                "docker:\n  resync_interval: 500ms\n",
                "t.yaml: line 2 column 20: docker.resync_interval: \"500ms\": 500ms is below the 1s minimum",
            ),
            (
                "acme:\n  staging: true\n  directory: https://ca.test/dir\n",
                "t.yaml: line 3 column 14: acme.directory: \"https://ca.test/dir\": acme.staging is set too",
            ),
        ] {
            let e = Config::parse(yaml, "t.yaml").unwrap_err();
            assert!(matches!(e, ConfigError::Invalid { .. }), "{e}");
            assert!(e.to_string().starts_with(want), "{e}");
        }
    }

    #[test]
    fn acme_dns_providers_issuers_and_challenges() {
        let dir = std::env::temp_dir().join(format!("berth-acme-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("k.key");
        std::fs::write(
            &key,
            "key \"berth\" {\n  algorithm hmac-sha512;\n  secret \"c2VjcmV0\";\n};\n",
        )
        .unwrap();
        let bare = dir.join("bare.key");
        std::fs::write(&bare, "c2VjcmV0\n").unwrap();
        let k = key.display();
        let c = Config::parse(
            &format!(
                "acme:\n  challenge: tls-alpn-01, dns-01\n  key_type: ecdsa-p384\n  issuers:\n    - directory: https://a.test/dir\n    - directory: https://b.test/dir\n      name: second\n      eab_kid: kid\n      eab_hmac_key: c2VjcmV0\n  dns:\n    - zone: Example.COM.\n      provider: rfc2136\n      server: 127.0.0.1:5300\n      tsig_secret_file: {k}\n    - zone: other.org\n      provider: exec\n      command: /bin/true --flag\n      nameservers: [192.0.2.1]\n"
            ),
            "t.yaml",
        )
        .unwrap();
        let a = &c.acme;
        assert_eq!(
            a.challenges,
            vec![ChallengeKind::TlsAlpn01, ChallengeKind::Dns01]
        );
        assert_eq!(a.key_type, KeyType::EcdsaP384);
        assert_eq!(a.issuers[0].name, "a-test");
        assert_eq!(a.issuers[1].name, "second");
        assert_eq!(a.issuers[1].eab, Some(("kid".into(), b"secret".to_vec())));
        assert_eq!(a.dns[0].zone, "example.com");
        match &a.dns[0].kind {
            DnsProviderKind::Rfc2136 { server, key } => {
                assert_eq!(server.port(), 5300);
                assert_eq!(
                    (key.name.as_str(), key.algorithm.as_str()),
                    ("berth", "hmac-sha512")
                );
                assert_eq!(key.secret, b"secret");
                assert!(
                    !format!("{key:?}").contains("secret: "),
                    "Debug hides the secret"
                );
            }
            other => panic!("{other:?}"),
        }
        match &a.dns[1].kind {
            DnsProviderKind::Exec { command, .. } => assert_eq!(command, &["/bin/true", "--flag"]),
            other => panic!("{other:?}"),
        }
        assert_eq!(a.dns[1].nameservers[0].port(), 53);
        let b = bare.display();
        for (yaml, want) in [
            ("acme:\n  challenge: http-02\n".to_string(), "acme.challenge: \"http-02\": http-01, tls-alpn-01 or dns-01"),
            ("acme:\n  challenge: http-01, http-01\n".into(), "http-01 is listed twice"),
            ("acme:\n  key_type: dsa\n".into(), "acme.key_type: \"dsa\""),
            ("acme:\n  dns:\n    - zone: a.test\n      provider: route53\n".into(), "acme.dns[0].provider: \"route53\": rfc2136 (dynamic update with TSIG) or exec"),
            ("acme:\n  dns:\n    - zone: a.test\n      provider: rfc2136\n".into(), "rfc2136 needs server"),
            ("acme:\n  dns:\n    - zone: a.test\n      provider: rfc2136\n      server: 127.0.0.1\n".into(), "rfc2136 needs tsig_secret_file"),
            (format!("acme:\n  dns:\n    - zone: a.test\n      provider: rfc2136\n      server: 127.0.0.1\n      tsig_secret_file: {b}\n"), "a bare secret: set tsig_key"),
            (format!("acme:\n  dns:\n    - zone: a.test\n      provider: rfc2136\n      server: 127.0.0.1\n      tsig_secret_file: {k}\n      tsig_key: other\n"), "acme.dns[0].tsig_key: \"other\": the key file names the key \"berth\""),
            (format!("acme:\n  dns:\n    - zone: a.test\n      provider: rfc2136\n      server: 127.0.0.1\n      tsig_secret_file: {k}\n      tsig_algorithm: hmac-sha256\n"), "the key file says hmac-sha512"),
            (format!("acme:\n  dns:\n    - zone: a.test\n      provider: rfc2136\n      server: 127.0.0.1\n      tsig_secret_file: {k}\n      command: x\n"), "acme.dns[0].command: \"x\": not a setting of the rfc2136 provider"),
            ("acme:\n  dns:\n    - zone: a.test\n      provider: exec\n".into(), "exec needs command"),
            ("acme:\n  dns:\n    - zone: a.test\n      provider: exec\n      command: /no/such/hook\n".into(), "no such file: /no/such/hook"),
            ("acme:\n  dns:\n    - zone: a.test\n      provider: exec\n      command: hook\n    - zone: A.test\n      provider: exec\n      command: hook\n".into(), "acme.dns[1].zone: \"A.test\": a second provider for the same zone"),
            ("acme:\n  dns:\n    - zone: a..test\n      provider: exec\n      command: hook\n".into(), "acme.dns[0].zone"),
            ("acme:\n  dns:\n    - zone: a.test\n      provider: exec\n      command: hook\n      nameservers: [ns1.a.test]\n".into(), "acme.dns[0].nameservers: \"ns1.a.test\": an IP address"),
            ("acme:\n  directory: https://a.test/\n  issuers:\n    - directory: https://b.test/\n".into(), "acme.directory: \"https://a.test/\": acme.issuers is set too"),
            ("acme:\n  issuers:\n    - directory: http://b.test/\n".into(), "acme.issuers[0].directory: \"http://b.test/\": an https:// URL"),
            ("acme:\n  issuers:\n    - directory: https://b.test/\n      eab_kid: k\n".into(), "acme.issuers[0].eab_kid: \"k\": needs eab_hmac_key"),
            ("acme:\n  issuers:\n    - directory: https://b.test/\n      eab_kid: k\n      eab_hmac_key: \"!!topsecret!!\"\n".into(), "acme.issuers[0].eab_hmac_key: \"(hidden)\": not base64url"),
            ("acme:\n  issuers:\n    - directory: https://b.test/\n    - directory: https://b.test/x\n".into(), "a second issuer named \"b-test\""),
        ] {
            let e = Config::parse(&yaml, "t.yaml").unwrap_err().to_string();
            assert!(e.contains(want), "{yaml}\n→ {e}");
            assert!(!e.contains("topsecret") && !e.contains("c2VjcmV0"), "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn static_routes_and_constraint() {
        let c = Config::parse(
            "docker:\n  constraint: berth.test=abc\nroutes:\n  - host: a.com, *.b.com\n    path: /api\n    backends: [127.0.0.1:9000, 127.0.0.1:9001]\n",
            "t.yaml",
        )
        .unwrap();
        assert_eq!(
            c.docker.constraint,
            Some(("berth.test".into(), "abc".into()))
        );
        assert_eq!(c.routes[0].hosts.len(), 2);
        assert_eq!(c.routes[0].backends.len(), 2);
        assert_eq!(c.routes[0].path.as_str(), "/api");
    }

    #[test]
    fn production_example_parses() {
        let c = Config::parse(
            include_str!("../../config/production.yaml"),
            "production.yaml",
        )
        .unwrap();
        assert_eq!(c.http_listen.port(), 80);
        assert_eq!(c.dns.listen, vec!["172.17.0.1:53".parse().unwrap()]);
    }

    #[test]
    fn dns_section() {
        let c = Config::parse(
            "dns:\n  listen: 172.17.0.1:53, 127.0.0.1:53\n  zone: Docker.Lan.\n  ttl: 10s\n  upstreams: [1.1.1.1, \"[::1]:5300\"]\n  allow: [docker, 10.0.0.0/8, 192.168.1.7]\n",
            "t.yaml",
        )
        .unwrap();
        assert_eq!(c.dns.listen.len(), 2);
        assert_eq!(c.dns.zone, "docker.lan");
        assert_eq!(c.dns.ttl, Duration::from_secs(10));
        assert_eq!(c.dns.upstreams[0], "1.1.1.1:53".parse().unwrap());
        assert_eq!(c.dns.upstreams[1], "[::1]:5300".parse().unwrap());
        assert!(c.dns.allow.docker && !c.dns.allow.loopback);
        assert_eq!(c.dns.allow.nets.len(), 2);
        let subnets = ["172.18.0.0/16".parse().unwrap()];
        assert!(c.dns.allow.allows("172.18.3.4".parse().unwrap(), &subnets));
        assert!(c.dns.allow.allows("192.168.1.7".parse().unwrap(), &[]));
        assert!(!c.dns.allow.allows("127.0.0.1".parse().unwrap(), &subnets));
        assert!(!c.dns.allow.allows("8.8.8.8".parse().unwrap(), &subnets));
        let off = Config::parse("dns:\n  listen: \"off\"\n", "t.yaml").unwrap();
        assert!(off.dns.listen.is_empty());

        for (yaml, key, needle) in [
            ("dns:\n  listen: 127.0.0.1\n", "dns.listen", "IP:PORT"),
            ("dns:\n  zone: bad_zone\n", "dns.zone", "domain name"),
            ("dns:\n  ttl: 25h\n", "dns.ttl", "at most 24h"),
            (
                "dns:\n  upstreams: [resolver.local]\n",
                "dns.upstreams",
                "IP or IP:PORT",
            ),
            (
                "dns:\n  listen: 127.0.0.1:5353\n  upstreams: [127.0.0.1:5353]\n",
                "dns.upstreams",
                "loop",
            ),
            ("dns:\n  allow: [everyone]\n", "dns.allow", "CIDR"),
        ] {
            let e = Config::parse(yaml, "t.yaml").unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(needle), "{yaml}: {e}");
        }
    }
}
