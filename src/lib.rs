//! berth: one binary in front of the containers on a Docker host.
//!
//! The layout, in the order data flows through it (README, "Architecture"):
//!
//! - [`config`]: the YAML file → a validated [`config::Config`]. Pure.
//! - [`names`]: hostnames (one host map for routes, certificates and DNS),
//!   path prefixes, durations, container ids. Pure.
//! - [`labels`]: a container's labels → what berth should do with it. Pure.
//! - [`policy`]: route policies from labels (auth, allow-lists, rate limits,
//!   redirects, headers, CORS, compression, sticky); parsing is pure, the
//!   proxy carries them out.
//! - [`compose`]: a Compose file → a validated [`compose::model::Project`]
//!   (interpolated, long forms, dependency order). Pure.
//! - [`engine`]: the one seam to the Docker engine (bollard), made once.
//! - [`world`]: what berth knows of the containers and their health, and the
//!   reducer that applies inspections, events and inputs to it. Pure.
//! - [`docker`]: the watcher task that owns the world: list, events,
//!   reconnect; publishes a new snapshot after each change.
//! - [`plan`]: world + config → the immutable [`plan::Snapshot`]: routing
//!   table, DNS table, backends, checks, problems. Pure.
//! - [`proxy`]: the Pingora data plane; [`proxy::decide`] says what a
//!   request gets, the proxy carries it out; [`proxy::conn`] caps client
//!   connections and closes those whose request header is too slow.
//! - [`health`]: berth's own active checks, reported back as inputs.
//! - [`dns`]: the hickory server answering the internal zone from the snapshot.
//! - [`tls`]: certificates by SNI, PEM files, the ACME manager.
//! - [`deploy`]: rollouts, scaling, rolling restarts (a pure planner and one
//!   runner on the engine), autoheal, and deployments berth owns
//!   ([`deploy::project`]: compose file → plan per service → that runner).
//! - [`source`]: where a deployment's compose file comes from (the host, a
//!   git repository) and its push webhook.
//! - [`api`]: the admin HTTP API; [`metrics`]: Prometheus.
//! - [`cli`] and [`client`]: the `berth` commands, clients of the admin API
//!   sharing its types; [`check`]: `berth check`.
//! - [`server`]: wires it all into one Pingora server; [`shutdown`]: how it
//!   stops (requests in flight finish).
//! - [`error`], [`private`], [`state`]: a failed API call; files only berth
//!   may read; what survives a restart. [`resources`]: berth's own file
//!   descriptors or memory running out, never counted against a backend.

pub mod api;
pub mod check;
pub mod cli;
pub mod client;
pub mod compose;
pub mod config;
pub mod deploy;
pub mod dns;
pub mod docker;
pub mod engine;
pub mod error;
pub mod health;
pub mod labels;
pub mod metrics;
pub mod names;
pub mod plan;
pub mod policy;
pub mod private;
pub mod proxy;
pub mod reload;
pub mod resources;
pub mod server;
pub mod shutdown;
pub mod source;
pub mod state;
pub mod tls;
pub mod ui;
pub mod upgrade;
pub mod world;

use std::sync::Arc;

use arc_swap::ArcSwap;

/// The published snapshot: one writer (the watcher task), many lock-free readers.
pub type SharedSnapshot = Arc<ArcSwap<plan::Snapshot>>;

/// Where [`world::Input`]s are sent: the queue of the task that owns the world.
pub type Inputs = tokio::sync::mpsc::UnboundedSender<world::Input>;

/// Implements Pingora's `BackgroundService` for a type with an
/// `async fn run(&self)`: it runs until it returns or the server shuts down.
#[macro_export]
macro_rules! background_until_shutdown {
    ($t:ty) => {
        #[async_trait::async_trait]
        impl pingora::services::background::BackgroundService for $t {
            async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
                tokio::select! {
                    _ = self.run() => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    };
}
