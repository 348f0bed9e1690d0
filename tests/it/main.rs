//! Integration tests: the real berth binary against the real Docker engine.
//! See ../../../shared/TESTING.md for what this machine offers.

mod acme;
mod admin;
mod check;
mod deploy;
mod dns;
mod events;
mod harness;
mod health;
mod lifecycle;
mod routing;
