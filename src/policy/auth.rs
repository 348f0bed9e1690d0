//! Basic auth against bcrypt or argon2 hashes (`htpasswd -nB` makes the
//! bcrypt ones). A hash is slow on purpose (bcrypt cost 10 ≈ 50 ms), so
//! credentials that passed are remembered (as a SHA-256 of user, password
//! and hash, never the password) and later requests skip the hash; checks
//! that must hash run off the proxy's threads, a few at a time.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http::HeaderValue;
use tokio::sync::Semaphore;

/// Credentials remembered per route; all are forgotten when it is full.
const REMEMBERED: usize = 1024;
/// Hash checks running at once, every route together.
static HASHING: Semaphore = Semaphore::const_new(4);

/// Whether `hash` is a bcrypt or argon2 hash berth can check.
pub fn check_hash(hash: &str) -> Result<(), String> {
    if hash.starts_with("$2a$")
        || hash.starts_with("$2b$")
        || hash.starts_with("$2x$")
        || hash.starts_with("$2y$")
    {
        return hash
            .parse::<bcrypt::HashParts>()
            .map(|_| ())
            .map_err(|e| format!("not a valid bcrypt hash ({e})"));
    }
    if hash.starts_with("$argon2") {
        return argon2::password_hash::phc::PasswordHash::new(hash)
            .map(|_| ())
            .map_err(|e| format!("not a valid argon2 hash ({e})"));
    }
    if hash.starts_with("$apr1$") || hash.starts_with("{SHA}") || hash.starts_with("$1$") {
        return Err("MD5 and SHA-1 hashes are refused: use bcrypt (htpasswd -nB user)".into());
    }
    Err("not a bcrypt or argon2 hash (plain passwords are refused): make one with htpasswd -nB user".into())
}

/// What a request's `Authorization` header gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// 401 with `WWW-Authenticate`.
    Challenge,
}

#[derive(Debug)]
pub struct Basic {
    users: Arc<Vec<(String, String)>>,
    /// `WWW-Authenticate` of a 401.
    pub challenge: HeaderValue,
    remembered: Arc<Mutex<HashSet<[u8; 32]>>>,
}

impl Basic {
    pub fn new(users: Vec<(String, String)>, realm: Option<&str>) -> Basic {
        let realm = realm.unwrap_or("berth");
        let challenge =
            HeaderValue::from_str(&format!("Basic realm=\"{realm}\", charset=\"UTF-8\""))
                .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"berth\""));
        Basic {
            users: Arc::new(users),
            challenge,
            remembered: Arc::default(),
        }
    }

    /// Checks an `Authorization` header value (or its absence).
    pub async fn verify(&self, header: Option<&[u8]>) -> Verdict {
        let Some((user, password)) = header.and_then(decode) else {
            return Verdict::Challenge;
        };
        let Some(hash) = self
            .users
            .iter()
            .find(|(u, _)| *u == user)
            .map(|(_, h)| h.clone())
        else {
            // As long as a known user's check takes, so that the time of a
            // 401 does not tell which names exist.
            let any = self.users[0].1.clone();
            let _ = hash_check(password, any).await;
            return Verdict::Challenge;
        };
        let key = fingerprint(&user, &password, &hash);
        if self.is_remembered(&key) {
            return Verdict::Pass;
        }
        if !hash_check(password, hash).await {
            return Verdict::Challenge;
        }
        let mut remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        if remembered.len() >= REMEMBERED {
            remembered.clear();
        }
        remembered.insert(key);
        Verdict::Pass
    }

    fn is_remembered(&self, key: &[u8; 32]) -> bool {
        let remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        remembered.contains(key)
    }

    pub fn remembered(&self) -> usize {
        self.remembered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

/// `Basic base64(user:password)` → user and password.
pub fn decode(header: &[u8]) -> Option<(String, String)> {
    let header = std::str::from_utf8(header).ok()?.trim();
    let (scheme, token) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn fingerprint(user: &str, password: &str, hash: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [user, password, hash] {
        ctx.update(&(part.len() as u64).to_le_bytes());
        ctx.update(part.as_bytes());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The slow hash check, on a blocking thread, a few at a time.
async fn hash_check(password: String, hash: String) -> bool {
    let Ok(_permit) = HASHING.acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || matches_hash(&password, &hash))
        .await
        .unwrap_or(false)
}

/// Whether `password` matches `hash` (bcrypt or argon2).
pub fn matches_hash(password: &str, hash: &str) -> bool {
    if hash.starts_with("$argon2") {
        use argon2::password_hash::PasswordVerifier;
        return argon2::Argon2::default()
            .verify_password(password.as_bytes(), hash)
            .is_ok();
    }
    bcrypt::verify(password, hash).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> Vec<u8> {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {token}").into_bytes()
    }

    #[test]
    fn hashes_berth_can_check_and_those_it_refuses() {
        let bcrypt = bcrypt::hash("secret", 4).unwrap();
        assert_eq!(check_hash(&bcrypt), Ok(()));
        // As `htpasswd -nbB alice secret` wrote it.
        let htpasswd = "$2y$05$pQid562aaK.6oz2XeQEu4eYNpBIaQFBBTC5nmE4UBiAYQCwXSqlGi";
        assert_eq!(check_hash(htpasswd), Ok(()));
        assert!(matches_hash("secret", htpasswd));
        assert!(!matches_hash("Secret", htpasswd));
        use argon2::password_hash::PasswordHasher;
        let argon = argon2::Argon2::default()
            .hash_password(b"secret")
            .unwrap()
            .to_string();
        assert!(
            argon.starts_with("$argon2id$") && argon.contains(','),
            "{argon}"
        );
        assert_eq!(check_hash(&argon), Ok(()), "{:?}", check_hash(&argon));
        assert!(matches_hash("secret", &argon));
        assert!(!matches_hash("secreT", &argon));
        for (bad, word) in [
            ("secret", "plain passwords"),
            ("$apr1$abc$def", "MD5"),
            ("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA-1"),
            ("$2y$05$short", "not a valid bcrypt"),
            ("$argon2id$v=19$broken", "not a valid argon2"),
        ] {
            let err = check_hash(bad).unwrap_err();
            assert!(err.contains(word), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn passes_remembers_and_challenges() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let basic = Basic::new(vec![("alice".into(), hash)], Some("team"));
        assert_eq!(
            basic.challenge.to_str().unwrap(),
            "Basic realm=\"team\", charset=\"UTF-8\""
        );
        assert_eq!(basic.verify(None).await, Verdict::Challenge);
        assert_eq!(basic.verify(Some(b"Bearer x")).await, Verdict::Challenge);
        assert_eq!(basic.verify(Some(b"Basic !!!")).await, Verdict::Challenge);
        let wrong = header("alice", "nope");
        assert_eq!(basic.verify(Some(&wrong)).await, Verdict::Challenge);
        assert_eq!(basic.remembered(), 0, "a wrong password is not remembered");
        let nobody = header("bob", "s3cret");
        assert_eq!(basic.verify(Some(&nobody)).await, Verdict::Challenge);
        let right = header("alice", "s3cret");
        assert_eq!(basic.verify(Some(&right)).await, Verdict::Pass);
        assert_eq!(basic.remembered(), 1);
        assert_eq!(basic.verify(Some(&right)).await, Verdict::Pass);
        assert_eq!(basic.remembered(), 1);
        // A password with a colon: only the first one splits.
        let hash = bcrypt::hash("a:b", 4).unwrap();
        let basic = Basic::new(vec![("carol".into(), hash)], None);
        let colon = header("carol", "a:b");
        assert_eq!(basic.verify(Some(&colon)).await, Verdict::Pass);
    }
}
