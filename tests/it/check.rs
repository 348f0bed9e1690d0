//! Bad input: labels with mistakes (`berth check`, other routes unharmed) and
//! configuration files with mistakes (line, column, key, value).

use std::time::Duration;

use crate::harness::{berth_cli, eventually, free_port, Berth, Env, HttpClient, TempDir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misspelled_label_is_named_by_check_and_harms_no_other_route() {
    let env = Env::new("typo").await;
    let good = env.host("good");
    env.run("good", &["--label", &format!("berth.host={good}")])
        .await;
    env.run(
        "typo",
        &["--label", &format!("berth.hots={}", env.host("typo"))],
    )
    .await;
    let port = free_port();
    let dir = TempDir::new();
    let cfg = dir.path().join("berth.yaml");
    std::fs::write(&cfg, env.config(port, "")).unwrap();

    let (code, out, err) = berth_cli(&["check", "--config", cfg.to_str().unwrap()]).await;
    println!("berth check printed:\n{out}{err}");
    assert_eq!(code, 1, "check must fail when a problem exists");
    let line = out
        .lines()
        .find(|l| l.contains(&env.container_name("typo")))
        .unwrap_or_else(|| panic!("the container is not named:\n{out}"));
    assert!(line.contains("berth.hots"), "{line}");
    assert!(
        line.contains(&env.host("typo")),
        "the value is named: {line}"
    );
    assert!(line.contains("did you mean berth.host?"), "{line}");
    assert!(out.contains("1 problems"), "{out}");

    let berth = Berth::start(&env.config(port, ""), port).await;
    let client = HttpClient::new();
    eventually(Duration::from_secs(10), "the good route", || async {
        (client.get(port, &good, "/").await.ok()?.status == 200).then_some(())
    })
    .await;
    berth
        .wait_log("label problem: unknown label", Duration::from_secs(5))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_on_clean_labels() {
    let env = Env::new("clean").await;
    env.run(
        "web",
        &["--label", &format!("berth.host={}", env.host("web"))],
    )
    .await;
    let dir = TempDir::new();
    let cfg = dir.path().join("berth.yaml");
    std::fs::write(&cfg, env.config(free_port(), "")).unwrap();
    let (code, out, _) = berth_cli(&["check", "--config", cfg.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 containers, 1 routes, 0 problems"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_name_line_column_key_and_value() {
    let dir = TempDir::new();
    let cases = [
        (
            "unknown.yaml",
            "http:\n  listen: 127.0.0.1:1\nproxy:\n  threads: 1\n  conect_timeout: 2s\n",
            vec![
                "line 5 column 3",
                "unknown field `conect_timeout`",
                "connect_timeout",
            ],
        ),
        (
            "badvalue.yaml",
            "proxy:\n  connect_timeout: 5x\n",
            vec![
                "line 2 column 20",
                "proxy.connect_timeout",
                "\"5x\"",
                "unknown unit 'x'",
            ],
        ),
        (
            "badtype.yaml",
            "proxy:\n  threads: lots\n",
            vec!["line 2 column 12", "`threads`", "\"lots\""],
        ),
    ];
    for (name, yaml, wants) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, yaml).unwrap();
        for cmd in ["serve", "check"] {
            let (code, _, err) = berth_cli(&[cmd, "--config", path.to_str().unwrap()]).await;
            assert_eq!(
                code, 2,
                "berth {cmd} on {name} must refuse to start:\n{err}"
            );
            assert!(
                err.contains(path.to_str().unwrap()),
                "the file is named: {err}"
            );
            for w in &wants {
                assert!(
                    err.contains(w),
                    "berth {cmd} on {name}: {w:?} missing from:\n{err}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_on_a_public_address_needs_a_chosen_token() {
    let dir = TempDir::new();
    let cfg = dir.path().join("berth.yaml");
    let token_file = dir.path().join("admin.token");
    std::fs::write(
        &cfg,
        format!(
            "http:\n  listen: 127.0.0.1:{}\nadmin:\n  listen: 0.0.0.0:{}\n  token_file: {}\n",
            free_port(),
            free_port(),
            token_file.display()
        ),
    )
    .unwrap();
    let (code, _, err) = berth_cli(&["serve", "--config", cfg.to_str().unwrap()]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("admin.listen 0.0.0.0:") && err.contains("not a loopback address"),
        "{err}"
    );
    assert!(err.contains("admin.token or BERTH_TOKEN"), "{err}");
}
