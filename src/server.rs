//! Assembles the running berth: one Pingora `Server` holding the HTTP proxy
//! service and the Docker watcher as a background service, both sharing the
//! published snapshot.

use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use pingora::listeners::tls::TlsSettings;
use pingora::proxy::http_proxy_service_with_name;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;
use tokio::sync::{mpsc, watch};
use tracing::info;

use crate::api::{self, AdminService};
use crate::config::Config;
use crate::deploy::Controller;
use crate::dns::{DnsCounters, DnsService};
use crate::docker::Watcher;
use crate::health::Checker;
use crate::metrics::Metrics;
use crate::plan::Planner;
use crate::proxy::BerthProxy;
use crate::tls::acme::AcmeManager;
use crate::tls::files::CertFiles;
use crate::tls::{self, CertStore, Challenges, Https};
use crate::world::{Signals, World};
use crate::SharedSnapshot;

pub fn serve(config: Config) -> anyhow::Result<()> {
    // ring is the only TLS provider in the build (listener, ACME client).
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Pingora would retry a busy port for 30 s and then panic in its runtime:
    // find out now and say which key to change.
    std::net::TcpListener::bind(config.http_listen)
        .with_context(|| format!("http.listen {}: cannot listen", config.http_listen))?;

    // The admin API: refuse an address other machines can reach without a
    // token someone chose; otherwise a generated one (0600 file) will do.
    let admin = match config.admin.listen {
        None => None,
        Some(addr) => {
            let (token, generated) =
                api::token::server_token(&config.admin).map_err(anyhow::Error::msg)?;
            if generated && !addr.ip().is_loopback() {
                anyhow::bail!(
                    "admin.listen {addr}: not a loopback address, and no token is set: set admin.token or BERTH_TOKEN"
                );
            }
            if generated {
                info!(file = %config.admin.token_file.display(), "admin API token (generated) is in this file");
            }
            std::net::TcpListener::bind(addr)
                .with_context(|| format!("admin.listen {addr}: cannot listen"))?;
            Some((addr, token))
        }
    };

    // DNS: bound now, so that a busy port stops berth with the key to change.
    let dns_sockets = crate::dns::bind(&config.dns).map_err(anyhow::Error::msg)?;
    if !dns_sockets.is_empty() && config.dns.forward {
        crate::dns::check_upstreams(&config.dns).map_err(anyhow::Error::msg)?;
    }

    let config = Arc::new(config);
    // Static routes serve from the first request, Docker or not.
    let first = Planner::new(config.clone()).build(&World::new(), &Signals::default());
    let snapshot: SharedSnapshot = Arc::new(ArcSwap::from_pointee(first));
    let (notify, notified) = watch::channel(0u64);
    let (inputs_tx, inputs) = mpsc::unbounded_channel();

    let run_dir = std::env::temp_dir();
    let pid = std::process::id();
    let conf = ServerConf {
        threads: config.proxy.threads,
        // One current-thread runtime per worker, like nginx workers: no
        // cross-thread wake-ups on the request path.
        work_stealing: false,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(5),
        pid_file: run_dir
            .join(format!("berth-{pid}.pid"))
            .display()
            .to_string(),
        upgrade_sock: run_dir
            .join(format!("berth-{pid}-upgrade.sock"))
            .display()
            .to_string(),
        ..Default::default()
    };

    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let metrics = Arc::new(Metrics::new());
    let mut cert_status = None;
    let https = match config.tls.listen {
        None => None,
        Some(addr) => {
            let default = tls::store::self_signed("berth.invalid").map_err(anyhow::Error::msg)?;
            let store = Arc::new(CertStore::new(default));
            let https = Arc::new(Https {
                store: store.clone(),
                challenges: Challenges::default(),
                redirect: config.tls.redirect,
                port: addr.port(),
                hsts: config.tls.hsts.map(|d| format!("max-age={}", d.as_secs())),
            });
            std::net::TcpListener::bind(addr)
                .with_context(|| format!("tls.listen {addr}: cannot listen"))?;
            let mut settings = TlsSettings::intermediate("", "")
                .map_err(|e| anyhow::anyhow!("TLS settings: {e}"))?;
            settings.set_cert_resolver(store.clone());
            settings.enable_h2();
            let mut tls_proxy = http_proxy_service_with_name(
                &server.configuration,
                BerthProxy::new(
                    snapshot.clone(),
                    inputs_tx.clone(),
                    &config.proxy,
                    Some(https.clone()),
                    true,
                    metrics.clone(),
                    config.access_log,
                ),
                "berth https",
            );
            tls_proxy.add_tls_with_settings(&addr.to_string(), None, settings);
            server.add_service(tls_proxy);
            server.add_service(background_service(
                "certificate files",
                CertFiles::new(config.tls.certs_dir.clone(), store.clone()),
            ));
            if config.acme.email.is_some() {
                let acme = AcmeManager::new(
                    config.clone(),
                    snapshot.clone(),
                    notified.clone(),
                    store,
                    https.challenges.clone(),
                );
                cert_status = Some(acme.status.clone());
                server.add_service(background_service("acme", acme));
            } else {
                info!("acme.email is not set: no certificates are ordered");
            }
            Some(https)
        }
    };
    let mut proxy = http_proxy_service_with_name(
        &server.configuration,
        BerthProxy::new(
            snapshot.clone(),
            inputs_tx.clone(),
            &config.proxy,
            https.clone(),
            false,
            metrics.clone(),
            config.access_log,
        ),
        "berth http",
    );
    proxy.add_tcp(&config.http_listen.to_string());
    server.add_service(proxy);
    server.add_service(background_service(
        "docker watcher",
        Watcher::new(
            config.clone(),
            snapshot.clone(),
            notify,
            inputs_tx.clone(),
            inputs,
        ),
    ));
    server.add_service(background_service(
        "health checks",
        Checker::new(snapshot.clone(), notified.clone(), inputs_tx.clone()),
    ));
    let dns_counters = Arc::new(DnsCounters::default());
    if !dns_sockets.is_empty() {
        server.add_service(background_service(
            "dns",
            DnsService::new(
                config.clone(),
                snapshot.clone(),
                notified.clone(),
                dns_counters.clone(),
                dns_sockets,
            ),
        ));
    }
    let api_inputs = inputs_tx.clone();
    let (controller, deploys) =
        Controller::new(config.clone(), snapshot.clone(), notified, inputs_tx);
    server.add_service(background_service("deploys", controller));
    if let Some((addr, token)) = admin {
        let router = api::router(api::App {
            config: config.clone(),
            snapshot,
            inputs: api_inputs,
            deploys,
            token: Arc::from(token),
            certs: cert_status,
            dns: (!config.dns.listen.is_empty()).then_some(dns_counters),
            metrics,
        });
        server.add_service(background_service(
            "admin api",
            AdminService::new(addr, router),
        ));
    }
    info!(http = %config.http_listen, threads = config.proxy.threads, "berth serving");
    server.run_forever()
}
