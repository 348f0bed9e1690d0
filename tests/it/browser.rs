//! A real browser for the dashboard tests: headless Chromium driven through
//! chromedriver with the W3C WebDriver protocol.
//!
//! Needs Debian's `chromium` and `chromium-driver` packages
//! (`/usr/bin/chromium`, `/usr/bin/chromedriver`, the same version: the
//! driver refuses a browser of another major version). Other paths can be
//! given with `BERTH_TEST_CHROMIUM` and `BERTH_TEST_CHROMEDRIVER`.
//!
//! Why not selenium: selenium is only a client of this same protocol (JSON
//! over HTTP to chromedriver). Speaking it from the Rust harness keeps the
//! browser tests in the same test binary as [`Berth`](super::harness::Berth),
//! the container helpers and [`eventually`](super::harness::eventually), with
//! no Python or Java runtime, run by the same `cargo test`.
//!
//! Every method panics with a message naming the command, the selector and
//! WebDriver's own error: a test reads as a sequence of steps, and the first
//! step that fails says why. On a panic the browser saves a screenshot and
//! prints the page's URL and console errors before it goes.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use super::harness::{eventually, free_port, TempDir};

/// The key under which WebDriver returns an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How often the `wait_*` methods look again.
const POLL: Duration = Duration::from_millis(50);

/// One WebDriver command's time limit: page loads are capped lower (by the
/// session's `pageLoad` timeout), so this only catches a hung driver.
const COMMAND_LIMIT: Duration = Duration::from_secs(30);

/// One line of the browser's console log as chromedriver reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// `SEVERE`, `WARNING`, `INFO`, `DEBUG`.
    pub level: String,
    /// `console-api`, `javascript` (uncaught exceptions), `network` (failed
    /// loads), `security` (CSP violations), ...
    pub source: String,
    pub message: String,
}

/// A cookie as the browser holds it (W3C serialization).
#[derive(Debug, Clone, PartialEq)]
pub struct Cookie {
    pub name: String,
    pub value: String,
    pub path: String,
    pub domain: String,
    pub http_only: bool,
    pub secure: bool,
    /// `Strict`, `Lax` or `None`, as the browser reports it.
    pub same_site: Option<String>,
    /// Unix seconds; `None` for a session cookie.
    pub expiry: Option<u64>,
}

/// chromedriver as a child process in its own process group: killed with
/// the browsers it started when dropped, also when the test panics (and
/// also when starting the session failed half-way).
struct Driver {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Driver {
    fn start(dir: &Path) -> Driver {
        use std::os::unix::process::CommandExt;
        let bin = std::env::var("BERTH_TEST_CHROMEDRIVER")
            .unwrap_or_else(|_| "/usr/bin/chromedriver".to_string());
        assert!(
            Path::new(&bin).exists(),
            "{bin} is missing: the browser tests need Debian's chromium and chromium-driver"
        );
        let port = free_port();
        let log = dir.join("chromedriver.log");
        let out = std::fs::File::create(&log).expect("create chromedriver log");
        let child = Command::new(&bin)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup chromedriver log"))
            .stderr(out)
            // Its own group, so that drop can end chromium with it even if
            // the session was never deleted.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        Driver { child, port, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group's id is the driver's pid (`process_group(0)`).
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium with one WebDriver session, ended on drop.
pub struct Browser {
    session: String,
    client: Client<HttpConnector, Full<Bytes>>,
    /// Every console entry read so far: chromedriver hands each one out
    /// once, the browser keeps them all for [`Browser::console`].
    console: Mutex<Vec<LogEntry>>,
    /// Chromium's pid as chromedriver reports it.
    chromium_pid: Option<u32>,
    // Dropped after the session is deleted: first the driver, then its
    // profile directory.
    driver: Driver,
    _dir: TempDir,
}

impl Browser {
    /// Starts chromedriver and a fresh headless Chromium (its own profile,
    /// a 1280x800 window).
    pub async fn start() -> Browser {
        let dir = TempDir::new();
        let driver = Driver::start(dir.path());
        let client = Client::builder(TokioExecutor::new()).build_http();
        let port = driver.port;
        eventually(Duration::from_secs(10), "chromedriver ready", || {
            let client = client.clone();
            async move {
                let status = request(&client, port, "GET", "/status", None).await.ok()?;
                (status["ready"] == true).then_some(())
            }
        })
        .await;
        let binary = std::env::var("BERTH_TEST_CHROMIUM")
            .unwrap_or_else(|_| "/usr/bin/chromium".to_string());
        let profile = dir.path().join("profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary,
                "args": [
                    "--headless=new",
                    // No user namespaces for the sandbox in a container.
                    "--no-sandbox",
                    "--disable-gpu",
                    // /dev/shm is small in containers; Chromium crashes there.
                    "--disable-dev-shm-usage",
                    "--window-size=1280,800",
                    format!("--user-data-dir={}", profile.display()),
                    "--no-first-run",
                    "--disable-extensions",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-default-apps",
                ],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
            // A page that does not load fails its step in seconds, not in
            // chromedriver's default five minutes.
            "timeouts": {"implicit": 0, "pageLoad": 15000, "script": 10000},
        }}});
        let created = request(&client, port, "POST", "/session", Some(caps))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "create a WebDriver session: {e}\nchromedriver log:\n{}",
                    driver.log()
                )
            });
        let session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {created}"))
            .to_string();
        let chromium_pid = created["capabilities"]["goog:processID"]
            .as_u64()
            .map(|p| p as u32);
        Browser {
            session,
            client,
            console: Mutex::new(Vec::new()),
            chromium_pid,
            driver,
            _dir: dir,
        }
    }

    /// Opens `url` and waits for its `load` event.
    pub async fn goto(&self, url: &str) {
        self.cmd(
            "POST",
            "/url",
            Some(json!({ "url": url })),
            &format!("goto {url}"),
        )
        .await;
    }

    /// Back in history, as the browser's back button.
    pub async fn back(&self) {
        self.cmd("POST", "/back", Some(json!({})), "back").await;
    }

    /// Reloads the page.
    pub async fn refresh(&self) {
        self.cmd("POST", "/refresh", Some(json!({})), "refresh")
            .await;
    }

    /// The current URL (after redirects and `history.pushState`).
    pub async fn url(&self) -> String {
        string(self.cmd("GET", "/url", None, "url").await)
    }

    pub async fn title(&self) -> String {
        string(self.cmd("GET", "/title", None, "title").await)
    }

    /// The first element matching `css`, now (see [`Browser::wait_for`] to
    /// wait for one): its WebDriver element id.
    pub async fn find(&self, css: &str) -> String {
        match self.try_find(css).await {
            Ok(Some(id)) => id,
            Ok(None) => panic!("no element matches {css:?} on {}", self.url().await),
            Err(e) => panic!("find {css:?}: {e}"),
        }
    }

    /// Every element matching `css` now, in document order (none is no error).
    pub async fn find_all(&self, css: &str) -> Vec<String> {
        let found = self
            .cmd(
                "POST",
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
                &format!("find_all {css:?}"),
            )
            .await;
        found
            .as_array()
            .map(|a| a.iter().filter_map(element_id).collect())
            .unwrap_or_default()
    }

    /// The rendered text of the first element matching `css` (as the user
    /// sees it: hidden elements give "", CSS `text-transform` applies).
    pub async fn text(&self, css: &str) -> String {
        self.try_text(css)
            .await
            .unwrap_or_else(|e| panic!("text of {css:?}: {e}"))
    }

    /// An attribute of the first element matching `css` as in the markup
    /// (`value` is the initial value, not what was typed: see
    /// [`Browser::prop`]); `None` if it has none.
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        let id = self.find(css).await;
        let v = self
            .cmd(
                "GET",
                &format!("/element/{id}/attribute/{name}"),
                None,
                &format!("attribute {name:?} of {css:?}"),
            )
            .await;
        v.as_str().map(String::from)
    }

    /// A DOM property of the first element matching `css` (`value`,
    /// `checked`, `disabled`, ...): the live state; `null` if it has none.
    pub async fn prop(&self, css: &str, name: &str) -> Value {
        let id = self.find(css).await;
        self.cmd(
            "GET",
            &format!("/element/{id}/property/{name}"),
            None,
            &format!("property {name:?} of {css:?}"),
        )
        .await
    }

    /// Clicks the first element matching `css` as a user would: fails if it
    /// is hidden or another element covers it.
    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.cmd(
            "POST",
            &format!("/element/{id}/click"),
            Some(json!({})),
            &format!("click {css:?}"),
        )
        .await;
    }

    /// Clears the first field matching `css` and types `text` into it (key
    /// by key: input events fire as for a user). The field keeps the focus.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.cmd(
            "POST",
            &format!("/element/{id}/clear"),
            Some(json!({})),
            &format!("clear {css:?}"),
        )
        .await;
        self.cmd(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
            &format!("type into {css:?}"),
        )
        .await;
    }

    /// Presses and releases Enter on whatever has the focus (after
    /// [`Browser::type_into`]: the field typed into, so its form submits).
    pub async fn press_enter(&self) {
        let enter = "\u{E007}";
        let actions = json!({"actions": [{
            "type": "key",
            "id": "keyboard",
            "actions": [
                {"type": "keyDown", "value": enter},
                {"type": "keyUp", "value": enter},
            ],
        }]});
        self.cmd("POST", "/actions", Some(actions), "press Enter")
            .await;
        self.cmd("DELETE", "/actions", None, "release keys").await;
    }

    /// Runs `js` as a function body in the page (`return` gives the value;
    /// `arguments[i]` are `args`). A returned Promise is awaited.
    pub async fn execute(&self, js: &str, args: &[Value]) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": js, "args": args })),
            &format!("execute {js:?}"),
        )
        .await
    }

    /// Saves a PNG of the viewport to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let png = self.cmd("GET", "/screenshot", None, "screenshot").await;
        let png = base64_decode(png.as_str().unwrap_or_default())
            .unwrap_or_else(|| panic!("screenshot: not base64"));
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Sets the outer window size (the viewport is smaller by the window's
    /// frame, even headless: see [`Browser::set_viewport`]).
    pub async fn set_window_size(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
            &format!("set window size {width}x{height}"),
        )
        .await;
    }

    /// Sizes the window so that the page's viewport (`innerWidth` x
    /// `innerHeight`, what CSS media queries see) is `width` x `height`:
    /// headless Chromium still subtracts a frame from the window size.
    pub async fn set_viewport(&self, width: u32, height: u32) {
        self.set_window_size(width, height).await;
        let inner = self.execute("return [innerWidth, innerHeight]", &[]).await;
        let (iw, ih) = (
            inner[0].as_i64().unwrap_or(0),
            inner[1].as_i64().unwrap_or(0),
        );
        let (w, h) = (width as i64, height as i64);
        if (iw, ih) != (w, h) {
            self.set_window_size((2 * w - iw) as u32, (2 * h - ih) as u32)
                .await;
        }
        let inner = self.execute("return [innerWidth, innerHeight]", &[]).await;
        assert_eq!(
            inner,
            json!([width, height]),
            "viewport after sizing the window for {width}x{height}"
        );
    }

    /// Every console entry since the session started, oldest first
    /// (`console.*` calls, uncaught exceptions, failed loads, CSP
    /// violations), across page loads.
    pub async fn console(&self) -> Vec<LogEntry> {
        let new = self
            .cmd(
                "POST",
                "/se/log",
                Some(json!({"type": "browser"})),
                "read the console log",
            )
            .await;
        let mut all = self.console.lock().unwrap();
        for e in new.as_array().into_iter().flatten() {
            all.push(LogEntry {
                level: e["level"].as_str().unwrap_or_default().to_string(),
                source: e["source"].as_str().unwrap_or_default().to_string(),
                message: e["message"].as_str().unwrap_or_default().to_string(),
            });
        }
        all.clone()
    }

    /// The SEVERE entries of [`Browser::console`]: `console.error`, uncaught
    /// exceptions, failed loads (4xx/5xx included), CSP violations.
    pub async fn console_errors(&self) -> Vec<LogEntry> {
        self.console()
            .await
            .into_iter()
            .filter(|e| e.level == "SEVERE")
            .collect()
    }

    /// The cookies visible to the current page (HttpOnly ones included).
    pub async fn cookies(&self) -> Vec<Cookie> {
        let all = self.cmd("GET", "/cookie", None, "cookies").await;
        all.as_array()
            .into_iter()
            .flatten()
            .map(|c| Cookie {
                name: c["name"].as_str().unwrap_or_default().to_string(),
                value: c["value"].as_str().unwrap_or_default().to_string(),
                path: c["path"].as_str().unwrap_or_default().to_string(),
                domain: c["domain"].as_str().unwrap_or_default().to_string(),
                http_only: c["httpOnly"] == true,
                secure: c["secure"] == true,
                same_site: c["sameSite"].as_str().map(String::from),
                expiry: c["expiry"].as_u64(),
            })
            .collect()
    }

    /// Polls every 50 ms until an element matches `css`; its id. Panics
    /// after `limit`.
    pub async fn wait_for(&self, css: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let last = match self.try_find(css).await {
                Ok(Some(id)) => return id,
                Ok(None) => "no such element".to_string(),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {limit:?} waiting for {css:?} on {}: {last}",
                    self.url().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls every 50 ms until the first element matching `css` exists and
    /// its text satisfies `ok`; that text. Panics after `limit` with the
    /// last text seen (or why there was none).
    pub async fn wait_text(&self, css: &str, ok: impl Fn(&str) -> bool, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            // Errors too are "not yet": the element may be re-rendered
            // (stale) or the page still loading.
            let last = match self.try_text(css).await {
                Ok(t) if ok(&t) => return t,
                Ok(t) => format!("text {t:?}"),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                panic!("timed out after {limit:?} waiting for the text of {css:?}; last: {last}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls every 50 ms until the current URL satisfies `ok`; that URL.
    pub async fn wait_url(&self, ok: impl Fn(&str) -> bool, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let url = self.url().await;
            if ok(&url) {
                return url;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for the URL; last: {url}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Every URL the current document has requested, itself first (the
    /// navigation entry, then the resource timing entries: scripts, styles,
    /// images, finished fetches). A request still open (an EventSource
    /// stream) is not listed until it ends; a full page load starts the
    /// list again.
    pub async fn resource_urls(&self) -> Vec<String> {
        let urls = self
            .execute(
                "return performance.getEntriesByType('navigation')\
                 .concat(performance.getEntriesByType('resource'))\
                 .map(e => e.name)",
                &[],
            )
            .await;
        urls.as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u.as_str().map(String::from))
            .collect()
    }

    async fn try_find(&self, css: &str) -> Result<Option<String>, String> {
        let found = self
            .session_request(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        match found {
            Ok(v) => element_id(&v)
                .map(Some)
                .ok_or_else(|| format!("no element id in {v}")),
            Err(e) if e.starts_with("no such element") => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn try_text(&self, css: &str) -> Result<String, String> {
        let id = self
            .try_find(css)
            .await?
            .ok_or_else(|| format!("no element matches {css:?}"))?;
        let t = self
            .session_request("GET", &format!("/element/{id}/text"), None)
            .await?;
        Ok(string(t))
    }

    /// One command on this session; panics with `what` and the error.
    async fn cmd(&self, method: &str, path: &str, body: Option<Value>, what: &str) -> Value {
        self.session_request(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    async fn session_request(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let path = format!("/session/{}{path}", self.session);
        request(&self.client, self.driver.port, method, &path, body).await
    }

    /// On a failed test: a screenshot, the URL and the console errors, to
    /// see what the browser saw. Blocking (drop cannot await).
    fn keep_evidence(&self) {
        static N: AtomicUsize = AtomicUsize::new(0);
        let base = format!("/session/{}", self.session);
        let port = self.driver.port;
        let url = blocking(port, "GET", &format!("{base}/url"), None);
        let log = blocking(
            port,
            "POST",
            &format!("{base}/se/log"),
            Some(&json!({"type": "browser"})),
        );
        let mut errors: Vec<String> = self
            .console
            .lock()
            .map(|c| {
                c.iter()
                    .map(|e| format!("{} {}", e.level, e.message))
                    .collect()
            })
            .unwrap_or_default();
        for e in log.as_ref().and_then(Value::as_array).into_iter().flatten() {
            errors.push(format!("{} {}", e["level"], e["message"]));
        }
        let shot = blocking(port, "GET", &format!("{base}/screenshot"), None)
            .and_then(|v| base64_decode(v.as_str()?))
            .and_then(|png| {
                let path = std::env::temp_dir().join(format!(
                    "berth-browser-failure-{}-{}.png",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::write(&path, png).ok().map(|_| path)
            });
        eprintln!(
            "browser at failure: url {}, screenshot {:?}, console:\n  {}",
            url.unwrap_or_default(),
            shot,
            errors.join("\n  ")
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.keep_evidence();
        }
        // Quits Chromium; the driver's drop then ends chromedriver (and
        // whatever of Chromium is left) and the profile goes with `dir`.
        let _ = blocking(
            self.driver.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
    }
}

/// The element id in a WebDriver element reference.
fn element_id(v: &Value) -> Option<String> {
    v[ELEMENT].as_str().map(String::from)
}

fn string(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// One WebDriver request: the response's `value`, or its error as
/// "error code: message" (the message's first line; no stack trace).
async fn request(
    client: &Client<HttpConnector, Full<Bytes>>,
    port: u16,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/json; charset=utf-8")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .map_err(|e| e.to_string())?;
    let fut = async {
        let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, bytes))
    };
    let (status, bytes) = tokio::time::timeout(COMMAND_LIMIT, fut)
        .await
        .map_err(|_| format!("{method} {path}: no answer in {COMMAND_LIMIT:?}"))??;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "{method} {path}: {status}, not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    })?;
    let value = v.get("value").cloned().unwrap_or(Value::Null);
    if status.is_success() {
        Ok(value)
    } else {
        let message = value["message"].as_str().unwrap_or_default();
        Err(format!(
            "{}: {}",
            value["error"].as_str().unwrap_or(status.as_str()),
            message.lines().next().unwrap_or_default()
        ))
    }
}

/// A WebDriver request without a runtime, for drop: HTTP/1.1 on a fresh
/// connection (chromedriver does not answer HTTP/1.0), body by
/// Content-Length. `None` on any failure.
fn blocking(port: u16, method: &str, path: &str, body: Option<&Value>) -> Option<Value> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(10))).ok()?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut r = BufReader::new(s);
    let mut len = None;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse::<usize>().ok();
            }
        }
    }
    let mut buf = vec![0; len?];
    r.read_exact(&mut buf).ok()?;
    serde_json::from_slice::<Value>(&buf)
        .ok()?
        .get("value")
        .cloned()
}

/// Standard base64 (screenshots come as base64 PNG; no crate for it here).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => return None,
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Whether process `pid` still runs (a zombie counts as ended: nothing may
/// reap it in a container).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // The state follows the parenthesised command name.
            let state = s.rsplit_once(')')?.1.trim_start().chars().next()?;
            Some(!matches!(state, 'Z' | 'X'))
        })
        .unwrap_or(false)
}

/// A throwaway HTTP server for [`browser_drives_a_page`]: a few fixed
/// files, one request per connection; records each request's path.
struct Site {
    port: u16,
    paths: std::sync::Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

const INDEX: &str = r#"<!doctype html>
<html><head><title>berth browser test</title>
<link rel="icon" href="data:,">
<script src="/app.js" defer></script></head>
<body>
<p id="out">static</p>
<button id="go" data-role="go">Go</button>
<form id="f"><input id="name" value="old"><button type="submit">Send</button></form>
<ul><li>a</li><li>b</li><li>c</li></ul>
</body></html>"#;

const APP_JS: &str = r#"
const out = document.getElementById('out');
let clicks = 0;
document.getElementById('go').addEventListener('click', () => {
  clicks += 1;
  out.textContent = 'clicked ' + clicks;
});
document.getElementById('f').addEventListener('submit', (e) => {
  e.preventDefault();
  out.textContent = 'sent ' + document.getElementById('name').value;
});
out.textContent = 'ready';
"#;

/// Served with `Content-Security-Policy: default-src 'self'`, as the
/// dashboard's pages are (stricter there): the inline script is refused.
const CSP: &str = r#"<!doctype html>
<html><head><title>csp</title><link rel="icon" href="data:,">
<script>document.title = "inline ran"</script></head>
<body><p id="csp">strict</p></body></html>"#;

const SECOND: &str = r#"<!doctype html>
<html><head><title>second</title>
<script>console.error("boom")</script>
<script src="/missing.js"></script></head>
<body><p id="second">two</p></body></html>"#;

impl Site {
    async fn start() -> Site {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the test site");
        let port = listener.local_addr().expect("its address").port();
        let paths: std::sync::Arc<Mutex<Vec<String>>> = Default::default();
        let seen = paths.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 2048];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&req);
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    seen.lock().unwrap().push(path.clone());
                    let (status, ctype, extra, body) = match path.as_str() {
                        "/" => (
                            "200 OK",
                            "text/html; charset=utf-8",
                            "Set-Cookie: sid=s3cr3t; Path=/; HttpOnly; SameSite=Strict; Max-Age=3600\r\n\
                             Set-Cookie: theme=dark; Path=/; SameSite=Lax\r\n",
                            INDEX,
                        ),
                        "/app.js" => ("200 OK", "text/javascript", "", APP_JS),
                        "/second" => ("200 OK", "text/html; charset=utf-8", "", SECOND),
                        "/csp" => (
                            "200 OK",
                            "text/html; charset=utf-8",
                            "Content-Security-Policy: default-src 'self'\r\n",
                            CSP,
                        ),
                        _ => ("404 Not Found", "text/plain", "", "not found"),
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
                         Cache-Control: no-store\r\n{extra}Connection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(resp.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        Site { port, paths, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The harness itself, without berth: a page served here, read, clicked,
/// typed into; console errors, a screenshot, cookies and the requested URLs
/// checked against what the page really did; the browser gone after drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_drives_a_page() {
    let started = Instant::now();
    let site = Site::start().await;
    let b = Browser::start().await;
    let launched = started.elapsed();
    let wait = Duration::from_secs(5);

    b.goto(&site.url("/")).await;
    assert_eq!(b.url().await, site.url("/"));
    assert_eq!(b.title().await, "berth browser test");
    // The script ran: it replaced the page's static text.
    b.wait_text("#out", |t| t == "ready", wait).await;
    assert_eq!(b.find_all("li").await.len(), 3);
    assert!(b.find_all("table").await.is_empty());
    assert_eq!(b.attr("#go", "data-role").await.as_deref(), Some("go"));
    assert_eq!(b.attr("#go", "data-missing").await, None);

    b.click("#go").await;
    b.wait_text("#out", |t| t == "clicked 1", wait).await;
    b.click("#go").await;
    b.wait_text("#out", |t| t == "clicked 2", wait).await;

    b.type_into("#name", "hello").await;
    assert_eq!(b.prop("#name", "value").await, json!("hello"));
    assert_eq!(b.attr("#name", "value").await.as_deref(), Some("old"));
    b.press_enter().await;
    b.wait_text("#out", |t| t == "sent hello", wait).await;
    // The form's submit was handled by the script, not a navigation.
    assert_eq!(b.url().await, site.url("/"));

    let resources = b.resource_urls().await;
    assert_eq!(resources.first(), Some(&site.url("/")), "{resources:?}");
    assert!(resources.contains(&site.url("/app.js")), "{resources:?}");
    assert!(
        site.paths.lock().unwrap().contains(&"/app.js".to_string()),
        "the browser fetched the script"
    );

    let cookies = b.cookies().await;
    let sid = cookies
        .iter()
        .find(|c| c.name == "sid")
        .unwrap_or_else(|| panic!("no sid cookie in {cookies:?}"));
    assert_eq!(sid.value, "s3cr3t");
    assert!(sid.http_only, "{sid:?}");
    assert!(!sid.secure, "{sid:?}");
    assert_eq!(sid.same_site.as_deref(), Some("Strict"), "{sid:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiry = sid.expiry.expect("Max-Age gives an expiry");
    assert!(
        (now + 3500..=now + 3700).contains(&expiry),
        "expiry {expiry} vs now {now}"
    );
    let theme = cookies.iter().find(|c| c.name == "theme").expect("theme");
    assert!(!theme.http_only && theme.same_site.as_deref() == Some("Lax"));
    // What HttpOnly means: the page's script cannot read sid.
    assert_eq!(
        b.execute("return document.cookie", &[]).await,
        json!("theme=dark")
    );
    assert_eq!(
        b.execute("return arguments[0] + arguments[1]", &[json!(2), json!(3)])
            .await,
        json!(5)
    );
    // A returned Promise is awaited.
    assert_eq!(
        b.execute("return fetch('/app.js').then(r => r.status)", &[])
            .await,
        json!(200)
    );

    let clean = b.console_errors().await;
    assert!(clean.is_empty(), "errors on a clean page: {clean:?}");

    b.goto(&site.url("/second")).await;
    b.wait_for("#second", wait).await;
    assert_eq!(b.text("#second").await, "two");
    let errors = b.console_errors().await;
    assert!(
        errors
            .iter()
            .any(|e| e.source == "console-api" && e.message.contains("\"boom\"")),
        "console.error(\"boom\") not caught: {errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.source == "network" && e.message.contains("/missing.js")),
        "the 404 of /missing.js not caught: {errors:?}"
    );
    // Entries are kept: a second read still has them.
    assert_eq!(b.console_errors().await, errors);

    b.goto(&site.url("/csp")).await;
    b.wait_for("#csp", wait).await;
    assert_eq!(b.title().await, "csp", "the inline script was refused");
    let refused = b.console_errors().await;
    assert!(
        refused[errors.len()..]
            .iter()
            .any(|e| e.source == "security" && e.message.contains("inline script")),
        "the CSP violation not caught: {refused:?}"
    );

    let dir = TempDir::new();
    let shot = dir.path().join("shot.png");
    b.set_viewport(390, 844).await;
    b.screenshot(&shot).await;
    let png = std::fs::read(&shot).expect("read the screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert!(png.len() > 1024, "screenshot of {} bytes", png.len());
    let dim = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    assert_eq!((dim(16), dim(20)), (390, 844), "screenshot size");

    b.back().await;
    b.wait_url(|u| u == site.url("/second"), wait).await;
    b.back().await;
    b.wait_url(|u| u == site.url("/"), wait).await;
    b.wait_text("#out", |t| t == "ready", wait).await;
    let loads = || {
        site.paths
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == "/")
            .count()
    };
    let before = loads();
    b.refresh().await;
    assert_eq!(loads(), before + 1, "refresh loads the page again");
    b.wait_text("#out", |t| t == "ready", wait).await;

    let driver = b.driver.child.id();
    let chromium = b.chromium_pid.expect("chromedriver reports chromium's pid");
    assert!(alive(driver) && alive(chromium));
    let driver_port = b.driver.port;
    drop(b);
    assert!(!alive(driver), "chromedriver still runs after drop");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", driver_port)).is_err(),
        "chromedriver still listens after drop"
    );
    eventually(
        Duration::from_secs(5),
        "chromium gone after drop",
        || async { (!alive(chromium)).then_some(()) },
    )
    .await;
    println!(
        "browser up in {launched:?}, whole test {:?}",
        started.elapsed()
    );
}
