//! The `berth` commands. `main.rs` parses the arguments and calls one
//! function here: [`serve`], [`check`] and [`token`] work from the config
//! alone, [`print_version`] and [`completions`] from nothing; every other
//! command is a client of the running berth's admin API ([`crate::client`])
//! that reads its answers into the server's own types and prints a
//! [`table`], or the API's JSON with `--json`.
//!
//! One exit-code policy for every command ([`Exit`]):
//!
//! - 0 done;
//! - 1 the operation failed: the API answered an error other than 400, 401
//!   or 404 (a conflict, the engine refused), or a rollout, scale or restart
//!   ended `failed` or `rolled_back`; also `problems` and `check` when they
//!   find a problem;
//! - 2 berth could not be asked: unreachable, wrong token, bad config, bad
//!   arguments (clap's own errors, the API's 400, an ambiguous target), or
//!   a progress stream that ended before a final status;
//! - 3 no such deployment, service or container.
//!
//! An API error maps by its status (`From<&CallError> for Exit`).

mod deploy;
mod host;
mod local;
mod project;
mod routing;
mod target;

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;

use crate::client::Client;
use crate::config::Config;
use crate::error::CallError;

pub use deploy::{autoscale, canary_end, rollout, rollouts, scale, CanaryArgs, DeployTimeouts};
pub use host::{act, logs, ps, stats, Action};
pub use local::{check, completions, print_version, reload, serve, token, upgrade, version};
pub use project::{
    deploy, deployments, down, env_list, env_set, env_unset, history, rollback, DeployArgs,
};
pub use routing::{backends, certs, dns, mode, modes, problems, renew, routes, ModeChange};
pub use target::{resolve, Target};

/// How a command ended, as its exit code (the policy is in the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Done,
    Failed,
    NotAsked,
    NoTarget,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Done => 0,
            Exit::Failed => 1,
            Exit::NotAsked => 2,
            Exit::NoTarget => 3,
        }
    }
}

impl From<&CallError> for Exit {
    /// 404: no such target; not reached, 400 or 401: berth could not be
    /// asked; any other answer: the operation failed.
    fn from(e: &CallError) -> Exit {
        match e.status {
            Some(404) => Exit::NoTarget,
            None | Some(400) | Some(401) => Exit::NotAsked,
            Some(_) => Exit::Failed,
        }
    }
}

/// Why a command stopped before it was done: the line for stderr and the
/// exit code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Abort {
    pub exit: Exit,
    pub message: String,
}

impl Abort {
    pub fn new(exit: Exit, message: impl Into<String>) -> Abort {
        Abort {
            exit,
            message: message.into(),
        }
    }
}

impl From<CallError> for Abort {
    fn from(e: CallError) -> Abort {
        Abort::new(Exit::from(&e), e.message)
    }
}

/// What every command returns: how it ended, or why it stopped early.
pub type Outcome = Result<Exit, Abort>;

/// The process's exit code for an outcome; an abort's reason goes to stderr.
pub fn exit(outcome: Outcome) -> ExitCode {
    let exit = outcome.unwrap_or_else(|abort| {
        eprintln!("berth: {}", abort.message);
        abort.exit
    });
    ExitCode::from(exit.code())
}

/// Runs a command's future on a runtime of its own (the CLI needs one thread).
pub fn block_on(f: impl Future<Output = Outcome>) -> Outcome {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Abort::new(Exit::NotAsked, format!("cannot start a runtime: {e}")))?
        .block_on(f)
}

/// The configuration file (none: the embedded default); a bad one is exit 2.
pub fn load_config(path: Option<&Path>) -> Result<Config, Abort> {
    Config::load(path)
        .map_err(|e| Abort::new(Exit::NotAsked, format!("invalid configuration: {e}")))
}

/// A client of the admin API: address and token from the flags, else from
/// the config.
pub fn connect(
    config: Option<&Path>,
    admin: Option<String>,
    token: Option<String>,
) -> Result<Client, Abort> {
    Ok(Client::new(&load_config(config)?, admin, token)?)
}

/// Columns padded to the widest cell, three spaces apart; the last column
/// is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    const GAP: usize = 3;
    let width = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(cell));
        }
    }
    let header: Vec<&str> = headers.to_vec();
    let body = rows.iter().map(|r| r.iter().map(String::as_str).collect());
    let mut out = String::new();
    for cells in std::iter::once(header).chain(body) {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < cells.len() {
                let pad = widths.get(i).map_or(0, |w| w.saturating_sub(width(cell)));
                line.extend(std::iter::repeat_n(' ', pad + GAP));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Bytes in binary units as `docker stats` prints them: 512B, 1.5KiB, 20.0MiB.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

/// An API answer for `--json`, pretty-printed.
fn print_json(v: &impl Serialize) -> Outcome {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| Abort::new(Exit::Failed, format!("cannot print the answer: {e}")))?;
    println!("{text}");
    Ok(Exit::Done)
}

/// An optional word, `-` when absent (a table cell is never empty, so that
/// rows split on whitespace keep their columns).
fn or_dash(v: Option<&str>) -> String {
    v.filter(|s| !s.is_empty()).unwrap_or("-").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_every_column_but_the_last() {
        let row = |cells: &[&str]| cells.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        type Case<'a> = (&'a [&'a str], Vec<Vec<String>>, &'a str);
        let cases: [Case; 4] = [
            (
                &["A", "BB"],
                vec![row(&["long", "x"])],
                "A      BB\nlong   x\n",
            ),
            (&["A", "B"], vec![], "A   B\n"),
            (
                &["NAME", "STATE", "PORTS"],
                vec![row(&["web", "ready (dns)", ""]), row(&["db", "-", "5432"])],
                "NAME   STATE         PORTS\nweb    ready (dns)\ndb     -             5432\n",
            ),
            // Wider cells than the header, and a row longer than the header.
            (&["H"], vec![row(&["wide", "extra"])], "H\nwide   extra\n"),
        ];
        for (headers, rows, want) in cases {
            assert_eq!(table(headers, &rows), want, "{headers:?}");
        }
    }

    #[test]
    fn bytes_in_binary_units() {
        for (n, want) in [
            (0, "0B"),
            (512, "512B"),
            (1023, "1023B"),
            (1536, "1.5KiB"),
            (20 << 20, "20.0MiB"),
            (3 << 30, "3.0GiB"),
            (u64::MAX, "16777216.0TiB"),
        ] {
            assert_eq!(human_bytes(n), want, "{n}");
        }
    }

    #[test]
    fn api_errors_exit_by_their_status() {
        for (status, want) in [
            (None, Exit::NotAsked),
            (Some(400), Exit::NotAsked),
            (Some(401), Exit::NotAsked),
            (Some(404), Exit::NoTarget),
            (Some(409), Exit::Failed),
            (Some(502), Exit::Failed),
        ] {
            let e = CallError {
                status,
                message: "m".into(),
            };
            assert_eq!(Exit::from(&e), want, "{status:?}");
            assert_eq!(Abort::from(e).exit.code(), want.code());
        }
        let codes: Vec<u8> = [Exit::Done, Exit::Failed, Exit::NotAsked, Exit::NoTarget]
            .map(Exit::code)
            .to_vec();
        assert_eq!(codes, vec![0, 1, 2, 3]);
    }
}
