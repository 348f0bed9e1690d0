//! A config file's bytes → `Config::parse` (serde-saphyr, the YAML error
//! path of config/yaml_error.rs, validation) → a planner on that config.
//!
//! Every error is one line that starts with the file's name; one about a
//! key names it and says what is wrong. A config that parses plans without
//! panicking, its names normalised.
#![no_main]

use std::sync::Arc;

use berth::config::{Config, ConfigError};
use berth::names::HostPattern;
use berth::plan::Planner;
use berth::world::{Signals, World};
use libfuzzer_sys::fuzz_target;

const ORIGIN: &str = "fuzz.yaml";

fuzz_target!(|data: &[u8]| {
    // `Config::load` reads the file with `read_to_string`: only UTF-8 gets here.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, ORIGIN) {
        Err(e) => check_error(&e),
        Ok(c) => check_config(c),
    }
});

fn check_error(e: &ConfigError) {
    let shown = e.to_string();
    assert!(
        !shown.contains(['\n', '\r']),
        "a config error on more than one line: {shown:?}"
    );
    assert!(shown.starts_with(&format!("{ORIGIN}: ")), "{shown:?}");
    match e {
        ConfigError::Invalid {
            key, message, line, ..
        } => {
            // `{ !}`: a key that is an empty scalar, named as it is written.
            let empty_key = message.starts_with("unknown field ``");
            assert!(
                !key.is_empty() || empty_key,
                "an error about no key: {shown:?}"
            );
            assert!(!message.is_empty(), "an error that says nothing: {shown:?}");
            assert!(
                *line > 0,
                "an error about a key without its line: {shown:?}"
            );
        }
        ConfigError::Parse { message, .. } => {
            assert!(!message.is_empty(), "an error that says nothing: {shown:?}");
        }
        ConfigError::Read { .. } => unreachable!("parse reads no file"),
    }
}

fn check_config(c: Config) {
    let zone = &c.dns.zone;
    assert!(
        *zone == zone.to_ascii_lowercase() && !zone.ends_with('.'),
        "dns.zone {zone:?} not normalised"
    );
    for r in &c.routes {
        assert!(!r.hosts.is_empty(), "a static route without a host");
        for h in &r.hosts {
            let shown = h.to_string();
            assert_eq!(HostPattern::parse(&shown).as_ref(), Ok(h), "{shown:?}");
        }
        assert!(r.path.as_str().starts_with('/'));
    }
    let mut planner = Planner::new(Arc::new(c));
    let snapshot = planner.build(&World::new(), &Signals::default());
    for r in snapshot.table.routes() {
        assert!(
            !r.backends.is_empty(),
            "a static route with no backend: {r:?}"
        );
    }
}
