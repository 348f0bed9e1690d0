//! `berth check`: the config was already validated by loading it; this lists
//! the engine's containers and reports every label problem the planner finds.

use std::sync::Arc;

use crate::config::Config;
use crate::docker::{connect, list_and_inspect, DockerError};
use crate::plan::{Planner, Snapshot};
use crate::world::Signals;

pub async fn check(config: &Config) -> Result<(usize, Snapshot), DockerError> {
    let docker = connect(config)?;
    let world = list_and_inspect(&docker, config).await?;
    let snapshot = Planner::new(Arc::new(config.clone())).build(&world, &Signals::default());
    Ok((world.len(), snapshot))
}
