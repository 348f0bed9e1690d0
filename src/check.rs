//! `berth check`: the config was already validated by loading it; this lists
//! the engine's containers and reports every label problem the planner finds.

use std::sync::Arc;

use crate::config::Config;
use crate::engine::Engine;
use crate::error::CallError;
use crate::plan::{Planner, Snapshot};
use crate::world::Signals;

pub async fn check(config: &Config) -> Result<(usize, Snapshot), CallError> {
    let world = Engine::new(&config.docker)?.list().await?;
    let snapshot = Planner::new(Arc::new(config.clone())).build(&world, &Signals::default());
    Ok((world.len(), snapshot))
}
