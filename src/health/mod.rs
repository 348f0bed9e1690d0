//! Active HTTP checks: for every target in the published snapshot, `GET path`
//! on the container's address every interval, and report each result to the
//! owner of the world, which decides (rise/fall) whether the state changes.
//! A check berth cannot even try, out of file descriptors or memory itself,
//! is not reported at all: the backend keeps its state.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::plan::CheckTarget;
use crate::resources::{self, Burst};
use crate::world::Input;
use crate::{Inputs, SharedSnapshot};

pub struct Checker {
    snapshot: SharedSnapshot,
    notify: watch::Receiver<u64>,
    inputs: Inputs,
}

impl Checker {
    pub fn new(snapshot: SharedSnapshot, notify: watch::Receiver<u64>, inputs: Inputs) -> Checker {
        Checker {
            snapshot,
            notify,
            inputs,
        }
    }

    async fn run(&self) {
        let mut notify = self.notify.clone();
        let mut running: HashMap<String, (CheckTarget, JoinHandle<()>)> = HashMap::new();
        loop {
            let snap = self.snapshot.load_full();
            running.retain(|id, (target, task)| {
                let keep = snap.checks.iter().any(|t| t.id == *id && t == target);
                if !keep {
                    task.abort();
                }
                keep
            });
            for t in &snap.checks {
                if !running.contains_key(&t.id) {
                    let task = tokio::spawn(check_loop(t.clone(), self.inputs.clone()));
                    running.insert(t.id.clone(), (t.clone(), task));
                }
            }
            if notify.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Until the first pass, checks come every 50 ms: a new replica joins as soon
/// as it answers, not up to an interval later.
const UNTIL_FIRST_PASS: Duration = Duration::from_millis(50);

async fn check_loop(t: CheckTarget, inputs: Inputs) {
    let mut passed = false;
    loop {
        let (ok, detail) = match try_probe(&t).await {
            Ok(result) => result,
            Err(own) => {
                // Nothing is reported: the backend keeps its state, and
                // autoheal (which acts on failing checks) has nothing to act on.
                if let Some(skipped) = OWN_SHORTAGE.note() {
                    warn!(
                        addr = %t.addr,
                        error = %own,
                        skipped_before = skipped,
                        "health check not run: berth is out of file descriptors or memory; backends keep their state"
                    );
                }
                tokio::time::sleep(t.interval).await;
                continue;
            }
        };
        passed |= ok;
        let sent = inputs.send(Input::Check {
            id: t.id.clone(),
            started_at: t.started_at.clone(),
            ok,
            detail,
            rise: t.rise,
            fall: t.fall,
        });
        if sent.is_err() {
            return;
        }
        tokio::time::sleep(if passed { t.interval } else { UNTIL_FIRST_PASS }).await;
    }
}

/// Checks berth could not run for want of its own resources, every target
/// together: logged once per burst.
static OWN_SHORTAGE: Burst = Burst::new(Duration::from_secs(10), Duration::from_secs(60));

/// One check: a 2xx or 3xx answer within the timeout passes.
pub async fn probe(t: &CheckTarget) -> (bool, String) {
    try_probe(t).await.unwrap_or_else(|own| (false, own))
}

/// One check; `Err` when berth could not try for want of its own resources
/// (file descriptors, memory): that says nothing about the backend.
pub async fn try_probe(t: &CheckTarget) -> Result<(bool, String), String> {
    // (berth's own shortage, what failed)
    let io = |what: &'static str| {
        move |e: std::io::Error| (resources::is_exhausted(&e), format!("{what}: {e}"))
    };
    let attempt = async {
        let mut s = TcpStream::connect(t.addr).await.map_err(io("connect"))?;
        let Some(path) = &t.path else {
            return Ok(0);
        };
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: berth-health-check\r\nConnection: close\r\n\r\n",
            t.addr
        );
        s.write_all(req.as_bytes()).await.map_err(io("write"))?;
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        while !buf.contains(&b'\n') && buf.len() < 4096 {
            let n = s.read(&mut chunk).await.map_err(io("read"))?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        status_code(&buf).ok_or_else(|| (false, "not an HTTP response".to_string()))
    };
    match tokio::time::timeout(t.timeout, attempt).await {
        Err(_) => Ok((false, format!("no answer within {:?}", t.timeout))),
        Ok(Err((true, own))) => Err(own),
        Ok(Err((false, e))) => Ok((false, e)),
        Ok(Ok(0)) => Ok((true, "TCP connect".into())),
        Ok(Ok(code)) => Ok(((200..400).contains(&code), format!("HTTP {code}"))),
    }
}

/// The status code of an HTTP/1.x status line.
pub fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts
        .next()?
        .parse()
        .ok()
        .filter(|c| (100..600).contains(c))
}

crate::background_until_shutdown!(Checker);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\nx: y\r\n"), Some(200));
        assert_eq!(
            status_code(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(status_code(b"HTTP/1.1 200"), Some(200));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 abc\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 999 x\r\n"), None);
        assert_eq!(status_code(b""), None);
    }
}
