//! Bounded edges between stages, counted in events, with a `when_full`
//! policy; a stage's [`Input`] merges its edges, its [`Output`] fans out.
//!
//! Each edge owns a semaphore of `capacity` permits. A sender takes one
//! permit per event of the batch it sends (so a batch of 1000 events fills
//! 1000 places, not one), and the permits travel with the batch until the
//! receiving stage takes it out. All the edges into one stage share one
//! unbounded queue, whose length the permits bound; the stage therefore
//! reads a single queue and learns its inputs have all finished when every
//! sender is gone. A batch larger than the edge waits for an empty edge and
//! travels alone.
//!
//! Everything about an edge can change while it runs (a topology reload):
//! its capacity (a shrink below the current fill takes the surplus places
//! back as they free up, so the edge drains down and nothing is dropped),
//! its `when_full`, the stage's rate limit, and which edges an [`Output`]
//! feeds. An [`Input`] can be handed over: its stage sees the end of its
//! input, finishes what it holds, and the queue passes, untouched and in
//! order, to the stage's next instance.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio_util::sync::CancellationToken;

use crate::metrics::{EdgeMetrics, StageMetrics};
use crate::rate_limit::RateLimit;
use crate::topology::{RateLimitSpec, WhenFull};

/// What flows over an edge: a batch that knows how many events it holds.
/// Fan-out clones it, so it should be cheap to clone (or rarely fanned out).
pub trait Message: Clone + Send + 'static {
    /// Number of events, for capacity, rate limits and metrics.
    fn event_count(&self) -> usize;
}

impl<T: Clone + Send + 'static> Message for Vec<T> {
    fn event_count(&self) -> usize {
        self.len()
    }
}

/// The state of one edge, shared by its sender and the receiving stage.
pub(crate) struct EdgeShared {
    pub(crate) from: Arc<str>,
    pub(crate) to: Arc<str>,
    /// The places the edge should have (a shrink may still be taking the
    /// surplus back).
    capacity: AtomicUsize,
    reject: AtomicBool,
    permits: Arc<Semaphore>,
    metrics: EdgeMetrics,
}

impl EdgeShared {
    pub(crate) fn new(from: &str, to: &str, capacity: usize, when_full: WhenFull) -> Arc<Self> {
        let capacity = clamp_capacity(capacity);
        Arc::new(EdgeShared {
            from: from.into(),
            to: to.into(),
            capacity: AtomicUsize::new(capacity),
            reject: AtomicBool::new(when_full == WhenFull::Reject),
            permits: Arc::new(Semaphore::new(capacity)),
            metrics: EdgeMetrics::new(from, to, capacity),
        })
    }

    /// The edge's capacity, events.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed)
    }

    /// Its policy when full.
    pub(crate) fn when_full(&self) -> WhenFull {
        if self.reject.load(Ordering::Relaxed) {
            WhenFull::Reject
        } else {
            WhenFull::Block
        }
    }

    /// Changes the policy for the next send.
    pub(crate) fn set_when_full(&self, when_full: WhenFull) {
        self.reject.store(when_full == WhenFull::Reject, Ordering::Relaxed);
    }

    /// Changes the capacity. Growing frees places at once. Shrinking takes
    /// free places back at once and the rest as the stage takes events
    /// out: until then senders wait (or are refused) as on a full edge, so
    /// the queue drains down to the new size and nothing queued is lost.
    pub(crate) fn resize(&self, capacity: usize) {
        let capacity = clamp_capacity(capacity);
        let old = self.capacity.swap(capacity, Ordering::AcqRel);
        if capacity > old {
            self.permits.add_permits(capacity - old);
        } else if capacity < old {
            let owed = (old - capacity) - self.permits.forget_permits(old - capacity);
            if owed > 0 {
                // Queued behind any waiting sender, so it is served as
                // places free up; gone with the edge if the stage ends.
                let permits = self.permits.clone();
                tokio::spawn(async move {
                    if let Ok(places) = permits.acquire_many_owned(owed as u32).await {
                        places.forget();
                    }
                });
            }
        }
        self.metrics.capacity(capacity);
        self.report_depth();
    }

    /// Events queued on this edge now.
    pub(crate) fn queued(&self) -> usize {
        self.capacity().saturating_sub(self.permits.available_permits())
    }

    fn permits_for(&self, events: usize) -> u32 {
        events.clamp(1, self.capacity()) as u32
    }

    fn report_depth(&self) {
        self.metrics.queued(self.queued());
    }
}

/// tokio semaphores take u32 permit counts per acquire.
fn clamp_capacity(capacity: usize) -> usize {
    capacity.clamp(1, u32::MAX as usize)
}

/// A stage's rate limit, replaceable while the stage runs. A replaced
/// limit starts with its whole burst.
#[derive(Debug, Default)]
pub struct LiveRateLimit {
    spec: Mutex<Option<RateLimitSpec>>,
    limit: ArcSwapOption<RateLimit>,
}

impl LiveRateLimit {
    /// A limit of `spec` (none: unlimited).
    pub fn new(spec: Option<&RateLimitSpec>) -> Arc<Self> {
        let live = Arc::new(LiveRateLimit::default());
        live.set(spec);
        live
    }

    /// Applies `spec` from the next event on; unchanged specs keep the
    /// limiter (and its state).
    pub fn set(&self, spec: Option<&RateLimitSpec>) {
        let mut current = self.spec.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.as_ref() == spec {
            return;
        }
        *current = spec.copied();
        self.limit.store(spec.map(|spec| Arc::new(RateLimit::new(spec))));
    }

    /// The limiter in force now.
    pub fn current(&self) -> Option<Arc<RateLimit>> {
        self.limit.load_full()
    }
}

/// A batch in a stage's inbound queue, holding its places on its edge.
pub(crate) struct Delivery<M> {
    message: M,
    _places: OwnedSemaphorePermit,
    edge: Arc<EdgeShared>,
}

/// Why a send failed; the message comes back so the sender can answer for it.
pub enum SendError<M> {
    /// A `reject` edge was full.
    Full {
        /// The stage the full edge leads to.
        to: Arc<str>,
        /// The batch that was not sent.
        message: M,
    },
    /// A downstream stage has stopped (it failed, or is shutting down).
    Closed {
        /// The stage that is gone.
        to: Arc<str>,
        /// The batch that was not sent.
        message: M,
    },
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full { to, .. } => write!(f, "the edge to stage `{to}` is full"),
            SendError::Closed { to, .. } => {
                write!(f, "stage `{to}` has stopped and takes no more events")
            }
        }
    }
}

impl<M> std::error::Error for SendError<M> {}

/// The queue every edge into one stage feeds.
pub(crate) type Queue<M> = mpsc::UnboundedSender<Delivery<M>>;

/// One outgoing edge: the edge's state plus the receiving stage's queue.
pub(crate) struct EdgeSender<M> {
    pub(crate) edge: Arc<EdgeShared>,
    pub(crate) queue: Queue<M>,
}

impl<M> Clone for EdgeSender<M> {
    fn clone(&self) -> Self {
        EdgeSender { edge: self.edge.clone(), queue: self.queue.clone() }
    }
}

impl<M> EdgeSender<M> {
    fn deliver(&self, message: M, places: OwnedSemaphorePermit) -> Result<(), SendError<M>> {
        let delivery = Delivery { message, _places: places, edge: self.edge.clone() };
        if let Err(mpsc::error::SendError(undelivered)) = self.queue.send(delivery) {
            return Err(SendError::Closed { to: self.edge.to.clone(), message: undelivered.message });
        }
        self.edge.report_depth();
        Ok(())
    }
}

/// What every clone of one stage's [`Output`] shares; the runtime holds it
/// weakly to rewire it, so downstream inputs still close when the stage's
/// last clone is dropped.
pub(crate) struct OutputShared<M> {
    edges: ArcSwap<Vec<EdgeSender<M>>>,
    metrics: StageMetrics,
    /// Only sources apply their rate limit here; other stages apply it on
    /// their input.
    rate_limit: Option<Arc<LiveRateLimit>>,
}

impl<M> OutputShared<M> {
    /// An output feeding no edge yet (the runtime wires it).
    pub(crate) fn unwired(metrics: StageMetrics, rate_limit: Option<Arc<LiveRateLimit>>) -> Arc<Self> {
        Arc::new(OutputShared { edges: ArcSwap::from_pointee(Vec::new()), metrics, rate_limit })
    }

    /// The edges fed now.
    pub(crate) fn edges(&self) -> Arc<Vec<EdgeSender<M>>> {
        self.edges.load_full()
    }

    /// Feeds `edges` from the next send on; a send already under way
    /// finishes on the edges it started with.
    pub(crate) fn set_edges(&self, edges: Vec<EdgeSender<M>>) {
        self.edges.store(Arc::new(edges));
    }
}

/// A stage's outgoing side: every edge to a downstream stage. Clones share
/// the edges (a source's concurrent handlers each hold one); downstream
/// stages see their input close when the last clone is dropped.
pub struct Output<M> {
    shared: Arc<OutputShared<M>>,
}

impl<M> Clone for Output<M> {
    fn clone(&self) -> Self {
        Output { shared: self.shared.clone() }
    }
}

impl<M: Message> Output<M> {
    pub(crate) fn new(edges: Vec<EdgeSender<M>>, metrics: StageMetrics, rate_limit: Option<Arc<LiveRateLimit>>) -> Self {
        Output { shared: Arc::new(OutputShared { edges: ArcSwap::from_pointee(edges), metrics, rate_limit }) }
    }

    /// An output over `shared` (a stage's next instance keeps its edges).
    pub(crate) fn from_shared(shared: Arc<OutputShared<M>>) -> Self {
        Output { shared }
    }

    /// Whether any stage reads this output.
    pub fn is_connected(&self) -> bool {
        !self.shared.edges.load().is_empty()
    }

    /// Sends `message` to every downstream stage, all or none: places are
    /// reserved on every edge (waiting on `block` edges, failing at once on
    /// a full `reject` edge) before anything is delivered.
    pub async fn send(&self, message: M) -> Result<(), SendError<M>> {
        let events = message.event_count();
        if let Some(limit) = self.shared.rate_limit.as_ref().and_then(|live| live.current()) {
            self.shared.metrics.rate_limit_wait(limit.take_all(events).await);
        }
        let edges = self.shared.edges.load_full();
        // Try the edges that refuse first, so a refusal never leaves the
        // sender holding places it waited for on a blocking edge.
        let refusing = |sender: &&EdgeSender<M>| sender.edge.when_full() == WhenFull::Reject;
        let ordered = || edges.iter().filter(refusing).chain(edges.iter().filter(|sender| !refusing(sender)));
        let mut reserved = Vec::with_capacity(edges.len());
        for sender in ordered() {
            let edge = &sender.edge;
            let wanted = edge.permits_for(events);
            let places = match edge.permits.clone().try_acquire_many_owned(wanted) {
                Ok(places) => places,
                Err(TryAcquireError::Closed) => return Err(SendError::Closed { to: edge.to.clone(), message }),
                Err(TryAcquireError::NoPermits) if edge.when_full() == WhenFull::Reject => {
                    edge.metrics.rejected();
                    return Err(SendError::Full { to: edge.to.clone(), message });
                }
                Err(TryAcquireError::NoPermits) => {
                    let started = tokio::time::Instant::now();
                    edge.metrics.wait_started();
                    let acquired = edge.permits.clone().acquire_many_owned(wanted).await;
                    let waited = started.elapsed();
                    self.shared.metrics.backpressure_wait(waited);
                    edge.metrics.wait_ended(waited);
                    match acquired {
                        Ok(places) => places,
                        Err(_closed) => return Err(SendError::Closed { to: edge.to.clone(), message }),
                    }
                }
            };
            reserved.push(places);
        }
        // The reservations were made in `ordered()` order; deliver in it,
        // the last edge taking the message itself.
        let last = reserved.len().saturating_sub(1);
        let mut message = Some(message);
        for (index, (sender, places)) in ordered().zip(reserved).enumerate() {
            let Some(batch) = (if index == last { message.take() } else { message.clone() }) else { break };
            sender.deliver(batch, places)?;
        }
        self.shared.metrics.events_out(events);
        Ok(())
    }
}

/// What an [`Input`] hands to its stage's next instance: the queue and a
/// batch still being charged to the rate limit.
pub(crate) struct InputCore<M> {
    queue: mpsc::UnboundedReceiver<Delivery<M>>,
    pending: Option<(Delivery<M>, usize)>,
}

impl<M> InputCore<M> {
    pub(crate) fn new(queue: mpsc::UnboundedReceiver<Delivery<M>>) -> Self {
        InputCore { queue, pending: None }
    }
}

/// The input edges of one stage, shared with the runtime, which adds,
/// removes and retunes them.
pub(crate) type InputEdges = Arc<Mutex<Vec<Arc<EdgeShared>>>>;

/// How an input is handed to the stage's next instance.
pub(crate) struct Handover<M> {
    /// Fired by the runtime: `recv` answers `None` from then on.
    pub(crate) requested: CancellationToken,
    /// Where the queue goes when the stage lets go of its input.
    pub(crate) hand_to: oneshot::Sender<InputCore<M>>,
}

/// A stage's incoming side: one queue fed by all its input edges.
pub struct Input<M> {
    core: Option<InputCore<M>>,
    edges: InputEdges,
    metrics: StageMetrics,
    rate_limit: Option<Arc<LiveRateLimit>>,
    handover: Option<Handover<M>>,
}

impl<M: Message> Input<M> {
    pub(crate) fn new(
        core: InputCore<M>,
        edges: InputEdges,
        metrics: StageMetrics,
        rate_limit: Option<Arc<LiveRateLimit>>,
        handover: Option<Handover<M>>,
    ) -> Self {
        Input { core: Some(core), edges, metrics, rate_limit, handover }
    }

    /// The next batch from any input, after the stage's rate limit allows
    /// it; `None` once every upstream stage has finished and the queue is
    /// drained, or once the runtime hands the input to the stage's next
    /// instance (what is queued then stays queued for it). Cancel-safe
    /// (usable in `tokio::select!`).
    pub async fn recv(&mut self) -> Option<M> {
        let Input { core, handover, rate_limit, metrics, .. } = self;
        let requested = handover.as_ref().map(|handover| &handover.requested);
        if requested.is_some_and(CancellationToken::is_cancelled) {
            return None;
        }
        let core = core.as_mut()?;
        if core.pending.is_none() {
            // Only a wait races the handover (the ready path takes no lock).
            let delivery = match core.queue.try_recv() {
                Ok(delivery) => delivery,
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) => match requested {
                    None => core.queue.recv().await?,
                    Some(requested) => tokio::select! {
                        biased;
                        () = requested.cancelled() => return None,
                        delivery = core.queue.recv() => delivery?,
                    },
                },
            };
            let events = delivery.message.event_count();
            core.pending = Some((delivery, events));
        }
        if let Some(limit) = rate_limit.as_ref().and_then(|live| live.current()) {
            // Charge chunk by chunk; a cancelled wait keeps what is charged.
            while let Some((_, remaining)) = core.pending.as_mut().filter(|(_, remaining)| *remaining > 0) {
                let chunk = (*remaining).min(limit.burst() as usize);
                let waited = match requested {
                    None => limit.take(chunk as u32).await,
                    Some(requested) => tokio::select! {
                        biased;
                        () = requested.cancelled() => return None,
                        waited = limit.take(chunk as u32) => waited,
                    },
                };
                metrics.rate_limit_wait(waited);
                if let Some((_, remaining)) = core.pending.as_mut() {
                    *remaining -= chunk;
                }
            }
        }
        let (delivery, _) = core.pending.take()?;
        let Delivery { message, _places, edge } = delivery;
        // Free the places before reporting, so the gauge shows the queue.
        drop(_places);
        edge.report_depth();
        metrics.events_in(message.event_count());
        Some(message)
    }

    /// Events queued on all input edges now.
    pub fn queued(&self) -> usize {
        self.edges.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().map(|edge| edge.queued()).sum()
    }
}

impl<M> Drop for Input<M> {
    fn drop(&mut self) {
        if let Some(handover) = self.handover.take() {
            if handover.requested.is_cancelled() {
                if let Some(core) = self.core.take() {
                    // The next instance takes the queue as it is.
                    let _ = handover.hand_to.send(core);
                    return;
                }
            }
        }
        // Wake senders waiting for room: this stage will never make any.
        for edge in self.edges.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
            edge.permits.close();
        }
    }
}

/// One edge from an `Output` to an `Input`, outside any runtime: for stage
/// tests and for wiring a stage by hand.
pub fn channel<M: Message>(from: &str, to: &str, capacity: usize, when_full: WhenFull) -> (Output<M>, Input<M>) {
    let edge = EdgeShared::new(from, to, capacity, when_full);
    let (queue, receiver) = mpsc::unbounded_channel();
    let output = Output::new(vec![EdgeSender { edge: edge.clone(), queue }], StageMetrics::new(from), None);
    let input = Input::new(InputCore::new(receiver), Arc::new(Mutex::new(vec![edge])), StageMetrics::new(to), None, None);
    (output, input)
}
