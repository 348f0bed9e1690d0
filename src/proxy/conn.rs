//! Client connections before and between their requests, where Pingora's
//! proxy has no hook. [`Limits`] wraps the proxy as the listening service's
//! app: every accepted connection (after its TLS handshake) is counted
//! against `proxy.max_connections`, across all listeners, and closed at once
//! over it; then it runs under a [`Clock`]: a request header that is not
//! complete by its deadline (`proxy.header_timeout`) closes the connection.
//! Pingora's own read timeout is per read, so a client sending a byte every
//! few seconds (slowloris) would never meet it.
//!
//! The proxy's hooks drive the clock: [`header_read`] (every request header,
//! HTTP/1 or HTTP/2) stops it, [`request_done`] restarts it for the next
//! request on an HTTP/1 keep-alive connection. They find the connection's
//! clock by its socket digest, which every session of a connection shares.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::{SocketDigest, Stream, ALPN};
use pingora::proxy::{HttpProxy, ProxyHttp};
use pingora::server::configuration::ServerConf;
use pingora::server::ShutdownWatch;
use pingora::services::listening::Service;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::resources::{self, Burst};
use crate::SharedSnapshot;

/// Open client connections, across every listener; shared by the [`Limits`]
/// of each.
#[derive(Debug, Default)]
pub struct Gate {
    open: AtomicUsize,
    /// The most open at once since memory was last trimmed.
    peak: AtomicUsize,
    refused: Burst,
    slow_headers: Burst,
}

/// A counted connection; the count goes down when it is dropped.
struct Slot(Arc<Gate>);

impl Gate {
    /// A slot for a new connection, or `None` when `max` are open.
    fn enter(self: &Arc<Self>, max: usize) -> Option<Slot> {
        let before = self.open.fetch_add(1, Ordering::Relaxed);
        if before >= max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        self.peak.fetch_max(before + 1, Ordering::Relaxed);
        Some(Slot(self.clone()))
    }

    /// Client connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Enough connections closed since the last trim to give memory back;
    /// if so, counts from now on.
    fn take_trim(&self) -> Option<usize> {
        let (peak, open) = (self.peak.load(Ordering::Relaxed), self.open());
        if !resources::trim_due(peak, open) {
            return None;
        }
        self.peak.store(open, Ordering::Relaxed);
        Some(peak - open)
    }
}

/// Gives memory back to the system after client connections closed (see
/// [`resources::release_free_memory`]): looks every [`TRIM_EVERY`], off the
/// proxy's threads.
pub struct Trimmer(pub Arc<Gate>);

/// How often the trimmer looks; also the least time between two trims.
pub const TRIM_EVERY: Duration = Duration::from_secs(2);

impl Trimmer {
    async fn run(&self) {
        loop {
            tokio::time::sleep(TRIM_EVERY).await;
            let Some(closed) = self.0.take_trim() else {
                continue;
            };
            let trimmed = tokio::task::spawn_blocking(|| {
                let (before, started) = (resources::rss_kib(), std::time::Instant::now());
                resources::release_free_memory();
                (before, resources::rss_kib(), started.elapsed())
            })
            .await;
            if let Ok((before, after, took)) = trimmed {
                debug!(
                    closed,
                    rss_before_kib = before,
                    rss_after_kib = after,
                    took_ms = took.as_millis() as u64,
                    "client connections closed: freed memory given back to the system"
                );
            }
        }
    }
}

crate::background_until_shutdown!(Trimmer);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The listening service's app: the proxy behind the connection cap and the
/// header deadline.
pub struct Limits<A> {
    inner: Arc<A>,
    gate: Arc<Gate>,
    /// Read once per connection: the limits of the configuration in force.
    snapshot: SharedSnapshot,
}

/// The proxy service named `name` for `app`, its connections through `gate`.
pub fn service<SV>(
    conf: &Arc<ServerConf>,
    app: SV,
    name: &str,
    gate: Arc<Gate>,
    snapshot: SharedSnapshot,
) -> Service<Limits<HttpProxy<SV>>>
where
    SV: ProxyHttp,
{
    let limits = Limits {
        inner: Arc::new(pingora::proxy::http_proxy(conf, app)),
        gate,
        snapshot,
    };
    Service::new(name.to_string(), limits)
}

impl<A> Limits<A> {
    /// The wrapped app, to set it up before the service starts.
    pub fn inner_mut(&mut self) -> Option<&mut A> {
        Arc::get_mut(&mut self.inner)
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Limits<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let (max, header_timeout, keepalive) = {
            let snap = self.snapshot.load();
            let p = &snap.config.proxy;
            (p.max_connections, p.header_timeout, p.keepalive_timeout)
        };
        let Some(_slot) = self.gate.enter(max) else {
            if let Some(before) = self.gate.refused.note() {
                warn!(
                    max_connections = max,
                    refused_before = before,
                    "proxy.max_connections reached: closing new client connections until some close"
                );
            }
            // Dropping the stream closes it.
            return None;
        };
        let Some(digest) = stream.get_socket_digest() else {
            return self.inner.process_new(stream, shutdown).await;
        };
        // HTTP/2: once its first request is in, the connection is bounded by
        // the HTTP/2 idle timeout (no stream open), not per request.
        let h2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        let next = (!h2).then_some(keepalive + header_timeout);
        let clock = Arc::new(Clock::new(Instant::now(), header_timeout, next));
        let _registered = Registered::new(digest, clock.clone());
        tokio::select! {
            reused = self.inner.process_new(stream, shutdown) => reused,
            () = clock.expired() => {
                // Dropping the connection's future closes it: no request is
                // in flight while the clock runs.
                if let Some(before) = self.gate.slow_headers.note() {
                    info!(
                        header_timeout = ?header_timeout,
                        closed_before = before,
                        "closed a client connection whose request header was not complete within proxy.header_timeout"
                    );
                }
                None
            }
        }
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// A connection's header deadline.
#[derive(Debug)]
struct Clock {
    /// `None`: stopped (a request is being answered).
    deadline: Mutex<Option<Instant>>,
    changed: Notify,
    /// The waiter sleeps on `changed` (no deadline to sleep to): only then
    /// does a restart need to wake it. Otherwise its timer fires at the old
    /// deadline and it finds the new one: no wake-up per request.
    parked: AtomicBool,
    /// After an answer, how long the next request header may take to be
    /// complete (the keep-alive wait, then the header); `None`: not
    /// restarted (HTTP/2).
    next: Option<Duration>,
}

impl Clock {
    /// A new connection's clock: its first header is due `first` after `now`.
    fn new(now: Instant, first: Duration, next: Option<Duration>) -> Clock {
        Clock {
            deadline: Mutex::new(Some(now + first)),
            changed: Notify::new(),
            parked: AtomicBool::new(false),
            next,
        }
    }

    fn set(&self, deadline: Option<Instant>) {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = deadline;
    }

    fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request header is in.
    fn stop(&self) {
        // No wake-up: the waiter finds it stopped when its timer fires.
        self.set(None);
    }

    /// An answer is done: the next request's header is due.
    fn restart(&self, now: Instant) {
        if let Some(next) = self.next {
            self.set(Some(now + next));
            if self.parked.load(Ordering::SeqCst) {
                self.changed.notify_one();
            }
        }
    }

    /// Resolves when a deadline passes while the clock runs.
    async fn expired(&self) {
        loop {
            match self.deadline() {
                None => {
                    self.parked.store(true, Ordering::SeqCst);
                    // A restart between the load above and `parked` saw no
                    // waiter: look again before sleeping.
                    if self.deadline().is_none() {
                        self.changed.notified().await;
                    }
                    self.parked.store(false, Ordering::SeqCst);
                }
                Some(at) if at <= Instant::now() => return,
                Some(at) => {
                    tokio::time::sleep_until(at).await;
                }
            }
        }
    }
}

/// Connections' clocks by the address of their socket digest. Pingora's
/// hooks get no per-connection slot; the digest is the one thing every
/// session of a connection shares. A lock held for a lookup or an insert,
/// never across an await.
static CLOCKS: LazyLock<Mutex<HashMap<usize, Arc<Clock>>>> = LazyLock::new(Default::default);

fn clocks() -> std::sync::MutexGuard<'static, HashMap<usize, Arc<Clock>>> {
    CLOCKS.lock().unwrap_or_else(|e| e.into_inner())
}

fn key(digest: &Arc<SocketDigest>) -> usize {
    Arc::as_ptr(digest) as usize
}

/// A clock in [`CLOCKS`] for as long as its connection is served; holding
/// the digest keeps its address (the key) from being reused meanwhile.
struct Registered(Arc<SocketDigest>);

impl Registered {
    fn new(digest: Arc<SocketDigest>, clock: Arc<Clock>) -> Registered {
        clocks().insert(key(&digest), clock);
        Registered(digest)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        clocks().remove(&key(&self.0));
    }
}

fn clock_of(session: &pingora::proxy::Session) -> Option<Arc<Clock>> {
    let digest = session
        .downstream_session
        .digest()?
        .socket_digest
        .as_ref()?;
    clocks().get(&key(digest)).cloned()
}

/// A request header was read on this session's connection.
pub fn header_read(session: &pingora::proxy::Session) {
    if let Some(clock) = clock_of(session) {
        clock.stop();
    }
}

/// The answer to this session's request is done: the connection's next
/// request header is due.
pub fn request_done(session: &pingora::proxy::Session) {
    if let Some(clock) = clock_of(session) {
        clock.restart(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_counts_up_to_its_cap() {
        let gate = Arc::new(Gate::default());
        let a = gate.enter(2).expect("first");
        let b = gate.enter(2).expect("second");
        assert!(gate.enter(2).is_none(), "a third over a cap of 2");
        assert_eq!(gate.open(), 2, "the refused one is not counted");
        drop(a);
        let c = gate.enter(2).expect("a slot again once one closed");
        drop((b, c));
        assert_eq!(gate.open(), 0);
    }

    #[test]
    fn the_clock_runs_until_a_header_and_again_after_an_answer() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let h1 = Clock::new(t0, s(60), Some(s(75 + 60)));
        assert_eq!(h1.deadline(), Some(t0 + s(60)), "the first header");
        h1.stop();
        assert_eq!(h1.deadline(), None, "a request in flight");
        h1.restart(t0 + s(10));
        assert_eq!(
            h1.deadline(),
            Some(t0 + s(10 + 135)),
            "keep-alive, then the header"
        );
        let h2 = Clock::new(t0, s(60), None);
        h2.stop();
        h2.restart(t0 + s(10));
        assert_eq!(h2.deadline(), None, "HTTP/2: the idle timeout takes over");
    }

    #[tokio::test]
    async fn an_expired_clock_resolves_and_a_stopped_one_does_not() {
        let ms = Duration::from_millis;
        let clock = Clock::new(Instant::now(), ms(30), Some(ms(30)));
        tokio::time::timeout(ms(2000), clock.expired())
            .await
            .expect("30 ms deadline");
        clock.stop();
        assert!(
            tokio::time::timeout(ms(100), clock.expired())
                .await
                .is_err(),
            "stopped"
        );
        clock.restart(Instant::now());
        tokio::time::timeout(ms(2000), clock.expired())
            .await
            .expect("restarted: due again");
    }
}
