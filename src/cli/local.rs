//! The commands that need no running berth: `serve` starts it, `check`
//! plans the engine's containers as `serve` would and reports the problems,
//! `token` prints the admin token the other commands send.

use super::{Abort, Exit, Outcome};
use crate::api::token::{client_token, token_file};
use crate::config::Config;

/// Runs the proxy until it is stopped; exit 2 when it cannot start.
pub fn serve(config: Config) -> Outcome {
    crate::server::serve(config).map_err(|e| Abort::new(Exit::NotAsked, format!("{e:#}")))?;
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
