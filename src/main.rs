//! The `berth` command line: the arguments, logging, and a call to the
//! command's function in [`berth::cli`], which also holds the exit-code
//! policy.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use berth::cli::{self, Abort, Action, Outcome};

/// jemalloc instead of glibc's malloc: per-thread caches on the request
/// path and a third less memory under load. Measured with benches/proxy.sh
/// against glibc and mimalloc (issue #17): CPU per request within noise of
/// mimalloc, resident memory 24 MiB against glibc's 35 and mimalloc's 43.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use berth::client::Client;
use berth::config::Config;
use clap::{Args, CommandFactory, Parser, Subcommand};
use clap_complete::Shell;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "berth",
    version = cli::version(),
    about = "Routes hostnames to the containers on this Docker host"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct ApiArgs {
    /// Configuration file (for admin.listen and the token); default: the embedded one.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Admin API address (HOST:PORT or URL); default: admin.listen.
    #[arg(long, env = "BERTH_ADMIN")]
    admin: Option<String>,
    /// Bearer token; default: $BERTH_TOKEN, admin.token, or the token file.
    #[arg(long)]
    token: Option<String>,
}

#[derive(Args, Clone)]
struct ActionArgs {
    /// A container (name or id), SERVICE, PROJECT/SERVICE or a deployment.
    target: String,
    /// The compose project TARGET is a service of, when several have it.
    #[arg(long)]
    project: Option<String>,
    /// Print the API's JSON answers instead of one line per container or step.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args, Clone)]
struct Timeouts {
    /// How long each new replica may take to become ready (e.g. 60s).
    #[arg(long)]
    health_timeout: Option<String>,
    /// How long an old replica's in-flight requests may take (e.g. 30s).
    #[arg(long)]
    drain_timeout: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy and follow the Docker engine.
    Serve {
        /// Configuration file; without it, the embedded default.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Take over the listeners of the berth running with the same state
        /// directory, with no failed request (what `berth upgrade` runs).
        #[arg(long)]
        upgrade: bool,
    },
    /// Replace the running berth with the binary on disk and the current
    /// configuration, with no failed request (for `systemctl reload`).
    Upgrade {
        /// Configuration file; without it, the embedded default.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Re-read the running berth's configuration file and apply what can change live.
    Reload {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Validate the configuration and every container's labels; exits 1 on any problem.
    Check {
        /// Configuration file; without it, the embedded default.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Replace every replica of a service with a fresh one, with no failed
    /// request; with --canary, start the new image beside them for a share
    /// of the traffic, then `berth rollout promote|abort SERVICE`.
    Rollout {
        /// The compose service (or container name outside compose); or
        /// `promote` / `abort` followed by the service with a canary.
        service: String,
        /// After `promote` or `abort`: the service.
        #[arg(value_name = "SERVICE")]
        canary_service: Option<String>,
        /// Start a canary with --image getting this share of the requests
        /// (e.g. 10%), each client kept on one side by a cookie.
        #[arg(long)]
        canary: Option<String>,
        /// With --canary: after --window, promote it when its 5xx rate and
        /// p99 are no worse than the stable replicas', abort it otherwise.
        #[arg(long)]
        auto: bool,
        /// How long --auto watches the canary.
        #[arg(long)]
        window: Option<String>,
        /// The compose project SERVICE belongs to, when several have it.
        #[arg(long)]
        project: Option<String>,
        /// The new image; default: the image the replicas run now.
        #[arg(long)]
        image: Option<String>,
        /// Replicas replaced at a time.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[command(flatten)]
        timeouts: Timeouts,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Put a service in maintenance (`on`: its routes answer 503 with a
    /// page and Retry-After; ACME and the admin API go on) or take it out.
    Maintenance {
        /// on: answer 503 with the page; off: serve again.
        #[arg(value_parser = ["on", "off"])]
        state: String,
        /// The compose service (or container name outside compose).
        service: String,
        /// Shown on the 503 page.
        #[arg(long)]
        message: Option<String>,
        /// The compose project SERVICE belongs to, when several have it.
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Hold a service's new requests (while you do something quick) until
    /// `berth resume`, each for at most --max, then 503.
    Pause {
        /// The compose service (or container name outside compose).
        service: String,
        /// The longest a request is held.
        #[arg(long, default_value = "30s")]
        max: String,
        /// The compose project SERVICE belongs to, when several have it.
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Let a paused service's held requests go on, in the order they came.
    Resume {
        /// The compose service (or container name outside compose).
        service: String,
        /// The compose project SERVICE belongs to, when several have it.
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Services in maintenance or paused.
    Modes {
        /// Print the API's JSON instead of lines.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Set the number of replicas of a service: `berth scale web=3`.
    Scale {
        /// The compose service and its number of replicas, e.g. web=3.
        #[arg(value_name = "SERVICE=N")]
        spec: String,
        /// The compose project SERVICE belongs to, when several have it.
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        timeouts: Timeouts,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Deploy a compose project (from a file on this host or a git
    /// repository): builds, then each changed service replaced with no
    /// failed request; a failed build keeps the running version.
    Deploy {
        /// The compose file (with --git: its name in the repository);
        /// default: compose.yaml, docker-compose.yml, ... here.
        #[arg(long, short = 'f')]
        file: Option<PathBuf>,
        /// The deployment name; default: the file's name:, its directory,
        /// or the repository's name.
        #[arg(long)]
        project: Option<String>,
        /// Print what would change (per service) and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Deploy from this git repository instead (cloned by berth).
        #[arg(long)]
        git: Option<String>,
        /// The branch to follow (with --git); default: the remote's default.
        #[arg(long)]
        branch: Option<String>,
        /// The directory of the compose file in the repository (with --git).
        #[arg(long)]
        path: Option<String>,
        /// Print the API's progress lines as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// The deployments berth owns: source, last deploy, its status.
    Deployments {
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// The deploys of a deployment: trigger, status, commit, time, reason.
    History {
        /// The deployment (compose project).
        project: String,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Run an earlier deploy's images again (zero downtime); default: the
    /// last deploy with other images than now.
    Rollback {
        /// The deployment (compose project).
        project: String,
        /// The deploy to go back to (see `berth history`).
        #[arg(long)]
        to: Option<u64>,
        /// Print the API's progress lines as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Remove a deployment's containers and networks (volumes with --volumes).
    Down {
        /// The deployment (compose project).
        project: String,
        /// Remove its named volumes too (their data is lost).
        #[arg(long)]
        volumes: bool,
        /// Print the API's progress lines as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// A deployment's environment and secrets, applied on its next deploy.
    Env {
        #[command(subcommand)]
        command: EnvCommand,
    },
    /// List recent rollouts and scale runs.
    Rollouts {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Autoscaled services (`berth.scale.*` labels): policy, replicas
    /// running and wanted, the latest figures, what it is doing and its
    /// last actions.
    Autoscale {
        /// Print the API's answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Certificates berth manages: valid until, issuer, challenge, last
    /// error, next attempt; `berth certs renew HOST` orders a new one now.
    Certs {
        /// renew: order a new certificate for HOST now.
        #[arg(value_parser = ["renew"])]
        action: Option<String>,
        /// The host (or `*.wildcard`) to renew.
        host: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// The internal DNS zone: each name, its ready addresses, its containers.
    Dns {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Containers by deployment and service: status, health, backend state, ports.
    Ps {
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Routed containers: backend state, health, last check result, in-flight requests.
    Backends {
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// The routing table: host, path, TLS, ready backends.
    Routes {
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Label problems; exits 1 when there is any.
    Problems {
        /// Print the API's JSON instead of one line per problem.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Logs of a service, deployment or container, each line prefixed with its container.
    Logs {
        /// SERVICE, PROJECT/SERVICE, a deployment (project) or a container.
        target: String,
        /// The compose project TARGET is a service of, when several have it.
        #[arg(long)]
        project: Option<String>,
        /// Keep following new lines.
        #[arg(long, short)]
        follow: bool,
        /// Lines from the end of each container's log (default: all).
        #[arg(long)]
        tail: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// CPU, memory, network and block I/O of running containers.
    Stats {
        /// A deployment, SERVICE, PROJECT/SERVICE or a container; default: every deployment.
        target: Option<String>,
        /// The compose project of SERVICE, when several have one of that name.
        #[arg(long)]
        project: Option<String>,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Restart a container, a service's containers, or a deployment (rolling, one at a time, drained first).
    Restart(ActionArgs),
    /// Stop a container or a service's containers (drained first).
    Stop(ActionArgs),
    /// Start a container or a service's stopped containers.
    Start(ActionArgs),
    /// Print the admin API token the CLI would use.
    Token {
        /// Configuration file (for admin.token and the token file); default: the embedded one.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print berth's version (and the commit it was built from, when known).
    Version,
    /// Print the shell completion script for SHELL.
    ///
    /// For example: `berth completions bash > /etc/bash_completion.d/berth`.
    Completions {
        /// The shell the script is for.
        #[arg(value_enum)]
        shell: Shell,
    },
}

#[derive(Subcommand)]
enum EnvCommand {
    /// Set KEY=VALUE pairs (kept 0600 in berth's state dir).
    Set {
        /// The deployment (compose project).
        project: String,
        /// KEY=VALUE pairs.
        #[arg(value_name = "KEY=VALUE", required = true)]
        pairs: Vec<String>,
        /// Never show the value back (API and CLI).
        #[arg(long)]
        secret: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Remove keys.
    Unset {
        /// The deployment (compose project).
        project: String,
        /// The keys to remove.
        #[arg(required = true)]
        keys: Vec<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List the keys (secrets without their values).
    List {
        /// The deployment (compose project).
        project: String,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

fn main() -> ExitCode {
    cli::exit(run(Cli::parse().command))
}

fn run(command: Command) -> Outcome {
    match command {
        Command::Serve { config, upgrade } => {
            cli::serve(logged(config.as_deref())?, config.as_deref(), upgrade)
        }
        Command::Upgrade { config } => {
            cli::upgrade(&cli::load_config(config.as_deref())?, config.as_deref())
        }
        Command::Reload { api } => api.run(cli::reload),
        Command::Check { config } => cli::block_on(cli::check(logged(config.as_deref())?)),
        Command::Token { config } => cli::token(&cli::load_config(config.as_deref())?),
        Command::Version => cli::print_version(),
        Command::Completions { shell } => cli::completions(shell, &mut Cli::command()),
        Command::Rollout {
            service,
            canary_service,
            canary,
            auto,
            window,
            project,
            image,
            batch,
            timeouts,
            api,
        } => match (service.as_str(), canary_service) {
            ("promote" | "abort", Some(target)) => {
                let promote = service == "promote";
                api.run(|c| cli::canary_end(c, &target, project, promote, timeouts.into()))
            }
            (_, Some(extra)) => Err(Abort::new(cli::Exit::NotAsked, format!(
                "rollout takes one service ({extra:?} is one too many): berth rollout SERVICE, or berth rollout promote|abort SERVICE"
            ))),
            (_, None) => {
                let canary = cli::CanaryArgs {
                    share: canary,
                    auto,
                    window,
                };
                api.run(|c| cli::rollout(c, &service, project, image, batch, canary, timeouts.into()))
            }
        },
        Command::Scale {
            spec,
            project,
            timeouts,
            api,
        } => api.run(|c| cli::scale(c, &spec, project, timeouts.into())),
        Command::Rollouts { api } => api.run(cli::rollouts),
        Command::Autoscale { json, api } => api.run(|c| cli::autoscale(c, json)),
        Command::Maintenance {
            state,
            service,
            message,
            project,
            api,
        } => api.run(|c| {
            let change = cli::ModeChange::Maintenance {
                on: state == "on",
                message,
            };
            cli::mode(c, &service, project, change)
        }),
        Command::Pause {
            service,
            max,
            project,
            api,
        } => api.run(|c| {
            cli::mode(
                c,
                &service,
                project,
                cli::ModeChange::Pause { max: Some(max) },
            )
        }),
        Command::Resume {
            service,
            project,
            api,
        } => api.run(|c| cli::mode(c, &service, project, cli::ModeChange::Resume)),
        Command::Modes { json, api } => api.run(|c| cli::modes(c, json)),
        Command::Deploy {
            file,
            project,
            dry_run,
            git,
            branch,
            path,
            json,
            api,
        } => {
            let args = cli::DeployArgs {
                file,
                project,
                dry_run,
                git,
                branch,
                path,
                json,
            };
            api.run(|c| cli::deploy(c, args))
        }
        Command::Deployments { json, api } => api.run(|c| cli::deployments(c, json)),
        Command::History { project, json, api } => api.run(|c| cli::history(c, &project, json)),
        Command::Rollback {
            project,
            to,
            json,
            api,
        } => api.run(|c| cli::rollback(c, &project, to, json)),
        Command::Down {
            project,
            volumes,
            json,
            api,
        } => api.run(|c| cli::down(c, &project, volumes, json)),
        Command::Env { command } => match command {
            EnvCommand::Set {
                project,
                pairs,
                secret,
                api,
            } => api.run(|c| cli::env_set(c, &project, &pairs, secret)),
            EnvCommand::Unset { project, keys, api } => {
                api.run(|c| cli::env_unset(c, &project, &keys))
            }
            EnvCommand::List { project, json, api } => {
                api.run(|c| cli::env_list(c, &project, json))
            }
        },
        Command::Certs { action, host, api } => match (action, host) {
            (None, None) => api.run(cli::certs),
            (Some(_), Some(host)) => api.run(|c| cli::renew(c, host)),
            (Some(_), None) => Err(cli::Abort::new(
                cli::Exit::NotAsked,
                "berth certs renew: name the HOST to renew",
            )),
            (None, Some(host)) => Err(cli::Abort::new(
                cli::Exit::NotAsked,
                format!("berth certs: {host:?}: did you mean berth certs renew {host}?"),
            )),
        },
        Command::Dns { api } => api.run(cli::dns),
        Command::Ps { json, api } => api.run(|c| cli::ps(c, json)),
        Command::Backends { json, api } => api.run(|c| cli::backends(c, json)),
        Command::Routes { json, api } => api.run(|c| cli::routes(c, json)),
        Command::Problems { json, api } => api.run(|c| cli::problems(c, json)),
        Command::Logs {
            target,
            project,
            follow,
            tail,
            api,
        } => api.run(|c| cli::logs(c, &target, project.as_deref(), follow, tail)),
        Command::Stats {
            target,
            project,
            json,
            api,
        } => api.run(|c| cli::stats(c, target.as_deref(), project.as_deref(), json)),
        Command::Restart(a) => a.run(Action::Restart),
        Command::Stop(a) => a.run(Action::Stop),
        Command::Start(a) => a.run(Action::Start),
    }
}

impl ApiArgs {
    /// Runs an admin API command with a client made from these flags.
    fn run<F, Fut>(self, command: F) -> Outcome
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Outcome>,
    {
        let client = cli::connect(self.config.as_deref(), self.admin, self.token)?;
        cli::block_on(command(client))
    }
}

impl ActionArgs {
    fn run(self, action: Action) -> Outcome {
        let ActionArgs {
            target,
            project,
            json,
            api,
        } = self;
        api.run(|c| cli::act(c, action, &target, project.as_deref(), json))
    }
}

impl From<Timeouts> for cli::DeployTimeouts {
    fn from(t: Timeouts) -> cli::DeployTimeouts {
        cli::DeployTimeouts {
            health_timeout: t.health_timeout,
            drain_timeout: t.drain_timeout,
        }
    }
}

/// Loads the config, then logs as it says.
fn logged(path: Option<&Path>) -> Result<Config, Abort> {
    let config = cli::load_config(path)?;
    init_logs(&config);
    Ok(config)
}

/// The filter for `log.level`: hickory logs every DNS query at info, its
/// warnings are enough.
fn level_filter(level: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(format!(
        "{level},hickory_server=warn,hickory_resolver=warn,hickory_net=warn"
    ))
    .map_err(|e| e.to_string())
}

/// Logs to stderr as the config says; a reload may change `log.level` later
/// (unless `RUST_LOG` decides).
fn init_logs(config: &Config) {
    let from_env = EnvFilter::try_from_default_env().ok();
    let live = from_env.is_none();
    let filter = from_env
        .or_else(|| level_filter(&config.log_level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    macro_rules! install {
        ($builder:expr) => {{
            let builder = $builder.with_filter_reloading();
            if live {
                let handle = builder.reload_handle();
                let _ = berth::reload::LOG_LEVEL.set(Box::new(move |level: &str| {
                    let filter = level_filter(level)?;
                    handle.reload(filter).map_err(|e| e.to_string())
                }));
            }
            builder.init();
        }};
    }
    if config.log_json {
        install!(fmt.json().flatten_event(true));
    } else {
        install!(fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument of `cmd` and of its subcommands that has no help
    /// text, as `berth scale --project`; clap's own `help` and `version`
    /// are not ours to document.
    fn undocumented(cmd: &clap::Command, parent: &str, out: &mut Vec<String>) {
        let path = format!("{parent}{}", cmd.get_name());
        if cmd.get_about().is_none() && !parent.is_empty() {
            out.push(format!("{path} (the command itself)"));
        }
        for arg in cmd.get_arguments() {
            if matches!(arg.get_id().as_str(), "help" | "version") {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                let name = match arg.get_long() {
                    Some(long) => format!("--{long}"),
                    None => arg.get_id().as_str().to_uppercase(),
                };
                out.push(format!("{path} {name}"));
            }
        }
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            undocumented(sub, &format!("{path} "), out);
        }
    }

    #[test]
    fn every_command_and_argument_has_help() {
        Cli::command().debug_assert();
        let mut cmd = Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        undocumented(&cmd, "", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
        // The walk reaches flattened and positional arguments.
        let scale = cmd.find_subcommand("scale").expect("scale is a command");
        let ids: Vec<&str> = scale.get_arguments().map(|a| a.get_id().as_str()).collect();
        for id in [
            "spec",
            "project",
            "health_timeout",
            "admin",
            "token",
            "config",
        ] {
            assert!(ids.contains(&id), "{id} in {ids:?}");
        }
        // And it does report an argument without help.
        let bare = clap::Command::new("x")
            .about("x")
            .subcommand(clap::Command::new("y").about("y").arg(clap::Arg::new("z")));
        let mut found = Vec::new();
        undocumented(&bare, "", &mut found);
        assert_eq!(found, ["x y Z"]);
    }

    #[test]
    fn version_and_completions_parse() {
        let parsed = Cli::try_parse_from(["berth", "version"]).map(|c| c.command);
        assert!(matches!(parsed, Ok(Command::Version)));
        for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
            let parsed = Cli::try_parse_from(["berth", "completions", shell]);
            assert!(
                matches!(parsed.map(|c| c.command), Ok(Command::Completions { .. })),
                "{shell}"
            );
        }
        // A shell clap_complete does not know is clap's own error: exit 2.
        for args in [
            &["berth", "completions", "nosuch"][..],
            &["berth", "completions"],
        ] {
            match Cli::try_parse_from(args) {
                Ok(_) => panic!("{args:?} parsed"),
                Err(e) => assert_eq!(e.exit_code(), 2, "{args:?}: {e}"),
            }
        }
    }
}
