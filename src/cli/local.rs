//! The commands that need no running berth: `serve` starts it, `check`
//! plans the engine's containers as `serve` would and reports the problems,
//! `token` prints the admin token the other commands send, `version` and
//! `completions` describe the binary itself.

use std::io::Write;
use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

use super::{Abort, Exit, Outcome};
use crate::api::token::{client_token, token_file};
use crate::config::Config;

/// Runs the proxy until it is stopped; exit 2 when it cannot start.
/// `upgrade`: take over from the berth running with the same state directory.
pub fn serve(config: Config, path: Option<&Path>, upgrade: bool) -> Outcome {
    crate::server::serve(config, path.map(Path::to_path_buf), upgrade)
        .map_err(|e| Abort::new(Exit::NotAsked, format!("{e:#}")))?;
    Ok(Exit::Done)
}

/// Starts the binary on disk as the successor of the running berth and
/// returns once it has taken over (exit 1 if it could not; the running
/// berth then goes on serving).
pub fn upgrade(config: &Config, path: Option<&Path>) -> Outcome {
    let dir = config
        .state_dir
        .clone()
        .unwrap_or_else(crate::state::default_dir);
    match crate::upgrade::run_upgrade(path, &dir, Duration::from_secs(60)) {
        Ok(pid) => {
            println!("berth {pid} took over");
            Ok(Exit::Done)
        }
        Err(e) => Err(Abort::new(Exit::Failed, e)),
    }
}

/// Asks the running berth to re-read its configuration file.
pub async fn reload(client: crate::client::Client) -> Outcome {
    let report: crate::reload::ReloadReport = client.post("/api/reload").await?;
    let list = |keys: &[String]| {
        if keys.is_empty() {
            "nothing".to_string()
        } else {
            keys.join(", ")
        }
    };
    println!("{}: reloaded", report.file);
    println!("applied: {}", list(&report.applied));
    if !report.needs_restart.is_empty() {
        println!(
            "needs a restart (berth upgrade): {}",
            list(&report.needs_restart)
        );
    }
    Ok(Exit::Done)
}

/// One line per label problem, then a count; exit 1 when there is any.
pub async fn check(config: Config) -> Outcome {
    // An engine that does not answer is "could not check" (2), never
    // "problems found" (1).
    let (containers, snapshot) = crate::check::check(&config)
        .await
        .map_err(|e| Abort::new(Exit::NotAsked, e.message))?;
    for p in &snapshot.problems {
        println!("{p}");
    }
    println!(
        "{containers} containers, {} routes, {} problems",
        snapshot.table.len(),
        snapshot.problems.len()
    );
    Ok(if snapshot.problems.is_empty() {
        Exit::Done
    } else {
        Exit::Failed
    })
}

/// The admin token the CLI would send.
pub fn token(config: &Config) -> Outcome {
    let token = client_token(&config.admin).ok_or_else(|| {
        Abort::new(
            Exit::NotAsked,
            format!(
                "no token: set BERTH_TOKEN or admin.token, or start berth once to generate {}",
                token_file(&config.admin).display()
            ),
        )
    })?;
    println!("{token}");
    Ok(Exit::Done)
}

/// `0.1.0`, or `0.1.0 (commit 3f2a1b9)` when the build had
/// `BERTH_GIT_COMMIT` in its environment (there is no build script to ask
/// git, and a source tree may have no `.git`). `--version` prints it too.
pub fn version() -> &'static str {
    static TEXT: LazyLock<String> =
        LazyLock::new(|| version_text(env!("CARGO_PKG_VERSION"), option_env!("BERTH_GIT_COMMIT")));
    &TEXT
}

fn version_text(version: &str, commit: Option<&str>) -> String {
    match commit.map(str::trim).filter(|c| !c.is_empty()) {
        Some(commit) => format!("{version} (commit {commit})"),
        None => version.to_string(),
    }
}

/// `berth 0.1.0`, as `berth --version` prints it.
pub fn print_version() -> Outcome {
    println!("berth {}", version());
    Ok(Exit::Done)
}

/// The completion script of `command` for `shell` on stdout. It is made in
/// memory first: clap_complete panics when its writer fails, and a closed
/// pipe is no reason to panic.
pub fn completions(shell: clap_complete::Shell, command: &mut clap::Command) -> Outcome {
    let name = command.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(shell, command, name, &mut script);
    std::io::stdout().lock().write_all(&script).map_err(|e| {
        Abort::new(
            Exit::Failed,
            format!("cannot write the completion script: {e}"),
        )
    })?;
    Ok(Exit::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_names_the_commit_when_the_build_knew_it() {
        assert_eq!(version_text("0.1.0", None), "0.1.0");
        assert_eq!(version_text("0.1.0", Some("")), "0.1.0");
        assert_eq!(
            version_text("0.1.0", Some("3f2a1b9\n")),
            "0.1.0 (commit 3f2a1b9)"
        );
        assert!(version().starts_with(env!("CARGO_PKG_VERSION")));
    }
}
