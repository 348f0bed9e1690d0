//! On-demand TLS: a handshake for a name berth has no certificate for asks
//! `tls.on_demand.ask?domain=NAME`; on a 200 the name joins the names the
//! ACME manager keeps certificates for (and stays, in `on-demand.json`), and
//! the handshake waits up to `tls.on_demand.wait` for the certificate, then
//! goes on with whatever is there (the default certificate if the order is
//! not done: the next handshake gets the new one). Asks are rate-limited
//! (`rate`) and at most four run at once; answers are remembered (a refusal
//! for an hour, no answer for a minute), so a flood of random names costs
//! at most `rate` asks and orders, never one for a refused name.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use super::acme::{ineligible, Renewals};
use super::CertStore;
use crate::config::OnDemandConfig;
use crate::names::HostPattern;
use crate::policy::limit::{Limiter, Outcome};
use crate::policy::spec::{Rate, RateKey};
use crate::private::write_private;

/// How long a refusal is remembered; an ask that got no answer, less.
const REFUSED_FOR: Duration = Duration::from_secs(3600);
const UNANSWERED_FOR: Duration = Duration::from_secs(60);
/// Names whose answer is remembered, at most.
const MAX_DECIDED: usize = 10_000;
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Verdict {
    /// Since then: a handshake waits for the order only shortly after.
    Allowed(Instant),
    Refused(Instant),
}

pub struct OnDemand {
    config: OnDemandConfig,
    limiter: Limiter,
    asking: Semaphore,
    client: HyperClient<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    decided: Mutex<HashMap<String, Verdict>>,
    /// Names allowed: the ACME manager keeps certificates for them.
    names: Arc<Mutex<BTreeSet<String>>>,
    file: PathBuf,
    /// One writer of `file` at a time.
    writing: Arc<Mutex<()>>,
    snapshot: crate::SharedSnapshot,
    store: Arc<CertStore>,
    /// Wakes the ACME manager.
    wake: Arc<Renewals>,
}

impl OnDemand {
    /// `dir`: where `on-demand.json` keeps the allowed names.
    pub fn new(
        config: OnDemandConfig,
        dir: PathBuf,
        store: Arc<CertStore>,
        wake: Arc<Renewals>,
        snapshot: crate::SharedSnapshot,
    ) -> Result<OnDemand, String> {
        let (count, per) = config.rate;
        let limiter = Limiter::with_cap(
            Rate {
                count,
                per,
                burst: count,
                key: RateKey::Ip,
            },
            16,
        );
        let connector = HttpsConnectorBuilder::new()
            .try_with_platform_verifier()
            .map_err(|e| format!("system certificate roots: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        let file = dir.join("on-demand.json");
        let names: BTreeSet<String> = match std::fs::read(&file) {
            Err(_) => BTreeSet::new(),
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(n) => n,
                Err(e) => {
                    // Kept aside, never overwritten: its names would
                    // otherwise go unrenewed without a word.
                    let aside = file.with_extension("json.unreadable");
                    let _ = std::fs::rename(&file, &aside);
                    warn!(file = %file.display(), moved_to = %aside.display(), error = %e, "on-demand names unreadable: their certificates are not renewed until the names are allowed again");
                    BTreeSet::new()
                }
            },
        };
        let long_ago = Instant::now()
            .checked_sub(Duration::from_secs(3600))
            .unwrap_or_else(Instant::now);
        let decided = names
            .iter()
            .map(|n| (n.clone(), Verdict::Allowed(long_ago)))
            .collect();
        Ok(OnDemand {
            config,
            limiter,
            asking: Semaphore::new(4),
            client: HyperClient::builder(TokioExecutor::new()).build(connector),
            decided: Mutex::new(decided),
            names: Arc::new(Mutex::new(names)),
            file,
            writing: Arc::default(),
            snapshot,
            store,
            wake,
        })
    }

    /// The names allowed so far.
    pub fn names(&self) -> BTreeSet<String> {
        self.names.lock().map(|n| n.clone()).unwrap_or_default()
    }

    /// Called during a handshake for `name` (the SNI): returns when the
    /// handshake may go on.
    pub async fn handshake(&self, name: &str) {
        if self.store.lookup(name).is_some() {
            return;
        }
        let name = match HostPattern::parse(name) {
            Ok(HostPattern::Exact(n)) if ineligible(&n).is_none() && n.len() <= 253 => n,
            _ => return,
        };
        // A route that wants a certificate for the name orders it itself.
        if self.snapshot.load().tls_hosts.contains(&name) {
            return;
        }
        let now = Instant::now();
        let known = self.decided.lock().ok().and_then(|d| d.get(&name).copied());
        match known {
            // Just allowed: its order is on the way. Long ago: its orders
            // fail (berth certs says why); no handshake waits for them.
            Some(Verdict::Allowed(at)) => {
                if now.duration_since(at) < self.config.wait {
                    self.wait_for(&name, at + self.config.wait).await;
                }
                return;
            }
            Some(Verdict::Refused(until)) if until > now => return,
            _ => {}
        }
        if let Outcome::Deny(_) = self.limiter.check(b"ask", now) {
            return;
        }
        let Ok(_permit) = self.asking.try_acquire() else {
            return;
        };
        let verdict = self.ask(&name).await;
        match verdict {
            Ok(true) => {
                info!(host = %name, "on-demand TLS: allowed by the ask URL; ordering");
                self.remember(&name, Verdict::Allowed(now));
                if let Ok(mut n) = self.names.lock() {
                    n.insert(name.clone());
                }
                self.save();
                self.wake.wake();
                self.wait_for(&name, now + self.config.wait).await;
            }
            Ok(false) => {
                info!(host = %name, "on-demand TLS: refused by the ask URL");
                self.remember(&name, Verdict::Refused(now + REFUSED_FOR));
            }
            Err(e) => {
                warn!(host = %name, error = %e, "on-demand TLS: the ask URL did not answer: refused");
                self.remember(&name, Verdict::Refused(now + UNANSWERED_FOR));
            }
        }
    }

    /// Writes the names, off the handshake's thread: one writer at a time,
    /// each writing the set as it is then (so the last write is the newest).
    fn save(&self) {
        let (names, file, writing) = (self.names.clone(), self.file.clone(), self.writing.clone());
        tokio::task::spawn_blocking(move || {
            let _one = writing.lock();
            let json = names
                .lock()
                .map(|n| serde_json::to_vec(&*n).unwrap_or_default());
            if let Ok(json) = json {
                if let Err(e) = write_private(&file, &json) {
                    warn!(file = %file.display(), error = %e, "on-demand names not saved");
                }
            }
        });
    }

    /// Asks again about a name before its certificate is renewed (or after
    /// failed orders): a name the ask URL no longer allows is forgotten.
    pub async fn still_allowed(&self, name: &str) -> bool {
        match self.ask(name).await {
            Ok(true) => true,
            Ok(false) => {
                info!(host = %name, "on-demand TLS: the ask URL no longer allows it: forgotten, not renewed");
                self.forget(name);
                false
            }
            // No answer: keep it (its certificate must not lapse for an
            // outage of the ask endpoint); asked again next time.
            Err(e) => {
                warn!(host = %name, error = %e, "on-demand TLS: the ask URL did not answer: renewing anyway");
                true
            }
        }
    }

    /// Drops a name: no more orders, a handshake asks again.
    pub fn forget(&self, name: &str) {
        if let Ok(mut n) = self.names.lock() {
            n.remove(name);
        }
        if let Ok(mut d) = self.decided.lock() {
            d.remove(name);
        }
        self.save();
    }

    fn remember(&self, name: &str, v: Verdict) {
        let Ok(mut d) = self.decided.lock() else {
            return;
        };
        if d.len() >= MAX_DECIDED {
            let now = Instant::now();
            d.retain(|_, v| !matches!(v, Verdict::Refused(u) if *u <= now));
        }
        // Full of live answers: a refusal is not remembered (the rate still
        // bounds the asks), an allowance always is.
        if d.len() < MAX_DECIDED || matches!(v, Verdict::Allowed(_)) {
            d.insert(name.to_string(), v);
        }
    }

    /// 200: allowed; any other status: refused; no answer: an error.
    async fn ask(&self, name: &str) -> Result<bool, String> {
        let sep = if self.config.ask.contains('?') {
            '&'
        } else {
            '?'
        };
        let uri: http::Uri = format!("{}{sep}domain={name}", self.config.ask)
            .parse()
            .map_err(|e| format!("ask URL: {e}"))?;
        let req = http::Request::get(uri)
            .header(http::header::USER_AGENT, "berth on-demand TLS")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(ASK_TIMEOUT, self.client.request(req)).await {
            Err(_) => Err(format!("no answer within {ASK_TIMEOUT:?}")),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(rsp)) => Ok(rsp.status() == http::StatusCode::OK),
        }
    }

    /// Waits (until `deadline` at most) for a certificate for `name`.
    async fn wait_for(&self, name: &str, deadline: Instant) {
        while self.store.lookup(name).is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
