//! Rate limits per client key (address or header), as a GCRA: each key
//! holds one number, the time its allowance is used up to. A request moves
//! it on by `per / count`; a request that would move it further than the
//! burst past now gets a 429 and how long to wait. Memory is bounded: keys
//! are kept as 64-bit hashes in shards with a cap, and a key whose time is
//! in the past holds nothing worth keeping.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::spec::Rate;

const SHARDS: usize = 16;
/// Keys remembered per route, every shard together.
pub const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    /// 429; the client may try again after this long.
    Deny(Duration),
}

#[derive(Debug)]
pub struct Limiter {
    rate: Rate,
    /// Nanoseconds one request uses up, and the allowance of a burst.
    step: u64,
    tolerance: u64,
    epoch: Instant,
    hasher: RandomState,
    shards: Vec<Mutex<Shard>>,
    cap: usize,
}

#[derive(Debug, Default)]
struct Shard {
    /// Key hash → nanoseconds since `epoch` its allowance is used up to.
    until: HashMap<u64, u64>,
    /// A full shard swept lately: no other sweep before this.
    next_sweep: u64,
}

impl Limiter {
    pub fn new(rate: Rate) -> Limiter {
        Limiter::with_cap(rate, MAX_KEYS)
    }

    pub fn with_cap(rate: Rate, cap: usize) -> Limiter {
        let step = rate.interval().as_nanos().max(1) as u64;
        Limiter {
            tolerance: step.saturating_mul(u64::from(rate.burst)),
            step,
            rate,
            epoch: Instant::now(),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            cap: cap.div_ceil(SHARDS).max(1),
        }
    }

    pub fn rate(&self) -> &Rate {
        &self.rate
    }

    /// Counts one request of `key` at `now`.
    pub fn check(&self, key: &[u8], now: Instant) -> Outcome {
        let mut h = self.hasher.build_hasher();
        h.write(key);
        let hash = h.finish();
        let t = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let shard = &self.shards[(hash as usize) % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        let tat = shard.until.get(&hash).copied().unwrap_or(0).max(t);
        let next = tat.saturating_add(self.step);
        if next - t > self.tolerance {
            return Outcome::Deny(Duration::from_nanos(next - t - self.tolerance));
        }
        if shard.until.len() >= self.cap && !shard.until.contains_key(&hash) {
            if t >= shard.next_sweep {
                // Keys whose allowance is back in full weigh nothing.
                shard.until.retain(|_, until| *until > t);
                shard.next_sweep = t + 1_000_000_000;
            }
            if shard.until.len() >= self.cap {
                // More clients in debt than berth keeps: this one is not
                // remembered (per-client limits cannot hold against a
                // flood of distinct clients anyway).
                return Outcome::Allow;
            }
        }
        shard.until.insert(hash, next);
        Outcome::Allow
    }

    /// Keys remembered now, every shard together.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).until.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A `Retry-After` value: whole seconds, at least 1.
pub fn retry_after(wait: Duration) -> String {
    wait.as_secs_f64().ceil().max(1.0).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::spec::RateKey;

    fn rate(count: u32, per_secs: u64, burst: u32) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(per_secs),
            burst,
            key: RateKey::Ip,
        }
    }

    #[test]
    fn a_burst_then_the_rate() {
        let l = Limiter::new(rate(10, 1, 5));
        let t0 = Instant::now();
        let allowed = (0..20)
            .filter(|_| l.check(b"a", t0) == Outcome::Allow)
            .count();
        assert_eq!(allowed, 5, "the burst, all at once");
        match l.check(b"a", t0) {
            Outcome::Deny(wait) => assert_eq!(wait, Duration::from_millis(100)),
            o => panic!("{o:?}"),
        }
        // Another client has its own allowance.
        assert_eq!(l.check(b"b", t0), Outcome::Allow);
        // One second later: ten more (the rate), not the burst again.
        let t1 = t0 + Duration::from_secs(1);
        let allowed = (0..20)
            .filter(|_| l.check(b"a", t1) == Outcome::Allow)
            .count();
        assert_eq!(
            allowed, 5,
            "after 1 s at 10/s the debt of 5 is paid and 5 more fit"
        );
        // A client idle long enough gets its whole burst back, no more.
        let t2 = t1 + Duration::from_secs(60);
        let allowed = (0..20)
            .filter(|_| l.check(b"a", t2) == Outcome::Allow)
            .count();
        assert_eq!(allowed, 5);
    }

    #[test]
    fn per_minute_and_retry_after() {
        let l = Limiter::new(rate(6, 60, 1));
        let t0 = Instant::now();
        assert_eq!(l.check(b"a", t0), Outcome::Allow);
        let Outcome::Deny(wait) = l.check(b"a", t0) else {
            panic!("the second request within 10 s is over the rate")
        };
        assert_eq!(wait, Duration::from_secs(10));
        assert_eq!(retry_after(wait), "10");
        assert_eq!(retry_after(Duration::from_millis(10)), "1");
        assert_eq!(retry_after(Duration::from_millis(1500)), "2");
    }

    #[test]
    fn memory_is_bounded_under_many_clients() {
        let l = Limiter::with_cap(rate(1, 60, 1), 1600);
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            assert_eq!(l.check(&i.to_le_bytes(), t0), Outcome::Allow);
        }
        assert!(l.len() <= 1600, "{}", l.len());
        // Once their debt is paid, old keys make room for new ones.
        let later = t0 + Duration::from_secs(120);
        for i in 10_000..20_000u32 {
            l.check(&i.to_le_bytes(), later);
        }
        assert!(l.len() <= 1600);
        let remembered_late = (10_000..20_000u32)
            .filter(|i| l.check(&i.to_le_bytes(), later) != Outcome::Allow)
            .count();
        assert!(remembered_late > 1000, "{remembered_late}");
    }
}
