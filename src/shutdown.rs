//! Graceful shutdown. SIGTERM or SIGINT: Pingora stops accepting and closes
//! idle keep-alive connections; requests in flight are answered to the end
//! (their responses say `Connection: close`), and berth exits as soon as none
//! is left, or when `shutdown.grace` is over. A second signal exits at once.
//! SIGQUIT is Pingora's graceful upgrade (sent by `berth serve --upgrade`,
//! see [`crate::upgrade`]): the listeners go to the new berth, and this one
//! exits the same way once it has stopped accepting.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

/// Set when this berth hands its listeners to a new one: from then on every
/// response says `Connection: close`, so that keep-alive clients move to the
/// new berth between two requests of theirs, not while sending one to a
/// connection this berth is about to drop.
static HANDING_OVER: AtomicBool = AtomicBool::new(false);

pub fn handing_over() -> bool {
    HANDING_OVER.load(Ordering::Relaxed)
}

/// Requests between their header and the end of their response, across
/// every proxy listener.
#[derive(Debug, Default)]
pub struct Requests {
    open: AtomicUsize,
}

/// One request in flight; dropped with the request's context.
#[derive(Debug)]
pub struct Open(Arc<Requests>);

impl Requests {
    pub fn open(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::Relaxed);
        Open(self.clone())
    }

    pub fn count(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What decides when a stopping berth may exit.
pub fn may_exit(open: usize, since_signal: Duration, grace: Duration) -> bool {
    // The listeners close right after the signal: a connection accepted just
    // before may not have sent its request yet.
    const SETTLE: Duration = Duration::from_millis(200);
    (open == 0 && since_signal >= SETTLE) || since_signal >= grace
}

/// The signals berth stops on, as Pingora's server waits for them.
pub struct StopSignals {
    pub requests: Arc<Requests>,
    pub grace: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for StopSignals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            warn!("cannot listen for signals: stopping only when killed");
            return std::future::pending().await;
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = quit.recv() => {
                HANDING_OVER.store(true, Ordering::Relaxed);
                info!(beside = ?crate::upgrade::HANDOVER, "SIGQUIT: handing the listeners to the new berth; serving beside it a while, then answering what is in flight and exiting");
                let (requests, grace) = (self.requests.clone(), self.grace);
                std::thread::spawn(move || {
                    // Pingora stops this berth's listeners after the hand-over.
                    std::thread::sleep(crate::upgrade::HANDOVER + Duration::from_millis(100));
                    exit_when_done(requests, grace)
                });
                return ShutdownSignal::GracefulUpgrade;
            }
        };
        let open = self.requests.count();
        info!(signal = name, open, grace = ?self.grace, "stopping: no new connections; requests in flight are answered, then berth exits (a second signal exits at once)");
        let (requests, grace) = (self.requests.clone(), self.grace);
        std::thread::spawn(move || exit_when_done(requests, grace));
        ShutdownSignal::GracefulTerminate
    }
}

/// Exits the process once no request is in flight or the grace is over, or
/// at once on a second signal. Pingora's own grace period (the same length)
/// is the backstop.
fn exit_when_done(requests: Arc<Requests>, grace: Duration) {
    std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(rt) = rt {
            rt.block_on(async {
                if let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                    warn!("second signal: exiting now");
                    std::process::exit(1);
                }
            });
        }
    });
    let start = Instant::now();
    loop {
        let open = requests.count();
        let elapsed = start.elapsed();
        if may_exit(open, elapsed, grace) {
            if open > 0 {
                warn!(
                    open,
                    "shutdown.grace is over: exiting with requests in flight"
                );
            } else {
                info!(after = ?elapsed, "no request in flight: exiting");
            }
            std::process::exit(0);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_requests_are_counted_and_decide_the_exit() {
        let r = Arc::new(Requests::default());
        let a = r.open();
        let b = r.open();
        assert_eq!(r.count(), 2);
        drop(a);
        assert_eq!(r.count(), 1);
        drop(b);
        assert_eq!(r.count(), 0);
        let grace = Duration::from_secs(30);
        let ms = Duration::from_millis;
        for (open, since, want) in [
            (0, ms(0), false),
            (0, ms(250), true),
            (3, ms(250), false),
            (3, Duration::from_secs(30), true),
            (0, Duration::from_secs(31), true),
        ] {
            assert_eq!(may_exit(open, since, grace), want, "{open} {since:?}");
        }
        assert!(may_exit(0, ms(0), Duration::ZERO), "no grace: at once");
    }
}
