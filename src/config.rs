//! berth's configuration: one YAML file, parsed with serde-saphyr into raw
//! structs that reject unknown keys, then validated into [`Config`]. Every
//! error names the file, line, column, key and value.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::{MessageFormatter, Spanned};

use crate::names::{
    check_label, excerpt, format_duration, parse_duration, suggest, HostPattern, PathPrefix,
};

/// The embedded default configuration (`config/berth.yaml`).
pub const DEFAULT_YAML: &str = include_str!("../config/berth.yaml");

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
}

#[derive(Debug, Clone, PartialEq)]
pub struct AcmeConfig {
    /// ACME is off until an email is set.
    pub email: Option<String>,
    pub directory: String,
    /// A PEM root to trust for the directory (pebble, a private CA).
    pub ca_root: Option<PathBuf>,
    /// Renew when this much validity is left; `None`: a third of the lifetime.
    pub renew_before: Option<Duration>,
    pub orders_per_hour: u32,
}

pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

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
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeployConfig {
    /// How long a new replica may take to become Ready in a rollout.
    pub health_timeout: Duration,
    /// How long a container may stay unhealthy before autoheal restarts it.
    pub autoheal_grace: Duration,
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
}

#[derive(Debug, Clone, PartialEq)]
pub struct StaticRoute {
    pub hosts: Vec<HostPattern>,
    pub path: PathPrefix,
    pub backends: Vec<SocketAddr>,
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
            },
            routes: Vec::new(),
            admin: AdminConfig {
                listen: Some(SocketAddr::from(([127, 0, 0, 1], 8090))),
                token: None,
                token_file: None,
            },
            deploy: DeployConfig {
                health_timeout: Duration::from_secs(60),
                autoheal_grace: Duration::from_secs(30),
            },
            tls: TlsConfig {
                listen: Some(SocketAddr::from(([0, 0, 0, 0], 8443))),
                certs_dir: PathBuf::from("certs"),
                redirect: true,
                hsts: None,
            },
            acme: AcmeConfig {
                email: None,
                directory: LETS_ENCRYPT.into(),
                ca_root: None,
                renew_before: None,
                orders_per_hour: 20,
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<Spanned<String>>,
    token: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeploy {
    health_timeout: Option<Spanned<String>>,
    autoheal_grace: Option<Spanned<String>>,
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    host: Spanned<String>,
    path: Option<Spanned<String>>,
    backends: Vec<Spanned<String>>,
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

/// serde-saphyr names the key for unknown fields but not for a value of the
/// wrong type; key and value are read back from the source line it points at.
fn parse_error(text: &str, origin: &str, e: &serde_saphyr::Error) -> ConfigError {
    let short = e.without_snippet().to_string();
    let named = e
        .location()
        .and_then(|loc| text.lines().nth(loc.line().saturating_sub(1) as usize))
        .and_then(|line| {
            let line = line.trim_start().trim_start_matches("- ");
            let (k, v) = line.split_once(':')?;
            let (k, v) = (k.trim(), v.trim());
            (!k.is_empty() && !short.contains(&format!("`{k}`")))
                .then(|| format!(" (key `{k}`, value {v:?})"))
        })
        .unwrap_or_default();
    ConfigError::Parse {
        origin: origin.to_string(),
        message: format!("{short}{named}\n{e}"),
    }
}

struct Validator<'a> {
    origin: &'a str,
}

impl Validator<'_> {
    fn invalid<T: ToString>(
        &self,
        key: &str,
        v: &Spanned<T>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.to_string(),
            line: v.referenced.line(),
            column: v.referenced.column(),
            key: key.to_string(),
            value: v.value.to_string(),
            message: message.into(),
        }
    }

    fn duration(
        &self,
        key: &str,
        v: Option<Spanned<String>>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) => parse_duration(&s.value).map_err(|m| self.invalid(key, &s, m)),
        }
    }

    fn addr(&self, key: &str, v: &Spanned<String>) -> Result<SocketAddr, ConfigError> {
        v.value
            .trim()
            .parse()
            .map_err(|_| self.invalid(key, v, "not an address: use IP:PORT, e.g. 127.0.0.1:9000"))
    }

    fn config(&self, raw: Raw) -> Result<Config, ConfigError> {
        let d = Config::default();
        let http_listen = match raw.http.and_then(|h| h.listen) {
            Some(v) => self.addr("http.listen", &v)?,
            None => d.http_listen,
        };
        // Sections in the order of the file's reference: with several
        // mistakes, the first named is the first in that order.
        let docker = raw
            .docker
            .map_or(Ok(d.docker.clone()), |r| self.docker(r, &d.docker))?;
        let label_prefix = match raw.labels.and_then(|l| l.prefix) {
            None => d.label_prefix.clone(),
            Some(p) => self.label_prefix(p)?,
        };
        let proxy = raw
            .proxy
            .map_or(Ok(d.proxy.clone()), |r| self.proxy(r, &d.proxy))?;
        let routes = self.routes(raw.routes)?;
        let admin = raw
            .admin
            .map_or(Ok(d.admin.clone()), |r| self.admin(r, &d.admin))?;
        let deploy = raw
            .deploy
            .map_or(Ok(d.deploy.clone()), |r| self.deploy(r, &d.deploy))?;
        let tls = raw.tls.map_or(Ok(d.tls.clone()), |r| self.tls(r, &d.tls))?;
        let acme = raw
            .acme
            .map_or(Ok(d.acme.clone()), |r| self.acme(r, &d.acme))?;
        let dns = raw
            .dns
            .map_or(Ok(d.dns.clone()), |r| self.dns(r, d.dns.clone()))?;
        let (log_level, access_log, log_json) = match raw.log {
            None => (d.log_level.clone(), d.access_log, d.log_json),
            Some(r) => self.log(r, &d)?,
        };
        let shutdown_grace = match raw.shutdown.and_then(|s| s.grace) {
            None => d.shutdown_grace,
            Some(v) => match parse_duration(&v.value) {
                Ok(g) if g <= Duration::from_secs(3600) => g,
                Ok(_) => return Err(self.invalid("shutdown.grace", &v, "at most 1h")),
                Err(m) => return Err(self.invalid("shutdown.grace", &v, m)),
            },
        };
        Ok(Config {
            http_listen,
            docker,
            label_prefix,
            proxy,
            routes,
            admin,
            deploy,
            tls,
            acme,
            dns,
            log_level,
            access_log,
            log_json,
            shutdown_grace,
        })
    }

    fn docker(&self, r: RawDocker, d: &DockerConfig) -> Result<DockerConfig, ConfigError> {
        let host = match r.host {
            None => None,
            Some(h) if h.value.starts_with("unix:///") || h.value.starts_with("tcp://") => {
                Some(h.value)
            }
            Some(h) => {
                return Err(self.invalid(
                    "docker.host",
                    &h,
                    "use unix:///path/to/docker.sock or tcp://host:port",
                ))
            }
        };
        let constraint = match r.constraint {
            None => None,
            Some(c) => match c.value.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    Some((k.trim().to_string(), v.trim().to_string()))
                }
                _ => return Err(self.invalid("docker.constraint", &c, "use label=value")),
            },
        };
        let resync_interval = match r.resync_interval {
            None => d.resync_interval,
            Some(v) => {
                let key = "docker.resync_interval";
                let i = parse_duration(&v.value).map_err(|m| self.invalid(key, &v, m))?;
                if i < Duration::from_secs(1) {
                    return Err(self.invalid(key, &v, format!("{i:?} is below the 1s minimum")));
                }
                i
            }
        };
        Ok(DockerConfig {
            host,
            constraint,
            resync_interval,
        })
    }

    fn label_prefix(&self, p: Spanned<String>) -> Result<String, ConfigError> {
        let ok = !p.value.is_empty()
            && p.value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !p.value.ends_with('.');
        if !ok {
            return Err(self.invalid(
                "labels.prefix",
                &p,
                "letters, digits, '-', '_' and inner '.' only",
            ));
        }
        Ok(p.value)
    }

    fn proxy(&self, r: RawProxy, d: &ProxyConfig) -> Result<ProxyConfig, ConfigError> {
        Ok(ProxyConfig {
            threads: match r.threads {
                None => d.threads,
                Some(t) if (1..=256).contains(&t.value) => t.value as usize,
                Some(t) => return Err(self.invalid("proxy.threads", &t, "between 1 and 256")),
            },
            connect_timeout: self.duration(
                "proxy.connect_timeout",
                r.connect_timeout,
                d.connect_timeout,
            )?,
            read_timeout: self.duration("proxy.read_timeout", r.read_timeout, d.read_timeout)?,
            idle_timeout: self.duration("proxy.idle_timeout", r.idle_timeout, d.idle_timeout)?,
            retry_after: self.duration("proxy.retry_after", r.retry_after, d.retry_after)?,
        })
    }

    fn routes(&self, raw: Vec<RawRoute>) -> Result<Vec<StaticRoute>, ConfigError> {
        let mut routes = Vec::new();
        for (i, r) in raw.into_iter().enumerate() {
            let mut hosts = Vec::new();
            for h in r.host.value.split(',') {
                let key = format!("routes[{i}].host");
                hosts.push(HostPattern::parse(h).map_err(|m| self.invalid(&key, &r.host, m))?);
            }
            let path = match r.path {
                None => PathPrefix::root(),
                Some(p) => PathPrefix::parse(&p.value)
                    .map_err(|m| self.invalid(&format!("routes[{i}].path"), &p, m))?,
            };
            if r.backends.is_empty() {
                return Err(self.invalid(
                    &format!("routes[{i}].host"),
                    &r.host,
                    "route has no backends",
                ));
            }
            let backends = r
                .backends
                .iter()
                .map(|b| self.addr(&format!("routes[{i}].backends"), b))
                .collect::<Result<Vec<_>, _>>()?;
            routes.push(StaticRoute {
                hosts,
                path,
                backends,
            });
        }
        Ok(routes)
    }

    fn admin(&self, r: RawAdmin, d: &AdminConfig) -> Result<AdminConfig, ConfigError> {
        let listen = match r.listen {
            None => d.listen,
            Some(v) if v.value.trim() == "off" => None,
            Some(v) => Some(self.addr("admin.listen", &v)?),
        };
        let token = match r.token {
            None => None,
            Some(t) if t.value.trim().len() < 16 => {
                return Err(self.invalid("admin.token", &t, "at least 16 characters"))
            }
            Some(t) => Some(t.value.trim().to_string()),
        };
        let token_file = r
            .token_file
            .map_or(d.token_file.clone(), |f| Some(PathBuf::from(f.value)));
        Ok(AdminConfig {
            listen,
            token,
            token_file,
        })
    }

    fn deploy(&self, r: RawDeploy, d: &DeployConfig) -> Result<DeployConfig, ConfigError> {
        Ok(DeployConfig {
            health_timeout: self.duration(
                "deploy.health_timeout",
                r.health_timeout,
                d.health_timeout,
            )?,
            autoheal_grace: self.duration(
                "deploy.autoheal_grace",
                r.autoheal_grace,
                d.autoheal_grace,
            )?,
        })
    }

    fn tls(&self, r: RawTls, d: &TlsConfig) -> Result<TlsConfig, ConfigError> {
        Ok(TlsConfig {
            listen: match r.listen {
                None => d.listen,
                Some(v) if v.value.trim() == "off" => None,
                Some(v) => Some(self.addr("tls.listen", &v)?),
            },
            certs_dir: r
                .certs_dir
                .map_or(d.certs_dir.clone(), |v| PathBuf::from(v.value)),
            redirect: r.redirect.unwrap_or(d.redirect),
            hsts: match r.hsts {
                None => None,
                Some(v) if v.value.trim() == "off" => None,
                Some(v) => {
                    Some(parse_duration(&v.value).map_err(|m| self.invalid("tls.hsts", &v, m))?)
                }
            },
        })
    }

    fn acme(&self, r: RawAcme, d: &AcmeConfig) -> Result<AcmeConfig, ConfigError> {
        let email = match r.email {
            None => None,
            Some(e) if e.value.contains('@') && !e.value.contains(char::is_whitespace) => {
                Some(e.value)
            }
            Some(e) => return Err(self.invalid("acme.email", &e, "not an email address")),
        };
        let staging = r.staging.unwrap_or(false);
        let directory = match r.directory {
            Some(v) if !v.value.starts_with("https://") => {
                return Err(self.invalid("acme.directory", &v, "an https:// URL"))
            }
            Some(v) if staging => {
                return Err(self.invalid(
                    "acme.directory",
                    &v,
                    "acme.staging is set too: set one or the other",
                ))
            }
            Some(v) => v.value,
            None if staging => LETS_ENCRYPT_STAGING.into(),
            None => d.directory.clone(),
        };
        let ca_root = match r.ca_root {
            None => None,
            Some(v) if Path::new(&v.value).is_file() => Some(PathBuf::from(v.value)),
            Some(v) => return Err(self.invalid("acme.ca_root", &v, "no such file")),
        };
        let renew_before = match r.renew_before {
            None => None,
            Some(v) => Some(
                parse_duration(&v.value).map_err(|m| self.invalid("acme.renew_before", &v, m))?,
            ),
        };
        let orders_per_hour = match r.orders_per_hour {
            None => d.orders_per_hour,
            Some(n) if n.value >= 1 => n.value,
            Some(n) => return Err(self.invalid("acme.orders_per_hour", &n, "at least 1")),
        };
        Ok(AcmeConfig {
            email,
            directory,
            ca_root,
            renew_before,
            orders_per_hour,
        })
    }

    /// (level, access log, JSON).
    fn log(&self, r: RawLog, d: &Config) -> Result<(String, bool, bool), ConfigError> {
        let access_log = r.access.unwrap_or(d.access_log);
        let log_json = match r.format {
            None => d.log_json,
            Some(f) => match f.value.trim() {
                "text" => false,
                "json" => true,
                _ => return Err(self.invalid("log.format", &f, "text or json")),
            },
        };
        let log_level = match r.level {
            None => d.log_level.clone(),
            Some(l) => {
                let v = l.value.to_ascii_lowercase();
                if !["error", "warn", "info", "debug", "trace"].contains(&v.as_str()) {
                    return Err(self.invalid(
                        "log.level",
                        &l,
                        "one of error, warn, info, debug, trace",
                    ));
                }
                v
            }
        };
        Ok((log_level, access_log, log_json))
    }

    fn dns(&self, r: RawDns, d: DnsConfig) -> Result<DnsConfig, ConfigError> {
        let listen = match r.listen {
            None => d.listen,
            Some(v) if v.value.trim() == "off" => Vec::new(),
            Some(v) => v
                .value
                .split(',')
                .map(|a| {
                    a.trim().parse().map_err(|_| {
                        self.invalid(
                            "dns.listen",
                            &v,
                            format!("{:?} is not an address: use IP:PORT (several: comma-separated), or off", a.trim()),
                        )
                    })
                })
                .collect::<Result<Vec<SocketAddr>, _>>()?,
        };
        let zone = match r.zone {
            None => d.zone,
            Some(v) => {
                let z = v.value.trim().trim_end_matches('.').to_ascii_lowercase();
                if z.is_empty() || !z.split('.').all(|l| check_label(l, false).is_ok()) {
                    return Err(self.invalid(
                        "dns.zone",
                        &v,
                        "a domain name such as internal or docker.example.lan",
                    ));
                }
                z
            }
        };
        let ttl = match r.ttl {
            None => d.ttl,
            Some(v) => match parse_duration(&v.value) {
                Ok(t) if t <= Duration::from_secs(86_400) => t,
                Ok(_) => return Err(self.invalid("dns.ttl", &v, "at most 24h")),
                Err(m) => return Err(self.invalid("dns.ttl", &v, m)),
            },
        };
        let mut upstreams = Vec::new();
        for v in r.upstreams.unwrap_or_default() {
            let s = v.value.trim();
            let addr = s
                .parse::<SocketAddr>()
                .or_else(|_| {
                    s.parse::<std::net::IpAddr>()
                        .map(|ip| SocketAddr::new(ip, 53))
                })
                .map_err(|_| {
                    self.invalid("dns.upstreams", &v, "not an address: use IP or IP:PORT")
                })?;
            // Exactly a listen address; `berth serve` checks the rest (an
            // unspecified listen address, this host's own addresses).
            if is_own_address(&listen, addr, false) {
                return Err(self.invalid(
                    "dns.upstreams",
                    &v,
                    "is berth's own dns.listen address: queries would loop",
                ));
            }
            upstreams.push(addr);
        }
        let allow = match r.allow {
            None => d.allow,
            Some(items) => {
                let mut a = DnsAllow {
                    loopback: false,
                    docker: false,
                    nets: Vec::new(),
                };
                for v in items {
                    match v.value.trim() {
                        "loopback" => a.loopback = true,
                        "docker" => a.docker = true,
                        s => a.nets.push(
                            s.parse::<ipnet::IpNet>()
                                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                                .map_err(|_| {
                                    self.invalid(
                                        "dns.allow",
                                        &v,
                                        "use loopback, docker, an IP or a CIDR such as 10.0.0.0/8",
                                    )
                                })?,
                        ),
                    }
                }
                a
            }
        };
        Ok(DnsConfig {
            listen,
            zone,
            ttl,
            forward: r.forward.unwrap_or(d.forward),
            upstreams,
            allow,
        })
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
        for (yaml, key) in [
            ("colour: red\n", "colour"),
            ("http:\n  listen: 0.0.0.0:80\n  lisen: 1\n", "lisen"),
            ("docker:\n  sock: x\n", "sock"),
            ("labels:\n  prefx: x\n", "prefx"),
            ("proxy:\n  thread: 2\n", "thread"),
            (
                "routes:\n  - host: a.com\n    backend: [127.0.0.1:1]\n",
                "backend",
            ),
            ("log:\n  levle: info\n", "levle"),
            ("admin:\n  tokn: x\n", "tokn"),
            ("deploy:\n  timeout: 1s\n", "timeout"),
            ("tls:\n  port: 443\n", "port"),
            ("acme:\n  mail: a@b.c\n", "mail"),
            ("dns:\n  forwrd: true\n", "forwrd"),
            ("shutdown:\n  grase: 5s\n", "grase"),
        ] {
            let e = Config::parse(yaml, "t.yaml").unwrap_err().to_string();
            assert!(
                e.contains(&format!("unknown field `{key}`")),
                "{yaml:?} gave {e}"
            );
            assert!(e.contains("line "), "{e}");
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
        assert!(e.contains("line 2") && e.contains("`threads`"), "{e}");
        let e = Config::parse(
            "routes:\n  - host: http://a.com\n    backends: [127.0.0.1:1]\n",
            "t.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("routes[0].host") && e.contains("scheme"), "{e}");
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
        let c =
            Config::parse(include_str!("../config/production.yaml"), "production.yaml").unwrap();
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
