//! Test harness: a real berth process, real containers on the real engine, a
//! real HTTP client. Everything a test creates carries `berth.test=<id>` and
//! is removed on drop, also after a failed assertion.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub const IMAGE: &str = "berth-test-web:1";
/// The same app reporting version v2.
pub const IMAGE_V2: &str = "berth-test-web:2";
/// An image whose /health never appears.
pub const IMAGE_BROKEN: &str = "berth-test-web:broken";
/// A healthy image whose `/cgi-bin/who` answers 500 (VERSION v3).
pub const IMAGE_500: &str = "berth-test-web:500";
/// Test configs turn DNS off: the default port would be shared by every berth.
pub const DNS_OFF: &str = "dns:\n  listen: \"off\"\n";
pub const TOKEN: &str = "berth-test-token-0123456789";
/// Labels for berth's active HTTP check on the test image.
pub const HTTP_CHECK: [&str; 3] = [
    "berth.health.path=/health",
    "berth.health.interval=300ms",
    "berth.health.timeout=300ms",
];

/// Builds the test image once per test run if it is missing.
pub fn ensure_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        // The version tests/image/build.sh stamps on the images: an older
        // image (other scripts) is rebuilt.
        let version = include_str!("../image/build.sh")
            .lines()
            .find_map(|l| l.strip_prefix("IMAGE_VERSION="))
            .expect("IMAGE_VERSION in tests/image/build.sh");
        let have = Command::new("docker")
            .args(["image", "inspect", "-f"])
            .arg("{{index .Config.Labels \"berth-test.image\"}}")
            .args([IMAGE, IMAGE_V2, IMAGE_BROKEN, IMAGE_500])
            .stderr(Stdio::null())
            .output()
            .map(|o| {
                o.status.success()
                    && String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .all(|l| l.trim() == version)
            })
            .unwrap_or(false);
        if !have {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/image/build.sh");
            let out = Command::new(script)
                .output()
                .expect("run tests/image/build.sh");
            assert!(
                out.status.success(),
                "building {IMAGE}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    });
}

/// The replica (hostname, a container id prefix) that served `GET /` of
/// the test image.
pub fn served_by(body: &str) -> String {
    body.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Runs the docker CLI; panics with its stderr on failure.
pub async fn docker(args: &[&str]) -> String {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A free loopback port (Pingora cannot report a port bound as :0), never
/// the same twice in one test run: two berths handed one port would both bind
/// it (Pingora listens with SO_REUSEPORT) and share its connections.
/// A container's address on its (one) network.
pub async fn ip_of(id: &str) -> String {
    docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        id,
    ])
    .await
}

pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind a free port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Polls `f` every 20 ms until it returns `Some`, or panics after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `f` every 20 ms for all of `window` and panics if it ever returns
/// `Some`: an absence observed over a stated window, not a sleep then a look.
pub async fn never<T, F, Fut>(window: Duration, what: &str, mut f: F)
where
    T: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + window;
    while Instant::now() < deadline {
        if let Some(v) = f().await {
            panic!("within {window:?}: {what}: {v:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the docker CLI; whether it exited 0 (for conditions that poll).
pub async fn docker_ok(args: &[&str]) -> bool {
    tokio::process::Command::new("docker")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// One test's Docker resources: a network and containers, all labelled.
pub struct Env {
    pub id: String,
    pub network: String,
}

impl Env {
    pub async fn new(name: &str) -> Env {
        ensure_image();
        static N: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let network = format!("berth-{id}");
        docker(&[
            "network",
            "create",
            "--label",
            &format!("berth-test.run={id}"),
            &network,
        ])
        .await;
        Env { id, network }
    }

    /// A hostname unique to this test.
    pub fn host(&self, name: &str) -> String {
        format!("{name}.{}.test", self.id)
    }

    /// Starts a test backend; `args` go before the image (labels, env, ...).
    /// Returns the container id.
    pub async fn run(&self, name: &str, args: &[&str]) -> String {
        self.run_image(name, IMAGE, args).await
    }

    pub async fn run_image(&self, name: &str, image: &str, args: &[&str]) -> String {
        let cname = format!("{}-{name}", self.id);
        let label = format!("berth-test.run={}", self.id);
        let mut all = vec![
            "run",
            "-d",
            "--name",
            &cname,
            "--network",
            &self.network,
            "--label",
            &label,
        ];
        all.extend_from_slice(args);
        all.push(image);
        docker(&all).await
    }

    pub fn container_name(&self, name: &str) -> String {
        format!("{}-{name}", self.id)
    }

    /// The berth config for this test: only this test's containers.
    pub fn config(&self, http: u16, extra: &str) -> String {
        format!(
            "http:\n  listen: 127.0.0.1:{http}\ndocker:\n  constraint: berth-test.run={}\n  resync_interval: 30s\nadmin:\n  listen: \"off\"\ntls:\n  listen: \"off\"\n{DNS_OFF}log:\n  level: debug\n{extra}",
            self.id
        )
    }

    /// As [`Env::config`], with the DNS section `dns` (YAML, `dns:` included).
    pub fn config_dns(&self, http: u16, dns: &str) -> String {
        self.config(http, "").replace(DNS_OFF, dns)
    }

    /// As [`Env::config`], with the admin API on `admin` and [`TOKEN`].
    pub fn config_admin(&self, http: u16, admin: u16, extra: &str) -> String {
        self.config(http, extra).replace(
            "admin:\n  listen: \"off\"\n",
            &format!("admin:\n  listen: 127.0.0.1:{admin}\n  token: {TOKEN}\n"),
        )
    }

    /// Compose labels, so the test's containers form a service `name`.
    pub fn service_labels(&self, name: &str) -> Vec<String> {
        vec![
            "--label".into(),
            format!("com.docker.compose.project={}", self.id),
            "--label".into(),
            format!("com.docker.compose.service={name}"),
        ]
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let label = format!("label=berth-test.run={}", self.id);
        let ids = Command::new("docker")
            .args(["ps", "-aq", "--filter", &label])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .output();
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network])
            .output();
    }
}

/// A running `berth serve`, killed on drop (with the berths that took over
/// from it through `berth upgrade`).
pub struct Berth {
    child: Child,
    log: PathBuf,
    cfg: PathBuf,
    /// The berths that took over through upgrades, the one serving now last.
    successors: Vec<u32>,
    _dir: TempDir,
}

impl Berth {
    /// Starts berth on `config_yaml` and waits until it answers HTTP and has
    /// synced with the engine (unless the config points at no engine).
    pub async fn start(config_yaml: &str, http: u16) -> Berth {
        Berth::start_with_env(config_yaml, http, &[]).await
    }

    /// As [`Berth::start`], with these environment variables set.
    pub async fn start_with_env(config_yaml: &str, http: u16, vars: &[(&str, &str)]) -> Berth {
        let b = Berth::spawn_with_env(config_yaml, vars);
        let client = HttpClient::new();
        eventually(Duration::from_secs(15), "berth to answer HTTP", || async {
            client.get(http, "ready.invalid", "/").await.ok()
        })
        .await;
        b
    }

    /// Starts berth on the test's config (no admin API, no TLS) and waits
    /// until it has listed the engine once.
    pub async fn synced(env: &Env, http: u16) -> Berth {
        let b = Berth::start(&env.config(http, ""), http).await;
        b.wait_log("resynced with the Docker engine", Duration::from_secs(10))
            .await;
        b
    }

    pub fn spawn_with_env(config_yaml: &str, vars: &[(&str, &str)]) -> Berth {
        let dir = TempDir::new();
        let cfg = dir.path().join("berth.yaml");
        // Its own state (never the user's): unless the test keeps one across
        // restarts, it goes with this berth.
        let mut config_yaml = config_yaml.to_string();
        if !config_yaml.contains("\nstate_dir:") {
            config_yaml.push_str(&format!(
                "state_dir: {}\n",
                dir.path().join("state").display()
            ));
        }
        std::fs::write(&cfg, config_yaml).expect("write config");
        let log = dir.path().join("berth.log");
        // Appended to: a berth that takes over in an upgrade logs here too.
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("create log");
        let child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info,berth=debug")
            .envs(vars.iter().copied())
            .stdout(logf.try_clone().expect("dup log"))
            .stderr(logf)
            .spawn()
            .expect("spawn berth");
        Berth {
            child,
            log,
            cfg,
            successors: Vec::new(),
            _dir: dir,
        }
    }

    /// Its state dir (the one the harness gives it).
    pub fn state_dir(&self) -> PathBuf {
        self._dir.path().join("state")
    }

    /// Replaces the config file with `yaml`, keeping this berth's state_dir.
    pub fn rewrite_config(&self, yaml: &str) {
        let old = std::fs::read_to_string(&self.cfg).expect("read config");
        let state = old
            .lines()
            .find(|l| l.starts_with("state_dir:"))
            .map(|l| format!("{l}\n"))
            .unwrap_or_default();
        let keep = if yaml.contains("\nstate_dir:") {
            ""
        } else {
            &state
        };
        std::fs::write(&self.cfg, format!("{yaml}{keep}")).expect("write config");
    }

    /// Runs `berth upgrade` (as `systemctl reload` would) with this berth's
    /// config: a new berth takes over; its log goes to the same file.
    /// Returns `berth upgrade`'s exit code and output.
    pub async fn upgrade(&mut self) -> (i32, String) {
        let logf = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .expect("open log");
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["upgrade", "--config"])
            .arg(&self.cfg)
            .env("RUST_LOG", "info,berth=debug")
            .stdout(std::process::Stdio::piped())
            .stderr(logf)
            // Not `output()`: tokio's would pipe stderr too, and the new
            // berth would hold that pipe open.
            .spawn()
            .expect("run berth upgrade")
            .wait_with_output()
            .await
            .expect("run berth upgrade");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if let Some(pid) = text
            .strip_prefix("berth ")
            .and_then(|t| t.split_whitespace().next())
            .and_then(|p| p.parse().ok())
        {
            self.successors.push(pid);
        }
        (out.status.code().unwrap_or(-1), text)
    }

    /// The pid of the berth serving now.
    pub fn pid(&self) -> u32 {
        self.successors.last().copied().unwrap_or(self.child.id())
    }

    /// Whether the berth started here (not its successor) has exited.
    pub fn first_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits up to `limit` for the berth started here (not its successor)
    /// to exit; whether it did.
    pub async fn exited_first(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !self.first_exited() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Where berth's log is written (to read it from another task).
    pub fn log_path(&self) -> PathBuf {
        self.log.clone()
    }

    /// Sends the signal (`TERM`, `INT`, ...) to the berth process.
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -s {name}");
    }

    /// The exit code once berth has exited, polled until `limit`; `None`
    /// while it still runs.
    pub async fn exited(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How many log lines contain every one of `parts`.
    pub fn count_lines(&self, parts: &[&str]) -> usize {
        self.log()
            .lines()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .count()
    }

    pub async fn wait_log(&self, needle: &str, limit: Duration) -> String {
        eventually(limit, &format!("berth log line {needle:?}"), || async {
            let l = self.log();
            l.contains(needle).then_some(l)
        })
        .await
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in &self.successors {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        if std::thread::panicking() {
            eprintln!("---- berth log ----\n{}", self.log());
        }
    }
}

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "berth-it-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// A keep-alive HTTP/1.1 client, as a browser or curl would use.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
}

impl HttpClient {
    pub fn new() -> HttpClient {
        HttpClient {
            inner: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn get(&self, port: u16, host: &str, path: &str) -> Result<Response, String> {
        self.request("GET", port, host, path).await
    }

    pub async fn request(
        &self,
        method: &str,
        port: u16,
        host: &str,
        path: &str,
    ) -> Result<Response, String> {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1:{port}{path}"))
            .header("host", host)
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        self.send(req).await
    }

    /// Sends `req` as it is; gives up after 10 s.
    pub async fn send(&self, req: http::Request<Empty<Bytes>>) -> Result<Response, String> {
        let fut = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| format!("{e:?}"))?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok(Response {
                status,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        };
        tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .map_err(|_| "timed out".to_string())?
    }
}

/// Runs the berth CLI to completion: (exit code, stdout, stderr).
pub async fn berth_cli(args: &[&str]) -> (i32, String, String) {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth");
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("berth exits by itself")
        .expect("berth output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One call to the admin API at `admin` (`127.0.0.1:PORT`), with `token` as
/// the bearer token if given: (status, body); status 0 if nothing answered.
pub async fn api(admin: &str, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{admin}{path}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req
        .body(Empty::new())
        .expect("a well-formed admin API request");
    match HttpClient::new().send(req).await {
        Ok(r) => (r.status, r.body),
        Err(_) => (0, String::new()),
    }
}

/// Runs the operator CLI against the admin API at `admin` with [`TOKEN`]:
/// (exit code, stdout, stderr).
pub async fn cli(admin: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = args.to_vec();
    all.extend(["--admin", admin, "--token", TOKEN]);
    berth_cli(&all).await
}

/// Continuous load: `workers` clients, each with its own keep-alive
/// connections, sending `GET /` back to back until stopped.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    log: std::sync::Arc<std::sync::Mutex<Vec<Result<String, String>>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
}

impl Load {
    pub fn start(port: u16, host: &str, workers: usize) -> Load {
        Load::start_path(port, host, "/", workers)
    }

    /// As [`Load::start`], sending `GET path`.
    pub fn start_path(port: u16, host: &str, path: &str, workers: usize) -> Load {
        Load::start_paced(port, host, path, workers, Duration::ZERO)
    }

    /// As [`Load::start_path`], each client waiting `pause` after each answer.
    pub fn start_paced(port: u16, host: &str, path: &str, workers: usize, pause: Duration) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let log: std::sync::Arc<std::sync::Mutex<Vec<Result<String, String>>>> = Default::default();
        let workers = (0..workers)
            .map(|_| {
                let (stop, log, host) = (stop.clone(), log.clone(), host.to_string());
                let path = path.to_string();
                tokio::spawn(async move {
                    let client = HttpClient::new();
                    while !stop.load(Ordering::Relaxed) {
                        let r = match client.get(port, &host, &path).await {
                            Ok(r) if r.status == 200 => Ok(r.body),
                            Ok(r) => Err(format!("status {}: {}", r.status, r.body)),
                            Err(e) => Err(e),
                        };
                        log.lock().unwrap().push(r);
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            log,
            workers,
            started: Instant::now(),
        }
    }

    /// Requests answered so far.
    pub fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Waits until at least `n` requests were answered (panics after 15 s):
    /// proof that the load runs, where a sleep would only hope so.
    pub async fn wait_count(&self, n: usize, what: &str) {
        eventually(Duration::from_secs(15), what, || async {
            (self.count() >= n).then_some(())
        })
        .await
    }

    /// Stops the clients; returns every result in order, and the rate.
    pub async fn finish(self) -> (Vec<Result<String, String>>, f64) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.expect("load worker");
        }
        let secs = self.started.elapsed().as_secs_f64();
        let log = std::mem::take(&mut *self.log.lock().unwrap());
        let rate = log.len() as f64 / secs;
        (log, rate)
    }
}

/// Prints how a load run went `during` something, and fails the test if a
/// request failed, or (with `min_rate`) if the load was too light to mean
/// anything.
pub fn assert_all_served(
    log: &[Result<String, String>],
    rate: f64,
    during: &str,
    min_rate: Option<f64>,
) {
    println!(
        "{} requests at {rate:.0}/s {during}, {} failed",
        log.len(),
        log.iter().filter(|r| r.is_err()).count()
    );
    if let Some(min) = min_rate {
        assert!(rate >= min, "load too light to mean anything: {rate:.0}/s");
    }
    assert!(
        failures(log).is_empty(),
        "failed requests {during}: {:?}",
        failures(log)
    );
}

/// The failed results of a load run, at most five, for assertion messages.
pub fn failures(log: &[Result<String, String>]) -> Vec<&String> {
    log.iter()
        .filter_map(|r| r.as_ref().err())
        .take(5)
        .collect()
}

/// The distinct bodies of the 200 answers to `tries` requests: with the test
/// image, one per replica in rotation.
pub async fn replicas_seen(
    client: &HttpClient,
    port: u16,
    host: &str,
    tries: usize,
) -> std::collections::HashSet<String> {
    let mut seen = std::collections::HashSet::new();
    for _ in 0..tries {
        if let Ok(r) = client.get(port, host, "/").await {
            if r.status == 200 {
                seen.insert(r.body);
            }
        }
    }
    seen
}

/// `n` replicas of a compose-labelled service `web` with `berth.host` and
/// `labels`, behind a berth with its admin API, all of them serving.
pub struct Replicas {
    // Dropped in this order: berth first, then the containers.
    pub berth: Berth,
    pub env: Env,
    pub host: String,
    pub port: u16,
    /// `127.0.0.1:PORT` of the admin API.
    pub admin: String,
    /// Container ids, in the order they were started (web-1, web-2, ...).
    pub ids: Vec<String>,
}

pub async fn replicas(name: &str, n: usize, labels: &[&str], extra: &str) -> Replicas {
    replicas_with(name, n, labels, &[], extra).await
}

/// As [`replicas`], each replica also run with `docker run` arguments `run`.
pub async fn replicas_with(
    name: &str,
    n: usize,
    labels: &[&str],
    run: &[&str],
    extra: &str,
) -> Replicas {
    let env = Env::new(name).await;
    let host = env.host("web");
    let mut args = env.service_labels("web");
    args.extend(run.iter().map(|a| a.to_string()));
    args.extend(["--label".to_string(), format!("berth.host={host}")]);
    args.extend(
        labels
            .iter()
            .flat_map(|l| ["--label".to_string(), l.to_string()]),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut ids = Vec::new();
    for i in 1..=n {
        ids.push(env.run(&format!("web-{i}"), &args).await);
    }
    let (port, admin) = (free_port(), free_port());
    let berth = Berth::start(&env.config_admin(port, admin, extra), port).await;
    let client = HttpClient::new();
    eventually(
        Duration::from_secs(15),
        "every replica in rotation",
        || async {
            let seen = replicas_seen(&client, port, &host, 3 * n).await;
            (seen.len() == n).then_some(())
        },
    )
    .await;
    Replicas {
        berth,
        env,
        host,
        port,
        admin: format!("127.0.0.1:{admin}"),
        ids,
    }
}

/// A running `berth logs TARGET -f --tail 0` against the admin API, its
/// output collected as it comes; killed on drop.
pub struct LogFollower {
    child: tokio::process::Child,
    out: std::sync::Arc<std::sync::Mutex<String>>,
    reader: tokio::task::JoinHandle<()>,
}

impl LogFollower {
    pub fn start(admin: &str, target: &str) -> LogFollower {
        use tokio::io::AsyncReadExt;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["logs", target, "-f", "--tail", "0"])
            .args(["--admin", admin, "--token", TOKEN])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn berth logs -f");
        let mut stdout = child.stdout.take().expect("its stdout");
        let out: std::sync::Arc<std::sync::Mutex<String>> = Default::default();
        let collected = out.clone();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                collected.lock().unwrap().push_str(&text);
            }
        });
        LogFollower { child, out, reader }
    }

    /// What it printed so far.
    pub fn text(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Still following (it did not end by itself).
    pub fn running(&mut self) -> bool {
        self.child.try_wait().is_ok_and(|s| s.is_none())
    }
}

impl Drop for LogFollower {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        self.reader.abort();
    }
}

/// One routed test container (`web`, on `berth.host=web.<env>.test`) behind
/// a berth on the test's config plus `extra`, its route answering.
pub struct Served {
    pub berth: Berth,
    pub port: u16,
    pub host: String,
    /// The container's id.
    pub id: String,
}

pub async fn serve_web(env: &Env, extra: &str) -> Served {
    let host = env.host("web");
    let id = env
        .run("web", &["--label", &format!("berth.host={host}")])
        .await;
    let port = free_port();
    let berth = Berth::start(&env.config(port, extra), port).await;
    let client = HttpClient::new();
    eventually(Duration::from_secs(10), "the route", || async {
        (client.get(port, &host, "/").await.ok()?.status == 200).then_some(())
    })
    .await;
    Served {
        berth,
        port,
        host,
        id,
    }
}

/// Waits (up to `limit`) until a slow CGI request (`?sleep=`/`?wait=`) runs
/// in container `id`: its `sleep` is the only one there.
pub async fn until_in_backend(id: &str, limit: Duration) {
    eventually(limit, "the slow request in the backend", || async {
        docker_ok(&["exec", id, "pidof", "sleep"])
            .await
            .then_some(())
    })
    .await;
}

/// Waits until the admin API at `admin` answers: berth answers HTTP first,
/// the admin listener may come a moment later.
pub async fn admin_ready(admin: &str) {
    eventually(Duration::from_secs(5), "the admin API", || async {
        (api(admin, "GET", "/api/health", None).await.0 == 200).then_some(())
    })
    .await;
}
