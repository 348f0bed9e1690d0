//! A compose file's bytes → `compose::load` (serde-saphyr with compose
//! interpolation, long forms, dependency order) → what a deploy makes of
//! the project (config hashes, create requests, automatic hostnames).
//!
//! A compose file comes from a git repository a push webhook names: it is
//! input from outside. Every error names the file; a project that loads has
//! a compose-style name, each service once in an order that puts what it
//! depends on first, and only networks and volumes it defines; the rest of
//! the deploy's pure code takes it without panicking.
#![no_main]

use std::collections::HashMap;
use std::path::Path;

use berth::compose::{load, Source};
use berth::deploy::project::spec::{auto_routes, config_hash, create_body, Replica};
use berth::names::HostPattern;
use libfuzzer_sys::fuzz_target;

const FILE: &str = "/srv/fuzz/compose.yaml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let vars: HashMap<String, String> = [
        ("TAG".to_string(), "2".to_string()),
        ("EMPTY".to_string(), String::new()),
    ]
    .into();
    let read = |p: &Path| -> std::io::Result<String> {
        if p.ends_with("ok.env") {
            Ok("A=1\n".into())
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such file",
            ))
        }
    };
    let src = Source {
        file: Path::new(FILE),
        text,
        project: None,
        vars: &vars,
        read: &read,
    };
    let project = match load(&src) {
        Err(e) => {
            assert_eq!(e.file, FILE, "{e}");
            assert!(e.to_string().starts_with(FILE), "{e}");
            assert!(!e.message.is_empty(), "an error that says nothing: {e}");
            return;
        }
        Ok(p) => p,
    };
    assert!(
        !project.name.is_empty()
            && project
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'),
        "project name {:?}",
        project.name
    );
    let mut order = project.order.clone();
    order.sort();
    let mut names: Vec<String> = project.services.keys().cloned().collect();
    names.sort();
    assert_eq!(order, names, "each service once in the order");
    for (i, name) in project.order.iter().enumerate() {
        let s = &project.services[name];
        for dep in s.depends_on.keys() {
            let at = project.order.iter().position(|n| n == dep);
            assert!(
                at.is_some_and(|a| a < i),
                "{name} before its dependency {dep}"
            );
        }
        for net in s.networks.keys() {
            assert!(
                project.networks.contains_key(net),
                "{name}: network {net} undefined"
            );
        }
        assert!(
            s.image.is_some() || s.build.is_some(),
            "{name}: no image and no build"
        );
        let hash = config_hash(&project, s, "sha256:0");
        assert_eq!(hash.len(), 64);
        let r = Replica {
            project: &project,
            service: s,
            image: "img:1",
            number: 1,
            hash: &hash,
            deploy: 1,
            extra_labels: Vec::new(),
        };
        let _ = create_body(&r);
        let (labels, _) = auto_routes("berth", "apps.example.com", &project.name, s);
        for (key, value) in labels {
            if key.ends_with(".host") {
                assert!(HostPattern::parse(&value).is_ok(), "{key}={value}");
            }
        }
    }
});
