//! `berth check`: the config was already validated by loading it; this lists
//! the engine's containers, checks each routed one once (for a couple of
//! seconds: an app that is starting gets the time to listen), and reports
//! every problem the planner finds, labels and backends that never answer.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::engine::Engine;
use crate::error::CallError;
use crate::health::probe;
use crate::plan::{CheckTarget, Planner, Snapshot, NOT_READY_AFTER};
use crate::world::{CheckState, Signals};

/// How long a backend may take to pass its first check here.
const PATIENCE: Duration = Duration::from_secs(2);

pub async fn check(config: &Config) -> Result<(usize, Snapshot), CallError> {
    let world = Engine::new(&config.docker)?.list().await?;
    let mut planner = Planner::new(Arc::new(config.clone()));
    let first = planner.build(&world, &Signals::default());
    let results = futures_util::future::join_all(first.checks.iter().map(patient_probe)).await;
    let mut signals = Signals::default();
    for (t, (ok, last)) in first.checks.iter().zip(results) {
        let state = CheckState {
            started_at: t.started_at.clone(),
            healthy: ok,
            ever_healthy: ok,
            ok_streak: u32::from(ok),
            // One verdict over the patience stands for a run of failures.
            fail_streak: if ok { 0 } else { NOT_READY_AFTER },
            last,
        };
        signals.checks.insert(t.id.clone(), state);
    }
    let snapshot = planner.build(&world, &signals);
    Ok((world.len(), snapshot))
}

/// Checks until one passes or [`PATIENCE`] is over; the last result.
async fn patient_probe(t: &CheckTarget) -> (bool, String) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (ok, last) = probe(t).await;
        if ok || tokio::time::Instant::now() >= deadline {
            return (ok, last);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
