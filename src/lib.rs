//! berth: one binary in front of the containers on a Docker host.
//!
//! Data flows one way: the Docker watcher ([`docker`]) keeps the [`world`] of
//! containers, the planner ([`plan`]) turns it and the [`config`] into an
//! immutable [`plan::Snapshot`], and the proxy ([`proxy`]) reads the latest
//! snapshot on every request. See README.md, "Architecture".

pub mod api;
pub mod check;
pub mod cli;
pub mod client;
pub mod config;
pub mod deploy;
pub mod dns;
pub mod docker;
pub mod health;
pub mod labels;
pub mod metrics;
pub mod names;
pub mod plan;
pub mod proxy;
pub mod server;
pub mod tls;
pub mod world;

use std::sync::Arc;

use arc_swap::ArcSwap;

/// The published snapshot: one writer (the watcher task), many lock-free readers.
pub type SharedSnapshot = Arc<ArcSwap<plan::Snapshot>>;

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
