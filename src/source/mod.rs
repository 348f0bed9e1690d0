//! Where a deployment's compose file comes from: the host, or a git repository.
//!
//! - this file: the [`SourceSpec`] a deploy request names, its validation
//!   (pure), and finding the compose file inside a checkout;
//! - [`git`]: the `git` CLI fetching a repository into berth's state dir;
//! - [`webhook`]: a push webhook's signature and payload → what to redeploy. Pure.

pub mod git;
pub mod webhook;

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The compose file names looked for when a git source names none, in order.
pub const COMPOSE_FILE_NAMES: [&str; 4] = [
    "compose.yaml",
    "docker-compose.yml",
    "compose.yml",
    "docker-compose.yaml",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceSpec {
    /// A compose file on berth's host (absolute path).
    File { path: PathBuf },
    /// A git repository: `branch` (None = the remote's default branch),
    /// `path` = sub directory holding the compose file, `file` = compose file
    /// name relative to it (default: the first of [`COMPOSE_FILE_NAMES`] that
    /// exists).
    Git {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<String>,
    },
}

impl SourceSpec {
    /// Checks every field; the error names the key and its value.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            SourceSpec::File { path } => {
                if path.is_absolute() {
                    Ok(())
                } else {
                    Err(format!(
                        "source.path {}: must be an absolute path",
                        path.display()
                    ))
                }
            }
            SourceSpec::Git {
                url,
                branch,
                path,
                file,
            } => {
                validate_url(url)?;
                if let Some(b) = branch {
                    validate_branch(b)?;
                }
                if let Some(p) = path {
                    validate_relative("source.path", p)?;
                }
                if let Some(f) = file {
                    validate_relative("source.file", f)?;
                }
                Ok(())
            }
        }
    }
}

/// Accepts https://, http://, ssh://, file://, `user@host:path` and absolute
/// local paths. Everything else is refused, notably a leading `-` (git would
/// read it as an option) and `transport::address` remote helpers such as
/// `ext::`, which run arbitrary commands.
pub fn validate_url(url: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("source.url {}: {why}", redact_url(url)));
    if url.is_empty() {
        return bad("must not be empty");
    }
    if url.starts_with('-') {
        return bad("must not start with '-'");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("must not contain spaces or control characters");
    }
    if let Some((helper, _)) = url.split_once("::") {
        if !helper.contains('/') {
            return bad("remote helper URLs (transport::address) are not allowed");
        }
    }
    for scheme in ["https://", "http://", "ssh://", "file://"] {
        if let Some(rest) = strip_prefix_ignore_case(url, scheme) {
            if rest.is_empty() || rest == "/" {
                return bad("names no repository");
            }
            return Ok(());
        }
    }
    if url.starts_with('/') || is_scp_like(url) {
        return Ok(());
    }
    bad("not a git URL (expected https://, http://, ssh://, file://, user@host:path or an absolute path)")
}

/// A conservative subset of `git check-ref-format --branch`: anything git
/// would refuse is refused, plus a few names it would take but that are
/// surely mistakes (`HEAD`).
pub fn validate_branch(branch: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("source.branch {branch:?}: {why}"));
    if branch.is_empty() {
        return bad("must not be empty");
    }
    if branch.starts_with('-') {
        return bad("must not start with '-'");
    }
    if branch == "HEAD" || branch == "@" {
        return bad("is not a branch name");
    }
    if let Some(c) = branch
        .chars()
        .find(|c| c.is_control() || " ~^:?*[\\".contains(*c))
    {
        return bad(&format!("must not contain {c:?}"));
    }
    if branch.contains("..") || branch.contains("@{") {
        return bad("must not contain '..' or '@{'");
    }
    if branch.ends_with('/') || branch.ends_with('.') {
        return bad("must not end with '/' or '.'");
    }
    for part in branch.split('/') {
        if part.is_empty() {
            return bad("must not start with '/' or contain '//'");
        }
        if part.starts_with('.') || part.ends_with(".lock") {
            return bad("no component may start with '.' or end with '.lock'");
        }
    }
    Ok(())
}

/// A path inside the checkout: relative, no `..` (which could leave it).
fn validate_relative(key: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{key} {value:?}: must not be empty"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!(
            "{key} {value:?}: must not contain control characters"
        ));
    }
    for c in Path::new(value).components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!("{key} {value:?}: must not contain '..'"));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("{key} {value:?}: must be relative"));
            }
        }
    }
    Ok(())
}

/// The URL with its password (or an https token given as the user name)
/// replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match secret_span(url) {
        Some((start, end)) => format!("{}***{}", &url[..start], &url[end..]),
        None => url.to_string(),
    }
}

/// `text` (say, git's stderr) with `url`'s secret masked wherever it shows,
/// with the delimiters around it so that a short password does not mask
/// unrelated text.
pub(crate) fn redact_text(text: &str, url: &str) -> String {
    let Some((start, end)) = secret_span(url) else {
        return text.to_string();
    };
    let secret = &url[start..end];
    let lead = &url[start - 1..start]; // ':' before a password, '/' before a token
    text.replace(url, &redact_url(url))
        .replace(&format!("{lead}{secret}@"), &format!("{lead}***@"))
}

/// Where in `scheme://userinfo@host/…` the part that must not be shown lies:
/// the password, or for http(s) a lone user name (commonly an access token).
/// An ssh or scp-like user (`git@`) is not secret.
fn secret_span(url: &str) -> Option<(usize, usize)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let (userinfo, _host) = authority.rsplit_once('@')?;
    let start = scheme.len() + 3;
    match userinfo.split_once(':') {
        Some((user, password)) if !password.is_empty() => {
            Some((start + user.len() + 1, start + userinfo.len()))
        }
        Some(_) => None,
        None if !userinfo.is_empty()
            && (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) =>
        {
            Some((start, start + userinfo.len()))
        }
        None => None,
    }
}

/// `user@host:path`, git's scp-like syntax: a user and a host before the
/// first ':', no '/' before it (else it is a local path), a path after it.
fn is_scp_like(url: &str) -> bool {
    let Some((before, path)) = url.split_once(':') else {
        return false;
    };
    let Some((user, host)) = before.split_once('@') else {
        return false;
    };
    let word = |s: &str, extra: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
    };
    word(user, "._-") && word(host, ".-[]") && !path.is_empty()
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// The compose file of a checkout: `dir/path/file`, or the first of
/// [`COMPOSE_FILE_NAMES`] found in `dir/path`. The result must stay inside
/// `dir` once symlinks are resolved: a parse error quotes the file, and the
/// repository must not be able to make berth quote a file of its host.
pub fn find_compose_file(
    dir: &Path,
    path: Option<&str>,
    file: Option<&str>,
) -> Result<PathBuf, String> {
    if let Some(p) = path {
        validate_relative("source.path", p)?;
    }
    if let Some(f) = file {
        validate_relative("source.file", f)?;
    }
    let sub = dir.join(path.unwrap_or("."));
    let candidate = match file {
        Some(f) => sub.join(f),
        None => COMPOSE_FILE_NAMES
            .iter()
            .map(|name| sub.join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                format!(
                    "source.path {}: none of {} found in the repository",
                    path.unwrap_or("."),
                    COMPOSE_FILE_NAMES.join(", ")
                )
            })?,
    };
    let shown = candidate.strip_prefix(dir).unwrap_or(&candidate).display();
    let real = candidate
        .canonicalize()
        .map_err(|e| format!("source.file {shown}: {e}"))?;
    let root = dir
        .canonicalize()
        .map_err(|e| format!("checkout {}: {e}", dir.display()))?;
    if !real.starts_with(&root) || !real.is_file() {
        return Err(format!(
            "source.file {shown}: not a file inside the repository"
        ));
    }
    Ok(real)
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
