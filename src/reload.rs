//! Configuration reload: SIGHUP, `berth reload` and `POST /api/reload` re-read
//! the file berth started with, validate it whole, and apply what can change
//! live; an invalid file is refused with its error and the running
//! configuration stays. Keys that need a restart keep their running value
//! and are named in the answer (`berth upgrade` applies them with no failed
//! request).
//!
//! Live changes reach the rest of berth through the next snapshot: the
//! watcher re-plans with the new configuration (static routes, labels,
//! proxy timeouts, TLS redirect and HSTS, DNS answers and forwarding, ACME
//! limits), and the proxy, DNS server and ACME manager read it from there.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::api::token::{self, TokenSource};
use crate::config::Config;

/// Sets the log filter to a new `log.level`; installed by the binary's
/// logging set-up (absent in tests and when `RUST_LOG` decides).
pub type LevelSetter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;
pub static LOG_LEVEL: OnceLock<LevelSetter> = OnceLock::new();

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// The file read; `(embedded default)` without one.
    pub file: String,
    /// Keys applied live.
    pub applied: Vec<String>,
    /// Keys that changed in the file but keep their running value until
    /// berth is restarted or upgraded.
    pub needs_restart: Vec<String>,
}

/// The configuration as the rest of berth should now run with, what changed
/// live and what needs a restart. Pure: `running` and `new` are both valid.
pub fn merge(running: &Config, new: &Config) -> (Config, Vec<String>, Vec<String>) {
    let mut applied = new.clone();
    let mut live = Vec::new();
    let mut restart = Vec::new();
    macro_rules! live {
        ($($name:literal => $($f:ident).+;)*) => {$(
            if running.$($f).+ != new.$($f).+ {
                live.push($name.to_string());
            }
        )*};
    }
    macro_rules! restart {
        ($($name:literal => $($f:ident).+;)*) => {$(
            if running.$($f).+ != new.$($f).+ {
                restart.push($name.to_string());
                applied.$($f).+ = running.$($f).+.clone();
            }
        )*};
    }
    live! {
        "routes" => routes;
        "labels.prefix" => label_prefix;
        "proxy.connect_timeout" => proxy.connect_timeout;
        "proxy.read_timeout" => proxy.read_timeout;
        "proxy.idle_timeout" => proxy.idle_timeout;
        "proxy.retry_after" => proxy.retry_after;
        "proxy.keepalive_timeout" => proxy.keepalive_timeout;
        "proxy.header_timeout" => proxy.header_timeout;
        "proxy.body_timeout" => proxy.body_timeout;
        "proxy.max_connections" => proxy.max_connections;
        "proxy.trusted_proxies" => proxy.trusted_proxies;
        "proxy.error_page" => proxy.error_page;
        "tls.redirect" => tls.redirect;
        "tls.hsts" => tls.hsts;
        "acme.renew_before" => acme.renew_before;
        "acme.orders_per_hour" => acme.orders_per_hour;
        "acme.issuers" => acme.issuers;
        "acme.challenge" => acme.challenges;
        "acme.key_type" => acme.key_type;
        "acme.dns" => acme.dns;
        "dns.ttl" => dns.ttl;
        "dns.forward" => dns.forward;
        "dns.upstreams" => dns.upstreams;
        "dns.allow" => dns.allow;
        "admin.token" => admin.token;
        "admin.session_ttl" => admin.session_ttl;
        "log.level" => log_level;
        "log.access" => access_log;
    }
    restart! {
        "http.listen" => http_listen;
        "docker" => docker;
        "proxy.threads" => proxy.threads;
        "proxy.startup_hold" => proxy.startup_hold;
        "admin.listen" => admin.listen;
        "admin.token_file" => admin.token_file;
        "admin.stats_interval" => admin.stats_interval;
        "admin.stats_history" => admin.stats_history;
        "deploy" => deploy;
        "tls.listen" => tls.listen;
        "tls.certs_dir" => tls.certs_dir;
        "tls.on_demand" => tls.on_demand;
        "acme.email" => acme.email;
        "dns.listen" => dns.listen;
        "dns.zone" => dns.zone;
        "log.json" => log_json;
        "shutdown.grace" => shutdown_grace;
        "state_dir" => state_dir;
    }
    (applied, live, restart)
}

/// Does not compile when a key is added to the configuration: add it to
/// `live!` or `restart!` in [`merge`], then here.
#[allow(dead_code)]
fn every_key_is_in_merge(c: &Config) {
    use crate::config::{AcmeConfig, AdminConfig, DnsConfig, ProxyConfig, TlsConfig};
    let Config {
        http_listen: _,
        docker: _,
        label_prefix: _,
        proxy,
        routes: _,
        admin,
        deploy: _,
        tls,
        acme,
        dns,
        log_level: _,
        access_log: _,
        log_json: _,
        shutdown_grace: _,
        state_dir: _,
    } = c;
    let ProxyConfig {
        threads: _,
        connect_timeout: _,
        read_timeout: _,
        idle_timeout: _,
        retry_after: _,
        keepalive_timeout: _,
        startup_hold: _,
        header_timeout: _,
        body_timeout: _,
        max_connections: _,
        trusted_proxies: _,
        error_page: _,
    } = proxy;
    let AdminConfig {
        listen: _,
        token: _,
        token_file: _,
        session_ttl: _,
        stats_interval: _,
        stats_history: _,
    } = admin;
    let TlsConfig {
        listen: _,
        certs_dir: _,
        redirect: _,
        hsts: _,
        on_demand: _,
    } = tls;
    let AcmeConfig {
        email: _,
        issuers: _,
        renew_before: _,
        orders_per_hour: _,
        challenges: _,
        key_type: _,
        dns: _,
    } = acme;
    let DnsConfig {
        listen: _,
        zone: _,
        ttl: _,
        forward: _,
        upstreams: _,
        allow: _,
    } = dns;
}

/// Re-reads and applies the configuration; shared by SIGHUP and the API.
pub struct Reloader {
    path: Option<PathBuf>,
    running: Mutex<Arc<Config>>,
    /// The watcher re-plans with each value sent here.
    config: watch::Sender<Arc<Config>>,
    /// The admin API's bearer token.
    pub token: Arc<ArcSwap<String>>,
}

impl Reloader {
    pub fn new(
        path: Option<PathBuf>,
        running: Arc<Config>,
        token: String,
    ) -> (Arc<Reloader>, watch::Receiver<Arc<Config>>) {
        let (tx, rx) = watch::channel(running.clone());
        let reloader = Reloader {
            path,
            running: Mutex::new(running),
            config: tx,
            token: Arc::new(ArcSwap::from_pointee(token)),
        };
        (Arc::new(reloader), rx)
    }

    fn file(&self) -> String {
        self.path.as_ref().map_or_else(
            || "(embedded default)".to_string(),
            |p| p.display().to_string(),
        )
    }

    /// Reads, validates and applies the file. An error leaves everything
    /// as it was.
    pub fn reload(&self) -> Result<ReloadReport, String> {
        let new = Config::load(self.path.as_deref()).map_err(|e| e.to_string())?;
        let mut running = self
            .running
            .lock()
            .map_err(|_| "reload poisoned".to_string())?;
        let (applied, live, needs_restart) = merge(&running, &new);
        // Everything that can fail is checked before anything changes.
        let token = if applied.admin.listen.is_some() {
            let (t, source) = token::server_token(&applied.admin)?;
            if let Some(addr) = applied.admin.listen.filter(|a| !a.ip().is_loopback()) {
                if source != TokenSource::Chosen {
                    return Err(format!("admin.listen {addr}: not a loopback address, and no token is set: set admin.token or BERTH_TOKEN"));
                }
            }
            Some(t)
        } else {
            None
        };
        if !applied.dns.listen.is_empty() && applied.dns.forward {
            crate::dns::check_upstreams(&applied.dns)?;
        }
        if live.iter().any(|k| k == "log.level") {
            if let Some(set) = LOG_LEVEL.get() {
                set(&applied.log_level).map_err(|e| format!("log.level: {e}"))?;
            }
        }
        if let Some(t) = token {
            if **self.token.load() != t {
                self.token.store(Arc::new(t));
            }
        }
        let applied = Arc::new(applied);
        *running = applied.clone();
        self.config.send_replace(applied);
        let report = ReloadReport {
            file: self.file(),
            applied: live,
            needs_restart,
        };
        info!(file = %report.file, applied = ?report.applied, needs_restart = ?report.needs_restart, "configuration reloaded");
        Ok(report)
    }
}

/// Reloads on SIGHUP, for as long as berth runs.
pub struct HangUp(pub Arc<Reloader>);

#[async_trait]
impl BackgroundService for HangUp {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            warn!("cannot listen for SIGHUP: reload through the admin API only");
            return;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    info!("SIGHUP: reloading the configuration");
                    let reloader = self.0.clone();
                    let result = tokio::task::spawn_blocking(move || reloader.reload()).await;
                    match result {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => warn!(error = %e, "configuration refused; the running one stays"),
                        Err(e) => warn!(error = %e, "reload failed"),
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn live_keys_apply_and_the_others_keep_their_running_value() {
        let running = Config::default();
        let mut new = running.clone();
        new.proxy.read_timeout = Duration::from_secs(5);
        new.http_listen = "127.0.0.1:9999".parse().unwrap();
        new.log_level = "debug".into();
        new.dns.zone = "other".into();
        let (applied, live, restart) = merge(&running, &new);
        assert_eq!(live, ["proxy.read_timeout", "log.level"]);
        assert_eq!(restart, ["http.listen", "dns.zone"]);
        assert_eq!(applied.proxy.read_timeout, Duration::from_secs(5));
        assert_eq!(applied.log_level, "debug");
        assert_eq!(applied.http_listen, running.http_listen);
        assert_eq!(applied.dns.zone, running.dns.zone);
        let (same, live, restart) = merge(&running, &running);
        assert_eq!(same, running);
        assert!(live.is_empty() && restart.is_empty());
    }
}
