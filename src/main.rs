//! The `berth` command line: `serve` runs the proxy, `check` validates the
//! config and the labels on the engine.

use std::path::PathBuf;
use std::process::ExitCode;

use berth::config::Config;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Routes hostnames to the containers on this Docker host"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy and follow the Docker engine.
    Serve {
        /// Configuration file; without it, the embedded default.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and every container's labels; exits 1 on any problem.
    Check {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = match &cli.command {
        Command::Serve { config } | Command::Check { config } => config.clone(),
    };
    let config = match Config::load(path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    match cli.command {
        Command::Serve { .. } => match berth::server::serve(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("berth: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Check { .. } => check(config),
    }
}

fn check(config: Config) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: cannot start a runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(berth::check::check(&config)) {
        Err(e) => {
            eprintln!("berth: {e}");
            ExitCode::from(2)
        }
        Ok((containers, snap)) => {
            for p in &snap.problems {
                println!("{p}");
            }
            println!(
                "{containers} containers, {} routes, {} problems",
                snap.table.len(),
                snap.problems.len()
            );
            if snap.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}
