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

use std::fmt;
use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::metrics::{EdgeMetrics, StageMetrics};
use crate::rate_limit::RateLimit;
use crate::topology::WhenFull;

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
    pub(crate) to: Arc<str>,
    pub(crate) capacity: usize,
    pub(crate) when_full: WhenFull,
    permits: Arc<Semaphore>,
    metrics: EdgeMetrics,
}

impl EdgeShared {
    pub(crate) fn new(from: &str, to: &str, capacity: usize, when_full: WhenFull) -> Arc<Self> {
        // tokio semaphores take u32 permit counts per acquire.
        let capacity = capacity.clamp(1, u32::MAX as usize);
        Arc::new(EdgeShared {
            to: to.into(),
            capacity,
            when_full,
            permits: Arc::new(Semaphore::new(capacity)),
            metrics: EdgeMetrics::new(from, to, capacity),
        })
    }

    /// Events queued on this edge now.
    pub(crate) fn queued(&self) -> usize {
        self.capacity.saturating_sub(self.permits.available_permits())
    }

    fn permits_for(&self, events: usize) -> u32 {
        events.clamp(1, self.capacity) as u32
    }

    fn report_depth(&self) {
        self.metrics.queued(self.queued());
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

/// One outgoing edge: the edge's state plus the receiving stage's queue.
#[derive(Clone)]
pub(crate) struct EdgeSender<M> {
    pub(crate) edge: Arc<EdgeShared>,
    pub(crate) queue: mpsc::UnboundedSender<Delivery<M>>,
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

/// A stage's outgoing side: every edge to a downstream stage. Clones share
/// the edges (a source's concurrent handlers each hold one); downstream
/// stages see their input close when the last clone is dropped.
pub struct Output<M> {
    edges: Arc<[EdgeSender<M>]>,
    metrics: StageMetrics,
    /// Only sources carry their rate limit here; other stages apply it on
    /// their input.
    rate_limit: Option<Arc<RateLimit>>,
}

impl<M> Clone for Output<M> {
    fn clone(&self) -> Self {
        Output { edges: self.edges.clone(), metrics: self.metrics.clone(), rate_limit: self.rate_limit.clone() }
    }
}

impl<M: Message> Output<M> {
    pub(crate) fn new(mut edges: Vec<EdgeSender<M>>, metrics: StageMetrics, rate_limit: Option<RateLimit>) -> Self {
        // Try the edges that refuse first, so a refusal never leaves the
        // sender holding places it waited for on a blocking edge.
        edges.sort_by_key(|sender| sender.edge.when_full != WhenFull::Reject);
        Output { edges: edges.into(), metrics, rate_limit: rate_limit.map(Arc::new) }
    }

    /// Whether any stage reads this output.
    pub fn is_connected(&self) -> bool {
        !self.edges.is_empty()
    }

    /// Sends `message` to every downstream stage, all or none: places are
    /// reserved on every edge (waiting on `block` edges, failing at once on
    /// a full `reject` edge) before anything is delivered.
    pub async fn send(&self, message: M) -> Result<(), SendError<M>> {
        let events = message.event_count();
        if let Some(limit) = &self.rate_limit {
            self.metrics.rate_limit_wait(limit.take_all(events).await);
        }
        let mut reserved = Vec::with_capacity(self.edges.len());
        for sender in self.edges.iter() {
            let edge = &sender.edge;
            let wanted = edge.permits_for(events);
            let places = match edge.permits.clone().try_acquire_many_owned(wanted) {
                Ok(places) => places,
                Err(TryAcquireError::Closed) => return Err(SendError::Closed { to: edge.to.clone(), message }),
                Err(TryAcquireError::NoPermits) if edge.when_full == WhenFull::Reject => {
                    edge.metrics.rejected();
                    return Err(SendError::Full { to: edge.to.clone(), message });
                }
                Err(TryAcquireError::NoPermits) => {
                    let started = tokio::time::Instant::now();
                    edge.metrics.wait_started();
                    let acquired = edge.permits.clone().acquire_many_owned(wanted).await;
                    let waited = started.elapsed();
                    self.metrics.backpressure_wait(waited);
                    edge.metrics.wait_ended(waited);
                    match acquired {
                        Ok(places) => places,
                        Err(_closed) => return Err(SendError::Closed { to: edge.to.clone(), message }),
                    }
                }
            };
            reserved.push(places);
        }
        let mut reserved = reserved.into_iter();
        let Some((last, others)) = self.edges.split_last() else {
            return Ok(());
        };
        for (sender, places) in others.iter().zip(reserved.by_ref()) {
            sender.deliver(message.clone(), places)?;
        }
        if let Some(places) = reserved.next() {
            last.deliver(message, places)?;
        }
        self.metrics.events_out(events);
        Ok(())
    }
}

/// A stage's incoming side: one queue fed by all its input edges.
pub struct Input<M> {
    queue: mpsc::UnboundedReceiver<Delivery<M>>,
    edges: Vec<Arc<EdgeShared>>,
    metrics: StageMetrics,
    rate_limit: Option<RateLimit>,
    /// A batch taken from the queue whose rate-limit charge is not complete
    /// (events still to charge); kept so `recv` is cancel-safe.
    pending: Option<(Delivery<M>, usize)>,
}

impl<M: Message> Input<M> {
    pub(crate) fn new(
        queue: mpsc::UnboundedReceiver<Delivery<M>>,
        edges: Vec<Arc<EdgeShared>>,
        metrics: StageMetrics,
        rate_limit: Option<RateLimit>,
    ) -> Self {
        Input { queue, edges, metrics, rate_limit, pending: None }
    }

    /// The next batch from any input, after the stage's rate limit allows
    /// it; `None` once every upstream stage has finished and the queue is
    /// drained. Cancel-safe (usable in `tokio::select!`).
    pub async fn recv(&mut self) -> Option<M> {
        if self.pending.is_none() {
            let delivery = self.queue.recv().await?;
            let events = delivery.message.event_count();
            self.pending = Some((delivery, events));
        }
        if let Some(limit) = &self.rate_limit {
            // Charge chunk by chunk; a cancelled wait keeps what is charged.
            while let Some((_, remaining)) = self.pending.as_mut().filter(|(_, remaining)| *remaining > 0) {
                let chunk = (*remaining).min(limit.burst() as usize);
                let waited = limit.take(chunk as u32).await;
                self.metrics.rate_limit_wait(waited);
                if let Some((_, remaining)) = self.pending.as_mut() {
                    *remaining -= chunk;
                }
            }
        }
        let (delivery, _) = self.pending.take()?;
        let Delivery { message, _places, edge } = delivery;
        // Free the places before reporting, so the gauge shows the queue.
        drop(_places);
        edge.report_depth();
        self.metrics.events_in(message.event_count());
        Some(message)
    }

    /// Events queued on all input edges now.
    pub fn queued(&self) -> usize {
        self.edges.iter().map(|edge| edge.queued()).sum()
    }
}

impl<M> Drop for Input<M> {
    fn drop(&mut self) {
        // Wake senders waiting for room: this stage will never make any.
        for edge in &self.edges {
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
    let input = Input::new(receiver, vec![edge], StageMetrics::new(to), None);
    (output, input)
}
