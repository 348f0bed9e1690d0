//! Bad input: labels with mistakes (`berth check`, other routes unharmed) and
//! configuration files with mistakes (line, column, key, value).

use std::time::Duration;

use crate::harness::{berth_cli, cli, eventually, free_port, Berth, Env, HttpClient, TempDir};

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
    // (file, text, substrings, the one line after the file name)
    let cases = [
        (
            "unknown.yaml",
            "http:\n  listen: 127.0.0.1:1\nproxy:\n  threads: 1\n  conect_timeout: 2s\n",
            vec![
                "line 5 column 3",
                "unknown field `conect_timeout`",
                "connect_timeout",
            ],
            "line 5 column 3: proxy.conect_timeout: \"2s\": unknown field `conect_timeout`: did you mean proxy.connect_timeout?",
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
            "line 2 column 20: proxy.connect_timeout: \"5x\": unknown unit 'x': use ms, s, m or h",
        ),
        (
            "bare.yaml",
            "proxy:\n  threads: 1\n  read_timeout: 5\n",
            vec!["line 3 column 17", "proxy.read_timeout", "\"5\"", "add a unit: 5s"],
            "line 3 column 17: proxy.read_timeout: \"5\": add a unit: 5s (or ms, m, h)",
        ),
        (
            "zero.yaml",
            "proxy:\n  connect_timeout: 0s\n",
            vec!["line 2 column 20", "proxy.connect_timeout", "\"0s\""],
            "line 2 column 20: proxy.connect_timeout: \"0s\": must be more than 0, e.g. 2s",
        ),
        (
            "badtype.yaml",
            "proxy:\n  threads: lots\n",
            vec!["line 2 column 12", "`threads`", "\"lots\""],
            "line 2 column 12: proxy.threads: \"lots\": `threads` takes a whole number from 0 to 4294967295",
        ),
    ];
    for (name, yaml, wants, line) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, yaml).unwrap();
        let mut printed = Vec::new();
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
            assert_eq!(
                err,
                format!("berth: invalid configuration: {}: {line}\n", path.display()),
                "berth {cmd} on {name}: one line, in the one format"
            );
            printed.push(err);
        }
        assert_eq!(printed[0], printed[1], "serve and check print the same");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typo_never_puts_a_service_in_another_pool_also_after_a_restart() {
    let env = Env::new("pth").await;
    let host = env.host("shop");
    let mut web = env.service_labels("web");
    web.extend(["--label".into(), format!("berth.host={host}")]);
    let web: Vec<&str> = web.iter().map(String::as_str).collect();
    let web_id = env.run("web", &web).await;
    // `berth.pth` meant `berth.path`: on defaults, api would join `/`.
    let mut api = env.service_labels("api");
    api.extend([
        "--label".into(),
        format!("berth.host={host}"),
        "--label".into(),
        "berth.pth=/api".into(),
    ]);
    let api: Vec<&str> = api.iter().map(String::as_str).collect();
    env.run("api", &api).await;
    let (http, admin) = (free_port(), free_port());
    let client = HttpClient::new();
    for round in ["first start", "after a restart"] {
        let berth = Berth::start(&env.config_admin(http, admin, ""), http).await;
        eventually(Duration::from_secs(10), "the site", || async {
            (client.get(http, &host, "/").await.ok()?.status == 200).then_some(())
        })
        .await;
        // Every answer comes from web: `/` (its page) and any other path
        // (the CGI names the container that ran it).
        for path in ["/", "/cgi-bin/who"] {
            for _ in 0..6 {
                let r = client.get(http, &host, path).await.unwrap();
                assert!(
                    r.status == 200 && r.body.contains(&web_id[..12]),
                    "{round}: {path} reached {} {}",
                    r.status,
                    r.body
                );
            }
        }
        let (code, out, _) = cli(&format!("127.0.0.1:{admin}"), &["problems"]).await;
        assert_eq!(code, 1, "{round}: {out}");
        assert!(
            out.contains("berth.pth") && out.contains("did you mean berth.path?"),
            "{round}: {out}"
        );
        drop(berth);
    }
}
