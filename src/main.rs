//! The `berth` command line: `serve` runs the proxy, `check` validates the
//! config and the labels on the engine, and the deploy commands are clients
//! of the running berth's admin API.

use std::path::PathBuf;
use std::process::ExitCode;

use berth::cli;
use berth::client::Client;
use berth::config::Config;
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
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
    #[arg(long)]
    project: Option<String>,
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
    },
    /// Validate the configuration and every container's labels; exits 1 on any problem.
    Check {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Replace every replica of a service with a fresh one, with no failed request.
    Rollout {
        /// The compose service (or container name outside compose).
        service: String,
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
    /// Set the number of replicas of a service: `berth scale web=3`.
    Scale {
        /// SERVICE=N
        spec: String,
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        timeouts: Timeouts,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List recent rollouts and scale runs.
    Rollouts {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Certificates berth manages: valid until, last error, next attempt.
    Certs {
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
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// The routing table: host, path, TLS, ready backends.
    Routes {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Label problems; exits 1 when there is any.
    Problems {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Logs of a service, deployment or container, each line prefixed with its container.
    Logs {
        /// SERVICE, PROJECT/SERVICE, a deployment (project) or a container.
        target: String,
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
        /// A deployment (compose project or lone container); default: all.
        deployment: Option<String>,
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
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn load(path: Option<&std::path::Path>) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("berth: invalid configuration: {e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let config = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logs(&config);
            match berth::server::serve(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("berth: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Check { config } => match load(config.as_deref()) {
            Ok(c) => {
                init_logs(&c);
                block_on(check(c))
            }
            Err(code) => code,
        },
        Command::Token { config } => match load(config.as_deref()) {
            Ok(c) => match berth::api::token::client_token(&c.admin) {
                Some(t) => {
                    println!("{t}");
                    ExitCode::SUCCESS
                }
                None => {
                    eprintln!(
                        "berth: no token: set BERTH_TOKEN or admin.token, or start berth once to generate {}",
                        c.admin.token_file.display()
                    );
                    ExitCode::from(2)
                }
            },
            Err(code) => code,
        },
        Command::Rollout {
            service,
            project,
            image,
            batch,
            timeouts,
            api,
        } => {
            let body = json!({
                "project": project,
                "image": image,
                "batch": batch,
                "health_timeout": timeouts.health_timeout,
                "drain_timeout": timeouts.drain_timeout,
            });
            block_on(deploy(
                api,
                format!("/api/services/{service}/rollout"),
                body,
            ))
        }
        Command::Scale {
            spec,
            project,
            timeouts,
            api,
        } => {
            let Some((service, n)) = spec.split_once('=') else {
                eprintln!("berth: scale {spec:?}: use SERVICE=N, e.g. web=3");
                return ExitCode::from(2);
            };
            let Ok(n) = n.trim().parse::<usize>() else {
                eprintln!("berth: scale {spec:?}: {n:?} is not a number of replicas");
                return ExitCode::from(2);
            };
            let body = json!({
                "project": project,
                "replicas": n,
                "health_timeout": timeouts.health_timeout,
                "drain_timeout": timeouts.drain_timeout,
            });
            block_on(deploy(
                api,
                format!("/api/services/{}/scale", service.trim()),
                body,
            ))
        }
        Command::Rollouts { api } => block_on(rollouts(api)),
        Command::Certs { api } => block_on(certs(api)),
        Command::Dns { api } => block_on(dns(api)),
        Command::Ps { json, api } => with_client(&api, |c| async move { cli::ps(&c, json).await }),
        Command::Routes { json, api } => {
            with_client(&api, |c| async move { cli::routes(&c, json).await })
        }
        Command::Problems { json, api } => {
            with_client(&api, |c| async move { cli::problems(&c, json).await })
        }
        Command::Logs {
            target,
            project,
            follow,
            tail,
            api,
        } => with_client(&api, |c| async move {
            cli::logs(&c, &target, project.as_deref(), follow, tail).await
        }),
        Command::Stats {
            deployment,
            json,
            api,
        } => with_client(&api, |c| async move {
            cli::stats(&c, deployment.as_deref(), json).await
        }),
        Command::Restart(a) => action("restart", a),
        Command::Stop(a) => action("stop", a),
        Command::Start(a) => action("start", a),
    }
}

fn with_client<F, Fut>(api: &ApiArgs, f: F) -> ExitCode
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    match client(api) {
        Ok(c) => block_on(f(c)),
        Err(code) => code,
    }
}

fn action(name: &'static str, a: ActionArgs) -> ExitCode {
    with_client(&a.api, |c| async move {
        cli::act(&c, name, &a.target, a.project.as_deref(), a.json).await
    })
}

fn init_logs(config: &Config) {
    // hickory logs every DNS query at info: its warnings are enough.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{},hickory_server=warn,hickory_resolver=warn,hickory_net=warn",
            config.log_level
        ))
    });
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log_json {
        fmt.json().flatten_event(true).init();
    } else {
        fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

fn block_on(f: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(f),
        Err(e) => {
            eprintln!("berth: cannot start a runtime: {e}");
            ExitCode::from(2)
        }
    }
}

fn client(api: &ApiArgs) -> Result<Client, ExitCode> {
    let config = load(api.config.as_deref())?;
    Client::new(&config, api.admin.clone(), api.token.clone()).map_err(|e| {
        eprintln!("berth: {e}");
        ExitCode::from(2)
    })
}

/// Streams a rollout's or scale's progress, one line per step; exits 0 when
/// it completed, 1 when it failed or was rolled back, 2 when it could not run.
async fn deploy(api: ApiArgs, path: String, body: Value) -> ExitCode {
    let client = match client(&api) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let print = |v: &Value| {
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        println!(
            "[{}] {:<15} {}",
            v.get("id").and_then(Value::as_u64).unwrap_or(0),
            s("status"),
            s("message")
        );
    };
    match client.post_stream(&path, &body, print).await {
        Err(e) => {
            eprintln!("berth: {e}");
            ExitCode::from(2)
        }
        Ok(last) => match last.get("status").and_then(Value::as_str) {
            Some("completed") => ExitCode::SUCCESS,
            Some("failed") | Some("rolled_back") => ExitCode::from(1),
            _ => {
                eprintln!("berth: the progress stream ended before a final status");
                ExitCode::from(2)
            }
        },
    }
}

async fn rollouts(api: ApiArgs) -> ExitCode {
    let client = match client(&api) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.get("/api/rollouts").await {
        Err(e) => {
            eprintln!("berth: {e}");
            ExitCode::from(2)
        }
        Ok(Value::Array(list)) => {
            println!(
                "{:<5} {:<8} {:<24} {:<12} {:<9} REASON",
                "ID", "KIND", "SERVICE", "STATUS", "REPLICAS"
            );
            for r in list {
                let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
                println!(
                    "{:<5} {:<8} {:<24} {:<12} {:<9} {}",
                    r.get("id").and_then(Value::as_u64).unwrap_or(0),
                    s("kind"),
                    s("service"),
                    s("status"),
                    r.get("replicas").and_then(Value::as_u64).unwrap_or(0),
                    s("reason")
                );
            }
            ExitCode::SUCCESS
        }
        Ok(other) => {
            eprintln!("berth: unexpected answer: {other}");
            ExitCode::from(2)
        }
    }
}

async fn certs(api: ApiArgs) -> ExitCode {
    let client = match client(&api) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let list = match client.get("/api/certificates").await {
        Ok(Value::Array(list)) => list,
        Ok(other) => {
            eprintln!("berth: unexpected answer: {other}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("berth: {e}");
            return ExitCode::from(2);
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let until = |v: &Value, k: &str| match v.get(k).and_then(Value::as_u64) {
        Some(t) if t >= now => format!("in {}h{:02}m", (t - now) / 3600, (t - now) % 3600 / 60),
        Some(_) => "expired".into(),
        None => "-".into(),
    };
    println!(
        "{:<32} {:<7} {:<12} {:<12} {:<8} ERROR",
        "HOST", "SOURCE", "EXPIRES", "NEXT TRY", "FAILURES"
    );
    for c in &list {
        let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
        let error = c
            .get("not_eligible")
            .and_then(Value::as_str)
            .map(|w| format!("not ordered: {w}"))
            .unwrap_or_else(|| s("last_error"));
        println!(
            "{:<32} {:<7} {:<12} {:<12} {:<8} {}",
            s("host"),
            s("source"),
            until(c, "valid_until"),
            until(c, "next_attempt"),
            c.get("failures").and_then(Value::as_u64).unwrap_or(0),
            error
        );
    }
    ExitCode::SUCCESS
}

async fn dns(api: ApiArgs) -> ExitCode {
    let client = match client(&api) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let answer = match client.get("/api/dns").await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("berth: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(names) = answer.get("names").and_then(Value::as_array) else {
        eprintln!("berth: unexpected answer: {answer}");
        return ExitCode::from(2);
    };
    println!("{:<40} {:<34} CONTAINERS", "NAME", "ANSWERS");
    for n in names {
        let list = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let ready = list(n.get("ready"));
        let answers = if ready.is_empty() {
            "(nothing ready: NODATA)".to_string()
        } else {
            ready.join(" ")
        };
        let containers: Vec<String> = n
            .get("containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| {
                let name = c.get("container").and_then(Value::as_str).unwrap_or("?");
                match c.get("ready").and_then(Value::as_bool) {
                    Some(true) => name.to_string(),
                    _ => format!("{name} (not ready)"),
                }
            })
            .collect();
        println!(
            "{:<40} {:<34} {}",
            n.get("name").and_then(Value::as_str).unwrap_or("?"),
            answers,
            containers.join(", ")
        );
    }
    ExitCode::SUCCESS
}

async fn check(config: Config) -> ExitCode {
    match berth::check::check(&config).await {
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
