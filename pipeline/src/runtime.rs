//! Runs a DAG of stages: one tokio task per stage, joined by bounded edges.
//!
//! Shutdown follows the data: only sources watch the stop signal; every
//! other stage runs until its input is closed and drained (all its upstream
//! stages have finished), flushes, and returns, which closes its own
//! outputs. A deadline bounds the drain after the signal and names the
//! stages still running. A stage that fails stops the sources too, so the
//! rest drains and the process exits non-zero.
//!
//! A running pipeline can be rewired ([`Control::apply`]): edges change
//! capacity, policy and rate limit in place; new nodes start; removed nodes
//! lose their inputs, drain what they hold and end; a node given a new
//! stage is handed over: its running instance sees the end of its input,
//! finishes and returns, and the new instance takes the same queue and the
//! same output edges, so nothing is dropped or re-ordered and the stages
//! around it never notice. A source is told to stop and its new instance
//! starts beside it at once (a source has no queue whose order to keep).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use crate::edge::{Delivery, EdgeSender, EdgeShared, Handover, Input, InputCore, InputEdges, LiveRateLimit, Message, Output, OutputShared};
use crate::metrics::StageMetrics;
pub use crate::plan::NodeSpec;

/// Any error a stage ends with.
pub type StageError = Box<dyn std::error::Error + Send + Sync>;

/// What a stage's task runs.
pub type StageFuture = BoxFuture<'static, Result<(), StageError>>;

/// A runnable stage. `run` owns the stage for its whole life; it returns
/// when its work is done (a source: after the stop signal; anything else:
/// when its input ends, drained or handed over to the stage's next
/// instance) or when it fails. Either way it finishes what it holds first.
pub trait Stage<M>: Send + 'static {
    /// Runs the stage to completion.
    fn run(self: Box<Self>, cx: StageContext<M>) -> StageFuture;
}

/// A stage written as a closure over its context (tests, benchmarks, small
/// glue stages).
pub fn stage_fn<M, F, Fut>(body: F) -> Box<dyn Stage<M>>
where
    M: Message,
    F: FnOnce(StageContext<M>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), StageError>> + Send + 'static,
{
    struct FnStage<F>(F);
    impl<M, F, Fut> Stage<M> for FnStage<F>
    where
        M: Message,
        F: FnOnce(StageContext<M>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), StageError>> + Send + 'static,
    {
        fn run(self: Box<Self>, cx: StageContext<M>) -> StageFuture {
            Box::pin((self.0)(cx))
        }
    }
    Box::new(FnStage(body))
}

/// Everything a running stage is handed.
pub struct StageContext<M> {
    /// The node's name (for logs).
    pub name: Arc<str>,
    /// Batches from every input edge (empty and closed for a source).
    pub input: Input<M>,
    /// Fan-out to every downstream stage.
    pub output: Output<M>,
    /// Fires when the process is asked to stop, or (a source) when a
    /// reload hands the node to a new instance; only sources need it.
    pub shutdown: CancellationToken,
    /// This stage's metrics, for counting errors.
    pub metrics: StageMetrics,
}

/// A node ready to start: its wiring and its stage.
pub type RunnableNode<M> = (NodeSpec, Box<dyn Stage<M>>);

/// Why a pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// An input names a node that is not in the pipeline.
    #[error("node `{to}` reads from `{from}`, which is not a node of this pipeline")]
    UnknownInput {
        /// The reading node.
        to: String,
        /// The missing node.
        from: String,
    },
    /// Two nodes share a name.
    #[error("two nodes are named `{0}`")]
    DuplicateNode(String),
    /// A new node came without its stage.
    #[error("node `{0}` is new but no stage was given for it")]
    MissingStage(String),
    /// A node to hand over has already ended.
    #[error("node `{0}` has already ended and cannot be handed over")]
    Ended(String),
    /// The pipeline is stopping; it is not rewired any more.
    #[error("the pipeline is stopping")]
    Stopping,
    /// A stage failed while handing over (the pipeline stops).
    #[error("stage `{stage}` failed while handing over: {error}")]
    HandoverFailed {
        /// The node.
        stage: String,
        /// Its error.
        error: String,
    },
}

/// How a run ended badly.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Stages failed (each with its error); the rest drained.
    #[error("{} stage(s) failed: {}", .0.len(), .0.iter().map(|(stage, error)| format!("`{stage}`: {error}")).collect::<Vec<_>>().join("; "))]
    StagesFailed(Vec<(String, String)>),
    /// The drain deadline passed with these stages still running.
    #[error("stages still running after the {timeout:?} shutdown deadline: {}", .still_running.join(", "))]
    DeadlineExceeded {
        /// The deadline.
        timeout: Duration,
        /// The stages that had not finished.
        still_running: Vec<String>,
    },
}

/// What a running instance reports when it ends.
type Ended = (u64, Result<(), String>);

/// One node of the running pipeline.
struct Node<M> {
    spec: NodeSpec,
    /// Its inbound queue, held weakly: only edges keep it open.
    queue: mpsc::WeakUnboundedSender<Delivery<M>>,
    input_edges: InputEdges,
    /// Its outputs, held weakly: the stage's own clones keep them open.
    output: Weak<OutputShared<M>>,
    rate_limit: Arc<LiveRateLimit>,
    metrics: StageMetrics,
    /// The instance running it now.
    instance: u64,
}

/// One running instance of a node's stage.
struct Instance<M> {
    name: Arc<str>,
    abort: AbortHandle,
    /// Ends the instance's input (a source: its stop signal) for a handover.
    handover: CancellationToken,
    /// What the stage sees as its stop signal.
    stop: CancellationToken,
    /// Where its input's queue goes when it lets go of it.
    handed: Option<oneshot::Receiver<InputCore<M>>>,
    /// Told how the instance ended, while it is being handed over.
    swap: Option<oneshot::Sender<Result<(), String>>>,
}

/// The nodes and instances of a pipeline, shared by [`Running`] and
/// [`Control`].
struct Nodes<M> {
    by_name: HashMap<String, Node<M>>,
    instances: HashMap<u64, Instance<M>>,
    next_instance: u64,
    ended: mpsc::UnboundedSender<Ended>,
    shutdown: CancellationToken,
    /// How long a drain may take once the stop signal fires; `None`: what
    /// [`Running::wait`] was given.
    drain_timeout: Option<Duration>,
}

/// A node about to start: its queue's receiving end and its output.
struct Fresh<M> {
    receiver: mpsc::UnboundedReceiver<Delivery<M>>,
    /// Keeps the queue open until edges are wired to it.
    sender: mpsc::UnboundedSender<Delivery<M>>,
    output: Arc<OutputShared<M>>,
}

impl<M: Message> Nodes<M> {
    /// Adds a node that is not running yet.
    fn add(&mut self, spec: NodeSpec) -> Fresh<M> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let metrics = StageMetrics::new(&spec.name);
        let rate_limit = LiveRateLimit::new(spec.rate_limit.as_ref());
        let shared = OutputShared::unwired(metrics.clone(), spec.source.then(|| rate_limit.clone()));
        let node = Node {
            queue: sender.downgrade(),
            input_edges: Arc::default(),
            output: Arc::downgrade(&shared),
            rate_limit,
            metrics,
            instance: 0,
            spec,
        };
        self.by_name.insert(node.spec.name.clone(), node);
        Fresh { receiver, sender, output: shared }
    }

    /// Makes every node's inputs and rate limit what `specs` say: edges
    /// from the same node are retuned in place, new ones are added before
    /// any is removed (so a queue never closes between two edges), and the
    /// edges of nodes not in `specs` are taken away. `fresh` are the nodes
    /// not started yet, whose queues and outputs only they hold.
    fn rewire(&mut self, specs: &[NodeSpec], fresh: &HashMap<String, Fresh<M>>) {
        let output_of = |nodes: &HashMap<String, Node<M>>, name: &str| -> Option<Arc<OutputShared<M>>> {
            fresh.get(name).map(|fresh| fresh.output.clone()).or_else(|| nodes.get(name).and_then(|node| node.output.upgrade()))
        };
        let mut removed: Vec<Arc<EdgeShared>> = Vec::new();
        for spec in specs {
            let Some(node) = self.by_name.get(&spec.name) else { continue };
            let queue = fresh.get(&spec.name).map(|fresh| fresh.sender.clone()).or_else(|| node.queue.upgrade());
            let mut edges = lock(&node.input_edges).clone();
            for input in &spec.inputs {
                if let Some(edge) = edges.iter().find(|edge| *edge.from == *input.from) {
                    edge.resize(input.capacity);
                    edge.set_when_full(input.when_full);
                    continue;
                }
                let Some(queue) = queue.clone() else { continue };
                let edge = EdgeShared::new(&input.from, &spec.name, input.capacity, input.when_full);
                if let Some(upstream) = output_of(&self.by_name, &input.from) {
                    let mut senders = (*upstream.edges()).clone();
                    senders.push(EdgeSender { edge: edge.clone(), queue });
                    upstream.set_edges(senders);
                }
                edges.push(edge);
            }
            let (kept, gone): (Vec<_>, Vec<_>) =
                edges.into_iter().partition(|edge| spec.inputs.iter().any(|input| *input.from == *edge.from));
            removed.extend(gone);
            *lock(&node.input_edges) = kept;
            node.rate_limit.set(spec.rate_limit.as_ref());
        }
        let wanted: HashSet<&str> = specs.iter().map(|spec| spec.name.as_str()).collect();
        for node in self.by_name.values().filter(|node| !wanted.contains(node.spec.name.as_str())) {
            removed.extend(lock(&node.input_edges).iter().cloned());
        }
        for edge in removed {
            if let Some(upstream) = output_of(&self.by_name, &edge.from) {
                let senders = upstream.edges().iter().filter(|sender| !Arc::ptr_eq(&sender.edge, &edge)).cloned().collect();
                upstream.set_edges(senders);
            }
        }
        for spec in specs {
            if let Some(node) = self.by_name.get_mut(&spec.name) {
                node.spec = spec.clone();
            }
        }
    }

    /// Starts an instance of `name`'s stage on `core` and `output`.
    fn spawn(&mut self, name: &str, stage: Box<dyn Stage<M>>, core: InputCore<M>, output: Arc<OutputShared<M>>) {
        let Some(node) = self.by_name.get_mut(name) else { return };
        self.next_instance += 1;
        let id = self.next_instance;
        node.instance = id;
        node.output = Arc::downgrade(&output);
        let handover = CancellationToken::new();
        let (hand_to, handed) = oneshot::channel();
        let stop = self.shutdown.child_token();
        let input_limit = (!node.spec.source).then(|| node.rate_limit.clone());
        let input = Input::new(
            core,
            node.input_edges.clone(),
            node.metrics.clone(),
            input_limit,
            Some(Handover { requested: handover.clone(), hand_to }),
        );
        let name: Arc<str> = name.into();
        let cx = StageContext {
            name: name.clone(),
            input,
            output: Output::from_shared(output),
            shutdown: stop.clone(),
            metrics: node.metrics.clone(),
        };
        let ended = self.ended.clone();
        let task = tokio::spawn(async move {
            let outcome = match std::panic::AssertUnwindSafe(stage.run(cx)).catch_unwind().await {
                Ok(outcome) => outcome.map_err(|error| error.to_string()),
                Err(_panic) => Err("the stage panicked".to_owned()),
            };
            let _ = ended.send((id, outcome));
        });
        let instance = Instance { name, abort: task.abort_handle(), handover, stop, handed: Some(handed), swap: None };
        self.instances.insert(id, instance);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A started pipeline.
pub struct Running<M> {
    nodes: Arc<Mutex<Nodes<M>>>,
    ended: mpsc::UnboundedReceiver<Ended>,
    shutdown: CancellationToken,
    rewiring: Arc<tokio::sync::Mutex<()>>,
}

/// Rewires a running pipeline; clones share it.
pub struct Control<M> {
    nodes: Arc<Mutex<Nodes<M>>>,
    shutdown: CancellationToken,
    /// One rewiring at a time.
    rewiring: Arc<tokio::sync::Mutex<()>>,
}

impl<M> Clone for Control<M> {
    fn clone(&self) -> Self {
        Control { nodes: self.nodes.clone(), shutdown: self.shutdown.clone(), rewiring: self.rewiring.clone() }
    }
}

/// What the pipeline should become.
pub struct Rewire<M> {
    /// Every node to run from now on, with its wiring.
    pub specs: Vec<NodeSpec>,
    /// A stage for every new node, and for every running node to hand over
    /// to a new instance. Running nodes without one keep their instance.
    pub stages: HashMap<String, Box<dyn Stage<M>>>,
}

/// What a rewiring did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rewired {
    /// Nodes that started.
    pub started: Vec<String>,
    /// Nodes handed over to a new instance.
    pub handed_over: Vec<String>,
    /// Nodes whose inputs were taken away (they drain and end).
    pub retired: Vec<String>,
}

/// Checks that names are unique and every input names a node.
fn check_wiring(specs: &[NodeSpec]) -> Result<(), BuildError> {
    let mut names = HashSet::new();
    for spec in specs {
        if !names.insert(spec.name.as_str()) {
            return Err(BuildError::DuplicateNode(spec.name.clone()));
        }
    }
    for spec in specs {
        if let Some(input) = spec.inputs.iter().find(|input| !names.contains(input.from.as_str())) {
            return Err(BuildError::UnknownInput { to: spec.name.clone(), from: input.from.clone() });
        }
    }
    Ok(())
}

/// Wires `nodes` together and spawns one task per node. `shutdown` is the
/// stop signal handed to sources; cancel it to begin a drain.
pub fn start<M: Message>(nodes: Vec<(NodeSpec, Box<dyn Stage<M>>)>, shutdown: CancellationToken) -> Result<Running<M>, BuildError> {
    let specs: Vec<NodeSpec> = nodes.iter().map(|(spec, _)| spec.clone()).collect();
    check_wiring(&specs)?;
    let (ended_tx, ended) = mpsc::unbounded_channel();
    let mut state = Nodes {
        by_name: HashMap::new(),
        instances: HashMap::new(),
        next_instance: 0,
        ended: ended_tx,
        shutdown: shutdown.clone(),
        drain_timeout: None,
    };
    let mut fresh = HashMap::new();
    for spec in &specs {
        fresh.insert(spec.name.clone(), state.add(spec.clone()));
    }
    state.rewire(&specs, &fresh);
    for (spec, stage) in nodes {
        if let Some(Fresh { receiver, sender, output }) = fresh.remove(&spec.name) {
            drop(sender);
            state.spawn(&spec.name, stage, InputCore::new(receiver), output);
        }
    }
    Ok(Running { nodes: Arc::new(Mutex::new(state)), ended, shutdown, rewiring: Arc::default() })
}

impl<M: Message> Running<M> {
    /// A handle that rewires this pipeline while it runs.
    pub fn control(&self) -> Control<M> {
        Control { nodes: self.nodes.clone(), shutdown: self.shutdown.clone(), rewiring: self.rewiring.clone() }
    }

    /// Waits for every stage to finish. After the stop signal (or a stage
    /// failure, which raises it), waits at most `drain_timeout`, then aborts
    /// what is left and names it.
    pub async fn wait(mut self, mut drain_timeout: Duration) -> Result<(), RunError> {
        let mut failures = Vec::new();
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            if deadline.is_none() && self.shutdown.is_cancelled() {
                drain_timeout = lock(&self.nodes).drain_timeout.unwrap_or(drain_timeout);
                deadline = Some(tokio::time::Instant::now() + drain_timeout);
            }
            if lock(&self.nodes).instances.is_empty() {
                break;
            }
            let ended = tokio::select! {
                ended = self.ended.recv() => ended,
                () = self.shutdown.cancelled(), if deadline.is_none() => continue,
                () = sleep_until(deadline) => {
                    let nodes = lock(&self.nodes);
                    let mut still_running: Vec<String> = nodes.instances.values().map(|instance| instance.name.to_string()).collect();
                    still_running.sort();
                    tracing::error!(stages = ?still_running, timeout_ms = drain_timeout.as_millis() as u64, "shutdown deadline passed; aborting stages that have not drained");
                    for instance in nodes.instances.values() {
                        instance.abort.abort();
                    }
                    return Err(RunError::DeadlineExceeded { timeout: drain_timeout, still_running });
                }
            };
            let Some((id, outcome)) = ended else { break };
            let mut nodes = lock(&self.nodes);
            let Some(instance) = nodes.instances.remove(&id) else { continue };
            let name = instance.name.clone();
            if let Err(error) = &outcome {
                tracing::error!(stage = %name, %error, "stage failed; stopping the sources so the rest drains");
                failures.push((name.to_string(), error.clone()));
                self.shutdown.cancel();
            }
            match instance.swap {
                Some(swap) => {
                    let _ = swap.send(outcome);
                }
                None => {
                    tracing::debug!(stage = %name, "stage finished");
                    if nodes.by_name.get(&*name).is_some_and(|node| node.instance == id) {
                        nodes.by_name.remove(&*name);
                    }
                }
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(RunError::StagesFailed(failures))
        }
    }
}

impl<M: Message> Control<M> {
    /// How long the drain after the stop signal may take, from now on.
    pub fn set_drain_timeout(&self, timeout: Duration) {
        lock(&self.nodes).drain_timeout = Some(timeout);
    }

    /// The nodes running now, with their wiring.
    pub fn specs(&self) -> Vec<NodeSpec> {
        lock(&self.nodes).by_name.values().map(|node| node.spec.clone()).collect()
    }

    /// Makes the running pipeline what `rewire` says (see the module
    /// documentation). Checked before anything changes: a bad wiring
    /// changes nothing. Returns once handed-over and new nodes run.
    pub async fn apply(&self, rewire: Rewire<M>) -> Result<Rewired, BuildError> {
        let _one_at_a_time = self.rewiring.lock().await;
        let Rewire { specs, mut stages } = rewire;
        check_wiring(&specs)?;
        let mut report = Rewired::default();
        let handovers = {
            let nodes = lock(&self.nodes);
            if self.shutdown.is_cancelled() {
                return Err(BuildError::Stopping);
            }
            if let Some(spec) = specs.iter().find(|spec| !nodes.by_name.contains_key(&spec.name) && !stages.contains_key(&spec.name)) {
                return Err(BuildError::MissingStage(spec.name.clone()));
            }
            let running: Vec<&NodeSpec> = nodes.by_name.values().map(|node| &node.spec).collect();
            upstream_first(&running).into_iter().filter(|name| stages.contains_key(name)).collect::<Vec<String>>()
        };
        // Upstream first, one at a time: a stage handing over drains into
        // the instance downstream of it, which is still reading.
        for name in handovers {
            if let Some(stage) = stages.remove(&name) {
                self.hand_over(&name, stage).await?;
                report.handed_over.push(name);
            }
        }
        let mut nodes = lock(&self.nodes);
        let mut fresh = HashMap::new();
        for spec in &specs {
            if !nodes.by_name.contains_key(&spec.name) {
                let node = nodes.add(spec.clone());
                fresh.insert(spec.name.clone(), node);
            }
        }
        let wanted: HashSet<&str> = specs.iter().map(|spec| spec.name.as_str()).collect();
        let retired: Vec<String> = nodes.by_name.keys().filter(|name| !wanted.contains(name.as_str())).cloned().collect();
        nodes.rewire(&specs, &fresh);
        for name in &retired {
            if let Some(node) = nodes.by_name.remove(name) {
                // A source has no inputs to lose: stop it. Any other node
                // ends once its queue, which nothing feeds now, is drained.
                if let Some(instance) = nodes.instances.get(&node.instance).filter(|_| node.spec.source) {
                    instance.stop.cancel();
                }
            }
            report.retired.push(name.clone());
        }
        for (name, Fresh { receiver, sender, output }) in fresh {
            drop(sender);
            if let Some(stage) = stages.remove(&name) {
                nodes.spawn(&name, stage, InputCore::new(receiver), output);
                report.started.push(name);
            }
        }
        report.started.sort();
        report.handed_over.sort();
        report.retired.sort();
        Ok(report)
    }

    /// Ends `name`'s running instance (its input ends), waits for it to
    /// finish, and starts `stage` on the same queue and output edges. A
    /// source's stop signal fires and `stage` starts at once.
    async fn hand_over(&self, name: &str, stage: Box<dyn Stage<M>>) -> Result<(), BuildError> {
        let ended = || BuildError::Ended(name.to_owned());
        let (output, swapped, handed) = {
            let mut nodes = lock(&self.nodes);
            let node = nodes.by_name.get(name).ok_or_else(ended)?;
            // A stage that feeds nothing may have let go of its output.
            let feeds = nodes.by_name.values().any(|other| lock(&other.input_edges).iter().any(|edge| *edge.from == *name));
            let source = node.spec.source;
            let output = node
                .output
                .upgrade()
                .or_else(|| (!feeds).then(|| OutputShared::unwired(node.metrics.clone(), source.then(|| node.rate_limit.clone()))))
                .ok_or_else(ended)?;
            let id = node.instance;
            let instance = nodes.instances.get_mut(&id).ok_or_else(ended)?;
            instance.handover.cancel();
            if source {
                // A source has no queue to pass on: the new instance starts
                // at once beside the old one, which finishes what it took
                // (an HTTP server answers its requests in flight, this
                // reload's own among them) and ends.
                instance.stop.cancel();
                nodes.spawn(name, stage, InputCore::new(mpsc::unbounded_channel().1), output);
                return Ok(());
            }
            let (swap, swapped) = oneshot::channel();
            instance.swap = Some(swap);
            let handed = instance.handed.take().ok_or_else(ended)?;
            (output, swapped, handed)
        };
        let failed = |error: String| BuildError::HandoverFailed { stage: name.to_owned(), error };
        match swapped.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(failed(error)),
            Err(_) => return Err(failed("it ended without a word".to_owned())),
        }
        let core = handed.await.map_err(|_| failed("its input was not handed back".to_owned()))?;
        lock(&self.nodes).spawn(name, stage, core, output);
        Ok(())
    }
}

/// Node names ordered so that every node comes after the nodes it reads.
fn upstream_first(specs: &[&NodeSpec]) -> Vec<String> {
    let mut depth: HashMap<&str, usize> = specs.iter().map(|spec| (spec.name.as_str(), 0)).collect();
    // Longest path from a source; a DAG settles within `specs.len()` rounds.
    for _ in 0..specs.len() {
        for spec in specs {
            let deepest = spec.inputs.iter().filter_map(|input| depth.get(input.from.as_str())).max().map(|d| d + 1).unwrap_or(0);
            depth.insert(spec.name.as_str(), deepest);
        }
    }
    let mut names: Vec<&str> = specs.iter().map(|spec| spec.name.as_str()).collect();
    names.sort_by_key(|name| (depth[name], *name));
    names.into_iter().map(str::to_owned).collect()
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
