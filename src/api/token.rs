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
    admin
        .token_file
        .clone()
        .unwrap_or_else(|| crate::state::default_dir().join("admin.token"))
}

/// The shortest token berth accepts (as `admin.token` does).
pub const MIN_TOKEN: usize = 16;

/// Where the server's token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// `$BERTH_TOKEN` or `admin.token`: someone chose it.
    Chosen,
    /// The token file, as generated at an earlier start.
    File,
    /// Generated now, into the token file.
    Generated,
}

/// The token the server requires, and where it came from. A token file that
/// cannot be read, or holds a token shorter than [`MIN_TOKEN`], is an error
/// naming the file: it is never replaced silently.
pub fn server_token(admin: &AdminConfig) -> Result<(String, TokenSource), String> {
    if let Some(t) = env_token() {
        if t.len() < MIN_TOKEN {
            return Err(format!(
                "BERTH_TOKEN: {} characters; at least {MIN_TOKEN}",
                t.len()
            ));
        }
        return Ok((t, TokenSource::Chosen));
    }
    if let Some(t) = &admin.token {
        return Ok((t.clone(), TokenSource::Chosen));
    }
    let file = token_file(admin);
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            let t = text.trim();
            if t.len() < MIN_TOKEN {
                return Err(format!(
                    "admin.token_file {}: holds a token of {} characters; at least {MIN_TOKEN} (delete the file to have one generated)",
                    file.display(),
                    t.len()
                ));
            }
            return Ok((t.to_string(), TokenSource::File));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(format!(
                "admin.token_file {}: cannot read: {e}",
                file.display()
            ))
        }
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
    Ok((token, TokenSource::Generated))
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
        Some(given) => matches(given.trim(), token),
        None => false,
    }
}

/// Whether `given` is the token, in constant time (the login form's check).
pub fn matches(given: &str, token: &str) -> bool {
    !given.is_empty() && bool::from(given.as_bytes().ct_eq(token.as_bytes()))
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
            ..crate::config::Config::default().admin
        };
        let (t1, source) = server_token(&admin).unwrap();
        assert_eq!(source, TokenSource::Generated);
        assert_eq!(t1.len(), 64);
        let mode = std::fs::metadata(token_file(&admin))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            server_token(&admin).unwrap(),
            (t1.clone(), TokenSource::File),
            "read back, not regenerated"
        );
        assert_eq!(client_token(&admin), Some(t1));
        // A token too short, or none at all, in the file: an error naming
        // it, and the file is left as it is.
        for bad in ["x", "   \n"] {
            std::fs::write(token_file(&admin), bad).unwrap();
            let e = server_token(&admin).unwrap_err();
            assert!(
                e.contains("admin.token.") || e.contains("admin.token_file"),
                "{e}"
            );
            assert!(e.contains("at least 16"), "{e}");
            assert_eq!(std::fs::read_to_string(token_file(&admin)).unwrap(), bad);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
