//! Autoscaling decisions (pure): from the samples of a service's replicas,
//! its policy and the time since its last action, whether to scale and to
//! how many, with the reason. The controller samples and carries out; this
//! module only decides, so it is tested on synthetic series.
//!
//! - Out: every one of the last `out_samples` averages (over the Ready
//!   replicas) is above the target. The step is proportional to how far
//!   above (`ceil(ready × average / target)`, at least one more), capped by
//!   `max`.
//! - In: only once `cooldown` has passed since the last action, and only if
//!   every average of the whole cooldown window is below the target less 5
//!   points (5 % of the target for requests/s); one replica at a time, and
//!   only if the others would stay below that line too. Missing samples
//!   never scale in.
//! - Replicas that are Starting or Draining are not capacity and their
//!   samples are not read; while one is, nothing is decided (one action per
//!   service at a time). A Down replica is no capacity either, but it is
//!   counted (the scale engine keeps it) and only blocks scaling in.

use std::time::Duration;

/// A service's autoscaling policy (labels `berth.scale.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub min: u32,
    pub max: u32,
    /// Target CPU, % of the container's limit (or of one core).
    pub cpu: Option<f64>,
    /// Target memory, % of the limit.
    pub memory: Option<f64>,
    /// Target requests/s per replica, from berth's own counters.
    pub requests: Option<f64>,
    pub interval: Duration,
    pub out_samples: usize,
    pub cooldown: Duration,
}

impl Policy {
    /// The targets that are on, with how each is read from a sample and
    /// the margin below the target a scale-in needs.
    fn targets(&self) -> Vec<Target> {
        let mut t = Vec::new();
        if let Some(v) = self.cpu {
            t.push(Target::new("cpu", v, v - 5.0, |s| s.cpu));
        }
        if let Some(v) = self.memory {
            t.push(Target::new("memory", v, v - 5.0, |s| s.memory));
        }
        if let Some(v) = self.requests {
            t.push(Target::new("requests/s", v, v * 0.95, |s| s.requests));
        }
        t
    }
}

struct Target {
    name: &'static str,
    value: f64,
    /// Below this (every sample of the cooldown window) a replica may go.
    low: f64,
    read: fn(&Sample) -> Option<f64>,
}

impl Target {
    fn new(name: &'static str, value: f64, low: f64, read: fn(&Sample) -> Option<f64>) -> Target {
        Target {
            name,
            value,
            low,
            read,
        }
    }
}

/// The keys of `berth.scale.*`.
pub const SCALE_KEYS: &[&str] = &[
    "min",
    "max",
    "cpu",
    "memory",
    "requests",
    "interval",
    "out_samples",
    "cooldown",
];

/// A service's policy from its `scale.*` label keys (the prefix already
/// taken off): `None` without `min` or `max` (no autoscaling); each bad
/// key is an error (the key, what is wrong with its value), and the
/// policy is not used.
/// CPU is on at 80 % unless a target is set (`cpu=off` turns it off).
pub fn policy_from(keys: &[(&str, &str)]) -> Result<Option<Policy>, Vec<(String, String)>> {
    use crate::policy::spec::{positive, whole};
    let mut errors = Vec::new();
    let mut p = Policy {
        min: 1,
        max: 1,
        cpu: Some(80.0),
        memory: None,
        requests: None,
        interval: Duration::from_secs(15),
        out_samples: 3,
        cooldown: Duration::from_secs(300),
    };
    let (mut min, mut max, mut cpu_set) = (None, None, false);
    let percent = |v: &str| -> Result<Option<f64>, String> {
        if v == "off" {
            return Ok(None);
        }
        match v.trim_end_matches('%').parse::<f64>() {
            Ok(x) if x > 0.0 && x <= 1000.0 => Ok(Some(x)),
            _ => Err("a percentage above 0 (up to 1000 for several cores), or off".into()),
        }
    };
    let duration = |v: &str| crate::names::parse_duration(v).and_then(positive);
    let within = |d: Duration, lo: u64, hi: u64| {
        if d < Duration::from_secs(lo) || d > Duration::from_secs(hi) {
            Err(format!("from {lo}s to {hi}s"))
        } else {
            Ok(d)
        }
    };
    for (key, v) in keys {
        let v = v.trim();
        let r: Result<(), String> = match *key {
            "min" => whole(v, 1, 100).map(|n| min = Some(n)),
            "max" => whole(v, 1, 100).map(|n| max = Some(n)),
            "cpu" => percent(v).map(|x| {
                p.cpu = x;
                cpu_set = true;
            }),
            "memory" => percent(v).map(|x| p.memory = x),
            "requests" => match v.parse::<f64>() {
                Ok(x) if x > 0.0 => {
                    p.requests = Some(x);
                    Ok(())
                }
                _ => Err("requests/s per replica above 0, e.g. 50".into()),
            },
            "interval" => duration(v)
                .and_then(|d| within(d, 1, 3600))
                .map(|d| p.interval = d),
            "out_samples" => whole(v, 1, 100).map(|n| p.out_samples = n as usize),
            "cooldown" => duration(v)
                .and_then(|d| within(d, 1, 86_400))
                .map(|d| p.cooldown = d),
            other => Err(
                match crate::names::suggest(other, SCALE_KEYS.iter().copied()) {
                    Some(s) => format!("unknown key; did you mean scale.{s}?"),
                    None => format!("unknown key; known: {}", SCALE_KEYS.join(", ")),
                },
            ),
        };
        if let Err(e) = r {
            errors.push((format!("scale.{key}"), e));
        }
    }
    // A requests target alone scales on requests alone.
    if !cpu_set && (p.requests.is_some() || p.memory.is_some()) {
        p.cpu = None;
    }
    match (min, max) {
        (None, None) if errors.is_empty() && keys.is_empty() => return Ok(None),
        // A bad min or max was said already.
        (None, None)
            if errors
                .iter()
                .any(|(k, _)| k == "scale.max" || k == "scale.min") => {}
        (None, None) => errors.push((
            "scale.max".into(),
            "autoscaling needs scale.max (and scale.min, default 1)".into(),
        )),
        (min, max) => {
            p.min = min.unwrap_or(1);
            p.max = max.unwrap_or(p.min);
            if p.max < p.min {
                errors.push(("scale.max".into(), format!("below scale.min ({})", p.min)));
            }
        }
    }
    if errors.is_empty() {
        Ok(Some(p))
    } else {
        Err(errors)
    }
}

/// One interval's figures of one replica; `None`: not measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    pub cpu: Option<f64>,
    pub memory: Option<f64>,
    pub requests: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaState {
    Ready,
    Starting,
    Draining,
    /// Running, failing its health: no capacity and its samples are not
    /// read, but it is a replica (the scale engine counts it) and no
    /// reason to wait: an overload may be what made it fail.
    Down,
}

/// A replica and its samples, oldest first, one per interval (the last is
/// the latest interval; `None` where the interval has no sample).
#[derive(Debug, Clone)]
pub struct Replica {
    pub state: ReplicaState,
    pub samples: Vec<Option<Sample>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Hold(String),
    Scale { from: u32, to: u32, reason: String },
}

/// The average over the Ready replicas of the interval `back` intervals
/// before the latest (0: the latest); `None` if any Ready replica has no
/// figure for it.
fn average(ready: &[&Replica], target: &Target, back: usize) -> Option<f64> {
    let mut sum = 0.0;
    for r in ready {
        let i = r.samples.len().checked_sub(1 + back)?;
        sum += (target.read)(r.samples[i].as_ref()?)?;
    }
    (!ready.is_empty()).then(|| sum / ready.len() as f64)
}

/// What to do for one service now.
pub fn decide(
    policy: &Policy,
    replicas: &[Replica],
    since_last_action: Option<Duration>,
) -> Decision {
    let busy = replicas
        .iter()
        .filter(|r| matches!(r.state, ReplicaState::Starting | ReplicaState::Draining))
        .count();
    if busy > 0 {
        return Decision::Hold(format!(
            "{busy} replica(s) starting or draining: not capacity yet"
        ));
    }
    let ready: Vec<&Replica> = replicas
        .iter()
        .filter(|r| r.state == ReplicaState::Ready)
        .collect();
    let down = (replicas.len() - ready.len()) as u32;
    // Every running replica, as the scale engine counts them.
    let n = replicas.len() as u32;
    let capacity = ready.len() as u32;
    if n < policy.min {
        return Decision::Scale {
            from: n,
            to: policy.min,
            reason: format!("{n} replica(s), below the minimum of {}", policy.min),
        };
    }
    if n > policy.max {
        return Decision::Scale {
            from: n,
            to: policy.max,
            reason: format!("{n} replica(s), above the maximum of {}", policy.max),
        };
    }
    let targets = policy.targets();
    if targets.is_empty() {
        return Decision::Hold("no target set".into());
    }
    // Out: sustained above a target.
    let k = policy.out_samples.max(1);
    let mut out: Option<(u32, String)> = None;
    for t in &targets {
        let recent: Option<Vec<f64>> = (0..k).map(|b| average(&ready, t, b)).collect();
        let Some(recent) = recent else { continue };
        if recent.iter().all(|a| *a > t.value) {
            let latest = recent[0];
            // What the Ready ones carry, spread to the target, and the
            // down ones kept beside them.
            let want = ((f64::from(capacity) * latest / t.value).ceil() as u32 + down)
                .max(n + 1)
                .min(policy.max);
            let reason = format!(
                "{} {:.1} above the target {:.1} for {k} samples",
                t.name, latest, t.value
            );
            if out.as_ref().is_none_or(|(w, _)| want > *w) {
                out = Some((want, reason));
            }
        }
    }
    if let Some((to, reason)) = out {
        if to > n {
            return Decision::Scale {
                from: n,
                to,
                reason,
            };
        }
        return Decision::Hold(format!(
            "{reason}, but already at the maximum of {}",
            policy.max
        ));
    }
    // In: the whole cooldown window low on every target, after the cooldown.
    if n <= policy.min {
        return Decision::Hold(format!("at the minimum of {}", policy.min));
    }
    if since_last_action.is_some_and(|d| d < policy.cooldown) {
        return Decision::Hold("within the cooldown of the last action".into());
    }
    if down > 0 {
        return Decision::Hold(format!("{down} replica(s) down: no scale-in while one is"));
    }
    let window = (policy.cooldown.as_secs_f64() / policy.interval.as_secs_f64().max(0.001))
        .ceil()
        .max(1.0) as usize;
    for t in &targets {
        let all: Option<Vec<f64>> = (0..window).map(|b| average(&ready, t, b)).collect();
        let Some(all) = all else {
            return Decision::Hold(format!(
                "not a full cooldown of {} samples yet: no scale-in on missing figures",
                t.name
            ));
        };
        let highest = all.iter().copied().fold(f64::MIN, f64::max);
        if highest >= t.low {
            return Decision::Hold(format!(
                "{} up to {highest:.1} in the cooldown window: not below {:.1}",
                t.name, t.low
            ));
        }
        // The others must stay below the line without this one.
        let projected = all[0] * f64::from(n) / f64::from(n - 1);
        if projected >= t.low {
            return Decision::Hold(format!(
                "{} would be {projected:.1} per replica with one fewer: not below {:.1}",
                t.name, t.low
            ));
        }
    }
    Decision::Scale {
        from: n,
        to: n - 1,
        reason: "below every target by the margin for a whole cooldown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            min: 1,
            max: 3,
            cpu: Some(50.0),
            memory: None,
            requests: None,
            interval: Duration::from_secs(15),
            out_samples: 3,
            cooldown: Duration::from_secs(60),
        }
    }

    /// `n` Ready replicas, each with these CPU figures (oldest first).
    fn cpu(n: usize, series: &[f64]) -> Vec<Replica> {
        (0..n)
            .map(|_| Replica {
                state: ReplicaState::Ready,
                samples: series
                    .iter()
                    .map(|c| {
                        Some(Sample {
                            cpu: Some(*c),
                            ..Sample::default()
                        })
                    })
                    .collect(),
            })
            .collect()
    }

    fn to(d: &Decision) -> Option<u32> {
        match d {
            Decision::Scale { to, .. } => Some(*to),
            Decision::Hold(_) => None,
        }
    }

    #[test]
    fn sustained_load_scales_out_in_proportion_capped_by_max() {
        let p = policy();
        // Three samples above 50: out. 80% on one replica: ceil(1.6) = 2.
        assert_eq!(to(&decide(&p, &cpu(1, &[80.0, 80.0, 80.0]), None)), Some(2));
        // 140% (a limit of two cores at one core's 100%): ceil(2.8) = 3.
        assert_eq!(
            to(&decide(&p, &cpu(1, &[90.0, 120.0, 140.0]), None)),
            Some(3)
        );
        // Far above, capped by max.
        assert_eq!(to(&decide(&p, &cpu(2, &[300.0; 3]), None)), Some(3));
        // Two samples only, or one below in the last three: hold.
        assert_eq!(to(&decide(&p, &cpu(1, &[80.0, 80.0]), None)), None);
        assert_eq!(to(&decide(&p, &cpu(1, &[80.0, 40.0, 80.0]), None)), None);
        // At max: hold, and say why.
        match decide(&p, &cpu(3, &[90.0; 3]), None) {
            Decision::Hold(why) => assert!(why.contains("maximum of 3"), "{why}"),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn scale_in_only_after_the_cooldown_below_the_margin_one_at_a_time() {
        let p = policy();
        let low = [10.0; 4];
        // Within the cooldown: hold.
        assert_eq!(
            to(&decide(&p, &cpu(3, &low), Some(Duration::from_secs(30)))),
            None
        );
        // After it, a whole window of 4 samples (60 s / 15 s) below 45: 3 → 2.
        assert_eq!(
            to(&decide(&p, &cpu(3, &low), Some(Duration::from_secs(61)))),
            Some(2)
        );
        assert_eq!(to(&decide(&p, &cpu(3, &low), None)), Some(2));
        // 47 is below the target but not below the margin: hold.
        assert_eq!(to(&decide(&p, &cpu(3, &[47.0; 4]), None)), None);
        // 40 on three would be 60 on two: hold (it would scale out again).
        assert_eq!(to(&decide(&p, &cpu(3, &[40.0; 4]), None)), None);
        // 20 on two is 40 on one: fine, down to the minimum and no further.
        assert_eq!(to(&decide(&p, &cpu(2, &[20.0; 4]), None)), Some(1));
        assert_eq!(to(&decide(&p, &cpu(1, &[1.0; 4]), None)), None);
    }

    #[test]
    fn missing_samples_never_scale_in() {
        let p = policy();
        // A window shorter than the cooldown's.
        assert_eq!(to(&decide(&p, &cpu(2, &[5.0, 5.0]), None)), None);
        // A gap in one replica's series.
        let mut r = cpu(2, &[5.0; 4]);
        r[1].samples[2] = None;
        assert_eq!(to(&decide(&p, &r, None)), None);
        // A sample without a CPU figure.
        let mut r = cpu(2, &[5.0; 4]);
        r[0].samples[3] = Some(Sample::default());
        assert_eq!(to(&decide(&p, &r, None)), None);
    }

    #[test]
    fn a_load_around_the_target_causes_no_action() {
        let p = policy();
        // ±4 points around 50, sample after sample, for ten cooldowns: at
        // every step, whatever the history, nothing is decided.
        let series: Vec<f64> = (0..40)
            .map(|i| if i % 2 == 0 { 54.0 } else { 46.0 })
            .collect();
        let mut actions = 0;
        for end in 1..=series.len() {
            for n in 1..=3 {
                if to(&decide(&p, &cpu(n, &series[..end]), None)).is_some() {
                    actions += 1;
                }
            }
        }
        assert_eq!(actions, 0);
    }

    #[test]
    fn starting_or_draining_replicas_are_not_capacity() {
        let p = policy();
        let mut r = cpu(2, &[90.0; 3]);
        r[1].state = ReplicaState::Starting;
        match decide(&p, &r, None) {
            Decision::Hold(why) => assert!(why.contains("starting or draining"), "{why}"),
            d => panic!("{d:?}"),
        }
        r[1].state = ReplicaState::Draining;
        assert_eq!(to(&decide(&p, &r, None)), None);
    }

    #[test]
    fn a_down_replica_is_counted_but_not_capacity_and_blocks_scale_in_only() {
        let p = Policy { max: 5, ..policy() };
        // Two Ready at 90 (the down one's 0 not read): ceil(2 × 1.8) = 4
        // capacity, plus the down one kept: 5.
        let mut r = cpu(3, &[90.0; 3]);
        r[2].state = ReplicaState::Down;
        r[2].samples = vec![None; 3];
        assert_eq!(to(&decide(&p, &r, None)), Some(5));
        let mut r = cpu(3, &[5.0; 4]);
        r[2].state = ReplicaState::Down;
        match decide(&p, &r, None) {
            Decision::Hold(why) => assert!(why.contains("down"), "{why}"),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn policies_from_labels() {
        assert_eq!(policy_from(&[]), Ok(None));
        let p = policy_from(&[("min", "1"), ("max", "3"), ("cpu", "50")])
            .unwrap()
            .unwrap();
        assert_eq!((p.min, p.max, p.cpu), (1, 3, Some(50.0)));
        assert_eq!(
            (p.interval, p.out_samples, p.cooldown),
            (Duration::from_secs(15), 3, Duration::from_secs(300))
        );
        let p = policy_from(&[("max", "4"), ("requests", "50")])
            .unwrap()
            .unwrap();
        assert_eq!(
            (p.min, p.cpu, p.requests),
            (1, None, Some(50.0)),
            "requests alone"
        );
        let p = policy_from(&[("max", "2")]).unwrap().unwrap();
        assert_eq!(p.cpu, Some(80.0), "CPU 80% by default");
        for (keys, key, want) in [
            (
                vec![("max", "abc")],
                "scale.max",
                "use a whole number from 1 to 100",
            ),
            (
                vec![("min", "3"), ("max", "2")],
                "scale.max",
                "below scale.min",
            ),
            (
                vec![("max", "2"), ("cpu", "-5")],
                "scale.cpu",
                "a percentage above 0",
            ),
            (
                vec![("max", "2"), ("cooldown", "0s")],
                "scale.cooldown",
                "more than zero",
            ),
            (
                vec![("max", "2"), ("cooldwn", "1m")],
                "scale.cooldwn",
                "did you mean scale.cooldown?",
            ),
            (vec![("cpu", "50")], "scale.max", "needs scale.max"),
            (
                vec![("max", "2"), ("interval", "10ms")],
                "scale.interval",
                "from 1s to 3600s",
            ),
            (
                vec![("max", "2"), ("cooldown", "1000h")],
                "scale.cooldown",
                "from 1s to 86400s",
            ),
        ] {
            let errors = policy_from(&keys).unwrap_err();
            assert!(
                errors.iter().any(|(k, e)| k == key && e.contains(want)),
                "{keys:?}: {errors:?}"
            );
        }
    }

    #[test]
    fn requests_per_replica_alone_and_the_bounds() {
        let p = Policy {
            cpu: None,
            requests: Some(50.0),
            ..policy()
        };
        let req = |n: usize, v: f64, len: usize| -> Vec<Replica> {
            (0..n)
                .map(|_| Replica {
                    state: ReplicaState::Ready,
                    samples: vec![
                        Some(Sample {
                            requests: Some(v),
                            ..Sample::default()
                        });
                        len
                    ],
                })
                .collect()
        };
        assert_eq!(to(&decide(&p, &req(1, 120.0, 3), None)), Some(3));
        assert_eq!(to(&decide(&p, &req(2, 10.0, 4), None)), Some(1));
        // 46 each on two: 92 on one, above 47.5: hold.
        assert_eq!(to(&decide(&p, &req(2, 46.0, 4), None)), None);
        // Below min or above max whatever the load.
        assert_eq!(to(&decide(&p, &req(0, 0.0, 0), None)), Some(1));
        assert_eq!(to(&decide(&p, &req(5, 0.0, 4), None)), Some(3));
        let none = Policy {
            requests: None,
            ..p
        };
        assert_eq!(to(&decide(&none, &req(2, 999.0, 4), None)), None);
    }
}
