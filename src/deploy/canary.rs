//! Canary releases (kamal-proxy's `rollout --percent`, with berth's own
//! verdict): new replicas start beside the old ones labelled
//! [`CANARY_LABEL`] with their share of traffic, so the split lives on the
//! containers and outlives a restart of berth. The planner puts the split on
//! the route; the proxy sends that share there, each client kept on one side
//! by a cookie. `promote` replaces the stable replicas with the canary's
//! image and retires the canary ones; `abort` retires the canary ones. Pure:
//! the share, the counts, the pick, and `--auto`'s verdict.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// On a canary replica: its share of the route's traffic, in percent.
pub const CANARY_LABEL: &str = "io.berth.canary";

/// The cookie that keeps a client on one side: `1` canary, `0` stable.
pub const COOKIE: &str = "berth_canary";

/// `10%` or `10` → 10 (1 to 99).
pub fn parse_percent(raw: &str) -> Result<u32, String> {
    let v = raw.trim().trim_end_matches('%').trim();
    match v.parse::<u32>() {
        Ok(p) if (1..=99).contains(&p) => Ok(p),
        _ => Err(format!("{raw:?}: use a share from 1% to 99%")),
    }
}

/// New replicas a canary of `percent` starts beside `stable` replicas:
/// that share of them, at least one.
pub fn replicas_for(stable: usize, percent: u32) -> usize {
    (stable * percent as usize).div_ceil(100).max(1)
}

/// Whether the `n`-th request without a cookie goes to the canary: spread
/// evenly, exactly `percent` of any 100 in a row.
pub fn goes_to_canary(n: usize, percent: u32) -> bool {
    let p = percent as usize;
    (n + 1) * p / 100 > n * p / 100
}

/// What berth's own counters say about one side over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub requests: u64,
    pub errors: u64,
    /// The 99th percentile of response times, in milliseconds.
    pub p99_ms: f64,
}

impl Figures {
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

/// How much worse than the stable side the canary may be.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Margin {
    /// Added to the stable 5xx rate (0.01: one percentage point).
    pub error_rate: f64,
    /// The stable p99 times this, plus `p99_slack_ms`.
    pub p99_factor: f64,
    pub p99_slack_ms: f64,
    /// Fewer canary requests than this in the window: no verdict can be made.
    pub min_requests: u64,
}

impl Default for Margin {
    fn default() -> Self {
        Margin {
            error_rate: 0.01,
            p99_factor: 1.5,
            p99_slack_ms: 10.0,
            min_requests: 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Promote(String),
    Abort(String),
}

/// `--auto` at the end of the window: promote when the canary's 5xx rate and
/// p99 are no worse than the stable side's by the margin; abort otherwise,
/// naming the figure that decided.
pub fn verdict(stable: Figures, canary: Figures, m: Margin) -> Verdict {
    if canary.requests < m.min_requests {
        return Verdict::Abort(format!(
            "the canary served {} requests in the window, fewer than the {} needed to judge it",
            canary.requests, m.min_requests
        ));
    }
    let (s, c) = (stable.error_rate() * 100.0, canary.error_rate() * 100.0);
    let allowed = s + m.error_rate * 100.0;
    if c > allowed {
        return Verdict::Abort(format!(
            "5xx rate: canary {c:.1}% ({} of {}) > stable {s:.1}% + {:.1} points",
            canary.errors,
            canary.requests,
            m.error_rate * 100.0
        ));
    }
    let p99_allowed = stable.p99_ms * m.p99_factor + m.p99_slack_ms;
    if canary.p99_ms > p99_allowed {
        return Verdict::Abort(format!(
            "p99: canary {:.1} ms > stable {:.1} ms × {} + {} ms",
            canary.p99_ms, stable.p99_ms, m.p99_factor, m.p99_slack_ms
        ));
    }
    Verdict::Promote(format!(
        "5xx rate: canary {c:.1}% ≤ {allowed:.1}%, p99: canary {:.1} ms ≤ {p99_allowed:.1} ms ({} canary requests)",
        canary.p99_ms, canary.requests
    ))
}

/// Replica id → (a canary?, its answers, 5xx answers and latency counts).
pub type Counters = std::collections::HashMap<String, (bool, (u64, u64, [u64; 16]))>;

/// The figures of the stable side and of the canary between two readings
/// of the counters (a replica new since the first counts from zero).
pub fn compare(before: &Counters, after: &Counters) -> (Figures, Figures) {
    let mut sides = [(0u64, 0u64, [0u64; 16]); 2];
    for (id, (is_canary, (answered, errors, latency))) in after {
        let (b_answered, b_errors, b_latency) =
            before.get(id).map(|(_, f)| *f).unwrap_or((0, 0, [0; 16]));
        let side = &mut sides[usize::from(*is_canary)];
        side.0 += answered.saturating_sub(b_answered);
        side.1 += errors.saturating_sub(b_errors);
        for (i, (a, b)) in latency.iter().zip(b_latency).enumerate() {
            side.2[i] += a.saturating_sub(b);
        }
    }
    let figures = |(requests, errors, latency): (u64, u64, [u64; 16])| Figures {
        requests,
        errors,
        p99_ms: p99(&latency),
    };
    (figures(sides[0]), figures(sides[1]))
}

/// Bucket upper bounds (ms) of the per-backend latency counts.
pub const BUCKETS_MS: [f64; 16] = [
    1.0,
    2.0,
    5.0,
    10.0,
    20.0,
    50.0,
    100.0,
    200.0,
    500.0,
    1000.0,
    2000.0,
    5000.0,
    10000.0,
    30000.0,
    60000.0,
    f64::INFINITY,
];

/// The bucket of a response time.
pub fn bucket(elapsed: Duration) -> usize {
    let ms = elapsed.as_secs_f64() * 1000.0;
    BUCKETS_MS
        .iter()
        .position(|b| ms <= *b)
        .unwrap_or(BUCKETS_MS.len() - 1)
}

/// The 99th percentile from bucket counts: the upper bound of its bucket
/// (the last finite one for the open bucket).
pub fn p99(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let rank = (total * 99).div_ceil(100);
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            let b = BUCKETS_MS[i.min(BUCKETS_MS.len() - 1)];
            return if b.is_finite() {
                b
            } else {
                BUCKETS_MS[BUCKETS_MS.len() - 2]
            };
        }
    }
    0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_counts_and_the_even_pick() {
        assert_eq!(parse_percent("10%"), Ok(10));
        assert_eq!(parse_percent(" 25 "), Ok(25));
        for bad in ["0%", "100%", "x", "-5%", "10.5%"] {
            assert!(parse_percent(bad).is_err(), "{bad}");
        }
        assert_eq!(replicas_for(1, 10), 1);
        assert_eq!(replicas_for(4, 10), 1);
        assert_eq!(replicas_for(20, 10), 2);
        assert_eq!(replicas_for(3, 50), 2);
        for p in [1, 10, 33, 50, 99] {
            let n = (0..1000).filter(|n| goes_to_canary(*n, p)).count();
            assert_eq!(n, 10 * p as usize, "{p}% of 1000");
            // Spread: never more than one in a row below 50 %.
            if p < 50 {
                assert!(!(0..1000).any(|n| goes_to_canary(n, p) && goes_to_canary(n + 1, p)));
            }
        }
    }

    #[test]
    fn the_verdict_names_the_figure_that_decided() {
        let m = Margin::default();
        let stable = Figures {
            requests: 900,
            errors: 0,
            p99_ms: 5.0,
        };
        let fine = Figures {
            requests: 100,
            errors: 0,
            p99_ms: 10.0,
        };
        assert!(matches!(verdict(stable, fine, m), Verdict::Promote(_)));
        let failing = Figures {
            requests: 100,
            errors: 40,
            p99_ms: 2.0,
        };
        let Verdict::Abort(why) = verdict(stable, failing, m) else {
            panic!("500s must abort")
        };
        assert!(why.starts_with("5xx rate: canary 40.0%"), "{why}");
        let slow = Figures {
            requests: 100,
            errors: 0,
            p99_ms: 50.0,
        };
        let Verdict::Abort(why) = verdict(stable, slow, m) else {
            panic!("a slow canary must abort")
        };
        assert!(why.starts_with("p99:"), "{why}");
        // One error in 100 is within a point of a clean stable side.
        let one = Figures {
            requests: 100,
            errors: 1,
            p99_ms: 5.0,
        };
        assert!(matches!(verdict(stable, one, m), Verdict::Promote(_)));
        let idle = Figures::default();
        let Verdict::Abort(why) = verdict(stable, idle, m) else {
            panic!()
        };
        assert!(why.contains("fewer than the 20"), "{why}");
    }

    #[test]
    fn latency_buckets_and_p99() {
        assert_eq!(bucket(Duration::from_micros(300)), 0);
        assert_eq!(bucket(Duration::from_millis(3)), 2);
        assert_eq!(bucket(Duration::from_secs(600)), 15);
        let mut counts = [0u64; 16];
        counts[0] = 98;
        counts[5] = 2;
        assert_eq!(p99(&counts), 50.0);
        counts[0] = 990;
        assert_eq!(p99(&counts), 1.0);
        assert_eq!(p99(&[0; 16]), 0.0);
        let mut open = [0u64; 16];
        open[15] = 1;
        assert_eq!(p99(&open), 60000.0);
    }
}
