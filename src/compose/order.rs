//! The order services start in: each after what it `depends_on`,
//! alphabetical among those ready at the same time, so the same file always
//! gives the same order.

use std::collections::{BTreeMap, BTreeSet};

/// Service → the services it depends on; a dependency that is not a key
/// is ignored (the caller reports those). `Err` is a dependency cycle,
/// first service repeated last: `[a, b, a]`.
pub(super) fn start_order(
    deps: &BTreeMap<String, BTreeSet<String>>,
) -> Result<Vec<String>, Vec<String>> {
    let mut waiting: BTreeMap<&str, usize> = BTreeMap::new();
    let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (service, on) in deps {
        let known: Vec<&String> = on.iter().filter(|d| deps.contains_key(*d)).collect();
        waiting.insert(service, known.len());
        for dep in known {
            dependents.entry(dep).or_default().push(service);
        }
    }
    let mut ready: BTreeSet<&str> = waiting
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(s, _)| *s)
        .collect();
    let mut order = Vec::with_capacity(deps.len());
    while let Some(next) = ready.pop_first() {
        waiting.remove(next);
        order.push(next.to_owned());
        for dependent in dependents.get(next).into_iter().flatten() {
            if let Some(n) = waiting.get_mut(dependent) {
                *n -= 1;
                if *n == 0 {
                    ready.insert(dependent);
                }
            }
        }
    }
    match waiting.keys().next() {
        None => Ok(order),
        Some(first) => Err(cycle(deps, first, &waiting)),
    }
}

/// Every service still waiting waits on another still waiting, so walking
/// from one of them must come back round.
fn cycle(
    deps: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    waiting: &BTreeMap<&str, usize>,
) -> Vec<String> {
    let mut path: Vec<&str> = vec![start];
    loop {
        let current = path[path.len() - 1];
        let next = deps
            .get(current)
            .and_then(|on| on.iter().find(|d| waiting.contains_key(d.as_str())))
            .expect("a service still waiting depends on another still waiting");
        if let Some(at) = path.iter().position(|s| s == next) {
            let mut cycle: Vec<String> = path[at..].iter().map(|s| s.to_string()).collect();
            cycle.push(next.clone());
            return cycle;
        }
        path.push(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        edges
            .iter()
            .map(|(s, on)| (s.to_string(), on.iter().map(|d| d.to_string()).collect()))
            .collect()
    }

    #[test]
    fn dependencies_first_then_alphabetical() {
        let deps = graph(&[
            ("web", &["api", "db"]),
            ("api", &["db"]),
            ("db", &[]),
            ("cache", &[]),
            ("worker", &["cache"]),
        ]);
        assert_eq!(
            start_order(&deps),
            Ok(["cache", "db", "api", "web", "worker"]
                .map(String::from)
                .to_vec())
        );
    }

    #[test]
    fn cycles_are_named() {
        let deps = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["b"]), ("d", &[])]);
        assert_eq!(
            start_order(&deps),
            Err(["b", "c", "b"].map(String::from).to_vec())
        );
        let deps = graph(&[("a", &["a"])]);
        assert_eq!(
            start_order(&deps),
            Err(["a", "a"].map(String::from).to_vec())
        );
    }
}
