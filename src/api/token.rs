//! The admin API's bearer token: from the config, $BERTH_TOKEN, or generated
//! once into a 0600 file that the CLI reads, so the API is never open to
//! other local users, not even with the default config.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

use crate::config::AdminConfig;
use crate::private::write_private;

/// Where the generated token is kept: `admin.token_file`, else
/// `$XDG_STATE_HOME/berth/admin.token`, else `~/.local/state/berth/admin.token`,
/// else `/var/lib/berth/admin.token`.
pub fn token_file(admin: &AdminConfig) -> PathBuf {
    admin.token_file.clone().unwrap_or_else(|| {
        let base = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(|| PathBuf::from("/var/lib"));
        base.join("berth").join("admin.token")
    })
}

/// The token the server requires. `generated` is false when it came from the
/// config or the environment.
pub fn server_token(admin: &AdminConfig) -> Result<(String, bool), String> {
    if let Some(t) = env_token() {
        return Ok((t, false));
    }
    if let Some(t) = &admin.token {
        return Ok((t.clone(), false));
    }
    let file = token_file(admin);
    if let Some(t) = read_token_file(&file) {
        return Ok((t, true));
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("cannot generate an admin token: {e}"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(dir) = file.parent() {
        // Only berth's user may list the state directory.
        let _ = std::fs::create_dir_all(dir);
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    write_private(&file, token.as_bytes())
        .map_err(|e| format!("admin.token_file {}: cannot write: {e}", file.display()))?;
    Ok((token, true))
}

/// The token a client sends: $BERTH_TOKEN, the config's, or the file's.
pub fn client_token(admin: &AdminConfig) -> Option<String> {
    env_token()
        .or_else(|| admin.token.clone())
        .or_else(|| read_token_file(&token_file(admin)))
}

fn env_token() -> Option<String> {
    std::env::var("BERTH_TOKEN")
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

fn read_token_file(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// Compares an `Authorization` header value with the token in constant time.
pub fn authorized(header: Option<&str>, token: &str) -> bool {
    match header.and_then(|h| h.strip_prefix("Bearer ")) {
        Some(given) => given.trim().as_bytes().ct_eq(token.as_bytes()).into(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_check() {
        assert!(authorized(Some("Bearer abc"), "abc"));
        assert!(!authorized(Some("Bearer abd"), "abc"));
        assert!(!authorized(Some("Bearer ab"), "abc"));
        assert!(!authorized(Some("abc"), "abc"));
        assert!(!authorized(None, "abc"));
    }

    #[test]
    fn generated_token_is_private_and_stable() {
        let dir = std::env::temp_dir().join(format!("berth-token-test-{}", std::process::id()));
        let admin = AdminConfig {
            listen: None,
            token: None,
            token_file: Some(dir.join("admin.token")),
        };
        let (t1, generated) = server_token(&admin).unwrap();
        assert!(generated);
        assert_eq!(t1.len(), 64);
        let mode = std::fs::metadata(token_file(&admin))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            server_token(&admin).unwrap().0,
            t1,
            "read back, not regenerated"
        );
        assert_eq!(client_token(&admin), Some(t1));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
