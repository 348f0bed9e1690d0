//! Maintenance and pause of a service (kamal-proxy's `stop --message` and
//! `pause`): set through the admin API, kept in the state directory so they
//! outlive a restart of berth, and handed to the planner as an input, which
//! puts them on the service's routes. The proxy answers a route in
//! maintenance with 503 and the page, and holds the requests of a paused
//! one at its [`Gate`] until `resume` (in the order they came) or their
//! longest wait (then 503).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::state::StateDir;
use crate::world::Input;
use crate::Inputs;

const MODES: &str = "modes.json";
/// Requests one paused service may hold at once; more get 503 at once.
pub const HELD_MAX: usize = 1000;
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(30);

/// What a person asked for a service, as saved and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModeSpec {
    Maintenance {
        #[serde(default)]
        message: Option<String>,
    },
    Paused {
        /// The longest a request is held, in milliseconds.
        max_ms: u64,
    },
}

/// A service's mode as the routes carry it.
#[derive(Debug)]
pub struct ServiceMode {
    pub spec: ModeSpec,
    /// Since when (unix seconds).
    pub since: u64,
    /// Where a paused service's requests wait (one pause after another
    /// keeps the same gate, and its queue).
    pub gate: Arc<Gate>,
}

/// The line `berth routes` and the API show for a route in this mode.
impl ServiceMode {
    pub fn describe(&self) -> String {
        match &self.spec {
            ModeSpec::Maintenance { message: Some(m) } => format!("maintenance (503): {m}"),
            ModeSpec::Maintenance { message: None } => "maintenance (503)".into(),
            ModeSpec::Paused { max_ms } => format!(
                "paused: requests held up to {}",
                crate::names::format_duration(Duration::from_millis(*max_ms))
            ),
        }
    }
}

/// Why a held request was let go without being served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReleased {
    /// [`HELD_MAX`] requests wait already.
    Full,
    /// It waited its longest.
    TimedOut,
    /// The pause became a maintenance (with this message).
    Maintenance(Option<String>),
}

/// Held requests, released in the order they came.
#[derive(Debug, Default)]
pub struct Gate {
    inner: Mutex<GateInner>,
}

#[derive(Debug, Default)]
struct GateInner {
    /// `Some(Ok)`: let through; `Some(Err)`: refused; `None`: hold.
    done: Option<Result<(), NotReleased>>,
    queue: VecDeque<oneshot::Sender<Result<(), NotReleased>>>,
}

impl Gate {
    /// Waits until the gate opens, for at most `max`.
    pub async fn wait(&self, max: Duration) -> Result<(), NotReleased> {
        let rx = {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(done) = &g.done {
                return done.clone();
            }
            if g.queue.len() >= HELD_MAX {
                // Those that gave up leave their place.
                g.queue.retain(|tx| !tx.is_closed());
                if g.queue.len() >= HELD_MAX {
                    return Err(NotReleased::Full);
                }
            }
            let (tx, rx) = oneshot::channel();
            g.queue.push_back(tx);
            rx
        };
        match tokio::time::timeout(max, rx).await {
            Ok(Ok(outcome)) => outcome,
            // Dropped without a word: the gate went with its mode.
            Ok(Err(_)) => Ok(()),
            Err(_) => Err(NotReleased::TimedOut),
        }
    }

    /// Lets every held request go, first come first, and those to come.
    pub fn open(&self) {
        self.close_with(Ok(()));
    }

    /// The pause became a maintenance: held requests and those to come get
    /// its answer.
    pub fn refuse(&self, message: Option<String>) {
        self.close_with(Err(NotReleased::Maintenance(message)));
    }

    fn close_with(&self, outcome: Result<(), NotReleased>) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.done = Some(outcome.clone());
        for tx in g.queue.drain(..) {
            let _ = tx.send(outcome.clone());
        }
    }

    pub fn held(&self) -> usize {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.queue.iter().filter(|tx| !tx.is_closed()).count()
    }
}

/// Service key (`project/service`, or a container name) → its mode.
pub type ModeMap = BTreeMap<String, Arc<ServiceMode>>;

/// The modes as the planner gets them: one shared map, told apart by
/// identity (a new map is a change).
#[derive(Debug, Clone, Default)]
pub struct ModeTable(pub Arc<ModeMap>);

impl PartialEq for ModeTable {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Saved {
    spec: ModeSpec,
    since: u64,
}

/// Every service's mode: set by the API, saved, told to the planner.
pub struct Modes {
    state: Option<StateDir>,
    map: Mutex<ModeMap>,
    inputs: Inputs,
}

impl Modes {
    /// Takes back the modes saved by the last berth and tells the planner.
    pub fn open(state: Option<StateDir>, inputs: Inputs) -> Arc<Modes> {
        let saved: BTreeMap<String, Saved> = match state.as_ref().map(|s| s.load(MODES)) {
            Some(Ok(Some(m))) => m,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "saved maintenance and pause modes unreadable: starting without them");
                BTreeMap::new()
            }
            _ => BTreeMap::new(),
        };
        if !saved.is_empty() {
            tracing::info!(
                services = saved.len(),
                "maintenance and pause modes kept from before the restart"
            );
        }
        let map = saved
            .into_iter()
            .map(|(k, s)| {
                let mode = ServiceMode {
                    spec: s.spec,
                    since: s.since,
                    gate: Arc::default(),
                };
                (k, Arc::new(mode))
            })
            .collect();
        let modes = Arc::new(Modes {
            state,
            map: Mutex::new(map),
            inputs,
        });
        modes.tell();
        modes
    }

    /// Sets (or with `None` ends) the mode of `service`. Requests held by a
    /// pause that ends or is replaced go on, in order.
    pub fn set(&self, service: &str, spec: Option<ModeSpec>) -> Result<(), String> {
        let (old, new) = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            let old = map.get(service).cloned();
            let new = spec.clone();
            match spec {
                Some(spec) => {
                    // Paused again: the same gate, its queue kept.
                    let gate = match (&old, &spec) {
                        (Some(o), ModeSpec::Paused { .. })
                            if matches!(o.spec, ModeSpec::Paused { .. }) =>
                        {
                            o.gate.clone()
                        }
                        _ => Arc::default(),
                    };
                    let mode = ServiceMode {
                        spec,
                        since: std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs()),
                        gate,
                    };
                    map.insert(service.to_string(), Arc::new(mode));
                }
                None => {
                    map.remove(service);
                }
            }
            self.save(&map)?;
            (old, new)
        };
        self.tell();
        // Requests held by a pause that ends go on, or get the maintenance
        // that replaces it.
        if let Some(old) = old.filter(|o| matches!(o.spec, ModeSpec::Paused { .. })) {
            match new {
                Some(ModeSpec::Paused { .. }) => {}
                Some(ModeSpec::Maintenance { message }) => old.gate.refuse(message),
                None => old.gate.open(),
            }
        }
        Ok(())
    }

    pub fn get(&self, service: &str) -> Option<Arc<ServiceMode>> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)
            .cloned()
    }

    pub fn all(&self) -> ModeMap {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn save(&self, map: &ModeMap) -> Result<(), String> {
        let Some(state) = &self.state else {
            return Ok(());
        };
        let saved: BTreeMap<&String, Saved> = map
            .iter()
            .map(|(k, m)| {
                let s = Saved {
                    spec: m.spec.clone(),
                    since: m.since,
                };
                (k, s)
            })
            .collect();
        state.save(MODES, &saved)
    }

    fn tell(&self) {
        let _ = self
            .inputs
            .send(Input::Modes(ModeTable(Arc::new(self.all()))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn held_requests_go_in_order_or_time_out() {
        let gate = Arc::new(Gate::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..5 {
            let (gate, order) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let r = gate.wait(Duration::from_secs(30)).await;
                order.lock().unwrap().push(i);
                r
            }));
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(gate.held(), 5);
        gate.open();
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(()));
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
        // Once open, nobody waits.
        assert_eq!(gate.wait(Duration::from_secs(1)).await, Ok(()));

        let closed = Gate::default();
        let started = tokio::time::Instant::now();
        assert_eq!(
            closed.wait(Duration::from_secs(30)).await,
            Err(NotReleased::TimedOut)
        );
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_that_becomes_a_maintenance_refuses_what_it_held() {
        let gate = Arc::new(Gate::default());
        let held = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.wait(Duration::from_secs(30)).await })
        };
        while gate.held() < 1 {
            tokio::task::yield_now().await;
        }
        gate.refuse(Some("back soon".into()));
        let want = Err(NotReleased::Maintenance(Some("back soon".into())));
        assert_eq!(held.await.unwrap(), want);
        assert_eq!(
            gate.wait(Duration::from_secs(1)).await,
            want,
            "and those to come"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_is_bounded() {
        let gate = Arc::new(Gate::default());
        let waiting = Arc::new(AtomicUsize::new(0));
        for _ in 0..HELD_MAX {
            let (gate, waiting) = (gate.clone(), waiting.clone());
            tokio::spawn(async move {
                waiting.fetch_add(1, Ordering::Relaxed);
                let _ = gate.wait(Duration::from_secs(60)).await;
            });
        }
        while gate.held() < HELD_MAX {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            gate.wait(Duration::from_secs(60)).await,
            Err(NotReleased::Full)
        );
    }
}
