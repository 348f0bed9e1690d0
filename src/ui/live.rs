//! The dashboard's live stream (`GET /api/events`, Server-Sent Events): one
//! task turns each published snapshot, each run's progress line (the runs)
//! and a once-a-second look at certificates and DNS counters into named
//! sections, and sends a section again only when its JSON changed. A new listener gets
//! every section first. Container changes (created, removed, status,
//! health, backend state) become `event`s, the last 200 kept for new
//! listeners. A second task samples container stats and route traffic for
//! the charts.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio::time::MissedTickBehavior;

use crate::api::{self, host, App};
use crate::plan::ContainerInfo;

/// Changes kept for a new listener.
const EVENTS: usize = 200;
/// Runs a listener is sent (the newest).
const RUNS: usize = 50;
/// A comment line this often keeps proxies and the browser from closing an
/// idle stream.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// One SSE message: a section's name and its JSON.
#[derive(Debug, Clone)]
pub struct Frame {
    pub event: &'static str,
    pub data: Arc<str>,
}

impl Frame {
    fn new<T: Serialize + ?Sized>(event: &'static str, value: &T) -> Frame {
        Frame {
            event,
            data: serde_json::to_string(value).unwrap_or_default().into(),
        }
    }

    fn bytes(&self) -> Bytes {
        Bytes::from(format!("event: {}\ndata: {}\n\n", self.event, self.data))
    }
}

/// A container change, as the overview's recent events list shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Unix milliseconds.
    pub t: u64,
    pub container: String,
    pub deployment: String,
    pub service: String,
    /// `created`, `removed`, `status`, `health` or `state`.
    pub what: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// What changed between two views of the containers. Pure.
pub fn changes(
    before: &BTreeMap<String, ContainerInfo>,
    now: &BTreeMap<String, ContainerInfo>,
    t: u64,
) -> Vec<Change> {
    let change = |c: &ContainerInfo, what: &str, from: Option<String>, to: Option<String>| Change {
        t,
        container: c.name.clone(),
        deployment: c.deployment().to_string(),
        service: c.service_name().to_string(),
        what: what.into(),
        from,
        to,
    };
    let state = |c: &ContainerInfo| {
        serde_json::to_value(c.state)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
    };
    let mut out = Vec::new();
    for (id, c) in now {
        let Some(b) = before.get(id) else {
            out.push(change(c, "created", None, Some(c.status.clone())));
            continue;
        };
        if b.status != c.status {
            out.push(change(
                c,
                "status",
                Some(b.status.clone()),
                Some(c.status.clone()),
            ));
        }
        if b.health != c.health {
            out.push(change(c, "health", b.health.clone(), c.health.clone()));
        }
        if b.state != c.state {
            out.push(change(c, "state", state(b), state(c)));
        }
    }
    for (id, b) in before {
        if !now.contains_key(id) {
            out.push(change(b, "removed", Some(b.status.clone()), None));
        }
    }
    out
}

/// The sections as last sent, and where new ones are announced.
pub struct Hub {
    tx: broadcast::Sender<Frame>,
    sections: Mutex<BTreeMap<&'static str, Frame>>,
    events: Mutex<VecDeque<Change>>,
    /// Flips on shutdown: every stream ends, so the admin server can stop.
    closing: watch::Sender<bool>,
}

impl Default for Hub {
    fn default() -> Hub {
        Hub {
            tx: broadcast::channel(512).0,
            sections: Mutex::default(),
            events: Mutex::default(),
            closing: watch::channel(false).0,
        }
    }
}

impl Hub {
    /// Sends a section if it differs from what was sent last.
    fn publish<T: Serialize + ?Sized>(&self, event: &'static str, value: &T) {
        let frame = Frame::new(event, value);
        let mut sections = self.sections.lock().unwrap_or_else(|e| e.into_inner());
        if sections.get(event).is_some_and(|f| f.data == frame.data) {
            return;
        }
        sections.insert(event, frame.clone());
        let _ = self.tx.send(frame);
    }

    /// Sends a message that is not a section (a progress line, a tick).
    fn send(&self, event: &'static str, value: &impl Serialize) {
        let _ = self.tx.send(Frame::new(event, value));
    }

    fn record(&self, list: Vec<Change>) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        for c in list {
            self.send("event", &c);
            if events.len() == EVENTS {
                events.pop_front();
            }
            events.push_back(c);
        }
    }

    /// Ends every stream (berth is stopping).
    pub fn close(&self) {
        let _ = self.closing.send(true);
    }

    /// What a new listener is sent first.
    fn opening(&self, app: &App) -> Vec<Frame> {
        let samples = &app.ui.samples;
        let hello = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "stats_interval_secs": samples.interval.as_secs().max(1),
            "history_secs": samples.history.as_secs(),
            "dns_zone": app.dns.as_ref().map(|_| app.config.dns.zone.clone()),
        });
        let mut out = vec![Frame::new("hello", &hello)];
        if self.sections.lock().map(|s| s.is_empty()).unwrap_or(true) {
            // No task publishes here (a test's router): now's view.
            publish_snapshot(app, &mut None);
            publish_slow(app);
            publish_runs(app);
        }
        out.extend(
            self.sections
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .cloned(),
        );
        let events: Vec<Change> = self
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        out.push(Frame::new("events", &events));
        out.push(Frame::new("traffic", &samples.traffic()));
        out
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The sections a snapshot changes; `before`: the containers last seen,
/// for the change events (`None` the first time: no events).
fn publish_snapshot(app: &App, before: &mut Option<BTreeMap<String, ContainerInfo>>) {
    let hub = &app.ui.hub;
    let snap = app.snapshot.load_full();
    if let Some(b) = before.as_ref() {
        hub.record(changes(b, &snap.containers, unix_ms()));
    }
    *before = Some(snap.containers.clone());
    hub.publish("deployments", &host::deployment_list(app));
    hub.publish("backends", &api::backend_list(app));
    hub.publish("routes", &host::route_list(&snap));
    hub.publish("problems", &snap.problems);
    hub.publish("docker", &snap.docker);
}

/// The sections that change without a snapshot or a progress line:
/// certificates and DNS counters.
fn publish_slow(app: &App) {
    let hub = &app.ui.hub;
    hub.publish("certificates", &app.cert_list());
    hub.publish("dns", &api::dns_view(app));
    hub.publish("autoscale", &app.autoscale_list());
}

/// The newest runs, serialized where they are kept (a build sends a line
/// per line of its output: no copy of the history for each).
fn publish_runs(app: &App) {
    let runs = app
        .deploys
        .history
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let skip = runs.len().saturating_sub(RUNS);
    app.ui.hub.publish("runs", &runs[skip..]);
}

/// Publishes until berth stops.
pub async fn run(app: App, mut shutdown: watch::Receiver<bool>) {
    let mut notified = app.notified.clone();
    let mut progress = app.deploys.live.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut before = None;
    publish_snapshot(&app, &mut before);
    // Runs change with their progress lines, which come below.
    publish_runs(&app);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            changed = notified.changed() => {
                if changed.is_err() {
                    break;
                }
                publish_snapshot(&app, &mut before);
            }
            line = progress.recv() => match line {
                Ok(p) => {
                    app.ui.hub.send("progress", &p);
                    publish_runs(&app);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => publish_runs(&app),
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = tick.tick() => publish_slow(&app),
        }
    }
    app.ui.hub.close();
}

/// Samples every running container's stats and every route's traffic each
/// `admin.stats_interval` until berth stops.
pub async fn sample(app: App, mut shutdown: watch::Receiver<bool>) {
    let samples = app.ui.samples.clone();
    let mut tick = tokio::time::interval(samples.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => {}
        }
        let t = unix_ms() / 1000;
        let traffic = samples.traffic_tick(app.metrics.request_totals(), t);
        app.ui.hub.send("traffic_tick", &traffic);
        let snap = app.snapshot.load_full();
        let running: Vec<ContainerInfo> = snap
            .containers
            .values()
            .filter(|c| c.is_running())
            .cloned()
            .collect();
        samples.retain(
            &snap
                .containers
                .keys()
                .map(String::as_str)
                .collect::<HashSet<_>>(),
        );
        // A few readings at a time: the engine answers each in a few ms.
        let engine = app.engine.clone();
        let mut readings = futures_util::stream::iter(running.into_iter().map(move |c| {
            let engine = engine.clone();
            async move {
                let reading = engine.stats_once(&c.id, &c.name).await;
                (c, reading)
            }
        }))
        .buffer_unordered(8);
        while let Some((c, reading)) = readings.next().await {
            // A container that stopped meanwhile has no reading: skipped.
            if let Ok((stats, cpu)) = reading {
                samples.record(&c.id, &c.name, &c.service_key(), t, &stats, cpu);
            }
        }
    }
}

/// `GET /api/events`: the sections, then their changes, as Server-Sent
/// Events, until the client goes away or berth stops.
pub async fn events(State(app): State<App>, headers: axum::http::HeaderMap) -> Response {
    let hub = &app.ui.hub;
    // Subscribed before the opening is read: nothing falls in between.
    let rx = hub.tx.subscribe();
    let mut opening: VecDeque<Bytes> = VecDeque::from([Bytes::from_static(b"retry: 1000\n\n")]);
    opening.extend(hub.opening(&app).iter().map(Frame::bytes));
    let closing = hub.closing.subscribe();
    let state = Listener {
        app: app.clone(),
        rx,
        pending: opening,
        closing,
        keepalive: tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE),
        headers,
        checked: tokio::time::Instant::now(),
    };
    let stream = futures_util::stream::unfold(state, |mut l| async move {
        let chunk = l.next().await?;
        Some((Ok::<_, Infallible>(chunk), l))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

struct Listener {
    app: App,
    rx: broadcast::Receiver<Frame>,
    pending: VecDeque<Bytes>,
    closing: watch::Receiver<bool>,
    keepalive: tokio::time::Interval,
    /// The request's credentials, checked again now and then: a logout or
    /// a new admin token ends the stream too.
    headers: axum::http::HeaderMap,
    checked: tokio::time::Instant,
}

impl Listener {
    /// Whether the credentials the stream was opened with still hold
    /// (checked at most once a second).
    fn still_allowed(&mut self) -> bool {
        if self.checked.elapsed() < Duration::from_secs(1) {
            return true;
        }
        self.checked = tokio::time::Instant::now();
        let bearer = self
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        api::token::authorized(bearer, &self.app.token.load())
            || crate::ui::session_of(&self.app, &self.headers).is_some()
    }

    /// The next bytes to send; `None`: the stream ends.
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(b) = self.pending.pop_front() {
            return Some(b);
        }
        if *self.closing.borrow() || !self.still_allowed() {
            return None;
        }
        tokio::select! {
            _ = self.closing.changed() => None,
            frame = self.rx.recv() => match frame {
                Ok(f) => Some(f.bytes()),
                // Too slow a reader: it missed changes, so it gets every
                // section again.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let again = self.app.ui.hub.opening(&self.app);
                    self.pending.extend(again.iter().skip(1).map(Frame::bytes));
                    self.pending.pop_front()
                }
                Err(broadcast::error::RecvError::Closed) => None,
            },
            _ = self.keepalive.tick() => Some(Bytes::from_static(b": keep-alive\n\n")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::BackendState;

    fn c(id: &str, status: &str, state: BackendState) -> (String, ContainerInfo) {
        let mut info = ContainerInfo::for_test(id, &format!("p-web-{id}"), Some("p"), Some("web"));
        info.status = status.into();
        info.state = state;
        (id.to_string(), info)
    }

    #[test]
    fn changes_name_what_moved() {
        let before = BTreeMap::from([
            c("1", "running", BackendState::Ready),
            c("2", "running", BackendState::Ready),
        ]);
        let now = BTreeMap::from([
            c("1", "running", BackendState::Draining),
            c("3", "created", BackendState::Stopped),
        ]);
        let got: Vec<(String, String, Option<String>, Option<String>)> = changes(&before, &now, 7)
            .into_iter()
            .map(|c| (c.container, c.what, c.from, c.to))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "p-web-1".into(),
                    "state".into(),
                    Some("ready".into()),
                    Some("draining".into())
                ),
                (
                    "p-web-3".into(),
                    "created".into(),
                    None,
                    Some("created".into())
                ),
                (
                    "p-web-2".into(),
                    "removed".into(),
                    Some("running".into()),
                    None
                ),
            ]
        );
        assert!(changes(&now, &now, 8).is_empty());
    }

    #[test]
    fn frames_are_sse_messages() {
        let f = Frame::new("problems", &vec!["a"]);
        assert_eq!(&f.bytes()[..], b"event: problems\ndata: [\"a\"]\n\n");
    }
}
