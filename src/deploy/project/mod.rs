//! Deployments berth owns: a compose file (on the host or in a git
//! repository) in, its services running out. A deploy reads the source,
//! builds or finds each service's image, diffs what the file asks for
//! against what runs ([`diff`]), and then goes through the services in
//! dependency order: networks and volumes first, each service after the
//! ones it depends on are started, healthy or done. Changed services go
//! through the same rolling engine as `berth rollout` ([`super::plan`]),
//! their new replicas made from the compose service ([`Maker`]) instead of
//! cloned. A failed build, a replica that fails to start or never gets
//! ready leaves the running version serving.

pub mod diff;
pub mod spec;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::plan::{Plan, Status, Unit};
use super::{unix_now, Controller, Kind, Progress, Request, Run};
use crate::compose::model::{Condition, Project};
use crate::engine::build::BuildSpec;
use crate::engine::clone::{OPERATION_LABEL, UNIT_LABEL};
use crate::engine::Engine;
use crate::error::CallError;
use crate::names::short_id;
use crate::source::SourceSpec;
use diff::{Desired, ServicePlan, Step};
use spec::{Replica, COMPOSE_NETWORK, COMPOSE_VOLUME};
use store::{DeployRecord, Deployed, Deployment};

/// A deploy asked for.
#[derive(Debug, Clone, Default)]
pub struct Order {
    /// The deployment; `None`: the compose file's project name.
    pub name: Option<String>,
    /// Where the compose file is; `None`: the deployment's saved source.
    pub source: Option<SourceSpec>,
    pub dry_run: bool,
    /// `cli`, `api`, `webhook`, `rollback`.
    pub trigger: String,
    /// Deploy this commit of the git source (a webhook's push).
    pub commit: Option<String>,
    /// A rollback: run these images (per service) instead of building.
    pub images: Option<BTreeMap<String, String>>,
    /// The webhook secret a new deployment gets.
    pub secret: Option<String>,
}

/// How many completed deploys' builds are kept per project (for rollbacks).
const KEEP_BUILDS: usize = 5;

/// Makes the new replicas of one service of a deploy.
pub struct Maker {
    engine: Engine,
    project: Arc<Project>,
    service: String,
    image: String,
    hash: String,
    deploy: u64,
    /// Container numbers in use (by any container of the service).
    taken: Mutex<Vec<u32>>,
}

impl Maker {
    pub fn describe(&self) -> String {
        format!("a replica of {}/{}", self.project.name, self.service)
    }

    /// Creates (not starts) one replica, with the next free container
    /// number, labelled with the run `key` and its `unit`.
    pub async fn create(&self, unit: usize, key: &str) -> Result<String, CallError> {
        let number = {
            let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
            let n = spec::free_number(&taken);
            taken.push(n);
            n
        };
        let Some(service) = self.project.services.get(&self.service) else {
            return Err(CallError::unreached(format!(
                "service {} is not in the compose file",
                self.service
            )));
        };
        let r = Replica {
            project: &self.project,
            service,
            image: &self.image,
            number,
            hash: &self.hash,
            deploy: self.deploy,
            extra_labels: vec![
                (OPERATION_LABEL.to_string(), key.to_string()),
                (UNIT_LABEL.to_string(), unit.to_string()),
            ],
        };
        let body = spec::create_body(&r);
        let more = spec::networks(&r).into_iter().skip(1).collect();
        let name = spec::container_name(&self.project.name, &self.service, number);
        self.engine.create_from(&name, body, more).await
    }
}

/// How a deploy ended early: its final status and why.
type Stop = (Status, String);

/// What a deploy found for one service's image.
struct Image {
    /// What its containers are created from.
    reference: String,
    id: String,
}

fn sha256_hex(bytes: &[u8]) -> String {
    spec::hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// The name a deployment gets from a git URL: its last path part without
/// `.git`, as compose normalises project names.
pub fn name_from_url(url: &str) -> String {
    let last = url
        .trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or("");
    normalise(last.trim_end_matches(".git"))
}

/// Compose's rule for project names: lowercase, `[a-z0-9_-]` only.
pub fn normalise(name: &str) -> String {
    name.to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        .collect()
}

impl Run<'_> {
    /// A progress line about one service of a deploy.
    fn say_for(&self, service: &str, status: Status, message: String) {
        info!(deploy = self.id, %service, %status, "{message}");
        self.progress.send(Progress {
            id: self.id,
            service: service.to_string(),
            status,
            message,
        });
    }
}

impl Controller {
    /// Runs a deploy to its end and keeps its record.
    pub(super) async fn run_deploy(&self, run: &Run<'_>, order: &Order) {
        let started = Instant::now();
        let mut rec = DeployRecord {
            id: run.id,
            project: order.name.clone().unwrap_or_default(),
            trigger: order.trigger.clone(),
            source: String::new(),
            commit: None,
            compose_hash: None,
            images: BTreeMap::new(),
            steps: BTreeMap::new(),
            status: Status::Queued,
            reason: None,
            dry_run: order.dry_run,
            started_unix: unix_now(),
            finished_unix: None,
            build_seconds: None,
            total_seconds: None,
        };
        if !rec.project.is_empty() {
            self.lock_store().record(rec.clone());
        }
        let outcome = self.deploy(run, order, &mut rec).await;
        let (status, message) = match outcome {
            Ok(message) => (Status::Completed, message),
            Err(stop) => stop,
        };
        rec.status = status;
        rec.reason = (status != Status::Completed).then(|| message.clone());
        rec.finished_unix = Some(unix_now());
        rec.total_seconds = Some(started.elapsed().as_secs_f64());
        if !rec.project.is_empty() {
            let project = rec.project.clone();
            self.deploys.update(run.id, |r| r.service = project);
            self.lock_store().record(rec);
        }
        let reason = (status != Status::Completed).then(|| message.clone());
        run.finish(status, message, reason);
    }

    fn lock_store(&self) -> std::sync::MutexGuard<'_, store::Store> {
        self.deploys
            .projects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Where a git deployment's checkout lives.
    fn checkout_dir(&self, name: &str) -> PathBuf {
        match &self.deploys.state {
            Some(s) => s.path("sources").join(name),
            None => std::env::temp_dir().join("berth-sources").join(name),
        }
    }

    /// Sets the deploy's status (the record in the run history too).
    fn deploy_status(&self, run: &Run<'_>, status: Status, message: String) {
        self.deploys.update(run.id, |r| r.status = status);
        run.say(status, message);
    }

    async fn deploy(
        &self,
        run: &Run<'_>,
        order: &Order,
        rec: &mut DeployRecord,
    ) -> Result<String, Stop> {
        let failed = |m: String| (Status::Failed, m);
        // The source: asked for, or the deployment's own.
        let source = match (&order.source, &order.name) {
            (Some(s), _) => s.clone(),
            (None, Some(name)) => self
                .lock_store()
                .deployments
                .get(name)
                .map(|d| d.source.clone())
                .ok_or_else(|| failed(format!("no deployment named {name}: make it with berth deploy -f FILE or --git URL")))?,
            (None, None) => return Err(failed("a deploy needs a compose file or a deployment name".into())),
        };
        source.validate().map_err(failed)?;
        let (file, commit) = match &source {
            SourceSpec::File { path } => {
                rec.source = path.display().to_string();
                (path.clone(), None)
            }
            SourceSpec::Git {
                url,
                branch,
                path,
                file,
            } => {
                let name = order.name.clone().unwrap_or_else(|| name_from_url(url));
                rec.source = format!("{url}@{}", branch.as_deref().unwrap_or("HEAD"));
                run.say(
                    Status::Queued,
                    format!(
                        "fetching {url} ({})",
                        branch.as_deref().unwrap_or("default branch")
                    ),
                );
                let dir = self.checkout_dir(&name);
                let co = crate::source::git::fetch(
                    url,
                    branch.as_deref(),
                    &dir,
                    order.commit.as_deref(),
                )
                .await
                .map_err(failed)?;
                run.say(
                    Status::Queued,
                    format!(
                        "at {} {}",
                        &co.commit[..co.commit.len().min(12)],
                        co.subject
                    ),
                );
                let f = crate::source::find_compose_file(&co.dir, path.as_deref(), file.as_deref())
                    .map_err(failed)?;
                (f, Some(co.commit))
            }
        };
        rec.commit = commit.clone();
        let (mut project, text_hash) = self.load_project(order, &file).await.map_err(failed)?;
        self.auto_routes(run, &mut project);
        rec.project = project.name.clone();
        for w in &project.warnings {
            warn!(deploy = run.id, "{w}");
            run.say(Status::Queued, format!("warning: {w}"));
        }
        rec.compose_hash = Some(text_hash);
        let name = project.name.clone();
        let earlier = self.register(&name, &source, order);
        if let Some(was) = earlier.filter(|was| *was != source) {
            run.say(
                Status::Queued,
                format!(
                    "warning: {name} was deployed from {}; this deploy reads {} (and becomes its source if it completes)",
                    describe(&was),
                    describe(&source)
                ),
            );
        }
        let project = Arc::new(project);
        let running = self
            .engine
            .project_containers(&name)
            .await
            .map_err(|e| failed(e.to_string()))?;
        // Images: built, found, or (rollback) the ones asked for.
        let build_started = Instant::now();
        let images = self.images(run, order, &project, &running).await?;
        if project.services.values().any(|s| s.build.is_some()) && !order.dry_run {
            rec.build_seconds = Some(build_started.elapsed().as_secs_f64());
        }

        rec.images = images
            .iter()
            .map(|(s, i)| (s.clone(), i.reference.clone()))
            .collect();
        // The plan.
        let desired: Vec<Desired> = project
            .order
            .iter()
            .filter_map(|s| {
                let svc = project.services.get(s)?;
                let id = images.get(s).map_or("", |i| i.id.as_str());
                Some(Desired {
                    service: s.clone(),
                    hash: spec::config_hash(&project, svc, id),
                    replicas: autoscaled_replicas(
                        &self.config.label_prefix,
                        (&svc.name, &svc.labels, svc.replicas),
                        &running,
                    )
                    .unwrap_or(svc.replicas),
                    single: spec::runs_twice(&project, svc).err(),
                    oneshot: project.services.values().any(|o| {
                        o.depends_on.get(s) == Some(&Condition::ServiceCompletedSuccessfully)
                    }),
                })
            })
            .collect();
        let plans = diff::diff(&desired, &running);
        for p in &plans {
            let mut text = p.step.to_string();
            let shared: Vec<&str> = project
                .services
                .get(&p.service)
                .map(|s| {
                    s.volumes
                        .iter()
                        .filter(|m| {
                            m.kind == crate::compose::model::MountKind::Volume && !m.read_only
                        })
                        .filter_map(|m| m.source.as_deref())
                        .collect()
                })
                .unwrap_or_default();
            if matches!(p.step, Step::ReplaceZeroDowntime { .. }) && !shared.is_empty() {
                text.push_str(&format!(
                    "; for a moment two replicas share volume {}: label it berth.single-writer: \"true\" if it must have one writer",
                    shared.join(", ")
                ));
            }
            if order.dry_run
                && project
                    .services
                    .get(&p.service)
                    .is_some_and(|s| s.build.is_some())
            {
                text.push_str(" (its image is built at deploy: a changed build replaces it)");
            }
            rec.steps.insert(p.service.clone(), text.clone());
            run.say_for(
                &format!("{name}/{}", p.service),
                Status::Queued,
                format!("{}: {text}", p.service),
            );
        }
        let changing = plans
            .iter()
            .filter(|p| p.step.changes() || !p.stale.is_empty())
            .count();
        if order.dry_run {
            return Ok(format!(
                "dry run: {changing} of {} services would change; nothing was changed",
                plans.len()
            ));
        }
        if changing == 0 {
            self.remember(&name, &source, &desired, &images, run.id);
            return Ok(format!(
                "nothing to change: the {} services run what the file says",
                plans.len()
            ));
        }
        self.deploy_status(run, Status::Deploying, format!("deploying {name}"));
        self.networks_and_volumes(run, &project)
            .await
            .map_err(failed)?;
        let mut changed = Vec::new();
        for p in &plans {
            let full = format!("{name}/{}", p.service);
            let stop = |changed: &Vec<String>, why: String| {
                let status = if changed.is_empty() {
                    Status::RolledBack
                } else {
                    Status::Failed
                };
                let done = if changed.is_empty() {
                    "nothing was changed".to_string()
                } else {
                    format!("already changed: {}", changed.join(", "))
                };
                (status, format!("{full}: {why} ({done})"))
            };
            if let Some(svc) = project.services.get(&p.service) {
                for (dep, cond) in &svc.depends_on {
                    self.wait_dependency(run, &name, dep, *cond)
                        .await
                        .map_err(|e| stop(&changed, e))?;
                }
            }
            let image = images.get(&p.service);
            let hash = desired
                .iter()
                .find(|d| d.service == p.service)
                .map(|d| d.hash.clone())
                .unwrap_or_default();
            let oneshot = desired.iter().any(|d| d.service == p.service && d.oneshot);
            match self.apply(run, &project, p, image, &hash, oneshot).await {
                Ok(()) => {}
                Err((true, why)) => {
                    changed.push(p.service.clone());
                    return Err(stop(&changed, why));
                }
                Err((false, why)) => return Err(stop(&changed, why)),
            }
            for r in &p.stale {
                run.say_for(
                    &full,
                    Status::Deploying,
                    format!("removing {} ({})", r.name, r.status),
                );
                if let Err(e) = self.engine.stop_and_remove(&r.id, 10).await {
                    warn!(container = %r.name, error = %e, "removing a stale container failed");
                }
            }
            if p.step.changes() {
                changed.push(p.service.clone());
            }
        }
        self.remember(&name, &source, &desired, &images, run.id);
        self.prune_images(&project, &images).await;
        Ok(format!(
            "deployed {name}: {} changed, {} unchanged",
            changed.len(),
            plans.len() - changed.len()
        ))
    }

    /// Reads and parses the compose file with its `.env` and the
    /// deployment's env store (which wins), then puts the env store's
    /// values into every service's environment.
    /// Also returns the sha256 of the file's text (the deploy record's).
    async fn load_project(&self, order: &Order, file: &Path) -> Result<(Project, String), String> {
        let text = tokio::fs::read_to_string(file)
            .await
            .map_err(|e| format!("{}: {e}", file.display()))?;
        let text_hash = sha256_hex(text.as_bytes());
        let dir = file.parent().unwrap_or(Path::new("/")).to_path_buf();
        let mut vars: HashMap<String, String> = HashMap::new();
        let dotenv = dir.join(".env");
        if let Ok(t) = std::fs::read_to_string(&dotenv) {
            for (k, v) in crate::compose::parse_dotenv(&dotenv.display().to_string(), &t)
                .map_err(|e| e.to_string())?
            {
                vars.insert(k, v);
            }
        }
        let read = |p: &Path| std::fs::read_to_string(p);
        let parse = |vars: &HashMap<String, String>| {
            crate::compose::load(&crate::compose::Source {
                file,
                text: &text,
                project: order.name.as_deref(),
                vars,
                read: &read,
            })
            .map_err(|e| e.to_string())
        };
        // The name may come from the file: a first pass learns it, and is
        // the project unless the env store has values for that name.
        let (name, first) = match &order.name {
            Some(n) => (n.clone(), None),
            None => {
                let p = parse(&vars)?;
                (p.name.clone(), Some(p))
            }
        };
        let env = self.lock_store().env(&name);
        for (k, v) in &env {
            vars.insert(k.clone(), v.value.clone());
        }
        let mut project = match first {
            Some(p) if env.is_empty() => p,
            _ => parse(&vars)?,
        };
        for s in project.services.values_mut() {
            for (k, v) in &env {
                s.environment.insert(k.clone(), v.value.clone());
            }
        }
        Ok((project, text_hash))
    }

    /// The deployment's record, made on its first deploy (not a dry run)
    /// with its webhook secret; returns the source it had before. A later
    /// deploy's source replaces it only once that deploy completes.
    fn register(&self, name: &str, source: &SourceSpec, order: &Order) -> Option<SourceSpec> {
        let mut st = self.lock_store();
        if let Some(d) = st.deployments.get_mut(name) {
            let was = d.source.clone();
            if d.webhook_secret.is_none() && order.secret.is_some() && !order.dry_run {
                d.webhook_secret = order.secret.clone();
                st.save_deployments();
            }
            return Some(was);
        }
        if !order.dry_run {
            st.deployments.insert(
                name.to_string(),
                Deployment {
                    name: name.to_string(),
                    source: source.clone(),
                    webhook_secret: order.secret.clone(),
                    created_unix: unix_now(),
                    services: BTreeMap::new(),
                    last_deploy: None,
                },
            );
            st.save_deployments();
        }
        None
    }

    /// After a deploy that completed: what each service runs, and the
    /// replica counts a restart of berth brings them back to.
    fn remember(
        &self,
        name: &str,
        source: &SourceSpec,
        desired: &[Desired],
        images: &BTreeMap<String, Image>,
        id: u64,
    ) {
        {
            let mut st = self.lock_store();
            if let Some(d) = st.deployments.get_mut(name) {
                d.source = source.clone();
                d.services = desired
                    .iter()
                    .map(|x| {
                        let image = images
                            .get(&x.service)
                            .map_or(String::new(), |i| i.reference.clone());
                        (
                            x.service.clone(),
                            Deployed {
                                image,
                                hash: x.hash.clone(),
                                replicas: x.replicas,
                                task: x.oneshot,
                            },
                        )
                    })
                    .collect();
                d.last_deploy = Some(id);
                st.save_deployments();
            }
        }
        for d in desired.iter().filter(|d| d.replicas > 0) {
            self.deploys
                .remember_replicas(&format!("{name}/{}", d.service), d.replicas);
        }
    }

    /// Each service's image: a rollback's, a build's, or the one its
    /// `image:` names (pulled when the engine lacks it). A service with
    /// `build:` is known by its source digest; it is built only when that
    /// changed (never in a dry run).
    async fn images(
        &self,
        run: &Run<'_>,
        order: &Order,
        project: &Project,
        running: &[diff::Running],
    ) -> Result<BTreeMap<String, Image>, Stop> {
        let failed = |m: String| (Status::Failed, m);
        let mut out = BTreeMap::new();
        let mut building = false;
        for name in &project.order {
            let Some(s) = project.services.get(name) else {
                continue;
            };
            let full = format!("{}/{name}", project.name);
            if let Some(reference) = order.images.as_ref().and_then(|i| i.get(name)) {
                let id = self
                    .engine
                    .image_id(reference)
                    .await
                    .map_err(|e| failed(e.to_string()))?
                    .ok_or_else(|| {
                        failed(format!(
                            "{full}: image {reference} of that deploy is gone from the engine"
                        ))
                    })?;
                out.insert(
                    name.clone(),
                    Image {
                        reference: reference.clone(),
                        id,
                    },
                );
                continue;
            }
            if let Some(b) = &s.build {
                // A build is known by its source: the same files, args and
                // target as what runs need no build (and would not always
                // give the same image id: the cache is shared).
                let (dir, dockerfile, args, target) = (
                    b.context.clone(),
                    b.dockerfile.clone(),
                    b.args.clone(),
                    b.target.clone(),
                );
                // One walk of the context: the tar digested is the tar built.
                let (tar, digest) = tokio::task::spawn_blocking(move || {
                    let tar = crate::engine::build::context_tar(&dir, &dockerfile)?;
                    let digest = crate::engine::build::digest_tar(
                        &tar,
                        &dockerfile,
                        &args,
                        target.as_deref(),
                    )
                    .map_err(|e| format!("build context {}: {e}", dir.display()))?;
                    Ok::<_, String>((tar, digest))
                })
                .await
                .map_err(|e| failed(e.to_string()))?
                .map_err(|e| (Status::BuildFailed, format!("{full}: {e}")))?;
                let id = format!("source:{digest}");
                let hash = spec::config_hash(project, s, &id);
                let same = running.iter().find(|r| {
                    &r.service == name
                        && r.status == "running"
                        && r.hash.as_deref() == Some(hash.as_str())
                });
                if let Some(r) = same {
                    run.say_for(
                        &full,
                        Status::Queued,
                        format!("{full}: source unchanged, not rebuilt"),
                    );
                    out.insert(
                        name.clone(),
                        Image {
                            reference: r.image.clone(),
                            id,
                        },
                    );
                    continue;
                }
                if order.dry_run {
                    out.insert(
                        name.clone(),
                        Image {
                            reference: String::new(),
                            id,
                        },
                    );
                    continue;
                }
                if !building {
                    building = true;
                    self.deploy_status(run, Status::Building, format!("building {}", project.name));
                }
                let tag = format!("{}-{}:{}", project.name, name.to_lowercase(), run.id);
                let spec = BuildSpec {
                    context: b.context.clone(),
                    dockerfile: b.dockerfile.clone(),
                    args: b.args.clone(),
                    target: b.target.clone(),
                    tag: tag.clone(),
                    // None: each label is one more build step (a
                    // container committed); the tag names the project.
                    labels: BTreeMap::new(),
                };
                run.say_for(
                    &full,
                    Status::Building,
                    format!("building {full} from {}", b.context.display()),
                );
                let log_path = self
                    .deploys
                    .state
                    .as_ref()
                    .map(|s| s.path("builds").join(format!("{}-{name}.log", run.id)));
                let mut log = BuildLog::open(log_path);
                let progress = run.progress.clone();
                let deploy_id = run.id;
                let mut sink = |line: &str| {
                    log.write(line);
                    progress.send(Progress {
                        id: deploy_id,
                        service: full.clone(),
                        status: Status::Building,
                        message: line.to_string(),
                    });
                };
                match self.engine.build_tar(&spec, tar, &mut sink).await {
                    Ok(image_id) => {
                        if let Some(img) = &s.image {
                            if let Some((repo, t)) = split_reference(img) {
                                if let Err(e) = self.engine.tag_image(&image_id, &repo, &t).await {
                                    warn!(image = %img, error = %e, "tagging the built image failed");
                                }
                            }
                        }
                        run.say_for(&full, Status::Building, format!("built {tag}"));
                        out.insert(name.clone(), Image { reference: tag, id });
                    }
                    Err(f) => {
                        let tail = if f.log_tail.is_empty() {
                            String::new()
                        } else {
                            format!("; build log ends:\n{}", f.log_tail.join("\n"))
                        };
                        return Err((
                            Status::BuildFailed,
                            format!("{full}: build failed: {}{tail}", f.message),
                        ));
                    }
                }
                continue;
            }
            let Some(reference) = &s.image else { continue };
            let id = match self
                .engine
                .image_id(reference)
                .await
                .map_err(|e| failed(e.to_string()))?
            {
                Some(id) => id,
                None if order.dry_run => String::new(),
                None => {
                    run.say_for(&full, Status::Building, format!("pulling {reference}"));
                    let mut sink = |_: &str| {};
                    self.engine
                        .pull(reference, &mut sink)
                        .await
                        .map_err(|e| failed(format!("{full}: image {reference} is not on this engine and pulling it failed: {e}")))?;
                    self.engine
                        .image_id(reference)
                        .await
                        .map_err(|e| failed(e.to_string()))?
                        .ok_or_else(|| {
                            failed(format!(
                                "{full}: image {reference} is not there after its pull"
                            ))
                        })?
                }
            };
            out.insert(
                name.clone(),
                Image {
                    reference: reference.clone(),
                    id,
                },
            );
        }
        Ok(out)
    }

    /// `deploy.base_domain`: route labels for the services that have none
    /// ([`spec::auto_routes`]); a name that cannot be a hostname is said.
    fn auto_routes(&self, run: &Run<'_>, project: &mut Project) {
        let Some(base) = &self.config.deploy.base_domain else {
            return;
        };
        let name = project.name.clone();
        for s in project.services.values_mut() {
            let (labels, bad) = spec::auto_routes(&self.config.label_prefix, base, &name, s);
            for why in bad {
                run.say(
                    Status::Queued,
                    format!("warning: {}: no automatic hostname: {why}", s.name),
                );
            }
            s.labels.extend(labels);
        }
    }

    /// After a completed deploy: the images berth built for the project's
    /// services that none of the last [`KEEP_BUILDS`] completed deploys ran
    /// (what `berth rollback` can go back to) are untagged; one a container
    /// still uses stays.
    async fn prune_images(&self, project: &Project, images: &BTreeMap<String, Image>) {
        let keep: Vec<String> = {
            let st = self.lock_store();
            let done: Vec<&DeployRecord> = st
                .deploys
                .iter()
                .filter(|r| {
                    r.project == project.name && r.status == Status::Completed && !r.dry_run
                })
                .collect();
            done.iter()
                .rev()
                .take(KEEP_BUILDS)
                .flat_map(|r| r.images.values().cloned())
                .chain(images.values().map(|i| i.reference.clone()))
                .collect()
        };
        for (name, s) in &project.services {
            if s.build.is_none() {
                continue;
            }
            let repo = format!("{}-{}", project.name, name.to_lowercase());
            let tags = match self.engine.tags_of(&repo).await {
                Ok(t) => t,
                Err(e) => {
                    warn!(%repo, error = %e, "listing old builds failed");
                    continue;
                }
            };
            for tag in tags.iter().filter(|t| !keep.contains(t)) {
                match self.engine.untag(tag).await {
                    Ok(()) => info!(image = %tag, "old build removed"),
                    Err(e) => warn!(image = %tag, error = %e, "an old build stays"),
                }
            }
        }
    }

    /// Makes the project's networks and volumes that are missing; an
    /// external one must exist.
    async fn networks_and_volumes(&self, run: &Run<'_>, project: &Project) -> Result<(), String> {
        // A bind source that is not there is made, as compose makes it.
        for s in project.services.values() {
            let binds = s
                .volumes
                .iter()
                .filter(|m| m.kind == crate::compose::model::MountKind::Bind);
            for path in binds.filter_map(|m| m.source.as_deref()).map(Path::new) {
                if path.exists() {
                    continue;
                }
                std::fs::create_dir_all(path).map_err(|e| {
                    format!(
                        "services.{}.volumes: cannot make bind source {}: {e}",
                        s.name,
                        path.display()
                    )
                })?;
                run.say(
                    Status::Deploying,
                    format!(
                        "directory {} created (bind source of {})",
                        path.display(),
                        s.name
                    ),
                );
            }
        }
        let used_nets: Vec<&String> = project
            .services
            .values()
            .flat_map(|s| s.networks.keys())
            .collect();
        for (key, net) in project
            .networks
            .iter()
            .filter(|(k, _)| used_nets.contains(k))
        {
            if net.external {
                if !self
                    .engine
                    .network_exists(&net.name)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    return Err(format!(
                        "network {key} is external, and the engine has no network {}",
                        net.name
                    ));
                }
                continue;
            }
            let labels = spec::resource_labels(&project.name, COMPOSE_NETWORK, key, &net.labels);
            if self
                .engine
                .ensure_network(&net.name, net.driver.as_deref(), labels)
                .await
                .map_err(|e| e.to_string())?
            {
                run.say(Status::Deploying, format!("network {} created", net.name));
            }
        }
        for (key, vol) in &project.volumes {
            if vol.external {
                if !self
                    .engine
                    .volume_exists(&vol.name)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    return Err(format!(
                        "volume {key} is external, and the engine has no volume {}",
                        vol.name
                    ));
                }
                continue;
            }
            if self
                .engine
                .volume_exists(&vol.name)
                .await
                .map_err(|e| e.to_string())?
            {
                continue;
            }
            let labels = spec::resource_labels(&project.name, COMPOSE_VOLUME, key, &vol.labels);
            self.engine
                .ensure_volume(&vol.name, vol.driver.as_deref(), labels)
                .await
                .map_err(|e| e.to_string())?;
            run.say(Status::Deploying, format!("volume {} created", vol.name));
        }
        Ok(())
    }

    /// Waits until service `dep` of the project is as `cond` asks (within
    /// the health timeout).
    async fn wait_dependency(
        &self,
        run: &Run<'_>,
        project: &str,
        dep: &str,
        cond: Condition,
    ) -> Result<(), String> {
        let timeout = self.config.deploy.health_timeout;
        let deadline = Instant::now() + timeout;
        let mut notify = self.notify.clone();
        let mut said = false;
        loop {
            let snap = self.snapshot.load_full();
            let mine: Vec<&crate::plan::ContainerInfo> = snap
                .containers
                .values()
                .filter(|c| {
                    c.project.as_deref() == Some(project) && c.service.as_deref() == Some(dep)
                })
                .collect();
            let live: Vec<_> = mine.iter().filter(|c| c.is_running()).collect();
            let met = match cond {
                Condition::ServiceStarted => !live.is_empty(),
                Condition::ServiceHealthy => {
                    !live.is_empty()
                        && live
                            .iter()
                            .all(|c| c.health.as_deref().is_none_or(|h| h == "healthy"))
                }
                Condition::ServiceCompletedSuccessfully => {
                    let mut done = false;
                    for c in mine.iter().filter(|c| c.status == "exited") {
                        match self.engine.exit_code(&c.id).await {
                            Ok(Some(0)) => done = true,
                            Ok(Some(code)) => {
                                return Err(format!(
                                "{dep} exited with {code}, and it must complete successfully first"
                            ))
                            }
                            _ => {}
                        }
                    }
                    done
                }
            };
            if met {
                return Ok(());
            }
            if !said {
                said = true;
                let word = match cond {
                    Condition::ServiceStarted => "started",
                    Condition::ServiceHealthy => "healthy",
                    Condition::ServiceCompletedSuccessfully => "completed",
                };
                run.say(
                    Status::WaitingHealthy,
                    format!("waiting for {project}/{dep} to be {word}"),
                );
            }
            if Instant::now() >= deadline {
                let health = live
                    .iter()
                    .map(|c| format!("{} {}", c.name, c.health.as_deref().unwrap_or(&c.status)))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(format!(
                    "dependency {dep} was not {cond:?} after {timeout:?} ({})",
                    if health.is_empty() {
                        "no container running".into()
                    } else {
                        health
                    }
                ));
            }
            tokio::select! {
                _ = notify.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }

    /// Carries out one service's step through the rolling engine. `Err`:
    /// whether it changed something, and why it failed.
    async fn apply(
        &self,
        run: &Run<'_>,
        project: &Arc<Project>,
        p: &ServicePlan,
        image: Option<&Image>,
        hash: &str,
        oneshot: bool,
    ) -> Result<(), (bool, String)> {
        let olds: Vec<&str> = p.live.iter().map(|r| r.id.as_str()).collect();
        let full = format!("{}/{}", project.name, p.service);
        let maker = || async {
            let taken: Vec<u32> = self
                .engine
                .project_containers(&project.name)
                .await
                .map_err(|e| (false, e.to_string()))?
                .iter()
                .filter(|r| r.service == p.service)
                .filter_map(|r| r.number)
                .collect();
            Ok::<_, (bool, String)>(Arc::new(Maker {
                engine: self.engine.clone(),
                project: project.clone(),
                service: p.service.clone(),
                image: image.map(|i| i.reference.clone()).unwrap_or_default(),
                hash: hash.to_string(),
                deploy: run.id,
                taken: Mutex::new(taken),
            }))
        };
        if oneshot && p.step.changes() && !matches!(p.step, Step::Remove { .. }) {
            return self.run_tasks(run, &full, &olds, maker().await?, p).await;
        }
        let adds = |n: usize| (0..n).map(|_| Unit::add("")).collect::<Vec<_>>();
        let retires = |ids: &[&str]| ids.iter().map(|id| Unit::retire(id)).collect::<Vec<_>>();
        let stages: Vec<(Vec<Unit>, usize)> = match &p.step {
            Step::Unchanged { .. } => Vec::new(),
            Step::Create { replicas } => vec![(adds(*replicas), *replicas)],
            Step::Scale { from, to } if to > from => vec![(adds(to - from), to - from)],
            Step::Scale { from, to } => vec![(retires(&olds[*to..]), from - to)],
            Step::ReplaceZeroDowntime { from, to } => {
                let units = (0..*from.max(to))
                    .map(|i| match (olds.get(i), i < *to) {
                        (Some(old), true) => Unit::replace(old),
                        (Some(old), false) => Unit::retire(old),
                        (None, _) => Unit::add(""),
                    })
                    .collect();
                vec![(units, 1)]
            }
            Step::ReplaceStopFirst { to, reason, .. } => {
                run.say_for(
                    &full,
                    Status::Draining,
                    format!("stopping the old replicas first: {reason}"),
                );
                return self
                    .stop_first(run, &full, &olds, maker().await?, *to)
                    .await;
            }
            Step::Remove { replicas } => vec![(retires(&olds), *replicas)],
        };
        let image_ref = image.map(|i| i.reference.clone()).unwrap_or_default();
        let maker = maker().await?;
        let mut changed = false;
        for (units, batch) in stages {
            if units.is_empty() {
                continue;
            }
            let kind = Kind::Rollout {
                image: Some(image_ref.clone()),
                batch,
            };
            let plan = self
                .run_units(run, &full, kind, units, Some(maker.clone()))
                .await;
            if plan.status != Status::Completed {
                let why = plan
                    .reason
                    .clone()
                    .unwrap_or_else(|| plan.status.to_string());
                return Err((changed || plan.status == Status::Failed, why));
            }
            changed = true;
        }
        Ok(())
    }

    /// Runs `units` of one service (`service`: `project/service`, or the
    /// project for `down`) through the rolling engine as a run of `kind`
    /// within the deploy `run`, all of them at once for a scale, else
    /// `batch` at a time; new replicas are made by `maker`. The saved run
    /// in progress ends with it.
    async fn run_units(
        &self,
        run: &Run<'_>,
        service: &str,
        kind: Kind,
        units: Vec<Unit>,
        maker: Option<Arc<Maker>>,
    ) -> Plan {
        let (image, batch) = match &kind {
            Kind::Rollout { image, batch } => (image.clone(), *batch),
            _ => (None, units.len()),
        };
        let request = Request {
            kind,
            service: service.to_string(),
            health_timeout: None,
            drain_timeout: None,
        };
        let sub = Run {
            id: run.id,
            key: run.key.clone(),
            request: &request,
            progress: run.progress,
            deploys: run.deploys,
            maker,
        };
        let mut plan = Plan::new(units, batch, image, self.config.deploy.health_timeout, None);
        self.drive(&sub, &mut plan, Vec::new()).await;
        self.deploys.end_op();
        plan
    }

    /// A task's new version: the old runs go, the new ones are started;
    /// the services that wait for it to complete check its exit code.
    async fn run_tasks(
        &self,
        run: &Run<'_>,
        full: &str,
        olds: &[&str],
        maker: Arc<Maker>,
        p: &ServicePlan,
    ) -> Result<(), (bool, String)> {
        let to = match p.step {
            Step::Create { replicas } | Step::Unchanged { replicas } => replicas,
            Step::Scale { to, .. }
            | Step::ReplaceZeroDowntime { to, .. }
            | Step::ReplaceStopFirst { to, .. } => to,
            Step::Remove { .. } => 0,
        };
        for id in olds {
            let _ = self.engine.stop_and_remove(id, 10).await;
        }
        for unit in 0..to {
            run.say_for(full, Status::Starting, format!("starting a run of {full}"));
            let id = maker
                .create(unit, &run.key)
                .await
                .map_err(|e| (true, e.to_string()))?;
            self.engine
                .start(&id, full)
                .await
                .map_err(|e| (true, e.to_string()))?;
        }
        Ok(())
    }

    /// A replacement that cannot run two versions at once: the old replicas
    /// are drained and stopped (kept), the new ones started; if they fail,
    /// they go and the old ones start again; if they get ready, the old
    /// ones are removed.
    async fn stop_first(
        &self,
        run: &Run<'_>,
        full: &str,
        olds: &[&str],
        maker: Arc<Maker>,
        to: usize,
    ) -> Result<(), (bool, String)> {
        for id in olds {
            let _ = self
                .inputs
                .send(crate::world::Input::Drain { id: id.to_string() });
        }
        self.drained(olds).await;
        for id in olds {
            run.say_for(full, Status::Draining, format!("stopping {}", short_id(id)));
            if let Err(e) = self.engine.stop(id, short_id(id), None).await {
                warn!(container = %short_id(id), error = %e, "stopping an old replica failed");
            }
        }
        let kind = Kind::Rollout {
            image: Some(maker.image.clone()),
            batch: to.max(1),
        };
        let units = (0..to).map(|_| Unit::add("")).collect();
        let plan = self.run_units(run, full, kind, units, Some(maker)).await;
        if plan.status == Status::Completed {
            for id in olds {
                if let Err(e) = self.engine.remove(id, short_id(id), true).await {
                    warn!(container = %short_id(id), error = %e, "removing an old replica failed");
                }
            }
            return Ok(());
        }
        for id in olds {
            run.say_for(
                full,
                Status::Starting,
                format!("starting {} again", short_id(id)),
            );
            if let Err(e) = self.engine.start(id, short_id(id)).await {
                warn!(container = %short_id(id), error = %e, "starting an old replica again failed");
            }
            let _ = self
                .inputs
                .send(crate::world::Input::Undrain { id: id.to_string() });
        }
        let why = plan
            .reason
            .clone()
            .unwrap_or_else(|| plan.status.to_string());
        Err((false, format!("{why}; the old replicas were started again")))
    }

    /// Waits until these routed containers have no request in flight, or
    /// their drain timeout passed (those not routed: at once).
    async fn drained(&self, ids: &[&str]) {
        let snap = self.snapshot.load_full();
        let limit = ids
            .iter()
            .filter_map(|id| snap.backends.get(*id).map(|b| b.drain_timeout))
            .max()
            .unwrap_or(Duration::ZERO);
        let deadline = Instant::now() + limit;
        let mut notify = self.notify.clone();
        loop {
            let snap = self.snapshot.load_full();
            let busy = ids.iter().any(|id| {
                snap.backends.get(*id).is_some_and(|b| {
                    b.state == crate::world::BackendState::Ready
                        || b.stats.inflight.load(std::sync::atomic::Ordering::Relaxed) > 0
                })
            });
            if !busy || Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                _ = notify.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    /// `berth down`: the deployment's containers (drained first), then its
    /// networks, and its volumes when asked; berth forgets the deployment
    /// (its env and history stay).
    pub(super) async fn run_down(&self, run: &Run<'_>, volumes: bool) {
        let name = run.request.service.clone();
        let result = self.down(run, &name, volumes).await;
        match result {
            Ok(message) => run.finish(Status::Completed, message, None),
            Err(why) => run.finish(Status::Failed, why.clone(), Some(why)),
        }
    }

    async fn down(&self, run: &Run<'_>, name: &str, volumes: bool) -> Result<String, String> {
        let containers = self
            .engine
            .project_containers(name)
            .await
            .map_err(|e| e.to_string())?;
        let owned = self.lock_store().deployments.contains_key(name);
        let left_volumes = volumes
            && !self
                .engine
                .project_resources(name, true)
                .await
                .map_err(|e| e.to_string())?
                .is_empty();
        if containers.is_empty() && !owned && !left_volumes {
            return Err(format!("no deployment named {name}"));
        }
        let live: Vec<&str> = containers
            .iter()
            .filter(|c| c.status == "running")
            .map(|c| c.id.as_str())
            .collect();
        if !live.is_empty() {
            let units = live.iter().map(|id| Unit::retire(id)).collect();
            let kind = Kind::Scale { replicas: 0 };
            self.run_units(run, name, kind, units, None).await;
        }
        for c in containers.iter().filter(|c| c.status != "running") {
            self.engine
                .stop_and_remove(&c.id, 1)
                .await
                .map_err(|e| e.to_string())?;
        }
        // What the drain left (a container that would not stop).
        for c in self
            .engine
            .project_containers(name)
            .await
            .map_err(|e| e.to_string())?
        {
            self.engine
                .stop_and_remove(&c.id, 1)
                .await
                .map_err(|e| e.to_string())?;
        }
        let nets = self
            .engine
            .project_resources(name, false)
            .await
            .map_err(|e| e.to_string())?;
        for n in &nets {
            self.engine
                .remove_network(n)
                .await
                .map_err(|e| e.to_string())?;
            run.say(Status::Draining, format!("network {n} removed"));
        }
        let mut vols = Vec::new();
        if volumes {
            vols = self
                .engine
                .project_resources(name, true)
                .await
                .map_err(|e| e.to_string())?;
            for v in &vols {
                self.engine
                    .remove_volume(v)
                    .await
                    .map_err(|e| e.to_string())?;
                run.say(Status::Draining, format!("volume {v} removed"));
            }
        }
        self.lock_store().forget(name);
        Ok(format!(
            "{name} is down: {} containers, {} networks{} removed",
            containers.len(),
            nets.len(),
            if volumes {
                format!(", {} volumes", vols.len())
            } else {
                String::new()
            }
        ))
    }
}

/// `repo:tag` → (`repo`, `tag`); a reference without a tag is `latest`; a
/// digest reference cannot be a tag.
fn split_reference(reference: &str) -> Option<(String, String)> {
    if reference.contains('@') {
        return None;
    }
    let slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[slash..].rfind(':') {
        Some(i) => Some((
            reference[..slash + i].to_string(),
            reference[slash + i + 1..].to_string(),
        )),
        None => Some((reference.to_string(), "latest".to_string())),
    }
}

/// A build's log, kept in the state dir (`builds/<deploy>-<service>.log`).
struct BuildLog {
    file: Option<std::fs::File>,
}

impl BuildLog {
    fn open(path: Option<PathBuf>) -> BuildLog {
        let file = path.and_then(|p| {
            if let Some(dir) = p.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&p)
                .map_err(|e| warn!(path = %p.display(), error = %e, "the build log cannot be kept"))
                .ok()
        });
        BuildLog { file }
    }

    fn write(&mut self, line: &str) {
        use std::io::Write;
        if let Some(f) = &mut self.file {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// A source as the user named it.
fn describe(source: &SourceSpec) -> String {
    match source {
        SourceSpec::File { path } => path.display().to_string(),
        SourceSpec::Git { url, branch, .. } => {
            format!(
                "{}@{}",
                crate::source::redact_url(url),
                branch.as_deref().unwrap_or("HEAD")
            )
        }
    }
}

/// An autoscaled service (valid `scale.*` labels in the file) keeps the
/// replicas it runs on a redeploy, within its bounds, where the file's
/// count would undo what autoscaling did; a new one starts at the file's
/// count, within the bounds too.
/// `(name, labels, replicas)`: the compose service's.
fn autoscaled_replicas(
    prefix: &str,
    (name, labels, replicas): (&str, &BTreeMap<String, String>, usize),
    running: &[diff::Running],
) -> Option<usize> {
    let dotted = format!("{prefix}.scale.");
    let keys: Vec<(&str, &str)> = labels
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(&dotted)?, v.as_str())))
        .collect();
    let policy = crate::deploy::autoscale::policy_from(&keys).ok()??;
    let live = running
        .iter()
        .filter(|r| r.service == name && r.status == "running")
        .count();
    let n = if live == 0 { replicas } else { live };
    Some(n.clamp(policy.min as usize, policy.max as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redeploy_keeps_what_autoscaling_runs_within_its_bounds() {
        let labels: BTreeMap<String, String> = [
            ("berth.scale.min".to_string(), "2".to_string()),
            ("berth.scale.max".to_string(), "4".to_string()),
        ]
        .into();
        let run = |n: u32, status: &str| diff::Running {
            id: format!("id{n}"),
            name: format!("p-web-{n}"),
            service: "web".into(),
            number: Some(n),
            hash: None,
            status: status.into(),
            image: String::new(),
        };
        let three = [run(1, "running"), run(2, "running"), run(3, "running")];
        let keep = |replicas, running: &[diff::Running]| {
            autoscaled_replicas("berth", ("web", &labels, replicas), running)
        };
        assert_eq!(keep(1, &three), Some(3), "what it scaled to");
        assert_eq!(
            keep(1, &[]),
            Some(2),
            "a new service: the file's count, at least min"
        );
        assert_eq!(keep(1, &[run(1, "running")]), Some(2));
        let six: Vec<_> = (1..=6).map(|n| run(n, "running")).collect();
        assert_eq!(keep(1, &six), Some(4), "at most max");
        assert_eq!(keep(1, &[run(1, "exited")]), Some(2));
        let plain = BTreeMap::new();
        assert_eq!(
            autoscaled_replicas("berth", ("web", &plain, 1), &three),
            None
        );
        let bad: BTreeMap<String, String> =
            [("berth.scale.max".to_string(), "abc".to_string())].into();
        assert_eq!(autoscaled_replicas("berth", ("web", &bad, 1), &three), None);
    }

    #[test]
    fn names_and_references() {
        assert_eq!(
            name_from_url("https://github.com/acme/My.Blog.git"),
            "myblog"
        );
        assert_eq!(name_from_url("git@github.com:acme/shop.git"), "shop");
        assert_eq!(name_from_url("/srv/git/site/"), "site");
        assert_eq!(
            split_reference("registry:5000/app:v2"),
            Some(("registry:5000/app".into(), "v2".into()))
        );
        assert_eq!(
            split_reference("registry:5000/app"),
            Some(("registry:5000/app".into(), "latest".into()))
        );
        assert_eq!(split_reference("app@sha256:abc"), None);
    }
}
