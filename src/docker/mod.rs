//! The Docker watcher: the one task that owns the World. It lists the engine,
//! follows its event stream, re-lists periodically, takes [`Input`]s from the
//! rest of berth, hands each of these to the World's reducer, and after every
//! change asks the planner for a new snapshot and publishes it. When the
//! engine goes away it retries with capped backoff; routes stay as they are.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::engine::{Engine, EngineEvent};
use crate::error::CallError;
use crate::names::short_id;
use crate::plan::{Planner, Problem};
use crate::state::{self, StateDir};
use crate::world::{Container, EventReaction, Input, World, WorldState, PASSIVE_COOLDOWN};
use crate::{Inputs, SharedSnapshot};

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

pub struct Watcher {
    config: Arc<Config>,
    engine: Engine,
    /// Where the last good labels are kept across restarts.
    state: Option<StateDir>,
    snapshot: SharedSnapshot,
    notify: watch::Sender<u64>,
    inputs_tx: Inputs,
    inputs: Mutex<Option<mpsc::UnboundedReceiver<Input>>>,
    /// Reloaded configurations: each is planned with at once.
    reloads: Mutex<Option<watch::Receiver<Arc<Config>>>>,
}

/// What an inspection (or a full re-list) found, sent back to the event loop.
// A few of these a second at most: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Found {
    One {
        seq: u64,
        result: Result<Option<Container>, CallError>,
        event: EngineEvent,
    },
    All {
        seq: u64,
        result: Result<World, CallError>,
    },
}

/// The world and what publishing needs to remember between snapshots.
struct Owner {
    world: WorldState,
    planner: Planner,
    /// The problems of the last snapshot: new ones are logged once.
    problems: Vec<Problem>,
    reloads: Option<watch::Receiver<Arc<Config>>>,
    /// Drains kept across restarts of berth.
    drains: state::Drains,
}

/// The next reloaded configuration; never, without reloads.
async fn reloaded(reloads: &mut Option<watch::Receiver<Arc<Config>>>) -> Arc<Config> {
    if let Some(rx) = reloads {
        if rx.changed().await.is_ok() {
            return rx.borrow_and_update().clone();
        }
    }
    *reloads = None;
    std::future::pending().await
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

impl Watcher {
    pub fn new(
        config: Arc<Config>,
        engine: Engine,
        state: Option<StateDir>,
        snapshot: SharedSnapshot,
        notify: watch::Sender<u64>,
        inputs: (Inputs, mpsc::UnboundedReceiver<Input>),
    ) -> Watcher {
        let (inputs_tx, inputs) = inputs;
        Watcher {
            config,
            engine,
            state,
            snapshot,
            notify,
            inputs_tx,
            inputs: Mutex::new(Some(inputs)),
            reloads: Mutex::new(None),
        }
    }

    /// Plans with each configuration sent here from now on.
    pub fn with_reloads(self, reloads: watch::Receiver<Arc<Config>>) -> Watcher {
        if let Ok(mut r) = self.reloads.lock() {
            *r = Some(reloads);
        }
        self
    }

    pub async fn run(&self) {
        let Some(mut inputs) = self.inputs.lock().ok().and_then(|mut i| i.take()) else {
            warn!("Docker watcher started twice; the second one does nothing");
            return;
        };
        let reloads = self.reloads.lock().ok().and_then(|mut r| r.take());
        let mut own = Owner {
            world: WorldState::new(self.config.docker.constraint.clone()),
            planner: Planner::new(self.config.clone()),
            problems: Vec::new(),
            reloads,
            drains: state::Drains::open(self.state.as_ref()),
        };
        if let Some(state) = &self.state {
            match state.load(state::LABELS) {
                Ok(Some(saved)) => own.planner.restore(saved),
                Ok(None) => {}
                Err(e) => {
                    warn!(error = %e, "saved last good labels unreadable: starting without them")
                }
            }
        }
        self.publish(&mut own, None);
        let mut backoff = BACKOFF_MIN;
        loop {
            let started = Instant::now();
            let err = self.session(&mut own, &mut inputs).await;
            // A session that ran a while was healthy: start the backoff over.
            if started.elapsed() > BACKOFF_MAX {
                backoff = BACKOFF_MIN;
            }
            warn!(error = %err, retry_in = ?backoff, "Docker watch interrupted; routes stay as they are until the engine answers");
            own.world.disconnected();
            self.publish(&mut own, None);
            // Health results and drains still apply while the engine is away.
            let wait = tokio::time::sleep(backoff);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    _ = &mut wait => break,
                    Some(i) = inputs.recv() => self.on_input(&mut own, i),
                    config = reloaded(&mut own.reloads) => self.on_reload(&mut own, config),
                }
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn on_reload(&self, own: &mut Owner, config: Arc<Config>) {
        own.planner.set_config(config);
        self.publish(own, None);
    }

    fn on_input(&self, own: &mut Owner, input: Input) {
        let outcome = own.world.apply_input(input);
        if let Some(id) = outcome.probe {
            self.schedule_probe(id);
        }
        if outcome.changed {
            self.publish(own, None);
        }
    }

    /// After the cool-down, a TCP connect to each of the container's
    /// addresses decides whether it comes back.
    fn schedule_probe(&self, id: String) {
        let addrs = self
            .snapshot
            .load()
            .backends
            .get(&id)
            .map(|b| b.addrs.clone())
            .unwrap_or_default();
        let tx = self.inputs_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(PASSIVE_COOLDOWN).await;
            let mut ok = !addrs.is_empty();
            for a in addrs {
                let connect =
                    tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(a));
                ok &= matches!(connect.await, Ok(Ok(_)));
            }
            let _ = tx.send(Input::Probe { id, ok });
        });
    }

    /// One connection to the engine: resync, then follow events until
    /// something breaks. Returns why it stopped.
    ///
    /// Inspections run as tasks: `inspect` of a container that is starting
    /// waits for the start to finish, and a `kill` of another container must
    /// not queue behind it.
    async fn session(
        &self,
        own: &mut Owner,
        inputs: &mut mpsc::UnboundedReceiver<Input>,
    ) -> CallError {
        if let Err(e) = self.engine.ping().await {
            return e;
        }
        // Events are asked for from one second before the list, so nothing
        // that happens while listing is missed; replaying one is harmless.
        let since = unix_now().as_secs().saturating_sub(1);
        let seq = own.world.next_seq();
        match self.engine.list().await {
            Ok(world) => self.apply_list(own, seq, Ok(world), "connected"),
            Err(e) => return e,
        }
        let mut events = match self.engine.events(since) {
            Ok(events) => Box::pin(events),
            Err(e) => return e,
        };
        let (tx, mut found) = mpsc::unbounded_channel::<Found>();
        let mut tick = tokio::time::interval(self.config.docker.resync_interval);
        tick.reset();
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Some(Ok(ev)) => self.on_event(own, &tx, ev),
                    Some(Err(e)) => return e,
                    None => return CallError::unreached("the Docker event stream ended"),
                },
                Some(i) = inputs.recv() => self.on_input(own, i),
                config = reloaded(&mut own.reloads) => self.on_reload(own, config),
                Some(f) = found.recv() => match f {
                    Found::One { seq, result, event } => match result {
                        Ok(c) => {
                            if own.world.apply_inspection(&event.id, seq, c) {
                                self.publish(own, Some(&event));
                            }
                        }
                        Err(e) => return e,
                    },
                    Found::All { seq, result } => self.apply_list(own, seq, result, "periodic"),
                },
                _ = tick.tick() => {
                    let seq = own.world.next_seq();
                    let (engine, tx) = (self.engine.clone(), tx.clone());
                    tokio::spawn(async move {
                        let result = engine.list().await;
                        let _ = tx.send(Found::All { seq, result });
                    });
                }
            }
        }
    }

    fn on_event(&self, own: &mut Owner, tx: &mpsc::UnboundedSender<Found>, event: EngineEvent) {
        match own.world.on_event(&event.id, &event.action, event.signal) {
            EventReaction::Ignore => {}
            EventReaction::Changed => self.publish(own, Some(&event)),
            EventReaction::Inspect { seq } => {
                let (engine, tx) = (self.engine.clone(), tx.clone());
                tokio::spawn(async move {
                    let result = engine.inspect(&event.id).await;
                    let _ = tx.send(Found::One { seq, result, event });
                });
            }
        }
    }

    /// Applies a full re-list; a failed one keeps what is known.
    fn apply_list(&self, own: &mut Owner, seq: u64, result: Result<World, CallError>, why: &str) {
        let fresh = match result {
            Ok(w) => w,
            Err(e) => {
                warn!(error = %e, why, "re-listing containers failed; keeping what is known");
                return;
            }
        };
        let r = own.world.apply_list(seq, fresh, unix_now().as_secs());
        own.drains.restore(&mut own.world.signals.drain);
        if why == "periodic" && r.any() {
            warn!(
                added = r.added,
                removed = r.removed,
                changed = r.changed,
                "periodic resync found changes the event stream had not shown"
            );
        }
        info!(
            containers = own.world.containers.len(),
            added = r.added,
            removed = r.removed,
            changed = r.changed,
            why,
            "resynced with the Docker engine"
        );
        self.publish(own, None);
    }

    /// A new snapshot from the world as it is now; `cause`: the event that
    /// changed it, for the event → snapshot lag.
    fn publish(&self, own: &mut Owner, cause: Option<&EngineEvent>) {
        own.world.prune_signals();
        own.drains.save(&own.world.signals.drain);
        let mut snap = own.planner.build(&own.world.containers, &own.world.signals);
        if let (Some(state), Some(labels)) = (&self.state, own.planner.last_good_changed()) {
            if let Err(e) = state.save(state::LABELS, &labels) {
                warn!(error = %e, "the last good labels could not be saved");
            }
        }
        let lag_us = cause.map(|ev| {
            let now_ns = unix_now().as_nanos() as i64;
            ((now_ns - ev.time_ns).max(0) / 1000) as u64
        });
        if lag_us.is_some() {
            own.world.docker.last_event_lag_us = lag_us;
        }
        snap.docker = own.world.docker.clone();
        for p in snap.problems.iter().filter(|p| !own.problems.contains(p)) {
            // Debug formatting: a label value cannot forge a log line.
            warn!(container = %p.container, key = ?p.key, value = ?p.value, hint = p.hint.as_deref().unwrap_or(""), "label problem: {}", p.message);
        }
        own.problems = snap.problems.clone();
        let generation = snap.generation;
        let routes = snap.table.len();
        self.snapshot.store(Arc::new(snap));
        self.notify.send_replace(generation);
        if let (Some(ev), Some(latency_us)) = (cause, lag_us) {
            debug!(action = %ev.action, container = %short_id(&ev.id), generation, routes, latency_us, "snapshot published");
        }
    }
}

crate::background_until_shutdown!(Watcher);
