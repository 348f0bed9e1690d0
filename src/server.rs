//! Assembles the running berth: checks that every listener can bind (so a
//! busy port stops berth with the key to change), makes the engine handle and
//! the shared snapshot once, and runs one Pingora `Server` holding the HTTP
//! and HTTPS proxies and every background service (watcher, checks, DNS,
//! certificates, deploys, admin API).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::proxy::{http_proxy_service_with_name, HttpProxy};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use tokio::sync::{mpsc, watch};
use tracing::info;

use crate::api::token::TokenSource;
use crate::api::{self, AdminService};
use crate::config::Config;
use crate::deploy::Controller;
use crate::dns::{DnsCounters, DnsService, Sockets};
use crate::docker::Watcher;
use crate::engine::Engine;
use crate::health::Checker;
use crate::metrics::Metrics;
use crate::plan::Planner;
use crate::proxy::{self, BerthProxy};
use crate::shutdown::{Requests, StopSignals};
use crate::state::{self, StateDir};
use crate::tls::acme::{AcmeManager, CertStatus};
use crate::tls::files::CertFiles;
use crate::tls::{self, CertStore, Challenges, Https};
use crate::world::{Input, Signals, World};
use crate::{Inputs, SharedSnapshot};

/// What start-up checked and bound before anything runs.
struct Preflight {
    /// The admin API's address and token, when it is on.
    admin: Option<(SocketAddr, String)>,
    dns_sockets: Vec<Sockets>,
}

/// What every part shares: made once here.
struct Shared {
    config: Arc<Config>,
    engine: Engine,
    snapshot: SharedSnapshot,
    notify: watch::Sender<u64>,
    notified: watch::Receiver<u64>,
    inputs: Inputs,
    metrics: Arc<Metrics>,
    /// Requests in flight, for a graceful stop.
    requests: Arc<Requests>,
    state: StateDir,
}

pub fn serve(config: Config) -> anyhow::Result<()> {
    // ring is the only TLS provider in the build (listener, ACME client).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pre = preflight(&config)?;
    let engine = Engine::new(&config.docker).map_err(anyhow::Error::new)?;
    let dir = config.state_dir.clone().unwrap_or_else(state::default_dir);
    let state = StateDir::open(&dir).map_err(anyhow::Error::msg)?;
    let config = Arc::new(config);
    // Static routes serve from the first request, Docker or not.
    let first = Planner::new(config.clone()).build(&World::new(), &Signals::default());
    let (notify, notified) = watch::channel(0u64);
    let (inputs, inputs_rx) = mpsc::unbounded_channel();
    let shared = Shared {
        config,
        engine,
        snapshot: Arc::new(ArcSwap::from_pointee(first)),
        notify,
        notified,
        inputs,
        metrics: Arc::new(Metrics::new()),
        requests: Arc::default(),
        state,
    };

    let mut server = Server::new_with_opt_and_conf(None, server_conf(&shared.config));
    server.bootstrap();
    let (https, cert_status) = add_https(&mut server, &shared)?;
    add_http(&mut server, &shared, https);
    let signals = StopSignals {
        requests: shared.requests.clone(),
        grace: shared.config.shutdown_grace,
    };
    add_background(&mut server, shared, inputs_rx, pre, cert_status);
    server.run(RunArgs {
        shutdown_signal: Box::new(signals),
    });
    std::process::exit(0)
}

/// Binds every listener once: Pingora would retry a busy port for 30 s and
/// then panic in its runtime. Refuses an admin API that other machines can
/// reach without a token someone chose.
fn preflight(config: &Config) -> anyhow::Result<Preflight> {
    std::net::TcpListener::bind(config.http_listen)
        .with_context(|| format!("http.listen {}: cannot listen", config.http_listen))?;
    if let Some(addr) = config.tls.listen {
        std::net::TcpListener::bind(addr)
            .with_context(|| format!("tls.listen {addr}: cannot listen"))?;
    }
    let admin = match config.admin.listen {
        None => None,
        Some(addr) => {
            let (token, source) =
                api::token::server_token(&config.admin).map_err(anyhow::Error::msg)?;
            if source != TokenSource::Chosen && !addr.ip().is_loopback() {
                anyhow::bail!(
                    "admin.listen {addr}: not a loopback address, and no token is set: set admin.token or BERTH_TOKEN"
                );
            }
            let file = api::token::token_file(&config.admin);
            match source {
                TokenSource::Generated => {
                    info!(file = %file.display(), "admin API token generated into this file")
                }
                TokenSource::File => {
                    info!(file = %file.display(), "admin API token read from this file")
                }
                TokenSource::Chosen => {}
            }
            std::net::TcpListener::bind(addr)
                .with_context(|| format!("admin.listen {addr}: cannot listen"))?;
            Some((addr, token))
        }
    };
    let dns_sockets = crate::dns::bind(&config.dns).map_err(anyhow::Error::msg)?;
    if !dns_sockets.is_empty() && config.dns.forward {
        crate::dns::check_upstreams(&config.dns).map_err(anyhow::Error::msg)?;
    }
    Ok(Preflight { admin, dns_sockets })
}

fn server_conf(config: &Config) -> ServerConf {
    let run_dir = std::env::temp_dir();
    let pid = std::process::id();
    ServerConf {
        threads: config.proxy.threads,
        // One current-thread runtime per worker, like nginx workers: no
        // cross-thread wake-ups on the request path.
        work_stealing: false,
        // berth exits by itself as soon as no request is left (see
        // `shutdown`); Pingora's grace period is only the backstop.
        grace_period_seconds: Some(config.shutdown_grace.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        pid_file: run_dir
            .join(format!("berth-{pid}.pid"))
            .display()
            .to_string(),
        upgrade_sock: run_dir
            .join(format!("berth-{pid}-upgrade.sock"))
            .display()
            .to_string(),
        ..Default::default()
    }
}

fn proxy(shared: &Shared, https: Option<Arc<Https>>, tls_listener: bool) -> BerthProxy {
    let parts = proxy::Shared {
        snapshot: shared.snapshot.clone(),
        inputs: shared.inputs.clone(),
        metrics: shared.metrics.clone(),
        requests: shared.requests.clone(),
        access_log: shared.config.access_log,
    };
    BerthProxy::new(parts, &shared.config.proxy, https, tls_listener)
}

/// The HTTPS listener (certificates by SNI), the certificate files watcher
/// and the ACME manager, when `tls.listen` is set.
fn add_https(
    server: &mut Server,
    shared: &Shared,
) -> anyhow::Result<(Option<Arc<Https>>, Option<CertStatus>)> {
    let config = &shared.config;
    let Some(addr) = config.tls.listen else {
        return Ok((None, None));
    };
    let default = tls::store::self_signed("berth.invalid").map_err(anyhow::Error::msg)?;
    let store = Arc::new(CertStore::new(default));
    let https = Arc::new(Https {
        store: store.clone(),
        challenges: Challenges::default(),
        redirect: config.tls.redirect,
        port: addr.port(),
        hsts: config.tls.hsts.map(|d| format!("max-age={}", d.as_secs())),
    });
    let mut settings =
        TlsSettings::intermediate("", "").map_err(|e| anyhow::anyhow!("TLS settings: {e}"))?;
    settings.set_cert_resolver(store.clone());
    settings.enable_h2();
    let mut tls_proxy = http_proxy_service_with_name(
        &server.configuration,
        proxy(shared, Some(https.clone()), true),
        "berth https",
    );
    set_server_options(&mut tls_proxy, config);
    tls_proxy.add_tls_with_settings(&addr.to_string(), None, settings);
    server.add_service(tls_proxy);
    server.add_service(background_service(
        "certificate files",
        CertFiles::new(config.tls.certs_dir.clone(), store.clone()),
    ));
    if config.acme.email.is_none() {
        info!("acme.email is not set: no certificates are ordered");
        return Ok((Some(https), None));
    }
    let acme = AcmeManager::new(
        config.clone(),
        shared.snapshot.clone(),
        shared.notified.clone(),
        store,
        https.challenges.clone(),
    );
    let status = acme.status.clone();
    server.add_service(background_service("acme", acme));
    Ok((Some(https), Some(status)))
}

/// HTTP/2 connections idle past `proxy.keepalive_timeout` are closed too.
fn set_server_options(service: &mut Service<HttpProxy<BerthProxy>>, config: &Config) {
    if let Some(proxy) = service.app_logic_mut() {
        // Non-exhaustive: set the field on the default.
        let mut options = HttpServerOptions::default();
        options.h2_idle_timeout = Some(config.proxy.keepalive_timeout);
        proxy.server_options = Some(options);
    }
}

fn add_http(server: &mut Server, shared: &Shared, https: Option<Arc<Https>>) {
    let mut http = http_proxy_service_with_name(
        &server.configuration,
        proxy(shared, https, false),
        "berth http",
    );
    set_server_options(&mut http, &shared.config);
    http.add_tcp(&shared.config.http_listen.to_string());
    server.add_service(http);
}

/// The watcher, health checks, DNS, deploys and the admin API.
fn add_background(
    server: &mut Server,
    shared: Shared,
    inputs_rx: mpsc::UnboundedReceiver<Input>,
    pre: Preflight,
    certs: Option<CertStatus>,
) {
    let Shared {
        config,
        engine,
        snapshot,
        notify,
        notified,
        inputs,
        metrics,
        requests: _,
        state,
    } = shared;
    server.add_service(background_service(
        "docker watcher",
        Watcher::new(
            config.clone(),
            engine.clone(),
            Some(state.clone()),
            snapshot.clone(),
            notify,
            (inputs.clone(), inputs_rx),
        ),
    ));
    server.add_service(background_service(
        "health checks",
        Checker::new(snapshot.clone(), notified.clone(), inputs.clone()),
    ));
    let dns_counters = Arc::new(DnsCounters::default());
    if !pre.dns_sockets.is_empty() {
        server.add_service(background_service(
            "dns",
            DnsService::new(
                config.clone(),
                snapshot.clone(),
                notified.clone(),
                dns_counters.clone(),
                pre.dns_sockets,
            ),
        ));
    }
    let (controller, deploys) = Controller::new(
        config.clone(),
        engine.clone(),
        snapshot.clone(),
        notified.clone(),
        inputs.clone(),
        Some(state),
    );
    server.add_service(background_service("deploys", controller));
    if let Some((addr, token)) = pre.admin {
        let router = api::router(api::App {
            config: config.clone(),
            engine,
            notified,
            snapshot,
            inputs,
            deploys,
            token: Arc::from(token),
            certs,
            dns: (!config.dns.listen.is_empty()).then_some(dns_counters),
            metrics,
        });
        server.add_service(background_service(
            "admin api",
            AdminService::new(addr, router),
        ));
    }
    info!(http = %config.http_listen, threads = config.proxy.threads, "berth serving");
}
