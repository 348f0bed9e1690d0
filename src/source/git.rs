//! The `git` CLI as berth uses it: one shallow checkout per project under
//! berth's state dir, refreshed in place on each deploy or push webhook. The
//! URL and branch come from a validated [`super::SourceSpec`], the commit
//! from a webhook; the checkout goes to the deploy runner.
//!
//! Submodules are not fetched: a compose project needs its compose file and
//! build contexts, and following submodule URLs would let a repository make
//! berth contact hosts its owner did not name.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::{redact_text, redact_url, validate_branch, validate_url};

/// Longer than any sane shallow fetch; short enough that a hung server (or
/// an ssh prompt nobody answers) does not hold a deploy forever.
const TIMEOUT: Duration = Duration::from_secs(120);

/// How much of git's stderr an error carries: the cause is at its end.
const STDERR_LINES: usize = 5;

/// What [`fetch`] checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    /// The full sha of the commit checked out.
    pub commit: String,
    /// Its subject line.
    pub subject: String,
    /// The working tree.
    pub dir: PathBuf,
}

/// Brings `dir` to the tip of `branch` of `url` (None: the remote's default
/// branch), or to `commit` when given, with nothing else in the tree. `dir`
/// is created if needed; its parent serves as git's HOME. Callers must not
/// run two fetches into the same `dir` at once.
pub async fn fetch(
    url: &str,
    branch: Option<&str>,
    dir: &Path,
    commit: Option<&str>,
) -> Result<Checkout, String> {
    validate_url(url)?;
    if let Some(b) = branch {
        validate_branch(b)?;
    }
    if let Some(c) = commit {
        validate_commit(c)?;
    }
    let git = Git::new(url, branch, dir)?;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| format!("{}: cannot create {}: {e}", git.what, dir.display()))?;
    git.set_origin().await?;

    // A branch is asked for by its full ref so that a tag of the same name
    // cannot stand in for it.
    let refspec = match branch {
        Some(b) => format!("refs/heads/{b}"),
        None => "HEAD".to_string(),
    };
    let target = match commit {
        None => {
            git.run(&shallow_fetch(&refspec)).await?;
            git.resolve("FETCH_HEAD").await?
        }
        Some(sha) => git.fetch_commit(sha, &refspec).await?,
    };
    git.run(&["checkout", "--quiet", "--force", "--detach", &target])
        .await?;
    git.run(&["clean", "-ffdxq"]).await?;

    let out = git.run(&["log", "-1", "--format=%H%n%s", "HEAD"]).await?;
    let mut lines = out.lines();
    let commit = lines.next().unwrap_or_default().to_string();
    let subject = lines.next().unwrap_or_default().to_string();
    Ok(Checkout {
        commit,
        subject,
        dir: dir.to_path_buf(),
    })
}

/// The one commit `what` names, without its history or tags: all a deploy
/// needs, and the least to transfer and store.
fn shallow_fetch(what: &str) -> Vec<&str> {
    let flags = ["fetch", "--quiet", "--depth", "1", "--no-tags"];
    [&flags[..], &["--no-recurse-submodules", "origin", what]].concat()
}

/// A commit as a webhook or the CLI gives it: hex, short or full.
fn validate_commit(commit: &str) -> Result<(), String> {
    if (4..=64).contains(&commit.len()) && commit.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!(
            "commit {commit:?}: not a commit sha (4 to 64 hex digits)"
        ))
    }
}

/// One repository's git invocations, with what they are about for errors.
struct Git<'a> {
    url: &'a str,
    dir: &'a Path,
    home: &'a Path,
    /// "URL (branch B)", credentials masked: the start of every error.
    what: String,
}

impl<'a> Git<'a> {
    fn new(url: &'a str, branch: Option<&str>, dir: &'a Path) -> Result<Git<'a>, String> {
        let what = format!(
            "git {} (branch {})",
            redact_url(url),
            branch.unwrap_or("<default>")
        );
        let home = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .ok_or_else(|| format!("{what}: checkout dir {} has no parent", dir.display()))?;
        Ok(Git {
            url,
            dir,
            home,
            what,
        })
    }

    /// A new dir gets a repository; an existing one gets its remote pointed
    /// at `url` if the source changed since the last fetch.
    async fn set_origin(&self) -> Result<(), String> {
        if !self.dir.join(".git").is_dir() {
            self.run(&["init", "--quiet"]).await?;
        }
        match self.run(&["remote", "get-url", "origin"]).await {
            Ok(current) if current.trim() == self.url => Ok(()),
            Ok(_) => self
                .run(&["remote", "set-url", "origin", self.url])
                .await
                .map(drop),
            Err(_) => self
                .run(&["remote", "add", "origin", self.url])
                .await
                .map(drop),
        }
    }

    /// Fetches `sha` alone if the server allows it (file://, GitHub, GitLab,
    /// Gitea with protocol v2 do); else the whole branch, in which the commit
    /// must then be found. Returns the full sha.
    async fn fetch_commit(&self, sha: &str, refspec: &str) -> Result<String, String> {
        let direct = self.run(&shallow_fetch(sha)).await;
        if let Err(first) = direct {
            let mut args = vec!["fetch", "--quiet", "--no-tags", "--no-recurse-submodules"];
            // A plain fetch into a shallow repository stops at its shallow
            // boundary, so an older commit would stay out of reach.
            if self.run(&["rev-parse", "--is-shallow-repository"]).await? == "true" {
                args.push("--unshallow");
            }
            args.extend(["origin", refspec]);
            self.run(&args).await.map_err(|e| {
                if e == first {
                    return e;
                }
                // `first` starts with `what`, as `e` does: say it once.
                let first = first.strip_prefix(&self.what).unwrap_or(&first);
                format!("{e} (after fetching commit {sha} alone failed{first})")
            })?;
        }
        self.resolve(&format!("{sha}^{{commit}}"))
            .await
            .map_err(|_| format!("{}: commit {sha} not found", self.what))
    }

    /// The full sha `rev` names in the local repository.
    async fn resolve(&self, rev: &str) -> Result<String, String> {
        self.run(&["rev-parse", "--verify", "--quiet", rev]).await
    }

    /// Runs `git args…` in the checkout dir; its trimmed stdout, or an error
    /// with the tail of its stderr.
    async fn run(&self, args: &[&str]) -> Result<String, String> {
        let sub = args.first().copied().unwrap_or("");
        let mut cmd = Command::new("git");
        // Hooks of a fetched repository never run; the ext transport never
        // runs even if a URL slipped past validate_url.
        cmd.args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "protocol.ext.allow=never",
        ])
        .args(args)
        .current_dir(self.dir)
        // Neither the system's, the user's, nor a prompt: berth's fetches
        // behave the same on every host and never wait for a human.
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", self.home)
        .env("XDG_CONFIG_HOME", self.home)
        // Never fall back to a repository that encloses the state dir.
        .env("GIT_CEILING_DIRECTORIES", self.home)
        .env("LC_ALL", "C")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_OBJECT_DIRECTORY")
        .env_remove("GIT_COMMON_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group, so that a timeout also ends the ssh or
        // https helper git started.
        .process_group(0);
        if std::env::var_os("GIT_SSH_COMMAND").is_none() && std::env::var_os("GIT_SSH").is_none() {
            cmd.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("{}: cannot run git {sub}: {e}", self.what))?;
        let pid = child.id();
        let wait = child.wait_with_output();
        tokio::pin!(wait);
        let out = match tokio::time::timeout(TIMEOUT, &mut wait).await {
            Ok(out) => out.map_err(|e| format!("{}: git {sub}: {e}", self.what))?,
            Err(_) => {
                if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                    // SAFETY: kill(2) has no memory effects. The group is
                    // git's own (process_group(0)) and git is not reaped yet
                    // (`wait` is still alive), so its id cannot be reused.
                    unsafe {
                        libc::kill(-pid, libc::SIGKILL);
                    }
                }
                return Err(format!(
                    "{}: git {sub} timed out after {} s",
                    self.what,
                    TIMEOUT.as_secs()
                ));
            }
        };
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(STDERR_LINES)..].join(" | ");
        Err(format!(
            "{}: git {sub} failed ({}): {}",
            self.what,
            out.status,
            redact_text(&tail, self.url)
        ))
    }
}

#[cfg(test)]
#[path = "git_tests.rs"]
mod tests;
