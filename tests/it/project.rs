//! Deployments berth owns: compose files (and git repositories) written by
//! the tests, deployed through the CLI and the admin API onto the real
//! engine, with builds from Dockerfiles on the test image, under load.

use std::path::Path;
use std::time::Duration;

use crate::harness::{
    api, assert_all_served, cli, docker, docker_ok, eventually, free_port, Berth, Env, HttpClient,
    Load, TempDir, DNS_OFF, IMAGE, IMAGE_V2, TOKEN,
};

/// A project directory, a berth with its admin API, and everything the
/// deploys made removed at the end (containers, networks, volumes, images).
struct Proj {
    dir: TempDir,
    name: String,
    host: String,
    port: u16,
    admin: String,
    berth: Berth,
    env: Env,
}

impl Drop for Proj {
    fn drop(&mut self) {
        let label = format!("label=com.docker.compose.project={}", self.name);
        // Built images are tagged <project>-<service>:<deploy>.
        let images = format!("reference={}-*", self.name);
        let run = |args: &[&str]| {
            std::process::Command::new("docker")
                .args(args)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        for (list, rm) in [
            (vec!["ps", "-aq", "--filter", &label], vec!["rm", "-f"]),
            (
                vec!["network", "ls", "-q", "--filter", &label],
                vec!["network", "rm"],
            ),
            (
                vec!["volume", "ls", "-q", "--filter", &label],
                vec!["volume", "rm", "-f"],
            ),
            (
                vec!["image", "ls", "-q", "--filter", &images],
                vec!["rmi", "-f"],
            ),
        ] {
            let ids: Vec<String> = run(&list).split_whitespace().map(str::to_string).collect();
            if !ids.is_empty() {
                let mut all: Vec<&str> = rm.clone();
                all.extend(ids.iter().map(String::as_str));
                run(&all);
            }
        }
    }
}

impl Proj {
    async fn new(name: &str, extra_config: &str) -> Proj {
        Proj::with_dns(name, extra_config, None).await
    }

    /// With berth's DNS on `dns` (a port on 127.0.0.1).
    async fn with_dns(name: &str, extra_config: &str, dns: Option<u16>) -> Proj {
        let env = Env::new(name).await;
        let (port, admin) = (free_port(), free_port());
        let mut config = env.config_admin(port, admin, extra_config);
        if let Some(dns) = dns {
            config = config.replace(
                DNS_OFF,
                &format!("dns:\n  listen: 127.0.0.1:{dns}\n  forward: false\n"),
            );
        }
        let berth = Berth::start(&config, port).await;
        Proj {
            dir: TempDir::new(),
            name: env.id.clone(),
            host: env.host("web"),
            port,
            admin: format!("127.0.0.1:{admin}"),
            berth,
            env,
        }
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn file(&self) -> String {
        self.dir.path().join("compose.yaml").display().to_string()
    }

    /// The three-service project: web (built, 2 replicas, on `/`) after db
    /// is healthy; api (an image, on `/cgi-bin`); db (a healthcheck, a
    /// volume). `web_version` goes into web's build.
    fn three_services(&self, web_version: &str) {
        let (id, host) = (&self.env.id, &self.host);
        self.write(
            "web/Dockerfile",
            &format!("FROM {IMAGE}\nARG GREETING\nENV VERSION={web_version} GREETING=$GREETING\n"),
        );
        self.write(
            "compose.yaml",
            &format!(
                r#"name: {id}
services:
  web:
    build:
      context: ./web
      args:
        GREETING: hello
    deploy:
      replicas: 2
    depends_on:
      db:
        condition: service_healthy
    labels:
      berth-test.run: {id}
      berth.host: {host}
      berth.health.path: /health
      berth.health.interval: 300ms
  api:
    image: {IMAGE}
    environment:
      VERSION: api
    labels:
      - berth-test.run={id}
      - berth.host={host}
      - berth.path=/cgi-bin
  db:
    image: {IMAGE}
    environment:
      VERSION: db
    healthcheck:
      test: ["CMD", "wget", "-qO-", "http://127.0.0.1:8080/health"]
      interval: 1s
      retries: 5
    volumes:
      - data:/data
    labels:
      berth-test.run: {id}
volumes:
  data:
"#
            ),
        );
    }

    async fn deploy(&self, args: &[&str]) -> (i32, String) {
        let file = self.file();
        let mut all: Vec<String> = vec!["deploy".into(), "-f".into(), file];
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let (code, out, err) = cli(&self.admin, &all).await;
        println!("berth {}:\n{out}{err}", all.join(" "));
        (code, format!("{out}{err}"))
    }

    /// Container id → (service, name) of the project, running or not.
    async fn containers(&self) -> Vec<(String, String, String)> {
        let out = docker(&[
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.name),
            "--format",
            "{{.ID}} {{.Label \"com.docker.compose.service\"}} {{.Names}}",
        ])
        .await;
        let mut v: Vec<(String, String, String)> = out
            .lines()
            .filter_map(|l| {
                let mut p = l.split_whitespace();
                Some((p.next()?.into(), p.next()?.into(), p.next()?.into()))
            })
            .collect();
        v.sort_by(|a, b| (&a.1, &a.2).cmp(&(&b.1, &b.2)));
        v
    }

    async fn ids_of(&self, service: &str) -> Vec<String> {
        self.containers()
            .await
            .into_iter()
            .filter(|c| c.1 == service)
            .map(|c| c.0)
            .collect()
    }

    async fn body(&self, path: &str) -> String {
        let r = HttpClient::new()
            .get(self.port, &self.host, path)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        r.body
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compose_project_deploys_in_order_and_redeploys_only_what_changed_under_load() {
    let dns = free_port();
    let p = Proj::with_dns("proj", "", Some(dns)).await;
    p.three_services("v1");

    // --dry-run: the plan, and nothing on the engine.
    let (code, out) = p.deploy(&["--dry-run"]).await;
    assert_eq!(code, 0, "{out}");
    for line in [
        "web: create (2 replicas)",
        "api: create (1 replicas)",
        "db: create (1 replicas)",
        "nothing was changed",
    ] {
        assert!(out.contains(line), "no {line:?} in:\n{out}");
    }
    assert!(
        p.containers().await.is_empty(),
        "a dry run created containers"
    );

    // First deploy: db healthy before web starts; routed; docker-compose agrees.
    let (code, out) = p.deploy(&[]).await;
    assert_eq!(code, 0, "{out}");
    for s in ["building", "deploying", "waiting_healthy", "completed"] {
        assert!(out.contains(s), "no {s} in:\n{out}");
    }
    let db_ready = out
        .find(&format!("{}-db-1 is ready", p.name))
        .expect("db got healthy");
    let web_made = out
        .find(&format!("creating a replica of {}/web", p.name))
        .expect("web was created");
    assert!(
        db_ready < web_made,
        "web started before db was healthy:\n{out}"
    );
    let all = p.containers().await;
    let names: Vec<&str> = all.iter().map(|c| c.2.as_str()).collect();
    assert_eq!(
        names,
        [
            format!("{}-api-1", p.name),
            format!("{}-db-1", p.name),
            format!("{}-web-1", p.name),
            format!("{}-web-2", p.name)
        ],
        "compose's names"
    );
    let web = p.body("/").await;
    assert!(web.trim_end().ends_with("v1"), "{web}");
    let api_page = p.body("/cgi-bin/who").await;
    assert!(
        api_page.contains(&format!("{}-api-1", p.name)) || !api_page.is_empty(),
        "{api_page}"
    );
    // Debian's docker-compose lists the same containers from the same file
    // (less its top-level name:, which compose v1 predates).
    let text = std::fs::read_to_string(p.file()).unwrap();
    p.write("compose-v1.yaml", text.split_once('\n').unwrap().1);
    let ps = tokio::process::Command::new("docker-compose")
        .args(["-p", &p.name, "-f", "compose-v1.yaml", "ps"])
        .current_dir(p.dir.path())
        .output()
        .await
        .expect("docker-compose");
    println!(
        "docker-compose ps:\n{}{}",
        String::from_utf8_lossy(&ps.stdout),
        String::from_utf8_lossy(&ps.stderr)
    );
    let ps = String::from_utf8_lossy(&ps.stdout).into_owned();
    for (_, _, name) in &all {
        assert!(
            ps.contains(name.as_str()),
            "docker-compose ps misses {name}:\n{ps}"
        );
    }
    // berth's DNS answers the services by name, each with its replicas.
    let dig = |name: String| async move {
        let out = tokio::process::Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                &dns.to_string(),
                &name,
                "+short",
                "+tries=1",
                "+time=2",
            ])
            .output()
            .await
            .expect("dig (apt-get install bind9-dnsutils)");
        let mut ips: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        ips.sort();
        ips
    };
    let web_ips = dig(format!("web.{}.internal", p.name)).await;
    assert_eq!(web_ips.len(), 2, "web.{}.internal: {web_ips:?}", p.name);
    assert_eq!(dig(format!("db.{}.internal", p.name)).await.len(), 1);
    // Docker's DNS on the project network answers the service name.
    let db_ip = docker(&["exec", &all[2].0, "nslookup", "db"]).await;
    assert!(db_ip.contains("Address"), "{db_ip}");

    // An identical deploy changes nothing.
    let (code, out) = p.deploy(&[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("nothing to change"), "{out}");
    assert_eq!(
        p.containers().await,
        all,
        "an identical deploy touched containers"
    );

    // A changed web source, under load: only web replaced, nothing failed.
    let (api_ids, db_ids) = (p.ids_of("api").await, p.ids_of("db").await);
    let old_web = p.ids_of("web").await;
    p.three_services("v2");
    let (code, out) = p.deploy(&["--dry-run"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("api: unchanged") && out.contains("db: unchanged"),
        "{out}"
    );
    let load = Load::start(p.port, &p.host, 4);
    load.wait_count(50, "the load to run before the redeploy")
        .await;
    let (code, out) = p.deploy(&[]).await;
    let done = load.count();
    load.wait_count(done + 50, "requests after the redeploy")
        .await;
    let (log, rate) = load.finish().await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("web: replace, zero downtime (2 -> 2 replicas)"),
        "{out}"
    );
    assert_all_served(&log, rate, "during the redeploy", Some(100.0));
    assert_eq!(p.ids_of("api").await, api_ids, "api was touched");
    assert_eq!(p.ids_of("db").await, db_ids, "db was touched");
    let new_web = p.ids_of("web").await;
    assert_eq!(new_web.len(), 2);
    assert!(
        new_web.iter().all(|id| !old_web.contains(id)),
        "web was not replaced"
    );
    for _ in 0..6 {
        let b = p.body("/").await;
        assert!(
            b.trim_end().ends_with("v2"),
            "served by the old version: {b}"
        );
    }

    // berth scale (db is not routed): berth ps shows the drift from the
    // file; the next deploy brings it back.
    let (code, out, err) = cli(&p.admin, &["scale", "db=2"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(p.ids_of("db").await.len(), 2);
    let (_, ps, _) = cli(&p.admin, &["ps"]).await;
    assert!(
        ps.contains(&format!(
            "drift: {}/db: 2 running, the last deploy made 1",
            p.name
        )),
        "{ps}"
    );
    let (code, out) = p.deploy(&[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("db: scale 2 -> 1 replicas"), "{out}");
    let (_, ps, _) = cli(&p.admin, &["ps"]).await;
    assert!(!ps.contains("drift:"), "{ps}");

    // The history has the three real deploys (and the dry runs).
    let (code, out, _) = cli(&p.admin, &["history", &p.name]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.matches("completed").count() >= 3, "{out}");

    // down: containers and networks go, the volume stays.
    let (code, out, err) = cli(&p.admin, &["down", &p.name]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(p.containers().await.is_empty(), "down left containers");
    assert!(
        !docker_ok(&["network", "inspect", &format!("{}_default", p.name)]).await,
        "down left the network"
    );
    assert!(
        docker_ok(&["volume", "inspect", &format!("{}_data", p.name)]).await,
        "down removed the volume"
    );
    let (code, out, err) = cli(&p.admin, &["deploy", "-f", &p.file()]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = cli(&p.admin, &["down", &p.name, "--volumes"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !docker_ok(&["volume", "inspect", &format!("{}_data", p.name)]).await,
        "down --volumes kept the volume"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_build_or_a_version_that_never_gets_healthy_keeps_the_old_one_serving() {
    let p = Proj::new("projfail", "deploy:\n  health_timeout: 4s\n").await;
    p.three_services("v1");
    let (code, out) = p.deploy(&[]).await;
    assert_eq!(code, 0, "{out}");
    let web = p.ids_of("web").await;

    // A build that fails.
    p.write(
        "web/Dockerfile",
        &format!("FROM {IMAGE}\nRUN echo compiling; exit 3\n"),
    );
    let load = Load::start(p.port, &p.host, 4);
    load.wait_count(50, "the load before the failed build")
        .await;
    let (code, out) = p.deploy(&[]).await;
    assert_eq!(code, 1, "a failed build exits 1:\n{out}");
    assert!(out.contains("] build_failed "), "{out}");
    assert!(
        out.contains("compiling"),
        "the build log is streamed:\n{out}"
    );
    assert!(
        out.contains("returned a non-zero code: 3"),
        "the build error is the reason:\n{out}"
    );

    // A version that exits at once: its exit code is the reason.
    p.write(
        "web/Dockerfile",
        &format!("FROM {IMAGE}\nCMD [\"/bin/sh\", \"-c\", \"echo crashing; exit 7\"]\n"),
    );
    let (code, out) = p.deploy(&[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("] rolled_back ") && out.contains("exited with code 7 before becoming ready"),
        "{out}"
    );

    // A version that never gets healthy (its /health never appears).
    p.write(
        "web/Dockerfile",
        &format!("FROM {IMAGE}\nENV VERSION=v3 HEALTHY=0\n"),
    );
    let (code, out) = p.deploy(&[]).await;
    let (log, rate) = load.finish().await;
    assert_eq!(code, 1, "{out}");
    let last = out.lines().last().unwrap_or_default();
    assert!(last.contains("rolled_back"), "{out}");
    assert!(
        last.contains("not ready after 4s") && last.contains("nothing was changed"),
        "{last}"
    );
    assert_all_served(&log, rate, "during the run", None);
    assert_eq!(
        p.ids_of("web").await,
        web,
        "the running version was replaced"
    );
    assert!(p.body("/").await.trim_end().ends_with("v1"));
    let (_, body) = api(
        &p.admin,
        "GET",
        &format!("/api/deployments/{}/history", p.name),
        Some(TOKEN),
    )
    .await;
    assert!(
        body.contains("\"build_failed\"") && body.contains("\"rolled_back\""),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_errors_name_file_line_column_and_key_and_change_nothing() {
    let p = Proj::new("projerr", "").await;
    let id = p.env.id.clone();
    for (yaml, want) in [
        (
            format!("services:\n  web:\n    image: {IMAGE}\n    colour: red\n"),
            vec!["compose.yaml:5:5", "colour"],
        ),
        (
            format!("services:\n  web:\n    image: {IMAGE}\n    environment:\n      A: ${{NEEDED:?set NEEDED first}}\n"),
            vec!["compose.yaml:6:", "NEEDED", "set NEEDED first"],
        ),
        (
            format!("services:\n  a:\n    image: {IMAGE}\n    depends_on: [b]\n  b:\n    image: {IMAGE}\n    depends_on: [a]\n"),
            vec!["compose.yaml:", "a -> b -> a"],
        ),
        (
            format!("services:\n  web:\n    image: {IMAGE}\n    ports:\n      - \"80a:80\"\n"),
            vec!["compose.yaml:6:", "ports", "80a"],
        ),
    ] {
        p.write("compose.yaml", &format!("name: {id}\n{yaml}"));
        let (code, out) = p.deploy(&[]).await;
        assert_eq!(code, 1, "{out}");
        for w in want {
            assert!(out.contains(w), "no {w:?} in:\n{out}");
        }
        assert!(p.containers().await.is_empty());
        assert!(!docker_ok(&["network", "inspect", &format!("{id}_default")]).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_values_wait_for_the_next_deploy_and_secrets_are_never_shown() {
    let p = Proj::new("projenv", "").await;
    let id = p.env.id.clone();
    p.write(
        "compose.yaml",
        &format!("name: {id}\nservices:\n  app:\n    image: {IMAGE}\n    labels:\n      berth-test.run: {id}\n"),
    );
    let (code, out) = p.deploy(&[]).await;
    assert_eq!(code, 0, "{out}");
    let before = p.ids_of("app").await;
    let (code, out, err) = cli(&p.admin, &["env", "set", &id, "MODE=prod"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = cli(
        &p.admin,
        &["env", "set", &id, "--secret", "DB_PASS=hunter2-s3cret"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("hunter2"), "{out}");
    assert_eq!(p.ids_of("app").await, before, "env set restarted something");
    let env_now = docker(&["inspect", "-f", "{{.Config.Env}}", &before[0]]).await;
    assert!(!env_now.contains("MODE=prod"), "{env_now}");
    let (code, out, _) = cli(&p.admin, &["env", "list", &id]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("MODE") && out.contains("prod") && out.contains("DB_PASS"),
        "{out}"
    );
    assert!(!out.contains("hunter2"), "a secret was shown: {out}");
    let (status, body) = api(
        &p.admin,
        "GET",
        &format!("/api/deployments/{id}/env"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200);
    assert!(!body.contains("hunter2"), "{body}");
    let (code, out) = p.deploy(&[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("hunter2"), "{out}");
    let after = p.ids_of("app").await;
    assert_ne!(after, before, "the next deploy applies the env");
    let env_now = docker(&["inspect", "-f", "{{.Config.Env}}", &after[0]]).await;
    assert!(
        env_now.contains("MODE=prod") && env_now.contains("DB_PASS=hunter2-s3cret"),
        "{env_now}"
    );
    let labels = docker(&["inspect", "-f", "{{json .Config.Labels}}", &after[0]]).await;
    assert!(
        !labels.contains("hunter2"),
        "a secret in the labels: {labels}"
    );
    let (_, history) = api(
        &p.admin,
        "GET",
        &format!("/api/deployments/{id}/history"),
        Some(TOKEN),
    )
    .await;
    assert!(!history.contains("hunter2"), "{history}");
    let state = p.berth_state_text();
    assert!(
        !state
            .iter()
            .any(|(f, t)| t.contains("hunter2") && !f.contains("env")),
        "a secret outside the env store: {state:?}"
    );
}

impl Proj {
    /// The files of berth's state dir (name, text).
    fn berth_state_text(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        fn walk(dir: &Path, out: &mut Vec<(String, String)>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if let Ok(t) = std::fs::read_to_string(&p) {
                    out.push((p.display().to_string(), t));
                }
            }
        }
        walk(&self.berth.state_dir(), &mut out);
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_runs_the_previous_images_again_under_load() {
    let p = Proj::new("projback", "").await;
    p.three_services("v1");
    assert_eq!(p.deploy(&[]).await.0, 0);
    p.three_services("v2");
    assert_eq!(p.deploy(&[]).await.0, 0);
    assert!(p.body("/").await.trim_end().ends_with("v2"));
    let load = Load::start(p.port, &p.host, 4);
    load.wait_count(50, "the load before the rollback").await;
    let (code, out, err) = cli(&p.admin, &["rollback", &p.name]).await;
    println!("berth rollback:\n{out}{err}");
    let done = load.count();
    load.wait_count(done + 50, "requests after the rollback")
        .await;
    let (log, rate) = load.finish().await;
    assert_eq!(code, 0, "{out}{err}");
    assert_all_served(&log, rate, "during the run", None);
    for _ in 0..6 {
        let b = p.body("/").await;
        assert!(b.trim_end().ends_with("v1"), "not rolled back: {b}");
    }
    assert!(
        out.contains("rolling back to deploy"),
        "which deploy it goes back to: {out}"
    );
    let (_, out, _) = cli(&p.admin, &["history", &p.name]).await;
    assert!(out.contains("rollback to"), "{out}");
    // Old builds are pruned, never the ones a rollback can go back to.
    let tags = docker(&[
        "image",
        "ls",
        "--format",
        "{{.Tag}}",
        &format!("{}-web", p.name),
    ])
    .await;
    assert_eq!(tags.lines().count(), 2, "{tags}");
}

/// A bare repository with one commit of a one-service project; returns the
/// work tree used to push.
async fn git(dir: &Path, args: &[&str]) -> String {
    let out = tokio::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .await
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn sign(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    format!(
        "sha256={}",
        tag.as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

async fn hook(admin: &str, name: &str, body: &str, signature: &str) -> (u16, String) {
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{admin}/api/deployments/{name}/hooks/git"))
        .header("x-github-event", "push")
        .header("x-hub-signature-256", signature)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(hyper::body::Bytes::from(
            body.to_string(),
        )))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let resp = client.request(req).await.expect("the webhook answers");
    let status = resp.status().as_u16();
    use http_body_util::BodyExt;
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_push_to_the_tracked_branch_redeploys_that_commit() {
    let p = Proj::new("projgit", "").await;
    let id = p.env.id.clone();
    let bare = p.dir.path().join("site.git");
    let work = p.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(
        p.dir.path(),
        &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
    )
    .await;
    git(&work, &["init", "-q", "-b", "main"]).await;
    let write = |version: &str| {
        std::fs::write(
            work.join("Dockerfile"),
            format!("FROM {IMAGE}\nENV VERSION={version}\n"),
        )
        .unwrap();
        std::fs::write(
            work.join("compose.yaml"),
            format!("services:\n  web:\n    build: .\n    labels:\n      berth-test.run: {id}\n      berth.host: {}\n", p.host),
        )
        .unwrap();
    };
    write("g1");
    git(&work, &["add", "."]).await;
    git(&work, &["commit", "-q", "-m", "first"]).await;
    git(&work, &["push", "-q", bare.to_str().unwrap(), "main"]).await;

    let (code, out, err) = cli(
        &p.admin,
        &[
            "deploy",
            "--git",
            bare.to_str().unwrap(),
            "--branch",
            "main",
            "--project",
            &id,
        ],
    )
    .await;
    println!("{out}{err}");
    assert_eq!(code, 0, "{out}{err}");
    let secret = out
        .split("with secret ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("the webhook secret is shown at creation")
        .to_string();
    assert!(p.body("/").await.trim_end().ends_with("g1"));

    write("g2");
    git(&work, &["commit", "-q", "-am", "second"]).await;
    git(&work, &["push", "-q", bare.to_str().unwrap(), "main"]).await;
    let commit = git(&work, &["rev-parse", "HEAD"]).await;
    let push = format!(
        r#"{{"ref":"refs/heads/main","after":"{commit}","repository":{{"default_branch":"main"}}}}"#
    );

    // A wrong signature: 401 and nothing deployed.
    let (status, body) = hook(
        &p.admin,
        &id,
        &push,
        &sign("not-the-secret", push.as_bytes()),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    // Another branch: ignored, and says so.
    let other = push.replace("refs/heads/main", "refs/heads/feature");
    let (status, body) = hook(&p.admin, &id, &other, &sign(&secret, other.as_bytes())).await;
    assert_eq!(status, 202, "{body}");
    assert!(body.contains("ignored"), "{body}");
    let (_, hist) = api(
        &p.admin,
        "GET",
        &format!("/api/deployments/{id}/history"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(
        hist.matches("\"trigger\"").count(),
        1,
        "something was deployed: {hist}"
    );
    assert!(hist.contains("\"trigger\":\"cli\""), "{hist}");
    assert!(p.body("/").await.trim_end().ends_with("g1"));

    // The right signature on the tracked branch: that commit is deployed.
    let (status, body) = hook(&p.admin, &id, &push, &sign(&secret, push.as_bytes())).await;
    assert_eq!(status, 202, "{body}");
    eventually(
        Duration::from_secs(90),
        "the pushed commit to serve",
        || async {
            let r = HttpClient::new().get(p.port, &p.host, "/").await.ok()?;
            r.body.trim_end().ends_with("g2").then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the webhook's deploy to complete",
        || async {
            let (_, hist) = api(
                &p.admin,
                "GET",
                &format!("/api/deployments/{id}/history"),
                Some(TOKEN),
            )
            .await;
            let h: serde_json::Value = serde_json::from_str(&hist).ok()?;
            let last = h.as_array()?.last()?.clone();
            (last["trigger"] == "webhook"
                && last["commit"] == commit.as_str()
                && last["status"] == "completed")
                .then_some(())
        },
    )
    .await;
}

/// `docker-compose` in the project's directory.
async fn compose(p: &Proj, args: &[&str]) -> String {
    let out = tokio::process::Command::new("docker-compose")
        .args(["-p", &p.name])
        .args(args)
        .current_dir(p.dir.path())
        .output()
        .await
        .expect("docker-compose");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("docker-compose {args:?}:\n{text}");
    assert!(out.status.success(), "docker-compose {args:?} failed");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_docker_compose_made_is_scaled_and_rolled_out_without_the_two_disagreeing() {
    let p = Proj::new("projdc", "").await;
    let id = p.env.id.clone();
    p.write(
        "docker-compose.yml",
        &format!(
            "services:\n  web:\n    image: {IMAGE}\n    labels:\n      berth-test.run: {id}\n      berth.host: {}\n",
            p.host
        ),
    );
    compose(&p, &["up", "-d"]).await;
    eventually(
        Duration::from_secs(15),
        "the compose replica to serve",
        || async {
            let r = HttpClient::new().get(p.port, &p.host, "/").await.ok()?;
            (r.status == 200).then_some(())
        },
    )
    .await;
    let (code, out, err) = cli(&p.admin, &["scale", "web=3"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let numbers = docker(&[
        "ps",
        "--filter",
        &format!("label=com.docker.compose.project={id}"),
        "--format",
        "{{.Label \"com.docker.compose.container-number\"}}",
    ])
    .await;
    let mut numbers: Vec<&str> = numbers.lines().collect();
    numbers.sort();
    assert_eq!(
        numbers,
        ["1", "2", "3"],
        "each replica its own container number"
    );
    let (code, out, err) = cli(&p.admin, &["rollout", "web", "--image", IMAGE_V2]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(p.body("/").await.trim_end().ends_with("v2"));
    // The file still names the old image: compose must not call the clones
    // up to date (it recreates them from the file, which owns the project).
    let up = compose(&p, &["up", "-d"]).await;
    assert!(!up.contains("is up-to-date"), "{up}");
    eventually(
        Duration::from_secs(30),
        "the file's image to serve again",
        || async {
            let r = HttpClient::new().get(p.port, &p.host, "/").await.ok()?;
            (r.status == 200 && r.body.trim_end().ends_with("v1")).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_domain_gives_each_deployed_service_a_hostname_of_its_own() {
    let p = Proj::new("projbase", "deploy:\n  base_domain: apps.test\n").await;
    let id = p.env.id.clone();
    p.write(
        "site/Dockerfile",
        &format!("FROM {IMAGE}\nENV VERSION=site\n"),
    );
    p.write(
        "compose.yaml",
        &format!(
            "name: {id}\nservices:\n  site:\n    build: ./site\n    expose: [\"8080\"]\n    labels:\n      berth-test.run: {id}\n  admin_ui:\n    image: {IMAGE}\n    expose: [\"8080\", \"9090\"]\n    labels:\n      berth-test.run: {id}\n"
        ),
    );
    let (code, out) = p.deploy(&[]).await;
    assert_eq!(code, 0, "{out}");
    let client = HttpClient::new();
    let site = format!("site.{id}.apps.test");
    let r = client.get(p.port, &site, "/").await.unwrap();
    assert_eq!(r.status, 200, "{site}: {}", r.body);
    assert!(r.body.trim_end().ends_with("site"), "{}", r.body);
    let admin = format!("admin-ui.{id}.apps.test");
    let r = client.get(p.port, &admin, "/").await.unwrap();
    assert_eq!(r.status, 200, "{admin}: {}", r.body);
    let (code, routes, _) = cli(&p.admin, &["routes"]).await;
    assert_eq!(code, 0);
    for host in [
        site.as_str(),
        admin.as_str(),
        &format!("admin-ui--9090.{id}.apps.test"),
    ] {
        assert!(
            routes.contains(host),
            "berth routes misses {host}:\n{routes}"
        );
    }
    let (code, out) = p.deploy(&[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("nothing to change"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_on_a_host_port_is_replaced_stop_first_and_a_task_runs_to_its_end_first() {
    let p = Proj::new("projstop", "deploy:\n  health_timeout: 4s\n").await;
    let id = p.env.id.clone();
    let host_port = free_port();
    let write = |db_version: &str, db_healthy: &str, migrate_exit: &str| {
        p.write(
            "compose.yaml",
            &format!(
                r#"name: {id}
services:
  migrate:
    image: {IMAGE}
    command: ["/bin/sh", "-c", "echo migrating; exit {migrate_exit}"]
    labels:
      berth-test.run: {id}
  web:
    image: {IMAGE}
    depends_on:
      migrate:
        condition: service_completed_successfully
    labels:
      berth-test.run: {id}
      berth.host: {host}
  db:
    image: {IMAGE}
    ports: ["127.0.0.1:{host_port}:8080"]
    environment:
      VERSION: {db_version}
      HEALTHY: "{db_healthy}"
    healthcheck:
      test: ["CMD", "wget", "-qO-", "http://127.0.0.1:8080/health"]
      interval: 500ms
      retries: 2
    labels:
      berth-test.run: {id}
"#,
                host = p.host
            ),
        )
    };
    let db_says = || async move {
        let r = HttpClient::new()
            .get(host_port, "localhost", "/version")
            .await;
        r.map(|r| r.body.trim().to_string()).unwrap_or_default()
    };
    write("d1", "1", "0");
    let (code, out) = p.deploy(&[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(p.body("/").await.trim_end().ends_with("v1"));
    assert_eq!(db_says().await, "d1");
    let (code, out) = p.deploy(&[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("nothing to change"),
        "a task that ran to its end is unchanged:\n{out}"
    );

    // A new db version: stop first (the host port), and the plan says why.
    write("d2", "1", "0");
    let (code, out) = p.deploy(&[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "db: replace, stop first (1 -> 1 replicas): it publishes host port {host_port}"
        )),
        "{out}"
    );
    assert_eq!(db_says().await, "d2");

    // One that never gets healthy: the old one is started again.
    let before = p.ids_of("db").await;
    write("d3", "0", "0");
    let (code, out) = p.deploy(&[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("] rolled_back ") && out.contains("the old replicas were started again"),
        "{out}"
    );
    assert_eq!(p.ids_of("db").await, before, "the old db was removed");
    eventually(
        Duration::from_secs(15),
        "the old db to answer again",
        || async { (db_says().await == "d2").then_some(()) },
    )
    .await;

    // A task that fails: what depends on it is not deployed.
    write("d2", "1", "3");
    let web = p.ids_of("web").await;
    let (code, out) = p.deploy(&[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("migrate exited with 3"), "{out}");
    assert_eq!(p.ids_of("web").await, web);
}
