//! berth's state directory: what must survive a restart or a crash, besides
//! what the engine itself holds (the last good labels of each service, the
//! history of rollouts, scale runs and restarts). One JSON file per kind,
//! written atomically and readable only by berth's user; the engine stays the
//! source of truth for what runs.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::private::write_private;

/// The last good labels per service (`project/service` → `berth.*` labels).
pub const LABELS: &str = "labels.json";
/// Rollouts, scale runs and restarts, oldest first.
pub const HISTORY: &str = "history.json";

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
        std::fs::remove_dir_all(dir).unwrap();
    }
}
