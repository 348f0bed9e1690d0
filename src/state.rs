//! berth's state directory: what must survive a restart or a crash, besides
//! what the engine itself holds (the last good labels of each service, the
//! history of rollouts, scale runs and restarts, the run in progress, drains
//! and the replica counts asked for). One JSON file per kind, written
//! atomically and readable only by berth's user; the engine stays the source
//! of truth for what runs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::private::write_private;

/// The last good labels per service (`project/service` → `berth.*` labels).
pub const LABELS: &str = "labels.json";
/// Rollouts, scale runs and restarts, oldest first.
pub const HISTORY: &str = "history.json";
/// The rollout, scale run or restart in progress, rewritten before each of
/// its steps and removed when it ends: a berth killed mid-run finds it at
/// its next start (`deploy::plan::Operation`).
pub const OPERATION: &str = "operation.json";
/// Drains in force: container id → the run (`started_at`) each is for.
pub const DRAINS: &str = "drains.json";
/// The replica count `berth scale` last reached, per service.
pub const REPLICAS: &str = "replicas.json";

/// `$XDG_STATE_HOME/berth`, else `~/.local/state/berth`, else
/// `/var/lib/berth`: where state goes without `state_dir` (the generated
/// admin token lives there too).
pub fn default_dir() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/var/lib"))
        .join("berth")
}

#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// The directory (created, mode 0700).
    pub fn open(dir: &Path) -> Result<StateDir, String> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir)
            .and_then(|_| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| format!("state_dir {}: {e}", dir.display()))?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// What was saved under `name`; `None` when nothing was. A file that
    /// does not parse is an error naming it (the caller decides whether to
    /// start without it).
    pub fn load<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, String> {
        let path = self.path(name);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Saves `value` under `name`: a whole file or the previous one, never
    /// half of one.
    pub fn save<T: Serialize>(&self, name: &str, value: &T) -> Result<(), String> {
        let path = self.path(name);
        let json = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
        write_private(&path, &json).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Forgets what was saved under `name` (nothing saved is fine).
    pub fn remove(&self, name: &str) -> Result<(), String> {
        let path = self.path(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("{}: {e}", path.display()))
            }
            _ => Ok(()),
        }
    }
}

/// The world's drains (container id → run) across restarts of berth, for
/// the Docker watcher: the saved ones join the world once the engine was
/// listed (each is for one run, so one whose container restarted or went
/// away is dropped by the world's pruning), and the set is saved whenever it
/// changes after that.
pub struct Drains {
    state: Option<StateDir>,
    /// Saved by the last berth, until the first list.
    restore: Option<HashMap<String, String>>,
    saved: HashMap<String, String>,
}

impl Drains {
    pub fn open(state: Option<&StateDir>) -> Drains {
        let restore = match state.map(|s| s.load(DRAINS)) {
            Some(Ok(Some(d))) => Some(d),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "saved drains unreadable: starting without them");
                Some(HashMap::new())
            }
            _ => Some(HashMap::new()),
        };
        Drains {
            state: state.cloned(),
            restore,
            saved: HashMap::new(),
        }
    }

    /// After a list of the engine: the first time, the saved drains join
    /// `drains` (one asked for since stays as it is).
    pub fn restore(&mut self, drains: &mut HashMap<String, String>) {
        let Some(saved) = self.restore.take() else {
            return;
        };
        if !saved.is_empty() {
            tracing::info!(
                drains = saved.len(),
                "restoring the drains in force before the restart"
            );
        }
        for (id, run) in saved {
            drains.entry(id).or_insert(run);
        }
    }

    /// After each change of the world: saves `drains` when it differs from
    /// what was saved (never before the saved ones were restored).
    pub fn save(&mut self, drains: &HashMap<String, String>) {
        if self.restore.is_some() || *drains == self.saved {
            return;
        }
        self.saved = drains.clone();
        if let Some(state) = &self.state {
            if let Err(e) = state.save(DRAINS, drains) {
                tracing::warn!(error = %e, "the drains could not be saved");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn saved_state_loads_back_and_a_corrupt_file_is_named() {
        let dir = std::env::temp_dir().join(format!("berth-state-test-{}", std::process::id()));
        let st = StateDir::open(&dir).unwrap();
        assert_eq!(st.load::<BTreeMap<String, u32>>("x.json"), Ok(None));
        let v: BTreeMap<String, u32> = [("a".to_string(), 1)].into();
        st.save("x.json", &v).unwrap();
        assert_eq!(st.load("x.json"), Ok(Some(v)));
        std::fs::write(st.path("x.json"), "{not json").unwrap();
        let e = st.load::<BTreeMap<String, u32>>("x.json").unwrap_err();
        assert!(e.contains("x.json"), "{e}");
        st.remove("x.json").unwrap();
        st.remove("x.json").unwrap();
        assert_eq!(st.load::<BTreeMap<String, u32>>("x.json"), Ok(None));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn drains_come_back_after_the_first_list_and_are_saved_when_they_change() {
        let dir = std::env::temp_dir().join(format!("berth-drains-test-{}", std::process::id()));
        let st = StateDir::open(&dir).unwrap();
        let map = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        st.save(DRAINS, &map(&[("a", "run1"), ("b", "run1")]))
            .unwrap();
        let mut drains = Drains::open(Some(&st));
        let mut world = HashMap::new();
        drains.save(&world);
        assert_eq!(
            st.load(DRAINS),
            Ok(Some(map(&[("a", "run1"), ("b", "run1")]))),
            "nothing is saved before the saved drains are restored"
        );
        world.insert("b".to_string(), "run2".to_string());
        drains.restore(&mut world);
        assert_eq!(
            world,
            map(&[("a", "run1"), ("b", "run2")]),
            "a drain asked for since wins"
        );
        drains.restore(&mut world);
        world.remove("a");
        drains.save(&world);
        assert_eq!(st.load(DRAINS), Ok(Some(map(&[("b", "run2")]))));
        std::fs::remove_file(st.path(DRAINS)).unwrap();
        drains.save(&world);
        assert_eq!(
            st.load::<HashMap<String, String>>(DRAINS),
            Ok(None),
            "unchanged: not written again"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
