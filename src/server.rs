//! Assembles the running berth: checks that every listener can bind (so a
//! busy port stops berth with the key to change), makes the engine handle and
//! the shared snapshot once, and runs one Pingora `Server` holding the HTTP
//! and HTTPS proxies and every background service (watcher, checks, DNS,
//! certificates, deploys, admin API).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::proxy::HttpProxy;
use pingora::server::configuration::{Opt, ServerConf};
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
use crate::proxy::conn::{self, Gate, Limits};
use crate::proxy::{self, BerthProxy};
use crate::reload::{HangUp, Reloader};
use crate::shutdown::{Requests, StopSignals};
use crate::state::{self, StateDir};
use crate::tls::acme::{AcmeHandle, AcmeManager};
use crate::tls::alpn::{AlpnChallenges, PreHandshake};
use crate::tls::files::CertFiles;
use crate::tls::ondemand::OnDemand;
use crate::tls::{self, CertStore, Challenges, Https};
use crate::upgrade;
use crate::world::{Input, Signals, World};
use crate::{Inputs, SharedSnapshot};

/// Requests that may wait at start at once (`proxy.startup_hold`).
const HOLD_MAX: usize = 10_000;

/// What start-up checked and bound before anything runs.
struct Preflight {
    /// The admin API's listener and token, when it is on.
    admin: Option<(std::net::TcpListener, String)>,
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
    /// Client connections open, every listener together.
    conns: Arc<Gate>,
    state: StateDir,
    reloader: Arc<Reloader>,
    hold: proxy::Hold,
}

/// Runs berth until it is stopped. `path`: the file `config` came from, for
/// reloads. `upgrade`: take the listeners of the berth running with the same
/// state directory (see [`crate::upgrade`]).
pub fn serve(config: Config, path: Option<PathBuf>, upgrade: bool) -> anyhow::Result<()> {
    // ring is the only TLS provider in the build (listener, ACME client).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = config.state_dir.clone().unwrap_or_else(state::default_dir);
    let state = StateDir::open(&dir).map_err(anyhow::Error::msg)?;
    let old = if upgrade {
        Some(upgrade::running_pid(&dir).map_err(anyhow::Error::msg)?)
    } else {
        None
    };
    let pre = preflight(&config, upgrade)?;
    let engine = Engine::new(&config.docker).map_err(anyhow::Error::new)?;
    let token = pre.admin.as_ref().map(|a| a.1.clone()).unwrap_or_default();
    let config = Arc::new(config);
    let (reloader, reloads) = Reloader::new(path, config.clone(), token);
    // Static routes serve from the first request, Docker or not.
    let first = Planner::new(config.clone()).build(&World::new(), &Signals::default());
    let (notify, notified) = watch::channel(0u64);
    let (inputs, inputs_rx) = mpsc::unbounded_channel();
    let hold = proxy::Hold {
        notified: notified.clone(),
        until: std::time::Instant::now() + config.proxy.startup_hold,
        waiting: Arc::default(),
        max: HOLD_MAX,
    };
    let shared = Shared {
        config,
        engine,
        snapshot: Arc::new(ArcSwap::from_pointee(first)),
        notify,
        notified,
        inputs,
        metrics: Arc::new(Metrics::new()),
        requests: Arc::default(),
        conns: Arc::default(),
        state,
        reloader,
        hold,
    };

    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), server_conf(&shared.config, &dir));
    if let Some(old) = old {
        upgrade::ask_for_listeners(upgrade::upgrade_sock(&dir), old);
    }
    // With --upgrade: blocks until the running berth has sent its listeners.
    server.bootstrap();
    upgrade::write_pid(&dir).map_err(anyhow::Error::msg)?;
    if let Some(old) = old {
        info!(old, "listeners taken over from the running berth");
    }
    let (https, cert_status) = add_https(&mut server, &shared)?;
    add_http(&mut server, &shared, https);
    let signals = StopSignals {
        requests: shared.requests.clone(),
        grace: shared.config.shutdown_grace,
    };
    add_background(&mut server, shared, (inputs_rx, reloads), pre, cert_status);
    upgrade::notify_systemd();
    server.run(RunArgs {
        shutdown_signal: Box::new(signals),
    });
    std::process::exit(0)
}

/// Binds every listener once: Pingora would retry a busy port for 30 s and
/// then panic in its runtime. Refuses an admin API that other machines can
/// reach without a token someone chose.
///
/// Taking over (`upgrade`), the HTTP and HTTPS listeners come from the
/// running berth; the admin API and DNS sockets are shared with it
/// (`SO_REUSEPORT`) until it exits.
fn preflight(config: &Config, upgrade: bool) -> anyhow::Result<Preflight> {
    if !upgrade {
        std::net::TcpListener::bind(config.http_listen)
            .with_context(|| format!("http.listen {}: cannot listen", config.http_listen))?;
        if let Some(addr) = config.tls.listen {
            std::net::TcpListener::bind(addr)
                .with_context(|| format!("tls.listen {addr}: cannot listen"))?;
        }
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
            if !upgrade {
                // Another program on the port: refused here, although the
                // shared socket below would bind beside a berth.
                std::net::TcpListener::bind(addr)
                    .with_context(|| format!("admin.listen {addr}: cannot listen"))?;
            }
            let listener = upgrade::shared_tcp(addr)
                .with_context(|| format!("admin.listen {addr}: cannot listen"))?;
            Some((listener, token))
        }
    };
    let dns_sockets = crate::dns::bind(&config.dns, upgrade).map_err(anyhow::Error::msg)?;
    if !dns_sockets.is_empty() && config.dns.forward {
        crate::dns::check_upstreams(&config.dns).map_err(anyhow::Error::msg)?;
    }
    Ok(Preflight { admin, dns_sockets })
}

fn server_conf(config: &Config, state: &std::path::Path) -> ServerConf {
    ServerConf {
        threads: config.proxy.threads,
        // One current-thread runtime per worker, like nginx workers: no
        // cross-thread wake-ups on the request path.
        work_stealing: false,
        // berth exits by itself as soon as no request is left (see
        // `shutdown`); Pingora's grace period is only the backstop.
        grace_period_seconds: Some(config.shutdown_grace.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        // Pingora writes it only when it daemonizes, which berth does not:
        // berth writes it itself (see `upgrade`).
        pid_file: upgrade::pid_file(state).display().to_string(),
        upgrade_sock: upgrade::upgrade_sock(state).display().to_string(),
        ..Default::default()
    }
}

fn proxy(shared: &Shared, https: Option<Arc<Https>>, tls_listener: bool) -> BerthProxy {
    let parts = proxy::Shared {
        snapshot: shared.snapshot.clone(),
        inputs: shared.inputs.clone(),
        metrics: shared.metrics.clone(),
        requests: shared.requests.clone(),
        hold: shared.hold.clone(),
    };
    BerthProxy::new(parts, https, tls_listener)
}

/// The HTTPS listener (certificates by SNI), the certificate files watcher
/// and the ACME manager, when `tls.listen` is set.
fn add_https(
    server: &mut Server,
    shared: &Shared,
) -> anyhow::Result<(Option<Arc<Https>>, Option<AcmeHandle>)> {
    let config = &shared.config;
    let Some(addr) = config.tls.listen else {
        return Ok((None, None));
    };
    let default = tls::store::self_signed("berth.invalid").map_err(anyhow::Error::msg)?;
    let store = Arc::new(CertStore::new(default));
    let https = Arc::new(Https {
        store: store.clone(),
        challenges: Challenges::default(),
        port: addr.port(),
    });
    let mut settings =
        TlsSettings::intermediate("", "").map_err(|e| anyhow::anyhow!("TLS settings: {e}"))?;
    settings.set_cert_resolver(store.clone());
    settings.enable_h2();
    let mut tls_proxy = conn::service(
        &server.configuration,
        proxy(shared, Some(https.clone()), true),
        "berth https",
        shared.conns.clone(),
        shared.snapshot.clone(),
    );
    set_server_options(&mut tls_proxy, config);
    tls_proxy.add_tls_with_settings(&addr.to_string(), None, settings);
    let alpn = Arc::new(AlpnChallenges::default());
    let mut acme = config.acme.email.is_some().then(|| {
        AcmeManager::new(
            config.clone(),
            shared.snapshot.clone(),
            shared.notified.clone(),
            store.clone(),
            https.challenges.clone(),
            alpn.clone(),
        )
    });
    if let (Some(od), Some(manager)) = (&config.tls.on_demand, &mut acme) {
        let dir = config.tls.certs_dir.join("acme");
        let on_demand = OnDemand::new(
            od.clone(),
            dir,
            store.clone(),
            manager.renewals.clone(),
            shared.snapshot.clone(),
        )
        .map_err(|e| anyhow::anyhow!("tls.on_demand: {e}"))?;
        manager.on_demand = Some(Arc::new(on_demand));
    }
    // TLS-ALPN-01 challenges and on-demand names are seen to before the
    // normal handshake.
    tls_proxy
        .endpoints()
        .set_pre_tls_callback(Arc::new(PreHandshake {
            challenges: alpn,
            on_demand: acme.as_ref().and_then(|a| a.on_demand.clone()),
        }));
    server.add_service(tls_proxy);
    server.add_service(background_service(
        "certificate files",
        CertFiles::new(config.tls.certs_dir.clone(), store.clone()),
    ));
    let Some(acme) = acme else {
        info!("acme.email is not set: no certificates are ordered");
        return Ok((Some(https), None));
    };
    let handle = AcmeHandle {
        status: acme.status.clone(),
        renewals: acme.renewals.clone(),
    };
    server.add_service(background_service("acme", acme));
    Ok((Some(https), Some(handle)))
}

/// HTTP/2 connections idle past `proxy.keepalive_timeout` are closed too.
fn set_server_options(service: &mut Service<Limits<HttpProxy<BerthProxy>>>, config: &Config) {
    if let Some(proxy) = service.app_logic_mut().and_then(Limits::inner_mut) {
        // Non-exhaustive: set the field on the default.
        let mut options = HttpServerOptions::default();
        options.h2_idle_timeout = Some(config.proxy.keepalive_timeout);
        proxy.server_options = Some(options);
    }
}

fn add_http(server: &mut Server, shared: &Shared, https: Option<Arc<Https>>) {
    let mut http = conn::service(
        &server.configuration,
        proxy(shared, https, false),
        "berth http",
        shared.conns.clone(),
        shared.snapshot.clone(),
    );
    set_server_options(&mut http, &shared.config);
    http.add_tcp(&shared.config.http_listen.to_string());
    server.add_service(http);
}

/// The watcher, health checks, DNS, deploys and the admin API.
fn add_background(
    server: &mut Server,
    shared: Shared,
    (inputs_rx, reloads): (mpsc::UnboundedReceiver<Input>, watch::Receiver<Arc<Config>>),
    pre: Preflight,
    certs: Option<AcmeHandle>,
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
        conns,
        state,
        reloader,
        hold: _,
    } = shared;
    // Before the watcher starts: its first snapshot has the saved modes.
    let modes = crate::policy::mode::Modes::open(Some(state.clone()), inputs.clone());
    server.add_service(background_service(
        "docker watcher",
        Watcher::new(
            config.clone(),
            engine.clone(),
            Some(state.clone()),
            snapshot.clone(),
            notify,
            (inputs.clone(), inputs_rx),
        )
        .with_reloads(reloads.clone()),
    ));
    server.add_service(background_service("reload", HangUp(reloader.clone())));
    server.add_service(background_service(
        "health checks",
        Checker::new(snapshot.clone(), notified.clone(), inputs.clone()),
    ));
    server.add_service(background_service("memory", conn::Trimmer(conns)));
    server.add_service(background_service(
        "error pages",
        crate::policy::pages::PageLoader::new(engine.clone(), snapshot.clone(), notified.clone()),
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
            )
            .with_reloads(reloads),
        ));
    }
    let ui_state = state.clone();
    let (controller, deploys) = Controller::new(
        config.clone(),
        engine.clone(),
        snapshot.clone(),
        notified.clone(),
        inputs.clone(),
        Some(state),
    );
    server.add_service(background_service("deploys", controller));
    if let Some((listener, _)) = pre.admin {
        let app = api::App {
            config: config.clone(),
            engine,
            notified,
            snapshot,
            inputs,
            deploys,
            token: reloader.token.clone(),
            reloader: Some(reloader),
            certs,
            dns: (!config.dns.listen.is_empty()).then_some(dns_counters),
            metrics,
            ui: Arc::new(crate::ui::Ui::new(&config, Some(ui_state))),
            modes,
        };
        server.add_service(background_service(
            "admin api",
            AdminService::new(listener, app),
        ));
    }
    info!(http = %config.http_listen, threads = config.proxy.threads, "berth serving");
}
