//! Deploys: rollouts, scaling, rolling restarts and self-healing. The
//! controller takes requests from the admin API one at a time, turns each
//! into a [`plan::Plan`], performs the plan's actions on the engine and feeds
//! back their results and the published snapshots until the plan is final.
//! Progress lines go to the requester as they happen; finished runs are kept
//! in a short history.
//!
//! Crash safety: the run in progress is saved in the state dir before each of
//! its steps and the replicas it creates carry its key as a label, so that
//! after a berth killed mid-run, the next one (once synced with the engine)
//! rolls the run back or finishes it ([`plan::recover`]) before taking new
//! requests; then it brings each service back to the replica count `berth
//! scale` last reached.

pub mod autoscale;
pub mod canary;
pub mod plan;
pub mod project;
pub mod revive;
pub mod scaler;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::config::Config;
use crate::engine::clone::{OPERATION_LABEL, UNIT_LABEL};
use crate::engine::Engine;
use crate::names::short_id;
use crate::plan::{ContainerInfo, Snapshot};
use crate::state::{self, StateDir};
use crate::world::{BackendState, Input};
use crate::{Inputs, SharedSnapshot};
pub use plan::Status;
use plan::{Action, Event, OpKind, Operation, Plan, Recovery, Unit};

/// How many finished runs the history keeps.
const HISTORY: usize = 100;

#[derive(Debug, Clone)]
pub enum Kind {
    Rollout {
        image: Option<String>,
        batch: usize,
    },
    Scale {
        replicas: usize,
    },
    /// Restart the running containers of a deployment (compose project, or
    /// a container outside compose) one at a time, each drained first.
    Restart,
    /// Deploy a compose project (from a file or a git repository).
    Deploy(Box<project::Order>),
    /// Remove a deployment's containers and networks (and volumes).
    Down {
        volumes: bool,
    },
    /// Start a canary: new replicas running `image` beside the stable ones,
    /// given `percent` of the traffic; with `auto`, judged after that long.
    Canary {
        image: String,
        percent: u32,
        auto: Option<Duration>,
    },
    /// End the canary: promote it (the stable replicas replaced with its
    /// image, its own retired) or abort it (its own retired). `verdict`:
    /// why `--auto` decided so.
    CanaryEnd {
        promote: bool,
        verdict: Option<String>,
    },
}

impl Kind {
    fn word(&self) -> &'static str {
        match self {
            Kind::Rollout { .. } => "rollout",
            Kind::Scale { .. } => "scale",
            Kind::Restart => "restart",
            Kind::Deploy(_) => "deploy",
            Kind::Down { .. } => "down",
            Kind::Canary { .. } => "canary",
            Kind::CanaryEnd { promote: true, .. } => "promote",
            Kind::CanaryEnd { promote: false, .. } => "abort",
        }
    }

    fn op_kind(&self) -> OpKind {
        match self {
            Kind::Rollout { .. } => OpKind::Rollout,
            Kind::Scale { .. } => OpKind::Scale,
            Kind::Restart => OpKind::Restart,
            // Run through per-service rollouts of their own.
            Kind::Deploy(_) | Kind::Down { .. } => OpKind::Rollout,
            // Recovered as a rollout (never as a scale, whose replica count
            // would be remembered).
            Kind::Canary { .. } | Kind::CanaryEnd { .. } => OpKind::Rollout,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Request {
    pub kind: Kind,
    /// `project/service`, or a container name outside compose; for a
    /// restart, the deployment.
    pub service: String,
    pub health_timeout: Option<Duration>,
    pub drain_timeout: Option<Duration>,
}

/// One line of progress, streamed to the requester.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Progress {
    pub id: u64,
    pub service: String,
    pub status: Status,
    pub message: String,
}

/// A run, as listed by `GET /api/rollouts`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: u64,
    pub kind: String,
    pub service: String,
    pub image: Option<String>,
    pub status: Status,
    pub reason: Option<String>,
    /// Replicas the run replaced, added, retired or restarted.
    pub replicas: usize,
    /// A scale run's replica count to reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<usize>,
    pub started_unix: u64,
    pub finished_unix: Option<u64>,
    /// Its progress lines with their times (a build's output is one step;
    /// at most [`STEPS`], the last ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepRecord>,
}

/// One progress line of a run, kept in its record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    /// Milliseconds since the run was queued.
    pub at_ms: u64,
    pub status: Status,
    pub message: String,
}

/// The most steps a record keeps.
const STEPS: usize = 60;

pub struct Job {
    pub id: u64,
    pub request: Request,
    pub progress: Reporter,
}

/// Where a run's progress goes: to whoever asked for it, to every live
/// listener (the dashboard), and as steps into its record.
#[derive(Clone)]
pub struct Reporter {
    id: u64,
    tx: Option<mpsc::UnboundedSender<Progress>>,
    started: Instant,
    history: Arc<Mutex<Vec<Record>>>,
    live: tokio::sync::broadcast::Sender<Progress>,
}

impl Reporter {
    /// A progress line, sent and kept. A requester that went away does not
    /// stop the run, so there is no error to handle.
    pub fn send(&self, p: Progress) {
        self.keep(&p);
        let _ = self.live.send(p.clone());
        if let Some(tx) = &self.tx {
            let _ = tx.send(p);
        }
    }

    fn keep(&self, p: &Progress) {
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let Some(r) = h.iter_mut().rev().find(|r| r.id == self.id) else {
            return;
        };
        // A build's output is one step: the first line of it.
        if p.status == Status::Building
            && r.steps.last().is_some_and(|s| s.status == Status::Building)
        {
            return;
        }
        if r.steps.len() >= STEPS {
            r.steps.remove(0);
        }
        r.steps.push(StepRecord {
            at_ms: self.started.elapsed().as_millis() as u64,
            status: p.status,
            message: p.message.clone(),
        });
    }
}

/// What the API shares with the controller.
#[derive(Clone)]
pub struct Deploys {
    jobs: mpsc::UnboundedSender<Job>,
    pub history: Arc<Mutex<Vec<Record>>>,
    pub restarts: Arc<Mutex<HashMap<String, u32>>>,
    next_id: Arc<Mutex<u64>>,
    /// Where the history is kept across restarts, when berth has a state dir.
    state: Option<StateDir>,
    /// The deployments berth owns, their env and their deploys.
    pub projects: Arc<Mutex<project::store::Store>>,
    /// Every run's progress lines as they happen (the dashboard's stream).
    pub live: tokio::sync::broadcast::Sender<Progress>,
    /// What the autoscaler sees and did, by service.
    pub autoscale: Arc<Mutex<BTreeMap<String, scaler::ScaleView>>>,
    /// Services with a crashed replica being replaced: not autoscaled
    /// meanwhile.
    /// (service → how many of its replicas wait to be restarted).
    pub reviving: Arc<Mutex<HashMap<String, u32>>>,
}

impl Deploys {
    /// Queues a request; progress arrives on the returned channel, the last
    /// line carrying a final status.
    pub fn submit(&self, request: Request) -> (u64, mpsc::UnboundedReceiver<Progress>) {
        self.queue(request, None)
    }

    /// Queues a request, its record's kind and first line being `as_`'s
    /// when given (else its kind's word and "queued").
    fn queue(
        &self,
        request: Request,
        as_: Option<(&str, String)>,
    ) -> (u64, mpsc::UnboundedReceiver<Progress>) {
        let (word, note) = match as_ {
            Some((w, n)) => (w.to_string(), n),
            None => (request.kind.word().to_string(), "queued".to_string()),
        };
        let (id, rx, reporter) = self.open_run(|id| Record {
            id,
            kind: word,
            service: request.service.clone(),
            image: match &request.kind {
                Kind::Rollout { image, .. } => image.clone(),
                Kind::Canary { image, .. } => Some(image.clone()),
                _ => None,
            },
            status: Status::Queued,
            reason: None,
            replicas: 0,
            target: match &request.kind {
                Kind::Scale { replicas } => Some(*replicas),
                _ => None,
            },
            started_unix: unix_now(),
            finished_unix: None,
            steps: Vec::new(),
        });
        reporter.send(Progress {
            id,
            service: request.service.clone(),
            status: Status::Queued,
            message: note,
        });
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(Job {
            id,
            request,
            progress: reporter,
        }) {
            job.progress.send(Progress {
                id,
                service: String::new(),
                status: Status::Failed,
                message: "the deploy controller is not running".into(),
            });
        }
        (id, rx)
    }

    /// Queues a request that berth itself decided on (`word`: the kind its
    /// record shows, `note`: why, its first line); returns the run's id.
    pub fn submit_as(&self, request: Request, word: &str, note: String) -> u64 {
        self.queue(request, Some((word, note))).0
    }

    /// Where run `id` stands, if the history still has it.
    pub fn status_of(&self, id: u64) -> Option<Status> {
        let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        h.iter().rev().find(|r| r.id == id).map(|r| r.status)
    }

    /// A run on `service` (`project/service`) or on its whole deployment
    /// (a deploy, a down, a restart of the project) that is not over yet,
    /// if any; crash replacements (`revive`) do not count.
    pub fn busy(&self, service: &str) -> Option<u64> {
        self.busy_but(service, &["revive"])
    }

    /// As [`Deploys::busy`], runs of the kinds `but` not counted.
    pub fn busy_but(&self, service: &str, but: &[&str]) -> Option<u64> {
        self.busy_run(service, but).map(|(id, _)| id)
    }

    /// The run under way on `service` or its deployment, kinds `but` not
    /// counted: its id, and whether it is on the service itself (not on
    /// the whole deployment).
    pub fn busy_run(&self, service: &str, but: &[&str]) -> Option<(u64, bool)> {
        let project = service.split_once('/').map(|(p, _)| p);
        let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        h.iter()
            .rev()
            .filter(|r| !r.status.is_final() && !but.contains(&r.kind.as_str()))
            .find(|r| r.service == service || Some(r.service.as_str()) == project)
            .map(|r| (r.id, r.service == service))
    }

    /// A run berth carries out itself, outside the queue (a service's stop
    /// or start): its record, and a reporter whose lines also go to the
    /// returned channel. [`Deploys::end`] ends it.
    pub fn begin(
        &self,
        kind: &str,
        service: &str,
    ) -> (u64, mpsc::UnboundedReceiver<Progress>, Reporter) {
        self.open_run(|id| Record {
            id,
            kind: kind.to_string(),
            service: service.to_string(),
            image: None,
            status: Status::Starting,
            reason: None,
            replicas: 0,
            target: None,
            started_unix: unix_now(),
            finished_unix: None,
            steps: Vec::new(),
        })
    }

    /// A new run: its id, its record (made by `record`, saved with the
    /// history, the oldest beyond [`HISTORY`] dropped), and a reporter whose
    /// lines also go to the returned channel.
    fn open_run(
        &self,
        record: impl FnOnce(u64) -> Record,
    ) -> (u64, mpsc::UnboundedReceiver<Progress>, Reporter) {
        let id = {
            let mut n = self.next_id.lock().unwrap_or_else(|e| e.into_inner());
            *n += 1;
            *n
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let reporter = self.reporter(id, Some(tx));
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        h.push(record(id));
        let excess = h.len().saturating_sub(HISTORY);
        h.drain(..excess);
        self.save(&h);
        (id, rx, reporter)
    }

    /// Ends a run begun with [`Deploys::begin`]: its record, then its final
    /// line.
    pub fn end(
        &self,
        reporter: &Reporter,
        service: &str,
        status: Status,
        message: String,
        replicas: usize,
    ) {
        let reason = (status != Status::Completed).then(|| message.clone());
        self.update(reporter.id, |r| {
            r.status = status;
            r.reason = reason;
            r.replicas = replicas;
            r.finished_unix = Some(unix_now());
        });
        reporter.send(Progress {
            id: reporter.id,
            service: service.to_string(),
            status,
            message,
        });
    }

    /// The reporter of run `id`, sending to `tx` too when someone waits.
    fn reporter(&self, id: u64, tx: Option<mpsc::UnboundedSender<Progress>>) -> Reporter {
        Reporter {
            id,
            tx,
            started: Instant::now(),
            history: self.history.clone(),
            live: self.live.clone(),
        }
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut Record)) {
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = h.iter_mut().find(|r| r.id == id) {
            f(r);
            self.save(&h);
        }
    }

    fn save(&self, history: &[Record]) {
        if let Some(state) = &self.state {
            if let Err(e) = state.save(state::HISTORY, &history) {
                warn!(error = %e, "the deploy history could not be saved");
            }
        }
    }

    /// The run in progress, saved before its next step.
    fn save_op(&self, op: &Operation) {
        if let Some(state) = &self.state {
            if let Err(e) = state.save(state::OPERATION, op) {
                warn!(deploy = op.id, error = %e, "the run in progress could not be saved");
            }
        }
    }

    /// The run is over (its record says how).
    fn end_op(&self) {
        if let Some(state) = &self.state {
            if let Err(e) = state.remove(state::OPERATION) {
                warn!(error = %e, "the finished run could not be forgotten");
            }
        }
    }

    /// `berth scale` brought `service` to `replicas`: what a restart of
    /// berth brings it back to.
    fn remember_replicas(&self, service: &str, replicas: usize) {
        let Some(state) = &self.state else { return };
        let mut desired: BTreeMap<String, usize> = match state.load(state::REPLICAS) {
            Ok(d) => d.unwrap_or_default(),
            Err(e) => {
                warn!(error = %e, "the saved replica counts are unreadable: starting over");
                BTreeMap::new()
            }
        };
        desired.insert(service.to_string(), replicas);
        if let Err(e) = state.save(state::REPLICAS, &desired) {
            warn!(error = %e, "the replica count could not be saved");
        }
    }
}

/// The run an earlier berth left unfinished, if any.
fn unfinished_run(state: Option<&StateDir>) -> Option<Operation> {
    match state?.load(state::OPERATION) {
        Ok(op) => op,
        Err(e) => {
            warn!(error = %e, "the saved run in progress is unreadable: not recovering it");
            None
        }
    }
}

/// The history an earlier run saved; a run that was not over when berth
/// stopped is marked failed, with why, but for `recovering` (the run in
/// progress), which its recovery ends.
fn restored_history(state: Option<&StateDir>, recovering: Option<u64>) -> Vec<Record> {
    let mut history: Vec<Record> = match state.map(|s| s.load(state::HISTORY)) {
        Some(Ok(Some(h))) => h,
        Some(Err(e)) => {
            warn!(error = %e, "the saved deploy history is unreadable: starting a new one");
            Vec::new()
        }
        _ => Vec::new(),
    };
    for r in history
        .iter_mut()
        .filter(|r| !r.status.is_final() && Some(r.id) != recovering)
    {
        let was = r.status;
        r.status = Status::Failed;
        r.reason = Some(format!("berth stopped while the run was {was}"));
    }
    history
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub struct Controller {
    config: Arc<Config>,
    engine: Engine,
    snapshot: SharedSnapshot,
    notify: watch::Receiver<u64>,
    inputs: Inputs,
    deploys: Deploys,
    jobs: Mutex<Option<mpsc::UnboundedReceiver<Job>>>,
    /// The run an earlier berth left unfinished: recovered first.
    unfinished: Mutex<Option<Operation>>,
}

/// One job being run: where its progress and record go.
struct Run<'a> {
    id: u64,
    /// What its new replicas carry as [`OPERATION_LABEL`].
    key: String,
    request: &'a Request,
    progress: &'a Reporter,
    deploys: &'a Deploys,
    /// Makes a deploy's new replicas from its compose service (else they
    /// are clones of their template).
    maker: Option<Arc<project::Maker>>,
}

impl Run<'_> {
    fn say(&self, status: Status, message: String) {
        info!(deploy = self.id, service = %self.request.service, %status, "{message}");
        self.progress.send(Progress {
            id: self.id,
            service: self.request.service.clone(),
            status,
            message,
        });
    }

    /// The final line and the record's end.
    fn finish(&self, status: Status, message: String, reason: Option<String>) {
        // The record first: whoever reads it on the final line sees the end.
        self.deploys.update(self.id, |r| {
            r.status = status;
            r.reason = reason;
            r.finished_unix = Some(unix_now());
        });
        self.say(status, message);
    }
}

impl Controller {
    pub fn new(
        config: Arc<Config>,
        engine: Engine,
        snapshot: SharedSnapshot,
        notify: watch::Receiver<u64>,
        inputs: Inputs,
        state: Option<StateDir>,
    ) -> (Controller, Deploys) {
        let (tx, rx) = mpsc::unbounded_channel();
        let unfinished = unfinished_run(state.as_ref());
        let history = restored_history(state.as_ref(), unfinished.as_ref().map(|op| op.id));
        let last_id = history
            .iter()
            .map(|r| r.id)
            .chain(unfinished.as_ref().map(|op| op.id))
            .max()
            .unwrap_or(0);
        let deploys = Deploys {
            jobs: tx,
            history: Arc::new(Mutex::new(history)),
            restarts: Arc::default(),
            next_id: Arc::new(Mutex::new(last_id)),
            projects: Arc::new(Mutex::new(project::store::Store::open(state.clone()))),
            live: tokio::sync::broadcast::channel(256).0,
            autoscale: Arc::default(),
            reviving: Arc::default(),
            state,
        };
        let c = Controller {
            config,
            engine,
            snapshot,
            notify,
            inputs,
            deploys: deploys.clone(),
            jobs: Mutex::new(Some(rx)),
            unfinished: Mutex::new(unfinished),
        };
        (c, deploys)
    }

    async fn run(&self) {
        let Some(mut jobs) = self.jobs.lock().ok().and_then(|mut j| j.take()) else {
            return;
        };
        tokio::spawn(autoheal(
            self.config.clone(),
            self.engine.clone(),
            self.snapshot.clone(),
            self.notify.clone(),
            self.deploys.restarts.clone(),
        ));
        tokio::spawn(scaler::run(
            self.engine.clone(),
            self.snapshot.clone(),
            self.notify.clone(),
            self.deploys.clone(),
        ));
        tokio::spawn(revive::run(
            self.config.clone(),
            self.engine.clone(),
            self.snapshot.clone(),
            self.notify.clone(),
            self.deploys.clone(),
        ));
        let unfinished = self.unfinished.lock().ok().and_then(|mut u| u.take());
        if let Some(op) = unfinished {
            self.recover(op).await;
        }
        self.restore_replicas().await;
        while let Some(job) = jobs.recv().await {
            let run = Run {
                id: job.id,
                key: format!("{}@{}", job.id, unix_now()),
                request: &job.request,
                progress: &job.progress,
                deploys: &self.deploys,
                maker: None,
            };
            self.run_job(&run).await;
        }
    }

    async fn run_job(&self, run: &Run<'_>) {
        let request = run.request;
        match &request.kind {
            Kind::Deploy(order) => return self.run_deploy(run, order).await,
            Kind::Down { volumes } => return self.run_down(run, *volumes).await,
            _ => {}
        }
        let (units, batch) = match units_for(request, &self.snapshot.load()) {
            Ok(found) => found,
            Err(e) => return run.finish(Status::Failed, e.clone(), Some(e)),
        };
        let n = units.len();
        self.deploys.update(run.id, |r| r.replicas = n);
        if let Kind::CanaryEnd {
            verdict: Some(v), ..
        } = &request.kind
        {
            run.say(Status::Queued, format!("--auto: {v}"));
        }
        let image = match &request.kind {
            Kind::Rollout { image, .. } => image.clone(),
            Kind::Canary { image, .. } => Some(image.clone()),
            Kind::CanaryEnd { promote: true, .. } => {
                canary_image(&self.snapshot.load(), &request.service)
            }
            _ => None,
        };
        let health_timeout = request
            .health_timeout
            .unwrap_or(self.config.deploy.health_timeout);
        let mut plan = Plan::new(units, batch, image, health_timeout, request.drain_timeout);
        self.drive(run, &mut plan, Vec::new()).await;
        let message = match (&plan.status, &plan.reason) {
            (Status::Completed, _) => done(&plan, &request.kind),
            (_, Some(r)) => r.clone(),
            _ => plan.status.to_string(),
        };
        run.finish(plan.status, message, plan.reason.clone());
        self.ended(run, &plan);
        if let (
            Kind::Canary {
                auto: Some(window), ..
            },
            Status::Completed,
        ) = (&request.kind, plan.status)
        {
            self.judge_later(&request.service, *window);
        }
    }

    /// `--auto`: after `window`, compares the canary's figures with the
    /// stable replicas' (berth's own counters) and queues its promotion or
    /// abort, saying which figure decided.
    fn judge_later(&self, service: &str, window: Duration) {
        let (snapshot, deploys, service) = (
            self.snapshot.clone(),
            self.deploys.clone(),
            service.to_string(),
        );
        tokio::spawn(async move {
            let before = side_figures(&snapshot.load(), &service);
            info!(service, window = ?window, "canary: judging it at the end of the window");
            tokio::time::sleep(window).await;
            let after = side_figures(&snapshot.load(), &service);
            let (stable, canary) = canary::compare(&before, &after);
            let verdict = canary::verdict(stable, canary, canary::Margin::default());
            let (promote, why) = match verdict {
                canary::Verdict::Promote(why) => (true, format!("promoting: {why}")),
                canary::Verdict::Abort(why) => (false, format!("aborting: {why}")),
            };
            info!(service, promote, "canary: {why}");
            let request = Request {
                kind: Kind::CanaryEnd {
                    promote,
                    verdict: Some(why),
                },
                service,
                health_timeout: None,
                drain_timeout: None,
            };
            let _ = deploys.submit(request);
        });
    }

    /// After a run's record is final: the saved run goes, and a scale that
    /// completed is remembered.
    fn ended(&self, run: &Run<'_>, plan: &Plan) {
        self.deploys.end_op();
        if let (Kind::Scale { replicas }, Status::Completed) = (&run.request.kind, plan.status) {
            self.deploys
                .remember_replicas(&run.request.service, *replicas);
        }
    }

    /// Performs the plan's actions (`initial` first) and feeds it engine
    /// results, published snapshots and the time until it is final. Where
    /// the run stands is saved before each step is taken.
    async fn drive(&self, run: &Run<'_>, plan: &mut Plan, initial: Vec<Action>) {
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<Event>();
        let mut notify = self.notify.clone();
        let mut last_status = Status::Queued;
        let mut actions = initial;
        actions.extend(plan.advance(&self.snapshot.load(), Instant::now()));
        let replicas = match run.request.kind {
            Kind::Scale { replicas } => Some(replicas),
            _ => None,
        };
        let mut op = Operation::new(
            run.id,
            run.key.clone(),
            run.request.kind.op_kind(),
            run.request.service.clone(),
            replicas,
            plan,
        );
        let mut saved: Option<Operation> = None;
        loop {
            op.update(plan);
            if saved.as_ref() != Some(&op) {
                run.deploys.save_op(&op);
                saved = Some(op.clone());
            }
            let snap = self.snapshot.load_full();
            for a in actions.drain(..) {
                self.perform(&ev_tx, a, &snap, plan.status, run);
            }
            if plan.status != last_status {
                last_status = plan.status;
                run.deploys.update(run.id, |r| r.status = plan.status);
                if !plan.status.is_final() {
                    run.say(plan.status, format!("{}", plan.status).replace('_', " "));
                }
            }
            if plan.status.is_final() {
                return;
            }
            tokio::select! {
                Some(ev) = ev_rx.recv() => {
                    actions = plan.on_event(ev, &self.snapshot.load(), Instant::now());
                }
                _ = notify.changed() => {
                    actions = plan.advance(&self.snapshot.load(), Instant::now());
                }
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    actions = plan.advance(&self.snapshot.load(), Instant::now());
                }
            }
        }
    }

    /// Carries out one action; engine calls run as tasks that report back.
    fn perform(
        &self,
        events: &mpsc::UnboundedSender<Event>,
        action: Action,
        snap: &Snapshot,
        status: Status,
        run: &Run<'_>,
    ) {
        let (engine, events) = (self.engine.clone(), events.clone());
        let name = |id: &str| {
            snap.containers
                .get(id)
                .map_or_else(|| short_id(id).to_string(), |c| c.name.clone())
        };
        match action {
            Action::Progress { text, .. } => run.say(status, text),
            Action::Drain { id } => {
                let _ = self.inputs.send(Input::Drain { id });
            }
            Action::Undrain { id } => {
                let _ = self.inputs.send(Input::Undrain { id });
            }
            Action::Create {
                unit,
                template,
                image,
            } => {
                let with = image
                    .as_ref()
                    .map(|i| format!(" with {i}"))
                    .unwrap_or_default();
                let text = match &run.maker {
                    Some(m) => format!("creating {}", m.describe()),
                    None => format!("creating a replica from {}{with}", name(&template)),
                };
                run.say(Status::Starting, text);
                let key = run.key.clone();
                let maker = run.maker.clone();
                let canary = match run.request.kind {
                    Kind::Canary { percent, .. } => Some(percent),
                    _ => None,
                };
                tokio::spawn(async move {
                    let made = match maker {
                        Some(m) => m.create(unit, &key).await,
                        None => {
                            engine
                                .create_clone(&template, image.as_deref(), unit, &key, canary)
                                .await
                        }
                    };
                    let ev = match made {
                        Ok(id) => Event::Created { unit, id },
                        Err(e) => Event::DockerFailed {
                            unit,
                            error: e.to_string(),
                        },
                    };
                    let _ = events.send(ev);
                });
            }
            Action::Start { unit, id } => {
                tokio::spawn(async move {
                    let ev = match engine.start(&id, short_id(&id)).await {
                        Ok(()) => Event::Started { unit },
                        Err(e) => Event::DockerFailed {
                            unit,
                            error: e.to_string(),
                        },
                    };
                    let _ = events.send(ev);
                });
            }
            Action::Restart { unit, id } => {
                let name = name(&id);
                tokio::spawn(async move {
                    // The container's own stop timeout (compose stop_grace_period).
                    let ev = match engine.restart(&id, &name, None).await {
                        Ok(()) => Event::Restarted { unit },
                        Err(e) => Event::DockerFailed {
                            unit,
                            error: e.to_string(),
                        },
                    };
                    let _ = events.send(ev);
                });
            }
            Action::StopRemove { unit, id, timeout } => {
                tokio::spawn(async move {
                    if let Err(e) = engine.stop_and_remove(&id, timeout.as_secs() as i32).await {
                        warn!(container = %id, error = %e, "removing a container failed");
                    }
                    let _ = events.send(Event::Removed { unit });
                });
            }
        }
    }
}

/// What berth does at start about what an earlier berth left.
impl Controller {
    /// Waits until the watcher has listed the engine once: until then the
    /// snapshot knows no container.
    async fn synced(&self) {
        let mut notify = self.notify.clone();
        while !self.snapshot.load().docker.synced {
            if notify.changed().await.is_err() {
                return;
            }
        }
    }

    /// Rolls back or finishes the run an earlier berth was killed in, and
    /// ends its record with what happened.
    async fn recover(&self, op: Operation) {
        let over = {
            let h = self
                .deploys
                .history
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            h.iter().any(|r| r.id == op.id && r.status.is_final())
        };
        if over {
            // Killed between its final record and forgetting it.
            return self.deploys.end_op();
        }
        self.synced().await;
        let clones = self.clones_of(&op.key).await;
        let was = op.status;
        let recovery = plan::recover(&op, &self.snapshot.load(), &clones, Instant::now());
        let request = Request {
            kind: match op.kind {
                OpKind::Rollout => Kind::Rollout {
                    image: op.image.clone(),
                    batch: op.batch,
                },
                OpKind::Scale => Kind::Scale {
                    replicas: op.replicas.unwrap_or(op.units.len()),
                },
                OpKind::Restart => Kind::Restart,
            },
            service: op.service.clone(),
            health_timeout: Some(op.health_timeout),
            drain_timeout: op.drain_timeout,
        };
        self.ensure_record(&op);
        let progress = self.deploys.reporter(op.id, None);
        let run = Run {
            id: op.id,
            key: op.key.clone(),
            request: &request,
            progress: &progress,
            deploys: &self.deploys,
            maker: None,
        };
        let interrupted = format!("interrupted by a berth restart while {was}");
        match recovery {
            Recovery::RollBack { remove, undrain } => {
                warn!(deploy = op.id, service = %op.service, "{interrupted}: rolling it back");
                for id in undrain {
                    let _ = self.inputs.send(Input::Undrain { id });
                }
                self.remove_all(&remove).await;
                let why = match &op.reason {
                    Some(r) => format!("; it was failing: {r}"),
                    None => String::new(),
                };
                let message = format!(
                    "{interrupted}: rolled back, {} new replicas removed{why}",
                    remove.len()
                );
                run.finish(Status::RolledBack, message.clone(), Some(message));
                self.deploys.end_op();
            }
            Recovery::Resume {
                mut plan,
                remove,
                actions,
            } => {
                warn!(deploy = op.id, service = %op.service, "{interrupted}: finishing it");
                self.remove_all(&remove).await;
                self.drive(&run, &mut plan, actions).await;
                let message = match (&plan.status, &plan.reason) {
                    (Status::Completed, _) => {
                        format!("{interrupted}: finished, {}", done(&plan, &request.kind))
                    }
                    (_, Some(r)) => format!("{interrupted}, then: {r}"),
                    (status, None) => format!("{interrupted}, then {status}"),
                };
                run.finish(plan.status, message.clone(), Some(message));
                self.ended(&run, &plan);
            }
        }
    }

    /// The containers labelled with the run `key`, with their unit (one
    /// without a readable unit belongs to none).
    async fn clones_of(&self, key: &str) -> Vec<(String, usize)> {
        for attempt in 1..=5 {
            match self.engine.list().await {
                Ok(world) => {
                    return world
                        .values()
                        .filter(|c| c.labels.get(OPERATION_LABEL).map(String::as_str) == Some(key))
                        .map(|c| {
                            let unit = c.labels.get(UNIT_LABEL).and_then(|u| u.parse().ok());
                            (c.id.clone(), unit.unwrap_or(usize::MAX))
                        })
                        .collect();
                }
                Err(e) => {
                    warn!(error = %e, attempt, "listing the new replicas of the interrupted run failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        Vec::new()
    }

    /// Stops and removes these containers, and waits (10 s at most) until the
    /// snapshot no longer shows them, so that counting replicas after this
    /// does not count them.
    async fn remove_all(&self, ids: &[String]) {
        for id in ids {
            info!(container = %short_id(id), "removing a new replica of the interrupted run");
            if let Err(e) = self.engine.stop_and_remove(id, 1).await {
                warn!(container = %short_id(id), error = %e, "removing a container failed");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut notify = self.notify.clone();
        while Instant::now() < deadline {
            let snap = self.snapshot.load();
            if !ids.iter().any(|id| snap.containers.contains_key(id)) {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), notify.changed()).await;
        }
    }

    /// A history that lost the interrupted run's record gets one back.
    fn ensure_record(&self, op: &Operation) {
        let mut h = self
            .deploys
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if h.iter().any(|r| r.id == op.id) {
            return;
        }
        h.push(Record {
            id: op.id,
            kind: match op.kind {
                OpKind::Rollout => "rollout",
                OpKind::Scale => "scale",
                OpKind::Restart => "restart",
            }
            .into(),
            service: op.service.clone(),
            image: op.image.clone(),
            status: op.status,
            reason: None,
            replicas: op.units.len(),
            target: op.replicas,
            started_unix: unix_now(),
            finished_unix: None,
            steps: Vec::new(),
        });
        self.deploys.save(&h);
    }

    /// Submits a scale run for each service whose replica count is not the
    /// one `berth scale` last brought it to (saved in the state dir).
    async fn restore_replicas(&self) {
        let Some(state) = &self.deploys.state else {
            return;
        };
        let desired: BTreeMap<String, usize> = match state.load(state::REPLICAS) {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "the saved replica counts are unreadable: not restoring them");
                return;
            }
        };
        if desired.is_empty() {
            return;
        }
        self.synced().await;
        for (service, replicas) in replicas_to_restore(&desired, &self.snapshot.load()) {
            info!(%service, replicas, "restoring the replica count berth scale asked for");
            let _ = self.deploys.submit(Request {
                kind: Kind::Scale { replicas },
                service,
                health_timeout: None,
                drain_timeout: None,
            });
        }
    }
}

/// The final line of a completed run.
fn done(plan: &Plan, kind: &Kind) -> String {
    match kind {
        Kind::Restart => format!("{} containers restarted", plan.restarted()),
        _ => format!("{} replicas done", plan.units.len()),
    }
}

/// The image the canary of `service` runs.
fn canary_image(snap: &Snapshot, service: &str) -> Option<String> {
    snap.containers
        .values()
        .find(|c| c.service_key() == service && c.canary.is_some() && c.is_running())
        .map(|c| c.image.clone())
}

/// Each routed replica of `service`: whether it is a canary, and its
/// counters now.
fn side_figures(snap: &Snapshot, service: &str) -> canary::Counters {
    snap.backends
        .values()
        .filter(|b| b.service == service)
        .map(|b| {
            let is_canary = snap
                .containers
                .get(&b.id)
                .is_some_and(|c| c.canary.is_some());
            (b.id.clone(), (is_canary, b.stats.figures()))
        })
        .collect()
}

/// The replicas of `service` that take or will take requests: running, not
/// on their way out; by name, as (name, id). Routed ones by their backend
/// state; a service berth does not route (a worker, a database) by its
/// containers'.
fn live_replicas(snap: &Snapshot, service: &str) -> Vec<(String, String)> {
    let live = |s: BackendState| !matches!(s, BackendState::Stopped | BackendState::Draining);
    let mut replicas: Vec<(String, String)> = snap
        .backends
        .values()
        .filter(|b| b.service == service && live(b.state))
        .map(|b| (b.name.clone(), b.id.clone()))
        .collect();
    if replicas.is_empty() {
        replicas = snap
            .containers
            .values()
            .filter(|c| !c.routed && c.is_running() && live(c.state))
            .filter(|c| c.service_key() == service)
            .map(|c| (c.name.clone(), c.id.clone()))
            .collect();
    }
    replicas.sort();
    replicas
}

/// The services whose live replica count is not the one `berth scale` last
/// brought them to (`desired`), with that count. A service with no replica
/// running was stopped on purpose and stays so.
pub fn replicas_to_restore(
    desired: &BTreeMap<String, usize>,
    snap: &Snapshot,
) -> Vec<(String, usize)> {
    desired
        .iter()
        .filter(|(service, n)| {
            let live = live_replicas(snap, service).len();
            live > 0 && live != **n
        })
        .map(|(service, n)| (service.clone(), *n))
        .collect()
}

/// The units and batch size for a request: the running replicas of its
/// service (oldest names first), or for a restart the running containers of
/// the deployment, or of one service of it (`deployment/service`), by
/// service, then name.
pub fn units_for(request: &Request, snap: &Snapshot) -> Result<(Vec<Unit>, usize), String> {
    if let Kind::Restart = request.kind {
        let (deployment, service) = match request.service.split_once('/') {
            Some((d, s)) => (d, Some(s)),
            None => (request.service.as_str(), None),
        };
        let mut targets: Vec<&ContainerInfo> = snap
            .containers
            .values()
            .filter(|c| c.deployment() == deployment && c.is_running())
            .filter(|c| service.is_none_or(|s| c.service_name() == s))
            .collect();
        targets.sort_by(|a, b| (&a.service, &a.name).cmp(&(&b.service, &b.name)));
        if targets.is_empty() {
            return Err(format!(
                "deployment {} has no running container",
                request.service
            ));
        }
        return Ok((targets.iter().map(|c| Unit::restart(&c.id)).collect(), 1));
    }
    let all = live_replicas(snap, &request.service);
    let is_canary = |id: &String| snap.containers.get(id).is_some_and(|c| c.canary.is_some());
    let (canaries, replicas): (Vec<_>, Vec<_>) = all.into_iter().partition(|(_, id)| is_canary(id));
    if let Kind::CanaryEnd { promote, .. } = &request.kind {
        if canaries.is_empty() {
            return Err(format!("no canary of {} is running", request.service));
        }
        let retire = canaries.iter().map(|(_, id)| Unit::retire(id));
        if !*promote {
            let n = canaries.len();
            return Ok((retire.collect(), n));
        }
        // Each stable replica replaced by one with the canary's image, then
        // the canary's own retired.
        let replace = replicas.iter().map(|(_, id)| Unit::replace(id));
        return Ok((replace.chain(retire).collect(), 1));
    }
    if !canaries.is_empty() {
        return Err(format!(
            "a canary of {} is running: end it first (berth rollout promote|abort {})",
            request.service, request.service
        ));
    }
    let Some(first) = replicas.first() else {
        return Err(format!(
            "service {} has no running replica",
            request.service
        ));
    };
    Ok(match &request.kind {
        Kind::Canary { percent, .. } => {
            let n = canary::replicas_for(replicas.len(), *percent);
            ((0..n).map(|_| Unit::add(&first.1)).collect(), n)
        }
        Kind::Rollout { batch, .. } => (
            replicas.iter().map(|(_, id)| Unit::replace(id)).collect(),
            (*batch).max(1),
        ),
        Kind::Scale { replicas: n } if *n == 0 => {
            return Err("scale to at least 1 replica (docker stop stops a service)".into())
        }
        Kind::Scale { replicas: n } if *n >= replicas.len() => {
            let add = n - replicas.len();
            ((0..add).map(|_| Unit::add(&first.1)).collect(), add.max(1))
        }
        Kind::Scale { replicas: n } => {
            let retire: Vec<Unit> = replicas[*n..]
                .iter()
                .map(|(_, id)| Unit::retire(id))
                .collect();
            let batch = retire.len();
            (retire, batch)
        }
        Kind::Restart | Kind::Deploy(_) | Kind::Down { .. } | Kind::CanaryEnd { .. } => {
            return Err(format!("{} runs no replica units", request.kind.word()))
        }
    })
}

/// Restarts routed containers that stay unhealthy past the grace period
/// (Docker itself never does), backing off per container.
async fn autoheal(
    config: Arc<Config>,
    engine: Engine,
    snapshot: SharedSnapshot,
    mut notify: watch::Receiver<u64>,
    restarts: Arc<Mutex<HashMap<String, u32>>>,
) {
    let grace = config.deploy.autoheal_grace;
    // container id → (unhealthy since, not before, the wait after a restart)
    let mut watch: HashMap<String, (Instant, Instant, Duration)> = HashMap::new();
    // Restarts not done yet: the old run is still unhealthy meanwhile, and
    // the wait before the next one counts from when this one is over.
    let restarting: Arc<Mutex<HashSet<String>>> = Arc::default();
    loop {
        let now = Instant::now();
        let snap = snapshot.load_full();
        watch.retain(|id, _| {
            snap.backends
                .get(id)
                .is_some_and(|b| b.unhealthy && b.autoheal)
        });
        for b in snap.backends.values().filter(|b| b.unhealthy && b.autoheal) {
            let entry = watch
                .entry(b.id.clone())
                .or_insert((now, now + grace, grace));
            if restarting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&b.id)
            {
                entry.1 = now + entry.2;
                continue;
            }
            let (since, not_before, _) = *entry;
            if now < not_before {
                continue;
            }
            let n = {
                let mut r = restarts.lock().unwrap_or_else(|e| e.into_inner());
                let n = r.entry(b.id.clone()).or_default();
                *n += 1;
                *n
            };
            // Backoff: the grace period, doubled for each restart, up to 10 min.
            let wait = (grace * 2u32.saturating_pow(n.min(10))).min(Duration::from_secs(600));
            watch.insert(b.id.clone(), (since, now + wait, wait));
            warn!(container = %b.name, unhealthy_for = ?now.duration_since(since), restart = n, "autoheal: restarting an unhealthy container");
            let (engine, id, name) = (engine.clone(), b.id.clone(), b.name.clone());
            restarting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.clone());
            let restarting = restarting.clone();
            tokio::spawn(async move {
                if let Err(e) = engine.restart(&id, &name, Some(10)).await {
                    warn!(container = %name, error = %e, "autoheal: restart failed");
                }
                restarting
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
            });
        }
        tokio::select! {
            r = notify.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

crate::background_until_shutdown!(Controller);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::BackendInfo;

    #[tokio::test]
    async fn a_runs_lines_reach_its_requester_its_record_and_every_listener() {
        let (_c, deploys) = Controller::new(
            Arc::default(),
            Engine::new(&Config::default().docker).unwrap(),
            Arc::default(),
            watch::channel(0).1,
            mpsc::unbounded_channel().0,
            None,
        );
        let mut live = deploys.live.subscribe();
        let (id, mut rx) = deploys.submit(req(Kind::Restart));
        let reporter = deploys.reporter(id, None);
        let line = |status, message: &str| Progress {
            id,
            service: "p/web".into(),
            status,
            message: message.into(),
        };
        // A build's output is one step, however many lines it has.
        for i in 0..3 {
            reporter.send(line(Status::Building, &format!("build line {i}")));
        }
        for i in 0..STEPS {
            reporter.send(line(Status::Starting, &format!("step {i}")));
        }
        assert_eq!(rx.recv().await.unwrap().status, Status::Queued);
        assert_eq!(live.recv().await.unwrap().status, Status::Queued);
        assert_eq!(live.recv().await.unwrap().message, "build line 0");
        let record = deploys.history.lock().unwrap()[0].clone();
        assert_eq!(record.steps.len(), STEPS, "bounded");
        assert_eq!(
            record.steps.last().unwrap().message,
            format!("step {}", STEPS - 1)
        );
        assert!(
            record.steps.iter().all(|s| s.status != Status::Queued),
            "the oldest went first"
        );
        let building = |r: &Record| {
            r.steps
                .iter()
                .filter(|s| s.status == Status::Building)
                .count()
        };
        assert!(building(&record) <= 1);
    }

    fn backend(id: &str, name: &str, service: &str, state: BackendState) -> (String, BackendInfo) {
        (id.into(), BackendInfo::for_test(id, name, service, state))
    }

    fn req(kind: Kind) -> Request {
        Request {
            kind,
            service: "p/web".into(),
            health_timeout: None,
            drain_timeout: None,
        }
    }

    #[test]
    fn units_come_from_the_running_replicas_of_the_service() {
        let backends = Snapshot {
            backends: [
                backend("2", "p-web-2", "p/web", BackendState::Ready),
                backend("1", "p-web-1", "p/web", BackendState::Starting),
                backend("3", "p-web-3", "p/web", BackendState::Stopped),
                backend("9", "p-api-1", "p/api", BackendState::Ready),
            ]
            .into(),
            ..Snapshot::default()
        };
        let (units, batch) = units_for(
            &req(Kind::Rollout {
                image: None,
                batch: 1,
            }),
            &backends,
        )
        .unwrap();
        let olds: Vec<_> = units.iter().map(|u| u.old.clone().unwrap()).collect();
        assert_eq!((olds, batch), (vec!["1".to_string(), "2".to_string()], 1));

        let (units, batch) = units_for(&req(Kind::Scale { replicas: 5 }), &backends).unwrap();
        assert_eq!((units.len(), batch), (3, 3));
        assert!(units
            .iter()
            .all(|u| u.old.is_none() && u.template.as_deref() == Some("1")));

        let (units, _) = units_for(&req(Kind::Scale { replicas: 1 }), &backends).unwrap();
        assert_eq!(units.len(), 1);
        assert_eq!(
            units[0].old.as_deref(),
            Some("2"),
            "the newest names go first"
        );
        assert!(units_for(&req(Kind::Scale { replicas: 0 }), &backends).is_err());

        let mut other = req(Kind::Scale { replicas: 2 });
        other.service = "p/none".into();
        assert!(units_for(&other, &backends)
            .unwrap_err()
            .contains("no running replica"));
    }

    #[test]
    fn replica_counts_come_back_to_what_berth_scale_asked_for() {
        let snap = Snapshot {
            backends: [
                backend("1", "p-web-1", "p/web", BackendState::Ready),
                backend("2", "p-web-2", "p/web", BackendState::Starting),
                backend("3", "p-web-3", "p/web", BackendState::Draining),
                backend("4", "p-api-1", "p/api", BackendState::Ready),
                backend("5", "p-db-1", "p/db", BackendState::Stopped),
            ]
            .into(),
            ..Snapshot::default()
        };
        let desired: BTreeMap<String, usize> = [
            ("p/web".to_string(), 3),
            ("p/api".to_string(), 1),
            ("p/db".to_string(), 2),
            ("p/gone".to_string(), 2),
        ]
        .into();
        assert_eq!(
            replicas_to_restore(&desired, &snap),
            vec![("p/web".to_string(), 3)],
            "a draining replica does not count; a service with none running stays stopped"
        );
    }

    #[test]
    fn a_restart_takes_the_running_containers_of_the_deployment_by_service() {
        let mut snap = Snapshot::default();
        let c = |id: &str, project: Option<&str>, service: &str, status: &str| ContainerInfo {
            id: id.into(),
            name: format!("{}-{service}-{id}", project.unwrap_or("x")),
            image: "img".into(),
            project: project.map(str::to_string),
            service: Some(service.into()),
            status: status.into(),
            health: None,
            state: BackendState::Ready,
            routed: false,
            ports: vec![],
            networks: Default::default(),
            started_at: String::new(),
            config_hash: None,
            exit_code: None,
            canary: None,
            run: Default::default(),
            restarts: 0,
        };
        for info in [
            c("1", Some("p"), "web", "running"),
            c("2", Some("p"), "db", "running"),
            c("3", Some("p"), "cache", "exited"),
            c("4", Some("q"), "web", "running"),
        ] {
            snap.containers.insert(info.id.clone(), info);
        }
        let mut r = req(Kind::Restart);
        r.service = "p".into();
        let (units, batch) = units_for(&r, &snap).unwrap();
        let ids: Vec<_> = units.iter().map(|u| u.old.clone().unwrap()).collect();
        assert_eq!((ids, batch), (vec!["2".to_string(), "1".to_string()], 1));
        assert!(units.iter().all(|u| u.restart));
        r.service = "none".into();
        assert!(units_for(&r, &snap)
            .unwrap_err()
            .contains("has no running container"));
    }
}
