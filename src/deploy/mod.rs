//! Deploys: rollouts, scaling and self-healing, driving the Docker engine.
pub mod clone;
pub mod plan;
