//! berth's own resources running out: a connect that fails because berth is
//! out of file descriptors or memory says nothing about the backend, so the
//! health checks and the proxy's passive check recognise these errors here
//! and leave the backend's state alone. Such errors (and refused client
//! connections) come in bursts: [`Burst`] logs the first of a burst and counts
//! the rest. And memory freed when connections close goes back to the
//! system ([`release_free_memory`]).

use std::error::Error as StdError;
use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

// Linux errno values (berth runs on a Docker host: Linux).
const ENOMEM: i32 = 12;
const ENFILE: i32 = 23;
const EMFILE: i32 = 24;
const ENOBUFS: i32 = 105;

/// The error is berth's own shortage (open files of the process or of the
/// system, memory, socket buffers), not something the peer did.
pub fn is_exhausted(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(ENOMEM | ENFILE | EMFILE | ENOBUFS))
        || e.kind() == io::ErrorKind::OutOfMemory
}

/// Whether a Pingora error has such an I/O error anywhere in its causes.
/// Pingora's `Error` keeps its cause in `cause` (its `source()` is empty),
/// other errors in `source()`.
pub fn in_chain(e: &pingora::Error) -> bool {
    let mut next: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = next {
        if err.downcast_ref::<io::Error>().is_some_and(is_exhausted) {
            return true;
        }
        // A cause given as a `Box<Error>` (Pingora's `BError`) stays boxed.
        let pingora = err
            .downcast_ref::<pingora::Error>()
            .or_else(|| err.downcast_ref::<pingora::BError>().map(|b| &**b));
        next = match pingora {
            Some(p) => p.cause.as_deref().map(|c| c as &(dyn StdError + 'static)),
            None => err.source(),
        };
    }
    false
}

/// Logs once per burst of events: an event that comes after `quiet` without
/// any opens a burst and is logged; later ones are counted, and logged again
/// (with the count) at most every `every` while the burst lasts.
#[derive(Debug)]
pub struct Burst {
    quiet: Duration,
    every: Duration,
    state: Mutex<BurstState>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct BurstState {
    last_event: Option<Instant>,
    last_logged: Option<Instant>,
    /// Events not logged since the last line.
    unlogged: u64,
}

impl BurstState {
    /// Records an event at `now`; `Some(n)`: log it, with `n` events that
    /// were not logged since the previous line.
    fn note(&mut self, now: Instant, quiet: Duration, every: Duration) -> Option<u64> {
        let new_burst = self
            .last_event
            .is_none_or(|t| now.saturating_duration_since(t) >= quiet);
        let reminder = self
            .last_logged
            .is_none_or(|t| now.saturating_duration_since(t) >= every);
        self.last_event = Some(now);
        if new_burst || reminder {
            self.last_logged = Some(now);
            Some(std::mem::take(&mut self.unlogged))
        } else {
            self.unlogged += 1;
            None
        }
    }
}

impl Burst {
    pub const fn new(quiet: Duration, every: Duration) -> Burst {
        Burst {
            quiet,
            every,
            state: Mutex::new(BurstState {
                last_event: None,
                last_logged: None,
                unlogged: 0,
            }),
        }
    }

    /// Records an event now; `Some(n)`: log this one, mentioning the `n`
    /// events since the last line that were not logged.
    pub fn note(&self) -> Option<u64> {
        // A poisoned lock only means a panic elsewhere mid-update of two
        // instants and a counter: still usable.
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.note(Instant::now(), self.quiet, self.every)
    }
}

/// The usual pacing: a burst ends after 10 s without an event; a long one is
/// reported again every minute.
impl Default for Burst {
    fn default() -> Burst {
        Burst::new(Duration::from_secs(10), Duration::from_secs(60))
    }
}

/// When to give freed memory back to the system: `peak` client connections
/// were open at once since the last time, `open` are now. Each connection
/// leaves tens of KiB freed but kept by glibc's malloc when it closes (see
/// [`release_free_memory`]); a few hundred closed are worth a trim.
pub fn trim_due(peak: usize, open: usize) -> bool {
    peak.saturating_sub(open) >= TRIM_AFTER_CLOSED
}

/// Connections closed (from the peak) that make a trim worth it.
pub const TRIM_AFTER_CLOSED: usize = 256;

/// Gives the free memory in malloc's arenas back to the system. glibc
/// returns only the top of each heap by itself; the free chunks inside its
/// per-thread arenas (64 MiB heaps) stay resident, so after a burst of
/// connections RSS would stay at its peak. `malloc_trim(0)` releases every
/// free page of every arena (`madvise(MADV_DONTNEED)`); it holds each
/// arena's lock while it walks it, a few milliseconds for hundreds of MiB.
/// Returns whether memory was released.
///
/// The binary's allocator is jemalloc (src/main.rs), which keeps freed
/// pages as "dirty" until its decay clock purges them, and that clock only
/// ticks when something allocates: after a burst, an idle berth would stay
/// at its peak. `arena.<all>.purge` gives them back now. glibc's heap (what
/// tests and tools built on this library use) is trimmed too.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release_free_memory() -> bool {
    unsafe extern "C" {
        // glibc, <malloc.h>: int malloc_trim(size_t pad);
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // MALLCTL_ARENAS_ALL is 4096.
    let purge = c"arena.4096.purge";
    // SAFETY: a mallctl that reads and writes nothing (null pointers, 0
    // length) on a NUL-terminated name; jemalloc locks what it walks.
    let purged = unsafe {
        tikv_jemalloc_sys::mallctl(
            purge.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    } == 0;
    // SAFETY: malloc_trim takes no pointer and is thread-safe (it locks
    // each arena); 0 keeps no padding.
    let trimmed = unsafe { malloc_trim(0) == 1 };
    purged || trimmed
}

/// Other allocators give memory back by themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() -> bool {
    false
}

/// This process's resident memory (`VmRSS`), in KiB; 0 if unknown.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::{Error, ErrorType};

    #[test]
    fn own_shortages_are_told_from_the_peers_errors() {
        for (errno, own) in [
            (24, true),   // EMFILE
            (23, true),   // ENFILE
            (12, true),   // ENOMEM
            (105, true),  // ENOBUFS
            (111, false), // ECONNREFUSED
            (113, false), // EHOSTUNREACH
            (110, false), // ETIMEDOUT
            (104, false), // ECONNRESET
        ] {
            let e = io::Error::from_raw_os_error(errno);
            assert_eq!(is_exhausted(&e), own, "errno {errno}");
            // As Pingora's connector wraps it: socket() failed, then the connect.
            let socket = Error::because(ErrorType::SocketError, "socket()", e);
            let connect = Error::because(ErrorType::InternalError, "Fail to connect", socket);
            assert_eq!(in_chain(&connect), own, "errno {errno} in a chain");
        }
        let timeout = Error::explain(ErrorType::ConnectTimedout, "timeout 2s");
        assert!(!in_chain(&timeout));
        assert!(is_exhausted(&io::Error::from(io::ErrorKind::OutOfMemory)));
    }

    #[test]
    fn memory_is_trimmed_after_a_few_hundred_connections_closed() {
        for (peak, open, due) in [
            (0, 0, false),
            (5000, 5000, false),
            (5000, 4800, false),
            (5000, 4744, true),
            (5000, 0, true),
            (300, 0, true),
            (255, 0, false),
            (10, 20, false),
        ] {
            assert_eq!(trim_due(peak, open), due, "peak {peak}, open {open}");
        }
        assert!(rss_kib() > 0, "this process has resident memory");
        // Nothing to check but that it runs: it may or may not find pages.
        let _ = release_free_memory();
    }

    #[test]
    fn bursts_log_their_first_event_and_count_the_rest() {
        let t0 = Instant::now();
        let s = |ms: u64| t0 + Duration::from_millis(ms);
        let (quiet, every) = (Duration::from_secs(10), Duration::from_secs(60));
        let mut st = BurstState::default();
        assert_eq!(
            st.note(s(0), quiet, every),
            Some(0),
            "the first event opens a burst"
        );
        // One every 5 s: one burst; a line again a minute after the first.
        for at in (5_000..60_000).step_by(5_000) {
            assert_eq!(st.note(s(at), quiet, every), None, "{at} ms: same burst");
        }
        assert_eq!(
            st.note(s(60_000), quiet, every),
            Some(11),
            "a reminder with the count"
        );
        assert_eq!(st.note(s(61_000), quiet, every), None);
        // 10 s without an event ends the burst: the next one is logged.
        assert_eq!(st.note(s(71_000), quiet, every), Some(1), "a new burst");
        assert_eq!(st.note(s(71_001), quiet, every), None);
    }
}
