//! The CLI's own commands and exit codes, from the real binary: `version`,
//! `completions`, and exit 3 for a service the running berth does not know.

use crate::harness::{admin_ready, berth_cli, cli, free_port, Berth, Env};

#[tokio::test]
async fn version_prints_the_cargo_version() {
    let (code, out, err) = berth_cli(&["version"]).await;
    assert_eq!(code, 0, "{err}");
    let want = format!("berth {}", env!("CARGO_PKG_VERSION"));
    assert!(out.starts_with(&want), "{out}");
    // `--version` says the same.
    let (code, flag, _) = berth_cli(&["--version"]).await;
    assert_eq!((code, flag), (0, out));
}

#[tokio::test]
async fn completions_for_a_shell_or_clap_error() {
    let (code, out, err) = berth_cli(&["completions", "bash"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("complete") && out.contains("berth"), "{out}");
    assert!(
        out.contains("rollout"),
        "the subcommands are completed: {out}"
    );
    let (code, out, err) = berth_cli(&["completions", "nosuch"]).await;
    assert_eq!(code, 2, "{out}");
    assert!(err.contains("nosuch"), "{err}");
    assert!(out.is_empty(), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_an_unknown_service_exits_3() {
    let env = Env::new("cli-scale").await;
    let (http, admin) = (free_port(), free_port());
    let _berth = Berth::start(&env.config_admin(http, admin, ""), http).await;
    let admin = format!("127.0.0.1:{admin}");
    admin_ready(&admin).await;
    let (code, out, err) = cli(&admin, &["scale", "nosuch=2"]).await;
    assert_eq!(code, 3, "stdout: {out}\nstderr: {err}");
    assert!(err.contains("nosuch"), "{err}");
}
