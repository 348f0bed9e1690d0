//! What berth remembers of the deployments it owns, in the state dir:
//! each deployment's source and webhook secret and what its last deploy
//! made (`deployments.json`), the history of deploys (`deploys.json`), and
//! each deployment's env and secrets (`env/<name>.json`, 0600: never in
//! image layers or labels, never shown back when secret). In memory only
//! without a state dir.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::deploy::Status;
use crate::source::SourceSpec;
use crate::state::StateDir;

const DEPLOYMENTS: &str = "deployments.json";
const DEPLOYS: &str = "deploys.json";
/// How many deploys the history keeps.
const KEEP: usize = 500;

/// What one service ran after a deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployed {
    pub image: String,
    pub hash: String,
    pub replicas: usize,
    /// A task others wait to complete: its exited containers count.
    #[serde(default)]
    pub task: bool,
}

/// A deployment berth owns (made by `berth deploy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub name: String,
    pub source: SourceSpec,
    /// Verifies push webhooks; shown once, when the deployment is made.
    #[serde(default)]
    pub webhook_secret: Option<String>,
    pub created_unix: u64,
    /// What the last completed deploy left running, per service.
    #[serde(default)]
    pub services: BTreeMap<String, Deployed>,
    pub last_deploy: Option<u64>,
}

/// One deploy, as `berth history` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployRecord {
    pub id: u64,
    pub project: String,
    /// `cli`, `api`, `webhook`, `rollback`.
    pub trigger: String,
    /// The compose file, or `url@branch`.
    pub source: String,
    pub commit: Option<String>,
    /// sha256 of the compose file's text.
    pub compose_hash: Option<String>,
    /// Image per service (built ones by id).
    #[serde(default)]
    pub images: BTreeMap<String, String>,
    /// What the deploy did to each service.
    #[serde(default)]
    pub steps: BTreeMap<String, String>,
    pub status: Status,
    pub reason: Option<String>,
    pub dry_run: bool,
    pub started_unix: u64,
    pub finished_unix: Option<u64>,
    pub build_seconds: Option<f64>,
    pub total_seconds: Option<f64>,
}

/// One value of a deployment's env.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvValue {
    pub value: String,
    #[serde(default)]
    pub secret: bool,
}

/// An env entry as the API shows it: a secret's value never.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvView {
    pub key: String,
    pub value: Option<String>,
    pub secret: bool,
}

pub struct Store {
    state: Option<StateDir>,
    pub deployments: BTreeMap<String, Deployment>,
    pub deploys: Vec<DeployRecord>,
    /// Without a state dir.
    env: BTreeMap<String, BTreeMap<String, EnvValue>>,
}

fn load<T: serde::de::DeserializeOwned + Default>(state: Option<&StateDir>, name: &str) -> T {
    match state.map(|s| s.load(name)) {
        Some(Ok(Some(v))) => v,
        Some(Err(e)) => {
            warn!(error = %e, "unreadable: starting without it");
            T::default()
        }
        _ => T::default(),
    }
}

impl Store {
    pub fn open(state: Option<StateDir>) -> Store {
        let deployments = load(state.as_ref(), DEPLOYMENTS);
        let mut deploys: Vec<DeployRecord> = load(state.as_ref(), DEPLOYS);
        for r in deploys.iter_mut().filter(|r| !r.status.is_final()) {
            let was = r.status;
            r.status = Status::Failed;
            r.reason = Some(format!("berth stopped while the deploy was {was}"));
        }
        Store {
            state,
            deployments,
            deploys,
            env: BTreeMap::new(),
        }
    }

    fn save<T: Serialize>(&self, name: &str, value: &T) {
        if let Some(s) = &self.state {
            if let Err(e) = s.save(name, value) {
                warn!(error = %e, "could not be saved");
            }
        }
    }

    pub fn save_deployments(&self) {
        self.save(DEPLOYMENTS, &self.deployments);
    }

    pub fn record(&mut self, r: DeployRecord) {
        match self.deploys.iter_mut().find(|x| x.id == r.id) {
            Some(x) => *x = r,
            None => self.deploys.push(r),
        }
        let excess = self.deploys.len().saturating_sub(KEEP);
        self.deploys.drain(..excess);
        self.save(DEPLOYS, &self.deploys);
    }

    pub fn history(&self, project: &str) -> Vec<DeployRecord> {
        self.deploys
            .iter()
            .filter(|r| r.project == project)
            .cloned()
            .collect()
    }

    fn env_file(name: &str) -> String {
        format!("env/{name}.json")
    }

    /// The deployment's env (secrets included: for the deploy only).
    pub fn env(&self, name: &str) -> BTreeMap<String, EnvValue> {
        match &self.state {
            Some(_) => load(self.state.as_ref(), &Store::env_file(name)),
            None => self.env.get(name).cloned().unwrap_or_default(),
        }
    }

    fn put_env(&mut self, name: &str, env: BTreeMap<String, EnvValue>) -> Result<(), String> {
        match &self.state {
            Some(s) => s.save(&Store::env_file(name), &env),
            None => {
                self.env.insert(name.to_string(), env);
                Ok(())
            }
        }
    }

    pub fn set_env(&mut self, name: &str, key: &str, value: EnvValue) -> Result<(), String> {
        let mut env = self.env(name);
        env.insert(key.to_string(), value);
        self.put_env(name, env)
    }

    /// `false`: there was no such key.
    pub fn unset_env(&mut self, name: &str, key: &str) -> Result<bool, String> {
        let mut env = self.env(name);
        let had = env.remove(key).is_some();
        if had {
            self.put_env(name, env)?;
        }
        Ok(had)
    }

    pub fn env_view(&self, name: &str) -> Vec<EnvView> {
        self.env(name)
            .into_iter()
            .map(|(key, v)| EnvView {
                key,
                value: (!v.secret).then_some(v.value),
                secret: v.secret,
            })
            .collect()
    }

    /// Forgets a deployment (after `down`): its record and webhook secret
    /// go; its env and history stay, for the next deploy of that name.
    pub fn forget(&mut self, name: &str) {
        if self.deployments.remove(name).is_some() {
            self.save_deployments();
        }
    }
}

/// `KEY` as an env name: what a shell and compose accept.
pub fn valid_env_key(key: &str) -> Result<(), String> {
    let mut chars = key.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic());
    if first_ok && chars.all(|c| c == '_' || c.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(format!(
            "env key {key:?}: use letters, digits and _, not starting with a digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_kept_for_the_deploy_and_never_shown() {
        let dir = std::env::temp_dir().join(format!("berth-envstore-{}", std::process::id()));
        let mut st = Store::open(Some(StateDir::open(&dir).unwrap()));
        let v = |value: &str, secret| EnvValue {
            value: value.into(),
            secret,
        };
        st.set_env("blog", "MODE", v("prod", false)).unwrap();
        st.set_env("blog", "DB_PASS", v("hunter2", true)).unwrap();
        assert_eq!(st.env("blog")["DB_PASS"].value, "hunter2");
        let view = st.env_view("blog");
        assert_eq!(
            view,
            vec![
                EnvView {
                    key: "DB_PASS".into(),
                    value: None,
                    secret: true
                },
                EnvView {
                    key: "MODE".into(),
                    value: Some("prod".into()),
                    secret: false
                },
            ]
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("env/blog.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "env files are for berth's user only");
        assert!(st.unset_env("blog", "MODE").unwrap());
        assert!(!st.unset_env("blog", "MODE").unwrap());
        st.forget("blog");
        assert_eq!(st.env("blog").len(), 1, "down keeps the env");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn env_keys() {
        for (k, ok) in [
            ("A", true),
            ("_x1", true),
            ("1A", false),
            ("A-B", false),
            ("", false),
        ] {
            assert_eq!(valid_env_key(k).is_ok(), ok, "{k}");
        }
    }
}
