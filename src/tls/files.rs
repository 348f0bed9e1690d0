//! Certificates users bring: `name.crt` (chain, leaf first) + `name.key` PEM
//! pairs in the certs directory, loaded at start and picked up when they
//! change. A pair that does not parse is reported and skipped; the others and
//! whatever was served before keep working.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tracing::{info, warn};

use super::{Cert, CertStore, Source};

const POLL: Duration = Duration::from_secs(2);

pub struct CertFiles {
    dir: PathBuf,
    store: Arc<CertStore>,
}

impl CertFiles {
    pub fn new(dir: PathBuf, store: Arc<CertStore>) -> CertFiles {
        CertFiles { dir, store }
    }

    /// `stem → (crt, key)` for every complete pair in the directory.
    fn pairs(dir: &Path) -> HashMap<String, (PathBuf, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return HashMap::new();
        };
        entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "crt"))
            .filter_map(|crt| {
                let key = crt.with_extension("key");
                let stem = crt.file_stem()?.to_string_lossy().into_owned();
                key.is_file().then_some((stem, (crt, key)))
            })
            .collect()
    }

    fn modified(p: &Path) -> Option<SystemTime> {
        std::fs::metadata(p).and_then(|m| m.modified()).ok()
    }

    /// One scan: installs new or changed pairs, removes vanished ones.
    /// `seen` remembers what was installed and when the files last changed.
    pub fn scan(&self, seen: &mut HashMap<String, (Option<SystemTime>, Option<SystemTime>)>) {
        let pairs = Self::pairs(&self.dir);
        seen.retain(|stem, _| {
            let keep = pairs.contains_key(stem);
            if !keep {
                info!(file = %stem, "certificate files removed: no longer served");
                self.store.set(&format!("file:{stem}"), None);
            }
            keep
        });
        for (stem, (crt, key)) in pairs {
            let stamp = (Self::modified(&crt), Self::modified(&key));
            if seen.get(&stem) == Some(&stamp) {
                continue;
            }
            seen.insert(stem.clone(), stamp);
            let loaded = std::fs::read(&crt)
                .map_err(|e| format!("{}: {e}", crt.display()))
                .and_then(|c| {
                    std::fs::read(&key)
                        .map(|k| (c, k))
                        .map_err(|e| format!("{}: {e}", key.display()))
                })
                .and_then(|(c, k)| Cert::from_pem(&c, &k, Source::File));
            match loaded {
                Ok(cert) => {
                    info!(file = %crt.display(), names = ?cert.names, "serving certificate from file");
                    self.store.set(&format!("file:{stem}"), Some(cert));
                }
                Err(e) => {
                    warn!(file = %crt.display(), error = %e, "certificate files not usable; skipped")
                }
            }
        }
    }
}

#[async_trait]
impl BackgroundService for CertFiles {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut seen = HashMap::new();
        loop {
            self.scan(&mut seen);
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
