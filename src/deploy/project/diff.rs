//! What a deploy does to each service: the compose file (with the config
//! hash each service now has) against the containers the project runs.
//! Pure; tested with hand-built states.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A container of the project as the deploy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub id: String,
    pub name: String,
    pub service: String,
    pub number: Option<u32>,
    pub hash: Option<String>,
    /// Docker's word: running, exited, created, ...
    pub status: String,
    /// The image it was created from, as named then.
    pub image: String,
}

/// What the file asks of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub service: String,
    pub hash: String,
    pub replicas: usize,
    /// Why two replicas cannot run side by side, if they cannot.
    pub single: Option<String>,
    /// A task another service waits to complete (`depends_on` with
    /// `service_completed_successfully`): its containers that ran to the
    /// end count as its replicas.
    pub oneshot: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Step {
    /// No container yet: make `replicas`.
    Create {
        replicas: usize,
    },
    Unchanged {
        replicas: usize,
    },
    /// Same settings, another replica count.
    Scale {
        from: usize,
        to: usize,
    },
    /// New replicas Ready first, then the old ones drained and removed.
    ReplaceZeroDowntime {
        from: usize,
        to: usize,
    },
    /// The old replicas stop before the new ones start, and why.
    ReplaceStopFirst {
        from: usize,
        to: usize,
        reason: String,
    },
    /// The service left the file.
    Remove {
        replicas: usize,
    },
}

impl Step {
    pub fn changes(&self) -> bool {
        !matches!(self, Step::Unchanged { .. })
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Create { replicas } => write!(f, "create ({replicas} replicas)"),
            Step::Unchanged { replicas } => write!(f, "unchanged ({replicas} replicas)"),
            Step::Scale { from, to } => write!(f, "scale {from} -> {to} replicas"),
            Step::ReplaceZeroDowntime { from, to } => {
                write!(f, "replace, zero downtime ({from} -> {to} replicas)")
            }
            Step::ReplaceStopFirst { from, to, reason } => {
                write!(f, "replace, stop first ({from} -> {to} replicas): {reason}")
            }
            Step::Remove { replicas } => write!(f, "remove ({replicas} replicas)"),
        }
    }
}

/// One service's step, with the containers it retires (running ones to
/// replace or remove) and the leftovers it clears (stopped ones of an old
/// version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePlan {
    pub service: String,
    pub step: Step,
    /// Running containers of the service, oldest number first.
    pub live: Vec<Running>,
    /// Stopped containers that are not what the file asks for.
    pub stale: Vec<Running>,
}

/// The plan, services in `order` (dependencies first), then the services
/// that left the file.
pub fn diff(desired: &[Desired], running: &[Running]) -> Vec<ServicePlan> {
    let mut by_service: BTreeMap<&str, Vec<&Running>> = BTreeMap::new();
    for r in running {
        by_service.entry(r.service.as_str()).or_default().push(r);
    }
    let mut plans = Vec::new();
    for d in desired {
        let mine = by_service.remove(d.service.as_str()).unwrap_or_default();
        let (mut live, stopped): (Vec<&Running>, Vec<&Running>) = mine
            .into_iter()
            .partition(|r| r.status == "running" || (d.oneshot && r.status == "exited"));
        live.sort_by_key(|r| (r.number.unwrap_or(u32::MAX), r.name.clone()));
        let changed = live.iter().any(|r| r.hash.as_deref() != Some(&d.hash));
        let stale: Vec<Running> = stopped
            .into_iter()
            .filter(|r| changed || r.hash.as_deref() != Some(&d.hash))
            .cloned()
            .collect();
        let (from, to) = (live.len(), d.replicas);
        let step = if live.is_empty() {
            Step::Create { replicas: to }
        } else if changed {
            match &d.single {
                None => Step::ReplaceZeroDowntime { from, to },
                Some(reason) => Step::ReplaceStopFirst {
                    from,
                    to,
                    reason: reason.clone(),
                },
            }
        } else if from != to {
            Step::Scale { from, to }
        } else {
            Step::Unchanged { replicas: to }
        };
        plans.push(ServicePlan {
            service: d.service.clone(),
            step,
            live: live.into_iter().cloned().collect(),
            stale,
        });
    }
    for (service, mine) in by_service {
        let (live, stale): (Vec<&Running>, Vec<&Running>) =
            mine.into_iter().partition(|r| r.status == "running");
        plans.push(ServicePlan {
            service: service.to_string(),
            step: Step::Remove {
                replicas: live.len(),
            },
            live: live.into_iter().cloned().collect(),
            stale: stale.into_iter().cloned().collect(),
        });
    }
    plans
}

/// How what runs of a service differs from what berth's last deploy of
/// it made (`hash`, `replicas`), if it does: by hand (`docker run`,
/// `docker compose up`), `berth rollout --image` or `berth scale`, which
/// the next deploy undoes. `running`: the running replicas' config hashes.
pub fn drift(hash: &str, replicas: usize, running: &[Option<&str>]) -> Option<String> {
    let mut why = Vec::new();
    let other = running.iter().filter(|h| **h != Some(hash)).count();
    if other > 0 {
        why.push(format!(
            "{other} of {} run other settings or another image than the last deploy",
            running.len()
        ));
    }
    if running.len() != replicas {
        why.push(format!(
            "{} running, the last deploy made {replicas}",
            running.len()
        ));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, service: &str, n: u32, hash: &str, status: &str) -> Running {
        Running {
            id: id.into(),
            name: format!("p-{service}-{n}"),
            service: service.into(),
            number: Some(n),
            hash: Some(hash.into()),
            status: status.into(),
            image: String::new(),
        }
    }

    fn want(service: &str, hash: &str, replicas: usize, single: Option<&str>) -> Desired {
        Desired {
            service: service.into(),
            hash: hash.into(),
            replicas,
            single: single.map(str::to_string),
            oneshot: false,
        }
    }

    #[test]
    fn each_service_gets_the_step_its_hash_and_count_call_for() {
        let running = [
            run("1", "web", 2, "h1", "running"),
            run("2", "web", 1, "h1", "running"),
            run("3", "api", 1, "a1", "running"),
            run("4", "db", 1, "d1", "running"),
            run("5", "db", 2, "d0", "exited"),
            run("6", "worker", 1, "w1", "running"),
            run("7", "worker", 2, "w1", "running"),
            run("8", "old", 1, "o1", "running"),
            run("9", "old", 2, "o1", "exited"),
        ];
        let desired = [
            want("db", "d1", 1, Some("it publishes host port 5432")),
            want("web", "h2", 3, None),
            want("api", "a2", 1, Some("it publishes host port 80")),
            want("worker", "w1", 1, None),
            want("cache", "c1", 1, None),
        ];
        let plans = diff(&desired, &running);
        let steps: Vec<(&str, &Step)> = plans
            .iter()
            .map(|p| (p.service.as_str(), &p.step))
            .collect();
        assert_eq!(
            steps,
            vec![
                ("db", &Step::Unchanged { replicas: 1 }),
                ("web", &Step::ReplaceZeroDowntime { from: 2, to: 3 }),
                (
                    "api",
                    &Step::ReplaceStopFirst {
                        from: 1,
                        to: 1,
                        reason: "it publishes host port 80".into()
                    }
                ),
                ("worker", &Step::Scale { from: 2, to: 1 }),
                ("cache", &Step::Create { replicas: 1 }),
                ("old", &Step::Remove { replicas: 1 }),
            ]
        );
        let web = &plans[1];
        assert_eq!(
            web.live.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["2", "1"],
            "lowest container number first"
        );
        assert_eq!(
            plans[0]
                .stale
                .iter()
                .map(|r| r.id.as_str())
                .collect::<Vec<_>>(),
            ["5"],
            "a stopped container of an older version is cleared"
        );
        assert_eq!(plans[5].stale.len(), 1);
        assert!(!plans[0].step.changes() && plans[1].step.changes());
    }

    #[test]
    fn a_task_that_ran_to_its_end_is_unchanged() {
        let running = [run("1", "migrate", 1, "m1", "exited")];
        let mut d = want("migrate", "m1", 1, None);
        d.oneshot = true;
        assert_eq!(
            diff(&[d.clone()], &running)[0].step,
            Step::Unchanged { replicas: 1 }
        );
        d.hash = "m2".into();
        let plans = diff(&[d], &running);
        assert_eq!(plans[0].step, Step::ReplaceZeroDowntime { from: 1, to: 1 });
        assert_eq!(plans[0].live.len(), 1, "the old run goes");
    }

    #[test]
    fn a_service_whose_containers_all_stopped_is_created_again() {
        let running = [run("1", "web", 1, "h1", "exited")];
        let plans = diff(&[want("web", "h1", 1, None)], &running);
        assert_eq!(plans[0].step, Step::Create { replicas: 1 });
        assert!(
            plans[0].stale.is_empty(),
            "a stopped container of this very version is left for the user"
        );
    }

    #[test]
    fn drift_from_the_last_deploy() {
        assert_eq!(drift("h", 2, &[Some("h"), Some("h")]), None);
        assert_eq!(
            drift("h", 2, &[Some("h"), Some("x")]).as_deref(),
            Some("1 of 2 run other settings or another image than the last deploy")
        );
        assert_eq!(
            drift("h", 2, &[Some("h"), Some("h"), Some("h")]).as_deref(),
            Some("3 running, the last deploy made 2")
        );
        assert!(drift("h", 1, &[]).unwrap().contains("0 running"));
    }
}
