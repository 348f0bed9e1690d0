//! Integration tests: the real berth binary against the real Docker engine.
//! See ../../../shared/TESTING.md for what this machine offers.

mod harness;
mod routing;
