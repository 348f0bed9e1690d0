//! A push webhook, from its headers and body to what berth should redeploy.
//! The API hands in the secret it stored for the project, the signature
//! header and the raw body; it gets back a [`Hook`] to act on. Pure.
//!
//! GitHub, Gitea and Forgejo sign the body (`X-Hub-Signature-256`); GitLab
//! sends the secret itself (`X-Gitlab-Token`). All share `ref` and `after`.

use ring::hmac;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// A new webhook secret: 32 random bytes, hex-encoded.
pub fn new_secret() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("cannot generate a webhook secret: {e}"))?;
    Ok(hex(&bytes))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no signature header")]
    Missing,
    /// What is wrong with the header, never the header itself: it is sent
    /// by anyone and may be long.
    #[error("signature header {0}")]
    Malformed(String),
    #[error("signature does not match the body")]
    Mismatch,
}

/// Checks GitHub's `X-Hub-Signature-256: sha256=<hex of HMAC-SHA256(secret,
/// body)>` in constant time. An empty secret matches nothing: anyone could
/// sign with it.
pub fn verify_signature(
    secret: &str,
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let digits = header
        .strip_prefix("sha256=")
        .ok_or_else(|| SignatureError::Malformed("does not start with \"sha256=\"".into()))?;
    if digits.len() != 64 {
        return Err(SignatureError::Malformed(format!(
            "has {} characters after \"sha256=\", expected 64 hex digits",
            digits.len()
        )));
    }
    let tag = unhex(digits)
        .ok_or_else(|| SignatureError::Malformed("is not hex after \"sha256=\"".into()))?;
    if secret.is_empty() {
        return Err(SignatureError::Mismatch);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::verify(&key, body, &tag).map_err(|_| SignatureError::Mismatch)
}

/// Checks GitLab's `X-Gitlab-Token`, the secret itself, in constant time.
pub fn verify_token(secret: &str, header: Option<&str>) -> Result<(), SignatureError> {
    let token = header.ok_or(SignatureError::Missing)?;
    if !secret.is_empty() && bool::from(secret.as_bytes().ct_eq(token.as_bytes())) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// What a webhook asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    /// GitHub checking the hook works: answer 200 "pong", deploy nothing.
    Ping,
    Push(Push),
}

/// A push, as much of it as a redeploy needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Push {
    /// `refs/heads/X` → X; a tag or other ref → None.
    pub branch: Option<String>,
    /// The commit the ref now points at; None when the ref was deleted.
    pub commit: Option<String>,
    pub deleted: bool,
    /// The repository's default branch, when the payload says (all three
    /// forges do): needed to tell whether a source without a branch moved.
    pub default_branch: Option<String>,
}

impl Push {
    /// Whether this push moves a source following `branch` (None: the
    /// default branch). A deleted branch redeploys nothing: the running
    /// project stays as it is.
    pub fn moves(&self, branch: Option<&str>) -> bool {
        let Some(pushed) = self.branch.as_deref() else {
            return false;
        };
        !self.deleted && branch.or(self.default_branch.as_deref()) == Some(pushed)
    }
}

/// The part of the forges' push payloads berth reads; the rest is ignored.
#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    after: Option<String>,
    /// GitLab: the commit a tag push points at (`after` is the tag object).
    checkout_sha: Option<String>,
    deleted: Option<bool>,
    repository: Option<Repository>,
    /// GitLab keeps the default branch here.
    project: Option<Repository>,
}

#[derive(Deserialize)]
struct Repository {
    default_branch: Option<String>,
}

/// The events that carry a push: GitHub/Gitea/Forgejo's `push` and GitLab's
/// `Push Hook`/`Tag Push Hook`. No header: the body alone decides.
const PUSH_EVENTS: [&str; 3] = ["push", "Push Hook", "Tag Push Hook"];

/// Reads a webhook given its event header (`X-GitHub-Event`, `X-Gitea-Event`
/// or `X-Gitlab-Event`) and body.
pub fn parse_push(event: Option<&str>, body: &[u8]) -> Result<Hook, String> {
    match event.map(str::trim) {
        Some("ping") => return Ok(Hook::Ping),
        Some(e) if !PUSH_EVENTS.contains(&e) => {
            return Err(format!("webhook event {:?}: not a push", shorten(e)));
        }
        _ => {}
    }
    let payload: Payload = serde_json::from_slice(body)
        .map_err(|e| format!("webhook body is not a JSON push payload: {e}"))?;
    let git_ref = payload
        .git_ref
        .ok_or("webhook body has no \"ref\": not a push payload")?;
    // A deletion sets `deleted` (GitHub) or moves the ref to the zero sha.
    let deleted = payload.deleted.unwrap_or(false) || payload.after.as_deref().is_some_and(is_zero);
    let commit = if deleted {
        None
    } else {
        let checkout = payload.checkout_sha.filter(|s| !is_zero(s));
        checkout.or(payload.after).map(sha).transpose()?
    };
    let default_branch = payload
        .repository
        .and_then(|r| r.default_branch)
        .or_else(|| payload.project.and_then(|p| p.default_branch));
    Ok(Hook::Push(Push {
        branch: git_ref
            .strip_prefix("refs/heads/")
            .filter(|b| !b.is_empty())
            .map(String::from),
        commit,
        deleted,
        default_branch,
    }))
}

/// A full commit sha (40 hex digits, or 64 in a sha256 repository), lower case.
fn sha(value: String) -> Result<String, String> {
    if matches!(value.len(), 40 | 64) && value.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(format!(
            "webhook \"after\" {:?}: not a commit sha",
            shorten(&value)
        ))
    }
}

fn is_zero(sha: &str) -> bool {
    !sha.is_empty() && sha.bytes().all(|b| b == b'0')
}

/// At most 64 characters of a value someone outside sent, for an error.
fn shorten(s: &str) -> &str {
    s.char_indices().nth(64).map_or(s, |(i, _)| &s[..i])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16);
    let pairs = s.as_bytes().chunks(2);
    pairs
        .map(|p| Some((digit(*p.first()?)? << 4 | digit(*p.get(1)?)?) as u8))
        .collect()
}

#[cfg(test)]
#[path = "webhook_tests.rs"]
mod tests;
