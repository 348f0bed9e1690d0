//! Integration tests: the real berth binary against the real Docker engine.
//! Each module starts a real berth per test; `harness.rs` holds the helpers.

mod acme;
mod admin;
mod autoscale;
mod browser;
mod canary;
mod certs;
mod check;
mod cli;
mod crash;
mod dashboard;
mod deploy;
mod dns;
mod events;
mod harness;
mod health;
mod lifecycle;
mod limits;
mod policy;
mod project;
mod routing;
mod shutdown;
mod upgrade;
