//! Dashboard logins: the admin token, given once in the login form, is
//! exchanged for a session cookie (random, `HttpOnly`, `SameSite=Strict`,
//! expiring). Each session has its own CSRF token that every request which
//! changes something must carry in `X-Berth-CSRF`. A session ends at its
//! expiry, at logout, or when the admin token changes (a reload): it is
//! bound to the token it was opened with.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::digest::{digest, SHA256};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::state::StateDir;

/// The cookie's name.
pub const COOKIE: &str = "berth_session";
/// The header that carries the session's CSRF token.
pub const CSRF_HEADER: &str = "x-berth-csrf";
/// Open sessions kept at most: the oldest goes first beyond it.
const MAX_SESSIONS: usize = 1000;
/// Where the open sessions are kept across restarts and upgrades of berth
/// (hashes of the cookies, never the cookies).
pub const SESSIONS: &str = "sessions.json";

/// A session as the request handlers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub csrf: String,
}

#[derive(Clone)]
struct Open {
    csrf: String,
    /// Unix seconds.
    expires: u64,
    /// SHA-256 of the admin token at login.
    token: [u8; 32],
}

/// A session as saved in the state dir.
#[derive(Serialize, Deserialize)]
struct Saved {
    /// SHA-256 of the cookie, hex.
    key: String,
    csrf: String,
    expires_unix: u64,
    /// SHA-256 of the admin token at login, hex.
    token: String,
}

/// The open sessions, by SHA-256 of the cookie value (what is kept, in
/// memory and in the state dir, cannot be replayed as a cookie). They
/// survive a restart or an upgrade of berth.
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<[u8; 32], Open>>,
    state: Option<StateDir>,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

/// 32 random bytes as hex.
pub fn random_hex() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a session: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Sessions {
    /// The sessions saved in `state` that have not expired (none without a
    /// state dir, or when the file is unreadable: then everyone logs in
    /// again, and that is said).
    pub fn load(state: Option<StateDir>) -> Sessions {
        let saved: Vec<Saved> = match state.as_ref().map(|s| s.load(SESSIONS)) {
            Some(Ok(Some(v))) => v,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "saved dashboard sessions unreadable: every browser logs in again");
                Vec::new()
            }
            _ => Vec::new(),
        };
        let now = now_unix();
        let open = saved
            .into_iter()
            .filter(|s| s.expires_unix > now)
            .filter_map(|s| {
                Some((
                    unhex(&s.key)?,
                    Open {
                        csrf: s.csrf,
                        expires: s.expires_unix,
                        token: unhex(&s.token)?,
                    },
                ))
            })
            .collect();
        Sessions {
            open: Mutex::new(open),
            state,
        }
    }

    fn save(&self, open: &HashMap<[u8; 32], Open>) {
        let Some(state) = &self.state else { return };
        let saved: Vec<Saved> = open
            .iter()
            .map(|(k, s)| Saved {
                key: hex(k),
                csrf: s.csrf.clone(),
                expires_unix: s.expires,
                token: hex(&s.token),
            })
            .collect();
        if let Err(e) = state.save(SESSIONS, &saved) {
            tracing::warn!(error = %e, "dashboard sessions could not be saved: a restart of berth ends them");
        }
    }

    /// Opens a session for a login with `token` (already checked): the
    /// cookie value to set, and the session.
    pub fn open(&self, token: &str, ttl: Duration) -> Result<(String, Session), String> {
        let cookie = random_hex()?;
        let csrf = random_hex()?;
        let now = now_unix();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|_, s| s.expires > now);
        if open.len() >= MAX_SESSIONS {
            if let Some(oldest) = open.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k) {
                open.remove(&oldest);
            }
        }
        open.insert(
            sha256(cookie.as_bytes()),
            Open {
                csrf: csrf.clone(),
                expires: now.saturating_add(ttl.as_secs()),
                token: sha256(token.as_bytes()),
            },
        );
        self.save(&open);
        Ok((cookie, Session { csrf }))
    }

    /// The session of a `Cookie` header, if it holds an open one made with
    /// the current `token`.
    pub fn find(&self, cookie_header: Option<&str>, token: &str) -> Option<Session> {
        let value = cookie_value(cookie_header?, COOKIE)?;
        let key = sha256(value.as_bytes());
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let s = open.get(&key)?;
        if s.expires <= now_unix() || !bool::from(s.token.ct_eq(&sha256(token.as_bytes()))) {
            open.remove(&key);
            self.save(&open);
            return None;
        }
        Some(Session {
            csrf: s.csrf.clone(),
        })
    }

    /// Logout: the session of this cookie ends.
    pub fn close(&self, cookie_header: Option<&str>) {
        if let Some(value) = cookie_header.and_then(|h| cookie_value(h, COOKIE)) {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            if open.remove(&sha256(value.as_bytes())).is_some() {
                self.save(&open);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.open.lock().unwrap().len()
    }
}

/// `name`'s value in a `Cookie` header (`a=1; b=2`).
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v.trim())
    })
}

/// The `Set-Cookie` value of a new session (`secure`: the page came over
/// TLS, so the browser must never send it in the clear).
pub fn set_cookie(value: &str, ttl: Duration, secure: bool) -> String {
    format!(
        "{COOKIE}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
        ttl.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    set_cookie("", Duration::ZERO, secure)
}

/// Whether a request's CSRF header matches the session's, in constant time.
pub fn csrf_ok(session: &Session, header: Option<&str>) -> bool {
    header.is_some_and(|h| bool::from(h.trim().as_bytes().ct_eq(session.csrf.as_bytes())))
}

/// Whether an `Origin` header (when the browser sent one) names the host
/// the request was sent to: a form or script on another site is refused even
/// before the cookie's SameSite is considered.
pub fn same_origin(origin: Option<&str>, host: Option<&str>) -> bool {
    match (origin, host) {
        (None, _) => true,
        (Some(o), Some(h)) => o
            .split_once("://")
            .is_some_and(|(scheme, rest)| matches!(scheme, "http" | "https") && rest == h),
        (Some(_), None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "t0123456789abcdef";

    #[test]
    fn a_session_is_found_by_its_cookie_and_bound_to_the_token() {
        let s = Sessions::default();
        let (cookie, session) = s.open(TOKEN, Duration::from_secs(60)).unwrap();
        assert_eq!(cookie.len(), 64);
        let header = format!("other=1; {COOKIE}={cookie}; x=y");
        assert_eq!(s.find(Some(&header), TOKEN), Some(session.clone()));
        assert_eq!(s.find(Some("berth_session=nope"), TOKEN), None);
        assert_eq!(s.find(None, TOKEN), None);
        // A new admin token ends it, for good.
        assert_eq!(s.find(Some(&header), "another-token-0123"), None);
        assert_eq!(s.find(Some(&header), TOKEN), None);
    }

    #[test]
    fn sessions_expire_close_and_stay_bounded() {
        let s = Sessions::default();
        let (cookie, _) = s.open(TOKEN, Duration::ZERO).unwrap();
        assert_eq!(s.find(Some(&format!("{COOKIE}={cookie}")), TOKEN), None);
        let (cookie, _) = s.open(TOKEN, Duration::from_secs(60)).unwrap();
        let header = format!("{COOKIE}={cookie}");
        s.close(Some(&header));
        assert_eq!(s.find(Some(&header), TOKEN), None);
        for _ in 0..MAX_SESSIONS + 5 {
            s.open(TOKEN, Duration::from_secs(60)).unwrap();
        }
        assert_eq!(s.len(), MAX_SESSIONS);
    }

    #[test]
    fn sessions_survive_a_restart_but_not_their_end() {
        let dir = std::env::temp_dir().join(format!("berth-sessions-{}", std::process::id()));
        let state = StateDir::open(&dir).unwrap();
        let s = Sessions::load(Some(state.clone()));
        let (kept, session) = s.open(TOKEN, Duration::from_secs(60)).unwrap();
        let (closed, _) = s.open(TOKEN, Duration::from_secs(60)).unwrap();
        s.close(Some(&format!("{COOKIE}={closed}")));
        let saved = std::fs::read_to_string(state.path(SESSIONS)).unwrap();
        assert!(!saved.contains(&kept), "the cookie itself is never written");
        let again = Sessions::load(Some(state.clone()));
        assert_eq!(
            again.find(Some(&format!("{COOKIE}={kept}")), TOKEN),
            Some(session)
        );
        assert_eq!(again.find(Some(&format!("{COOKIE}={closed}")), TOKEN), None);
        // A file that does not parse: everyone logs in again.
        std::fs::write(state.path(SESSIONS), "{").unwrap();
        assert_eq!(Sessions::load(Some(state)).len(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn csrf_and_origin_checks() {
        let session = Session {
            csrf: "abc123".into(),
        };
        assert!(csrf_ok(&session, Some("abc123")));
        assert!(!csrf_ok(&session, Some("abc124")));
        assert!(!csrf_ok(&session, Some("")));
        assert!(!csrf_ok(&session, None));
        assert!(same_origin(None, Some("127.0.0.1:8090")));
        assert!(same_origin(
            Some("http://127.0.0.1:8090"),
            Some("127.0.0.1:8090")
        ));
        assert!(!same_origin(
            Some("http://evil.example"),
            Some("127.0.0.1:8090")
        ));
        assert!(!same_origin(Some("null"), Some("127.0.0.1:8090")));
        assert!(!same_origin(Some("http://127.0.0.1:8090"), None));
    }

    #[test]
    fn cookie_flags() {
        let c = set_cookie("v", Duration::from_secs(3600), true);
        assert_eq!(
            c,
            "berth_session=v; Path=/; Max-Age=3600; HttpOnly; SameSite=Strict; Secure"
        );
        assert!(!clear_cookie(false).contains("Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
        assert_eq!(cookie_value("a=1; berth_session=xyz", COOKIE), Some("xyz"));
    }
}
