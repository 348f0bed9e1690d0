//! Raw config sections → the validated [`Config`], one function per
//! section; every error names the key and the value with their place.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::Spanned;

use super::*;
use crate::names::{check_label, format_duration, parse_duration, HostPattern, PathPrefix};

pub(super) struct Validator<'a> {
    pub(super) origin: &'a str,
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

    /// A duration for which 0 means something (a TTL of 0: do not cache).
    fn duration(&self, key: &str, v: &Spanned<String>) -> Result<Duration, ConfigError> {
        parse_duration(&v.value).map_err(|m| self.invalid(key, v, m))
    }

    /// A duration for which 0 makes no sense: a timeout that gives up
    /// before trying, a Retry-After that asks for a storm. `e.g.` goes in
    /// the message.
    fn positive(&self, key: &str, v: &Spanned<String>, e_g: &str) -> Result<Duration, ConfigError> {
        let d = self.duration(key, v)?;
        if d.is_zero() {
            return Err(self.invalid(key, v, format!("must be more than 0, e.g. {e_g}")));
        }
        Ok(d)
    }

    fn positive_or(
        &self,
        key: &str,
        v: Option<Spanned<String>>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        v.map_or(Ok(default), |v| {
            self.positive(key, &v, &format_duration(default))
        })
    }

    fn addr(&self, key: &str, v: &Spanned<String>) -> Result<SocketAddr, ConfigError> {
        v.value
            .trim()
            .parse()
            .map_err(|_| self.invalid(key, v, "not an address: use IP:PORT, e.g. 127.0.0.1:9000"))
    }

    pub(super) fn config(&self, raw: Raw) -> Result<Config, ConfigError> {
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
        if tls.on_demand.is_some() && (acme.email.is_none() || tls.listen.is_none()) {
            return Err(ConfigError::Parse {
                origin: self.origin.to_string(),
                line: 0,
                column: 0,
                message: "tls.on_demand: on-demand certificates come from ACME on the HTTPS listener: set acme.email and tls.listen".into(),
            });
        }
        let (log_level, access_log, log_json) = match raw.log {
            None => (d.log_level.clone(), d.access_log, d.log_json),
            Some(r) => self.log(r, &d)?,
        };
        let shutdown_grace = match raw.shutdown.and_then(|s| s.grace) {
            None => d.shutdown_grace,
            // 0: stop at once.
            Some(v) => match self.duration("shutdown.grace", &v)? {
                g if g <= Duration::from_secs(3600) => g,
                _ => return Err(self.invalid("shutdown.grace", &v, "at most 1h")),
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
            state_dir: match raw.state_dir {
                None => None,
                Some(v) if v.value.trim().is_empty() => {
                    return Err(self.invalid("state_dir", &v, "a directory path"))
                }
                Some(v) => Some(PathBuf::from(v.value.trim())),
            },
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
                let i = self.duration(key, &v)?;
                if i < Duration::from_secs(1) {
                    let i = format_duration(i);
                    return Err(self.invalid(key, &v, format!("{i} is below the 1s minimum")));
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

    /// `proxy.error_page`: an HTML file, read now (at most 256 KB).
    fn error_page(
        &self,
        v: &Spanned<String>,
    ) -> Result<(std::path::PathBuf, std::sync::Arc<String>), ConfigError> {
        let path = std::path::PathBuf::from(v.value.trim());
        let text = std::fs::read(&path)
            .map_err(|e| self.invalid("proxy.error_page", v, format!("cannot read: {e}")))?;
        if text.len() > 256 * 1024 {
            return Err(self.invalid("proxy.error_page", v, "larger than 256 KB"));
        }
        let text = String::from_utf8(text)
            .map_err(|_| self.invalid("proxy.error_page", v, "not UTF-8 text"))?;
        Ok((path, std::sync::Arc::new(text)))
    }

    fn proxy(&self, r: RawProxy, d: &ProxyConfig) -> Result<ProxyConfig, ConfigError> {
        Ok(ProxyConfig {
            threads: match r.threads {
                None => d.threads,
                Some(t) if (1..=256).contains(&t.value) => t.value as usize,
                Some(t) => return Err(self.invalid("proxy.threads", &t, "between 1 and 256")),
            },
            connect_timeout: self.positive_or(
                "proxy.connect_timeout",
                r.connect_timeout,
                d.connect_timeout,
            )?,
            read_timeout: self.positive_or("proxy.read_timeout", r.read_timeout, d.read_timeout)?,
            idle_timeout: self.positive_or("proxy.idle_timeout", r.idle_timeout, d.idle_timeout)?,
            retry_after: self.positive_or("proxy.retry_after", r.retry_after, d.retry_after)?,
            startup_hold: self.positive_or("proxy.startup_hold", r.startup_hold, d.startup_hold)?,
            header_timeout: self.positive_or(
                "proxy.header_timeout",
                r.header_timeout,
                d.header_timeout,
            )?,
            body_timeout: self.positive_or("proxy.body_timeout", r.body_timeout, d.body_timeout)?,
            max_connections: match r.max_connections {
                None => d.max_connections,
                Some(n) if n.value >= 1 => n.value as usize,
                Some(n) => return Err(self.invalid("proxy.max_connections", &n, "at least 1")),
            },
            trusted_proxies: match r.trusted_proxies {
                None => d.trusted_proxies.clone(),
                Some(list) => list
                    .iter()
                    .map(|v| {
                        let raw = v.value.trim();
                        raw.parse::<ipnet::IpNet>()
                            .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                            .map(|n| n.trunc())
                            .map_err(|_| {
                                self.invalid(
                                    "proxy.trusted_proxies",
                                    v,
                                    "not an address or a CIDR (10.0.0.0/8)",
                                )
                            })
                    })
                    .collect::<Result<_, _>>()?,
            },
            error_page: match r.error_page {
                None => d.error_page.clone(),
                Some(v) => Some(self.error_page(&v)?),
            },
            keepalive_timeout: match r.keepalive_timeout {
                None => d.keepalive_timeout,
                Some(v) => {
                    let t = self.positive(
                        "proxy.keepalive_timeout",
                        &v,
                        &format_duration(d.keepalive_timeout),
                    )?;
                    if t < Duration::from_secs(1) {
                        return Err(self.invalid(
                            "proxy.keepalive_timeout",
                            &v,
                            "at least 1s (counted in whole seconds)",
                        ));
                    }
                    t
                }
            },
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
            let policy = self.route_policy(i, r.policy.unwrap_or_default())?;
            routes.push(StaticRoute {
                hosts,
                path,
                backends,
                policy,
            });
        }
        Ok(routes)
    }

    /// A static route's policy: the same keys and values as the labels of
    /// a container route. In a file, any mistake refuses the file.
    fn route_policy(
        &self,
        i: usize,
        raw: std::collections::BTreeMap<String, Spanned<String>>,
    ) -> Result<crate::policy::PolicySpec, ConfigError> {
        use crate::policy::spec::{is_policy_key, Draft, POLICY_KEYS};
        let mut spec = crate::policy::PolicySpec::default();
        let mut draft = Draft::default();
        for (key, v) in &raw {
            let name = format!("routes[{i}].policy.{key}");
            if !is_policy_key(key) {
                let hint = crate::names::suggest(key, POLICY_KEYS.iter().copied())
                    .map(|k| format!(" (did you mean {k}?)"))
                    .unwrap_or_default();
                return Err(self.invalid(&name, v, format!("unknown policy key{hint}")));
            }
            spec.set(&mut draft, key, &v.value).map_err(|m| {
                // A password is not repeated in an error (nor in a reload's answer).
                let mut e = self.invalid(&name, v, m);
                if key.starts_with("auth.basic") {
                    if let ConfigError::Invalid { value, .. } = &mut e {
                        *value = "(hidden)".into();
                    }
                }
                e
            })?;
        }
        if let Some((key, why)) = spec.finish(draft).into_iter().next() {
            let Some(v) = raw.get(&key).or_else(|| raw.values().next()) else {
                return Ok(spec);
            };
            return Err(self.invalid(&format!("routes[{i}].policy.{key}"), v, why));
        }
        Ok(spec)
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
        let stats_interval = self.positive_or(
            "admin.stats_interval",
            r.stats_interval.clone(),
            d.stats_interval,
        )?;
        let stats_history = self.positive_or(
            "admin.stats_history",
            r.stats_history.clone(),
            d.stats_history,
        )?;
        let samples = stats_history.as_millis() / stats_interval.as_millis().max(1);
        if !(1..=MAX_STATS_SAMPLES as u128).contains(&samples) {
            let why = if samples == 0 {
                "shorter than admin.stats_interval: no sample would be kept".to_string()
            } else {
                format!("{samples} samples of admin.stats_interval; at most {MAX_STATS_SAMPLES}: sample less often or keep less")
            };
            return Err(match (&r.stats_history, &r.stats_interval) {
                (Some(v), _) => self.invalid("admin.stats_history", v, why),
                (None, Some(v)) => self.invalid("admin.stats_interval", v, why),
                (None, None) => unreachable!("the defaults keep 360 samples"),
            });
        }
        Ok(AdminConfig {
            listen,
            token,
            token_file,
            session_ttl: self.positive_or("admin.session_ttl", r.session_ttl, d.session_ttl)?,
            stats_interval,
            stats_history,
        })
    }

    fn deploy(&self, r: RawDeploy, d: &DeployConfig) -> Result<DeployConfig, ConfigError> {
        Ok(DeployConfig {
            health_timeout: self.positive_or(
                "deploy.health_timeout",
                r.health_timeout,
                d.health_timeout,
            )?,
            autoheal_grace: self.positive_or(
                "deploy.autoheal_grace",
                r.autoheal_grace,
                d.autoheal_grace,
            )?,
            base_domain: match r.base_domain {
                None => d.base_domain.clone(),
                Some(v) if v.value.trim() == "off" => None,
                Some(v) => match HostPattern::parse(v.value.trim()) {
                    Ok(HostPattern::Exact(h)) => Some(h.to_string()),
                    Ok(HostPattern::Wildcard(_)) => {
                        return Err(self.invalid(
                            "deploy.base_domain",
                            &v,
                            "a domain, not a wildcard: apps.example.com",
                        ))
                    }
                    Err(m) => return Err(self.invalid("deploy.base_domain", &v, m)),
                },
            },
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
                // 0: browsers forget what they were told.
                Some(v) => Some(self.duration("tls.hsts", &v)?),
            },
            on_demand: r.on_demand.map(|o| self.on_demand(o)).transpose()?,
        })
    }

    fn on_demand(&self, r: RawOnDemand) -> Result<OnDemandConfig, ConfigError> {
        let ask = r.ask.value.trim().to_string();
        let parsed = ask.parse::<http::Uri>().ok();
        let ok = parsed.as_ref().is_some_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
        });
        if !ok {
            return Err(self.invalid(
                "tls.on_demand.ask",
                &r.ask,
                "an http:// or https:// URL (berth adds domain=NAME to its query)",
            ));
        }
        let rate = match r.rate {
            None => (10, Duration::from_secs(60)),
            Some(v) => crate::policy::spec::rate(&v.value)
                .map_err(|m| self.invalid("tls.on_demand.rate", &v, m))?,
        };
        let wait = match &r.wait {
            None => Duration::from_secs(10),
            Some(v) => match self.positive("tls.on_demand.wait", v, "10s")? {
                // Pingora gives the whole handshake 60 s.
                w if w <= Duration::from_secs(40) => w,
                _ => {
                    return Err(self.invalid(
                        "tls.on_demand.wait",
                        v,
                        "at most 40s (the handshake, this wait included, has 60s)",
                    ))
                }
            },
        };
        Ok(OnDemandConfig { ask, rate, wait })
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
        let ca_root = r
            .ca_root
            .map(|v| self.file("acme.ca_root", &v))
            .transpose()?;
        let issuers = match (r.issuers, r.directory) {
            (Some(_), Some(v)) => {
                return Err(self.invalid(
                    "acme.directory",
                    &v,
                    "acme.issuers is set too: list the directory there",
                ))
            }
            (Some(list), None) if staging || ca_root.is_some() => {
                let _ = list;
                return Err(ConfigError::Parse {
                    origin: self.origin.to_string(),
                    line: 0,
                    column: 0,
                    message:
                        "acme.issuers: ca_root goes in each issuer, and staging is an issuer of its own (directory: https://acme-staging-v02.api.letsencrypt.org/directory)"
                            .into(),
                });
            }
            (Some(list), None) => {
                let mut issuers: Vec<Issuer> = Vec::new();
                for (i, raw) in list.into_iter().enumerate() {
                    let issuer = self.issuer(i, raw)?;
                    if issuers.iter().any(|x| x.name == issuer.name) {
                        return Err(ConfigError::Parse {
                            origin: self.origin.to_string(),
                            line: 0,
                            column: 0,
                            message: format!(
                                "acme.issuers[{i}]: a second issuer named {:?}: give each a different name",
                                issuer.name
                            ),
                        });
                    }
                    issuers.push(issuer);
                }
                if issuers.is_empty() {
                    return Err(ConfigError::Parse {
                        origin: self.origin.to_string(),
                        line: 0,
                        column: 0,
                        message: "acme.issuers: the list is empty: name at least one CA".into(),
                    });
                }
                issuers
            }
            (None, directory) => {
                let directory = match directory {
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
                    None => LETS_ENCRYPT.into(),
                };
                vec![Issuer {
                    name: issuer_name(&directory),
                    directory,
                    ca_root,
                    eab: None,
                }]
            }
        };
        let renew_before = match r.renew_before {
            None => None,
            Some(v) => Some(self.positive("acme.renew_before", &v, "720h")?),
        };
        let orders_per_hour = match r.orders_per_hour {
            None => d.orders_per_hour,
            Some(n) if n.value >= 1 => n.value,
            Some(n) => return Err(self.invalid("acme.orders_per_hour", &n, "at least 1")),
        };
        let challenges = match r.challenge {
            None => d.challenges.clone(),
            Some(v) => {
                let mut list = Vec::new();
                for part in v.value.split(',') {
                    match ChallengeKind::parse(part) {
                        Some(c) if !list.contains(&c) => list.push(c),
                        Some(c) => {
                            return Err(self.invalid(
                                "acme.challenge",
                                &v,
                                format!("{} is listed twice", c.as_str()),
                            ))
                        }
                        None => {
                            return Err(self.invalid(
                                "acme.challenge",
                                &v,
                                "http-01, tls-alpn-01 or dns-01, or several in order of preference separated by commas",
                            ))
                        }
                    }
                }
                list
            }
        };
        let key_type = match r.key_type {
            None => d.key_type,
            Some(v) => KeyType::parse(&v.value).ok_or_else(|| {
                self.invalid(
                    "acme.key_type",
                    &v,
                    "ecdsa-p256, ecdsa-p384, rsa-2048 or rsa-4096",
                )
            })?,
        };
        let mut dns: Vec<DnsProvider> = Vec::new();
        for (i, raw) in r.dns.unwrap_or_default().into_iter().enumerate() {
            let zone_span = raw.zone.clone();
            let p = self.dns_provider(i, raw)?;
            if dns.iter().any(|x| x.zone == p.zone) {
                return Err(self.invalid(
                    &format!("acme.dns[{i}].zone"),
                    &zone_span,
                    "a second provider for the same zone",
                ));
            }
            dns.push(p);
        }
        Ok(AcmeConfig {
            email,
            issuers,
            renew_before,
            orders_per_hour,
            challenges,
            key_type,
            dns,
        })
    }

    /// A path that must name a readable file.
    fn file(&self, key: &str, v: &Spanned<String>) -> Result<PathBuf, ConfigError> {
        if Path::new(&v.value).is_file() {
            Ok(PathBuf::from(&v.value))
        } else {
            Err(self.invalid(key, v, "no such file"))
        }
    }

    fn issuer(&self, i: usize, r: RawIssuer) -> Result<Issuer, ConfigError> {
        let key = |k: &str| format!("acme.issuers[{i}].{k}");
        if !r.directory.value.starts_with("https://") {
            return Err(self.invalid(&key("directory"), &r.directory, "an https:// URL"));
        }
        let name = match r.name {
            None => issuer_name(&r.directory.value),
            Some(n) if check_label(&n.value, false).is_ok() => n.value,
            Some(n) => {
                return Err(self.invalid(
                    &key("name"),
                    &n,
                    "letters, digits and '-' (it names a file)",
                ))
            }
        };
        let ca_root = r
            .ca_root
            .map(|v| self.file(&key("ca_root"), &v))
            .transpose()?;
        let hmac = match (r.eab_hmac_key, r.eab_hmac_key_file) {
            (Some(_), Some(v)) => {
                return Err(self.invalid(
                    &key("eab_hmac_key_file"),
                    &v,
                    "eab_hmac_key is set too: set one or the other",
                ))
            }
            (Some(v), None) => Some((key("eab_hmac_key"), v.value.clone(), v)),
            (None, Some(v)) => {
                let path = self.file(&key("eab_hmac_key_file"), &v)?;
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    self.invalid(&key("eab_hmac_key_file"), &v, format!("cannot read: {e}"))
                })?;
                Some((key("eab_hmac_key_file"), text.trim().to_string(), v))
            }
            (None, None) => None,
        };
        let eab = match (r.eab_kid, hmac) {
            (None, None) => None,
            (Some(kid), Some((hkey, text, span))) => {
                let bytes = decode_base64(&text).ok_or_else(|| {
                    // Never repeat the secret: name the key only.
                    let mut hidden = span.clone();
                    hidden.value = "(hidden)".into();
                    self.invalid(&hkey, &hidden, "not base64url (the CA gives it so)")
                })?;
                Some((kid.value, bytes))
            }
            (Some(kid), None) => {
                return Err(self.invalid(
                    &key("eab_kid"),
                    &kid,
                    "needs eab_hmac_key or eab_hmac_key_file",
                ))
            }
            (None, Some((hkey, _, span))) => {
                let mut hidden = span.clone();
                hidden.value = "(hidden)".into();
                return Err(self.invalid(&hkey, &hidden, "needs eab_kid"));
            }
        };
        Ok(Issuer {
            name,
            directory: r.directory.value,
            ca_root,
            eab,
        })
    }

    fn dns_provider(&self, i: usize, r: RawDnsProvider) -> Result<DnsProvider, ConfigError> {
        let key = |k: &str| format!("acme.dns[{i}].{k}");
        let zone = r
            .zone
            .value
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if zone.is_empty() || zone.split('.').any(|l| check_label(l, false).is_err()) {
            return Err(self.invalid(&key("zone"), &r.zone, "a DNS zone, e.g. example.com"));
        }
        let nameservers = r
            .nameservers
            .unwrap_or_default()
            .iter()
            .map(|v| self.dns_server(&key("nameservers"), v))
            .collect::<Result<Vec<_>, _>>()?;
        let propagation_timeout = self.positive_or(
            &key("propagation_timeout"),
            r.propagation_timeout,
            Duration::from_secs(120),
        )?;
        let ttl = match r.ttl {
            None => 60,
            Some(v) => match self.duration(&key("ttl"), &v)?.as_secs() {
                t @ 0..=86400 => t as u32,
                _ => return Err(self.invalid(&key("ttl"), &v, "at most 24h")),
            },
        };
        let not_here = |k: &str, v: &Option<Spanned<String>>, kind: &str| match v {
            Some(v) => {
                Err(self.invalid(&key(k), v, format!("not a setting of the {kind} provider")))
            }
            None => Ok(()),
        };
        let kind = match r.provider.value.trim() {
            "rfc2136" => {
                not_here("command", &r.command, "rfc2136")?;
                not_here("timeout", &r.timeout, "rfc2136")?;
                let server = match &r.server {
                    Some(v) => self.dns_server(&key("server"), v)?,
                    None => {
                        return Err(self.invalid(
                            &key("provider"),
                            &r.provider,
                            "rfc2136 needs server: the zone's primary, e.g. 192.0.2.53:53",
                        ))
                    }
                };
                let Some(file) = &r.tsig_secret_file else {
                    return Err(self.invalid(
                        &key("provider"),
                        &r.provider,
                        "rfc2136 needs tsig_secret_file (updates are never sent unsigned)",
                    ));
                };
                let path = self.file(&key("tsig_secret_file"), file)?;
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    self.invalid(&key("tsig_secret_file"), file, format!("cannot read: {e}"))
                })?;
                let read = crate::tls::dns01::parse_tsig_file(&text)
                    .map_err(|m| self.invalid(&key("tsig_secret_file"), file, m))?;
                let name = match (&r.tsig_key, read.name) {
                    (Some(v), Some(n))
                        if !v.value.trim_end_matches('.').eq_ignore_ascii_case(&n) =>
                    {
                        return Err(self.invalid(
                            &key("tsig_key"),
                            v,
                            format!("the key file names the key {n:?}"),
                        ))
                    }
                    (Some(v), _) => v.value.trim_end_matches('.').to_ascii_lowercase(),
                    (None, Some(n)) => n,
                    (None, None) => {
                        return Err(self.invalid(
                            &key("tsig_secret_file"),
                            file,
                            "a bare secret: set tsig_key to the key's name",
                        ))
                    }
                };
                let algorithm = match (&r.tsig_algorithm, read.algorithm) {
                    (Some(v), _)
                        if !crate::tls::dns01::TSIG_ALGORITHMS
                            .contains(&v.value.trim().to_ascii_lowercase().as_str()) =>
                    {
                        return Err(self.invalid(
                            &key("tsig_algorithm"),
                            v,
                            "hmac-sha256, hmac-sha384, hmac-sha512 or hmac-sha1",
                        ))
                    }
                    (Some(v), Some(a)) if !v.value.trim().eq_ignore_ascii_case(&a) => {
                        return Err(self.invalid(
                            &key("tsig_algorithm"),
                            v,
                            format!("the key file says {a}"),
                        ))
                    }
                    (Some(v), _) => v.value.trim().to_ascii_lowercase(),
                    (None, Some(a)) => a,
                    (None, None) => "hmac-sha256".into(),
                };
                if !crate::tls::dns01::TSIG_ALGORITHMS.contains(&algorithm.as_str()) {
                    return Err(self.invalid(
                        &key("tsig_secret_file"),
                        file,
                        format!("algorithm {algorithm}: berth signs with hmac-sha256, hmac-sha384, hmac-sha512 or hmac-sha1"),
                    ));
                }
                DnsProviderKind::Rfc2136 {
                    server,
                    key: TsigKey {
                        name,
                        algorithm,
                        secret: read.secret,
                    },
                }
            }
            "exec" => {
                for (k, v) in [
                    ("server", &r.server),
                    ("tsig_key", &r.tsig_key),
                    ("tsig_secret_file", &r.tsig_secret_file),
                    ("tsig_algorithm", &r.tsig_algorithm),
                ] {
                    not_here(k, v, "exec")?;
                }
                let Some(cmd) = &r.command else {
                    return Err(self.invalid(
                        &key("provider"),
                        &r.provider,
                        "exec needs command: a program called with present|cleanup FQDN VALUE",
                    ));
                };
                let command: Vec<String> =
                    cmd.value.split_whitespace().map(str::to_string).collect();
                match command.first() {
                    None => return Err(self.invalid(&key("command"), cmd, "empty")),
                    Some(prog) if prog.contains('/') && !Path::new(prog).is_file() => {
                        return Err(self.invalid(
                            &key("command"),
                            cmd,
                            format!("no such file: {prog}"),
                        ))
                    }
                    Some(_) => {}
                }
                let timeout =
                    self.positive_or(&key("timeout"), r.timeout.clone(), Duration::from_secs(120))?;
                DnsProviderKind::Exec { command, timeout }
            }
            _ => {
                return Err(self.invalid(
                    &key("provider"),
                    &r.provider,
                    "rfc2136 (dynamic update with TSIG) or exec (a program of yours)",
                ))
            }
        };
        Ok(DnsProvider {
            zone,
            kind,
            nameservers,
            propagation_timeout,
            ttl,
        })
    }

    /// `IP` or `IP:PORT` (53 when left out).
    fn dns_server(&self, key: &str, v: &Spanned<String>) -> Result<SocketAddr, ConfigError> {
        let t = v.value.trim();
        if let Ok(ip) = t.parse::<std::net::IpAddr>() {
            return Ok(SocketAddr::new(ip, 53));
        }
        t.parse::<SocketAddr>()
            .map_err(|_| self.invalid(key, v, "an IP address, with :PORT if not 53"))
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
            // 0: answers are not cached.
            Some(v) => match self.duration("dns.ttl", &v)? {
                t if t <= Duration::from_secs(86_400) => t,
                _ => return Err(self.invalid("dns.ttl", &v, "at most 24h")),
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

/// What an issuer is called when the config does not name it: the
/// directory's host, with the well-known ones shortened.
pub(super) fn issuer_name(directory: &str) -> String {
    if directory == LETS_ENCRYPT {
        return "letsencrypt".into();
    }
    if directory == LETS_ENCRYPT_STAGING {
        return "letsencrypt-staging".into();
    }
    let host = directory
        .trim_start_matches("https://")
        .split(['/', ':'])
        .next()
        .unwrap_or("ca");
    let name: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() {
        "ca".into()
    } else {
        name
    }
}

/// Standard or URL-safe base64, padded or not (EAB keys come either way).
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let t = text.trim().trim_end_matches('=');
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(t))
        .ok()
        .filter(|b| !b.is_empty())
}
