//! Reloading the topology file in a running process. Every trigger
//! (SIGHUP, `--watch`, `POST /admin/reload`, `histflow reload`) takes the
//! same path, one reload at a time: read the file; refuse it with every
//! problem at once if it does not validate, if a stage cannot be built, or
//! if an endpoint it adds does not answer; otherwise put it in force
//! (`stages::reload`) and show it in `GET /admin/topology`, the live page
//! and `histflow_reload_total{result}`. A refused file leaves the running
//! topology untouched.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use ingest_http::admin::topology::{ReloadResult, TopologyAdmin};
use ingest_http::auth::Clients;
use ingest_http::error::ApiError;
use ingest_http::StatsBoard;
use model::Batch;
use pipeline::env::VarSource;
use pipeline::graph::{render, GraphFormat};
use pipeline::topology::{Auth, Scope};
use pipeline::view::TopologyView;
use pipeline::{Control, Topology};
use serde_json::{json, Value};
use stages::reload::Changes;
use stages::{BuildOptions, StageConfig};

use crate::admin_listener::AdminListener;

/// How often `--watch` looks at the file.
const WATCH_EVERY: Duration = Duration::from_millis(500);
/// How long a changed file must stay the same before `--watch` reloads it
/// (an editor writes in several steps).
const WATCH_DEBOUNCE: Duration = Duration::from_millis(300);

/// A short, stable digest of a topology file's text.
pub fn digest(text: &str) -> String {
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// What `GET /admin/topology` shows besides the live wiring.
struct Status {
    version: u64,
    hash: String,
    loaded_at_ms: i64,
    last_reload: Option<Value>,
    dot: String,
    mermaid: String,
    clients: Arc<Clients>,
}

impl Status {
    /// The status of `topology` loaded now as `version` from a file of
    /// digest `hash`.
    fn of(version: u64, hash: String, topology: &Topology<StageConfig>, last_reload: Option<Value>) -> Self {
        Status {
            version,
            hash,
            loaded_at_ms: now_ms(),
            last_reload,
            dot: render(topology, GraphFormat::Dot),
            mermaid: render(topology, GraphFormat::Mermaid),
            clients: Arc::new(Clients::new(&topology.auth)),
        }
    }
}

/// Reloads one process's topology.
pub struct Reloader {
    path: PathBuf,
    options: BuildOptions,
    control: Control<Batch>,
    board: Option<Arc<StatsBoard>>,
    admin_listener: Option<AdminListener>,
    running: tokio::sync::Mutex<Topology<StageConfig>>,
    status: Mutex<Status>,
}

fn now_ms() -> i64 {
    model::now_ms()
}

impl Reloader {
    /// A reloader of `path`, whose `text` built the running `topology`.
    pub fn new(
        path: &Path,
        text: &str,
        topology: Topology<StageConfig>,
        options: BuildOptions,
        control: Control<Batch>,
        board: Option<Arc<StatsBoard>>,
        admin_listener: Option<AdminListener>,
    ) -> Self {
        let status = Status::of(1, digest(text), &topology, None);
        Reloader {
            path: path.to_owned(),
            options,
            control,
            board,
            admin_listener,
            running: tokio::sync::Mutex::new(topology),
            status: Mutex::new(status),
        }
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reloads the file; `trigger` names what asked.
    pub async fn reload(&self, trigger: &'static str) -> (ReloadResult, Value) {
        let started = Instant::now();
        let mut running = self.running.lock().await;
        let (result, problems, changes) = self.reload_locked(&mut running).await;
        let took = started.elapsed();
        metrics::counter!("histflow_reload_total", "result" => result.as_str()).increment(1);
        metrics::histogram!("histflow_reload_seconds", "result" => result.as_str()).record(took.as_secs_f64());
        let mut status = self.status();
        let answer = json!({
            "result": result.as_str(),
            "trigger": trigger,
            "version": status.version,
            "hash": status.hash,
            "problems": problems,
            "changes": changes,
            "took_ms": took.as_secs_f64() * 1000.0,
            "at_ms": now_ms(),
        });
        status.last_reload = Some(answer.clone());
        metrics::gauge!("histflow_topology_version").set(status.version as f64);
        drop(status);
        match result {
            ReloadResult::Applied => {
                tracing::info!(trigger, path = %self.path.display(), changes = %answer["changes"], took_ms = took.as_millis() as u64, "topology reloaded")
            }
            ReloadResult::Unchanged => tracing::info!(trigger, path = %self.path.display(), "topology file unchanged; nothing to reload"),
            ReloadResult::Rejected => {
                tracing::warn!(trigger, path = %self.path.display(), problems = ?problems, "topology reload refused; the running topology is unchanged")
            }
            ReloadResult::Failed => {
                tracing::error!(trigger, path = %self.path.display(), problems = ?problems, "topology reload failed part-way; stopping")
            }
        }
        if let Some(other_role) = changes.as_ref().map(|changes| &changes.other_role).filter(|names| !names.is_empty()) {
            tracing::info!(stages = ?other_role, "edits to stages this role does not run are ignored here");
        }
        (result, answer)
    }

    async fn reload_locked(&self, running: &mut Topology<StageConfig>) -> (ReloadResult, Vec<String>, Option<Changes>) {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) => return (ReloadResult::Rejected, vec![format!("{}: cannot read: {error}", self.path.display())], None),
        };
        let hash = digest(&text);
        if hash == self.status().hash {
            return (ReloadResult::Unchanged, Vec::new(), None);
        }
        let next = match pipeline::validate::load::<StageConfig>(&text, &VarSource::Process) {
            Ok(next) => next,
            Err(problems) => return (ReloadResult::Rejected, problems.lines(), None),
        };
        let prepared = match stages::reload::prepare(running, &next, &self.options).await {
            Ok(prepared) => prepared,
            Err(problems) => return (ReloadResult::Rejected, problems, None),
        };
        // A moved admin address is bound before anything changes.
        let moved_admin = match &self.admin_listener {
            Some(admin) if next.settings.admin_listen != running.settings.admin_listen => {
                match admin.bind(&next.settings.admin_listen).await {
                    Ok(bound) => Some(bound),
                    Err(problem) => return (ReloadResult::Rejected, vec![problem], None),
                }
            }
            _ => None,
        };
        let changes = prepared.changes.clone();
        if let Err(error) = prepared.commit(&self.control, &self.options).await {
            return (ReloadResult::Failed, vec![error.to_string()], Some(changes));
        }
        if let (Some(admin), Some(bound)) = (&self.admin_listener, moved_admin) {
            admin.replace(bound);
        }
        self.control.set_drain_timeout(Duration::from_millis(next.settings.shutdown_timeout_ms));
        if let Some(board) = &self.board {
            board.set_view(TopologyView::new(&next, self.options.role));
        }
        let mut status = self.status();
        *status = Status::of(status.version + 1, hash, &next, status.last_reload.take());
        drop(status);
        *running = next;
        (ReloadResult::Applied, Vec::new(), Some(changes))
    }

    /// Stops the admin endpoints' own server, if this process has one.
    pub async fn stop_admin(&self) {
        if let Some(admin) = &self.admin_listener {
            admin.stop().await;
        }
    }

    fn describe(&self) -> Value {
        let mut nodes = self.control.specs();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let nodes: Vec<Value> = nodes
            .iter()
            .map(|node| {
                json!({
                    "name": node.name,
                    "inputs": node.inputs.iter().map(|input| json!({
                        "from": input.from,
                        "capacity": input.capacity,
                        "when_full": format!("{:?}", input.when_full).to_lowercase(),
                    })).collect::<Vec<_>>(),
                    "rate_limit": node.rate_limit.map(|limit| json!({"per_second": limit.per_second, "burst": limit.burst_or_default()})),
                })
            })
            .collect();
        let status = self.status();
        json!({
            "path": self.path.display().to_string(),
            "role": self.options.role.to_string(),
            "version": status.version,
            "hash": status.hash,
            "loaded_at_ms": status.loaded_at_ms,
            "last_reload": status.last_reload,
            "nodes": nodes,
        })
    }
}

/// The topology routes' backend, set once the pipeline runs (the ingest
/// stage's routes are built before it).
pub struct LateReloader {
    /// The reloader, once the pipeline runs.
    reloader: OnceLock<Arc<Reloader>>,
    /// Who may use the operations endpoints until then: the clients of the
    /// topology the process starts with.
    starting_clients: Clients,
}

impl LateReloader {
    /// Answers for a process starting with `auth`'s clients.
    pub fn new(auth: &Auth) -> Self {
        LateReloader { reloader: OnceLock::new(), starting_clients: Clients::new(auth) }
    }

    /// Serves `reloader` from now on.
    pub fn set(&self, reloader: Arc<Reloader>) {
        let _ = self.reloader.set(reloader);
    }
}

impl TopologyAdmin for LateReloader {
    fn reload(&self, trigger: &'static str) -> BoxFuture<'_, (ReloadResult, Value)> {
        async move {
            match self.reloader.get() {
                Some(reloader) => reloader.reload(trigger).await,
                None => (ReloadResult::Rejected, json!({"result": "rejected", "problems": ["the pipeline is still starting"]})),
            }
        }
        .boxed()
    }

    fn status(&self) -> Value {
        self.reloader.get().map_or_else(|| json!({"starting": true}), |reloader| reloader.describe())
    }

    fn graph(&self, format: &str) -> Option<String> {
        let reloader = self.reloader.get()?;
        let status = reloader.status();
        match format {
            "dot" => Some(status.dot.clone()),
            "mermaid" => Some(status.mermaid.clone()),
            _ => None,
        }
    }

    fn authorize(&self, authorization: Option<&str>) -> Result<(), ApiError> {
        match self.reloader.get() {
            Some(reloader) => reloader.status().clients.admit(authorization, Scope::Admin).map(drop),
            // Still starting: the clients of the topology it starts with.
            None => self.starting_clients.admit(authorization, Scope::Admin).map(drop),
        }
    }
}

/// Reloads on every SIGHUP. `None` if SIGHUP cannot be watched.
pub fn on_hangup(reloader: Arc<Reloader>) -> Option<tokio::task::JoinHandle<()>> {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hangups) => Some(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP received; reloading the topology");
                reloader.reload("SIGHUP").await;
            }
        })),
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGHUP; a SIGHUP will end the process without draining");
            None
        }
    }
}

/// `--watch`: reloads when the file's text changes and then stays the same
/// for [`WATCH_DEBOUNCE`]. A refused text is not tried again until it
/// changes.
pub fn watch(reloader: Arc<Reloader>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let path = reloader.path.clone();
        let mut seen = reloader.status().hash.clone();
        tracing::info!(path = %path.display(), "watching the topology file; a change is reloaded");
        loop {
            tokio::time::sleep(WATCH_EVERY).await;
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            let hash = digest(&text);
            if hash == seen {
                continue;
            }
            tokio::time::sleep(WATCH_DEBOUNCE).await;
            let Ok(again) = std::fs::read_to_string(&path) else { continue };
            if digest(&again) != hash {
                continue;
            }
            seen = hash;
            reloader.reload("watch").await;
        }
    })
}
