//! Loads each route's `errors.page` from one of its containers (the
//! engine's archive API) off the request path, once per policy: the page is
//! kept on the route's policy, which outlives snapshots while its labels do
//! not change. A page that cannot be read is logged once per container.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::engine::Engine;
use crate::SharedSnapshot;

/// The largest page berth keeps.
pub const PAGE_MAX: usize = 256 * 1024;

pub struct PageLoader {
    engine: Engine,
    snapshot: SharedSnapshot,
    notified: watch::Receiver<u64>,
}

impl PageLoader {
    pub fn new(engine: Engine, snapshot: SharedSnapshot, notified: watch::Receiver<u64>) -> Self {
        PageLoader {
            engine,
            snapshot,
            notified,
        }
    }

    pub async fn run(&self) {
        let mut notified = self.notified.clone();
        // (container id, path) already tried and failed.
        let mut failed: HashSet<(String, String)> = HashSet::new();
        loop {
            let snap = self.snapshot.load_full();
            for route in snap.table.routes() {
                let Some(policy) = &route.policy else {
                    continue;
                };
                let Some(path) = &policy.spec.error_page else {
                    continue;
                };
                if policy.page.load().is_some() {
                    continue;
                }
                for b in &route.backends {
                    let key = (b.id.to_string(), path.clone());
                    if failed.contains(&key) {
                        continue;
                    }
                    match self.engine.read_file(&b.id, path, PAGE_MAX).await {
                        Ok(bytes) => match String::from_utf8(bytes.to_vec()) {
                            Ok(text) => {
                                info!(route = %route.label, container = %b.name, path, bytes = text.len(), "error page loaded");
                                policy.page.store(Some(Arc::new(text)));
                                break;
                            }
                            Err(_) => {
                                warn!(route = %route.label, container = %b.name, path, "error page is not UTF-8 text: berth's own page is used");
                                failed.insert(key);
                            }
                        },
                        Err(e) => {
                            warn!(route = %route.label, container = %b.name, path, error = %e, "error page cannot be read: berth's own page is used");
                            failed.insert(key);
                        }
                    }
                }
            }
            if notified.changed().await.is_err() {
                return;
            }
        }
    }
}

crate::background_until_shutdown!(PageLoader);
