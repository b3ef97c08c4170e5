//! Runs a DAG of stages: one tokio task per stage, joined by bounded edges.
//!
//! Shutdown follows the data: only sources watch the stop signal; every
//! other stage runs until its input is closed and drained (all its upstream
//! stages have finished), flushes, and returns, which closes its own
//! outputs. A deadline bounds the drain after the signal and names the
//! stages still running. A stage that fails stops the sources too, so the
//! rest drains and the process exits non-zero.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::edge::{EdgeSender, EdgeShared, Input, Message, Output};
use crate::metrics::StageMetrics;
use crate::rate_limit::RateLimit;
use crate::topology::{InputSpec, RateLimitSpec};

/// Any error a stage ends with.
pub type StageError = Box<dyn std::error::Error + Send + Sync>;

/// What a stage's task runs.
pub type StageFuture = BoxFuture<'static, Result<(), StageError>>;

/// A runnable stage. `run` owns the stage for its whole life; it returns
/// when its work is done (a source: after the stop signal; anything else:
/// when its input is drained) or when it fails.
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
    /// Fires when the process is asked to stop; only sources need it.
    pub shutdown: CancellationToken,
    /// This stage's metrics, for counting errors.
    pub metrics: StageMetrics,
}

/// A node to run: its name, where its input comes from, and its limit.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Unique node name; `inputs[].from` refer to these.
    pub name: String,
    /// Input edges.
    pub inputs: Vec<InputSpec>,
    /// Rate limit on events taken in (or emitted, for a source).
    pub rate_limit: Option<RateLimitSpec>,
    /// A source has no inputs and stops on the signal.
    pub source: bool,
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

/// A started pipeline.
pub struct Running {
    tasks: JoinSet<Result<(), StageError>>,
    names: HashMap<tokio::task::Id, Arc<str>>,
    shutdown: CancellationToken,
}

/// Wires `nodes` together and spawns one task per node. `shutdown` is the
/// stop signal handed to sources; cancel it to begin a drain.
pub fn start<M: Message>(nodes: Vec<(NodeSpec, Box<dyn Stage<M>>)>, shutdown: CancellationToken) -> Result<Running, BuildError> {
    let mut queues: HashMap<&str, (mpsc::UnboundedSender<_>, Option<mpsc::UnboundedReceiver<_>>)> = HashMap::new();
    for (spec, _) in &nodes {
        let (tx, rx) = mpsc::unbounded_channel();
        if queues.insert(spec.name.as_str(), (tx, Some(rx))).is_some() {
            return Err(BuildError::DuplicateNode(spec.name.clone()));
        }
    }

    let mut outgoing: HashMap<&str, Vec<EdgeSender<M>>> = HashMap::new();
    let mut incoming: HashMap<&str, Vec<Arc<EdgeShared>>> = HashMap::new();
    for (spec, _) in &nodes {
        for input in &spec.inputs {
            let Some((from_name, _)) = queues.get_key_value(input.from.as_str()) else {
                return Err(BuildError::UnknownInput { to: spec.name.clone(), from: input.from.clone() });
            };
            let edge = EdgeShared::new(&input.from, &spec.name, input.capacity, input.when_full);
            let queue = queues[spec.name.as_str()].0.clone();
            outgoing.entry(from_name).or_default().push(EdgeSender { edge: edge.clone(), queue });
            incoming.entry(spec.name.as_str()).or_default().push(edge);
        }
    }

    let mut contexts = Vec::with_capacity(nodes.len());
    for (spec, _) in &nodes {
        let name: Arc<str> = spec.name.as_str().into();
        let metrics = StageMetrics::new(&name);
        let rate_limit = spec.rate_limit.as_ref().map(RateLimit::new);
        let (input_limit, output_limit) = if spec.source { (None, rate_limit) } else { (rate_limit, None) };
        let receiver = queues.get_mut(spec.name.as_str()).and_then(|(_, rx)| rx.take());
        let Some(receiver) = receiver else {
            return Err(BuildError::DuplicateNode(spec.name.clone()));
        };
        let input = Input::new(receiver, incoming.remove(spec.name.as_str()).unwrap_or_default(), metrics.clone(), input_limit);
        let output = Output::new(outgoing.remove(spec.name.as_str()).unwrap_or_default(), metrics.clone(), output_limit);
        contexts.push(StageContext { name, input, output, shutdown: shutdown.clone(), metrics });
    }
    // Only the edges' senders may keep a queue open: a stage's input closes
    // exactly when all its upstream stages have finished.
    drop(queues);

    let mut tasks = JoinSet::new();
    let mut names = HashMap::new();
    for ((_, stage), cx) in nodes.into_iter().zip(contexts) {
        let name = cx.name.clone();
        let handle = tasks.spawn(stage.run(cx));
        names.insert(handle.id(), name);
    }
    Ok(Running { tasks, names, shutdown })
}

impl Running {
    /// Waits for every stage to finish. After the stop signal (or a stage
    /// failure, which raises it), waits at most `drain_timeout`, then aborts
    /// what is left and names it.
    pub async fn wait(mut self, drain_timeout: Duration) -> Result<(), RunError> {
        let mut failures = Vec::new();
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            if deadline.is_none() && self.shutdown.is_cancelled() {
                deadline = Some(tokio::time::Instant::now() + drain_timeout);
            }
            let joined = tokio::select! {
                joined = self.tasks.join_next_with_id() => joined,
                () = self.shutdown.cancelled(), if deadline.is_none() => continue,
                () = sleep_until(deadline) => {
                    let mut still_running: Vec<String> = self.names.values().map(|name| name.to_string()).collect();
                    still_running.sort();
                    tracing::error!(stages = ?still_running, timeout_ms = drain_timeout.as_millis() as u64, "shutdown deadline passed; aborting stages that have not drained");
                    self.tasks.abort_all();
                    return Err(RunError::DeadlineExceeded { timeout: drain_timeout, still_running });
                }
            };
            let Some(joined) = joined else { break };
            let (id, outcome) = match joined {
                Ok((id, outcome)) => (id, outcome.map_err(|error| error.to_string())),
                Err(join_error) => (join_error.id(), Err(format!("task ended abnormally: {join_error}"))),
            };
            let name = self.names.remove(&id).unwrap_or_else(|| "?".into());
            match outcome {
                Ok(()) => tracing::debug!(stage = %name, "stage finished"),
                Err(error) => {
                    tracing::error!(stage = %name, %error, "stage failed; stopping the sources so the rest drains");
                    failures.push((name.to_string(), error));
                    self.shutdown.cancel();
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

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
