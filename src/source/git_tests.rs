//! Against real repositories: a bare "remote" and a work clone that pushes
//! to it, made with the git CLI in a temp dir per test.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// A directory removed when the test ends, pass or fail.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("berth-git-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs git for the test's own setup, with an identity and no user config.
fn sh(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "berth test")
        .env("GIT_AUTHOR_EMAIL", "test@berth.invalid")
        .env("GIT_COMMITTER_NAME", "berth test")
        .env("GIT_COMMITTER_EMAIL", "test@berth.invalid")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare repository and a clone of it to commit and push from.
struct Remote {
    bare: PathBuf,
    work: PathBuf,
}

impl Remote {
    fn new(root: &Path, name: &str) -> Remote {
        let bare = root.join(format!("{name}.git"));
        let work = root.join(format!("{name}-work"));
        std::fs::create_dir_all(&bare).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        sh(
            &bare,
            &["init", "--quiet", "--bare", "--initial-branch=main"],
        );
        sh(&work, &["init", "--quiet", "--initial-branch=main"]);
        sh(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        Remote { bare, work }
    }

    fn url(&self) -> &str {
        self.bare.to_str().unwrap()
    }

    /// Commits `compose.yaml` with `content` and pushes it to `branch`.
    fn push(&self, branch: &str, content: &str, subject: &str) -> String {
        std::fs::write(self.work.join("compose.yaml"), content).unwrap();
        sh(&self.work, &["add", "-A"]);
        sh(&self.work, &["commit", "--quiet", "-m", subject]);
        sh(
            &self.work,
            &[
                "push",
                "--quiet",
                "origin",
                &format!("HEAD:refs/heads/{branch}"),
            ],
        );
        sh(&self.work, &["rev-parse", "HEAD"])
    }
}

fn compose(c: &Checkout) -> String {
    std::fs::read_to_string(c.dir.join("compose.yaml")).unwrap()
}

#[tokio::test]
async fn follows_the_branch_and_goes_back_to_a_commit() {
    let root = TempDir::new("follow");
    let remote = Remote::new(&root.0, "app");
    let dir = root.0.join("sources/app");
    let c1 = remote.push("main", "one\n", "first commit");

    let got = fetch(remote.url(), Some("main"), &dir, None).await.unwrap();
    assert_eq!(got.commit, c1);
    assert_eq!(got.subject, "first commit");
    assert_eq!(got.dir, dir);
    assert_eq!(compose(&got), "one\n");

    // Files left in the tree (by hand, or a build) do not survive a fetch.
    std::fs::write(dir.join("junk"), "x").unwrap();
    std::fs::write(dir.join("compose.yaml"), "edited\n").unwrap();
    let c2 = remote.push("main", "two\n", "second commit");
    let got = fetch(remote.url(), Some("main"), &dir, None).await.unwrap();
    assert_eq!(
        (got.commit.as_str(), got.subject.as_str()),
        (c2.as_str(), "second commit")
    );
    assert_eq!(compose(&got), "two\n");
    assert!(!dir.join("junk").exists());

    let got = fetch(remote.url(), Some("main"), &dir, Some(&c1))
        .await
        .unwrap();
    assert_eq!(got.commit, c1);
    assert_eq!(compose(&got), "one\n");

    // None: the remote's default branch.
    let got = fetch(remote.url(), None, &dir, None).await.unwrap();
    assert_eq!(got.commit, c2);
}

#[tokio::test]
async fn branches_are_told_apart() {
    let root = TempDir::new("branches");
    let remote = Remote::new(&root.0, "app");
    let dir = root.0.join("sources/app");
    let url = format!("file://{}", remote.url());
    let main = remote.push("main", "main\n", "on main");
    let feature = remote.push("feature/x", "feature\n", "on feature");
    // A tag named like a branch must not stand in for it.
    sh(&remote.work, &["tag", "main", &feature]);
    sh(
        &remote.work,
        &["push", "--quiet", "origin", "refs/tags/main"],
    );

    let got = fetch(&url, Some("feature/x"), &dir, None).await.unwrap();
    assert_eq!(
        (got.commit.as_str(), compose(&got).as_str()),
        (feature.as_str(), "feature\n")
    );
    let got = fetch(&url, Some("main"), &dir, None).await.unwrap();
    assert_eq!(got.commit, main);

    let e = fetch(&url, Some("nope"), &dir, None).await.unwrap_err();
    assert!(e.contains(&url) && e.contains("branch nope"), "{e}");
    assert!(e.contains("couldn't find remote ref"), "{e}");
}

#[tokio::test]
async fn a_commit_beyond_the_shallow_history_is_found_by_fetching_the_branch() {
    let root = TempDir::new("deep");
    let remote = Remote::new(&root.0, "app");
    let dir = root.0.join("sources/app");
    let old = remote.push("main", "old\n", "old");
    remote.push("main", "new\n", "new");
    fetch(remote.url(), Some("main"), &dir, None).await.unwrap();

    // A short sha cannot be fetched alone: the fallback fetches the branch.
    let got = fetch(remote.url(), Some("main"), &dir, Some(&old[..10]))
        .await
        .unwrap();
    assert_eq!(got.commit, old);
    assert_eq!(compose(&got), "old\n");

    let absent = "0123456789abcdef0123456789abcdef01234567";
    let e = fetch(remote.url(), Some("main"), &dir, Some(absent))
        .await
        .unwrap_err();
    assert!(e.contains(&format!("commit {absent} not found")), "{e}");
}

#[tokio::test]
async fn a_new_url_replaces_the_remote() {
    let root = TempDir::new("move");
    let first = Remote::new(&root.0, "first");
    let second = Remote::new(&root.0, "second");
    let dir = root.0.join("sources/app");
    let a = first.push("main", "a\n", "a");
    let b = second.push("main", "b\n", "b");

    assert_eq!(
        fetch(first.url(), None, &dir, None).await.unwrap().commit,
        a
    );
    let got = fetch(second.url(), None, &dir, None).await.unwrap();
    assert_eq!(
        (got.commit.as_str(), compose(&got).as_str()),
        (b.as_str(), "b\n")
    );
}

#[tokio::test]
async fn bad_sources_are_errors_naming_them() {
    let root = TempDir::new("bad");
    let dir = root.0.join("sources/app");

    // Refused before git runs: options and command-running transports.
    for url in [
        "--upload-pack=touch /tmp/x",
        "-oProxyCommand=x",
        "ext::sh -c x",
        "ext::x",
    ] {
        let e = fetch(url, None, &dir, None).await.unwrap_err();
        assert!(e.starts_with("source.url "), "{e}");
    }
    assert!(!dir.exists());

    let missing = root.0.join("missing.git");
    let missing = missing.to_str().unwrap();
    let e = fetch(missing, Some("main"), &dir, None).await.unwrap_err();
    assert!(
        e.starts_with(&format!("git {missing} (branch main): git fetch failed")),
        "{e}"
    );

    // Nothing listens on port 1: the error names the host, not the password.
    let url = "https://bob:hunter2@127.0.0.1:1/r.git";
    let e = fetch(url, None, &dir, None).await.unwrap_err();
    assert!(e.contains("https://bob:***@127.0.0.1:1/r.git"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");

    let e = fetch("/r.git", Some("a..b"), &dir, None).await.unwrap_err();
    assert!(e.starts_with("source.branch \"a..b\""), "{e}");
    let e = fetch("/r.git", None, &dir, Some("HEAD~1"))
        .await
        .unwrap_err();
    assert!(e.starts_with("commit \"HEAD~1\""), "{e}");
}
