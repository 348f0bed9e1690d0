//! Deploys: rollouts, scaling and self-healing, driving the Docker engine.
pub mod plan;
