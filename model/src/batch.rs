//! The batch every edge carries, and the acknowledgement an HTTP request
//! waits on.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::op::Op;

/// What the realtime write decided for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventResult {
    /// The event changed the user's history (false: paused, or not newer).
    pub recorded: bool,
    /// It was the user's first recorded watch of the (UTC) day.
    pub first_today: bool,
}

/// The answer for a whole batch: one result per op, in order, or why the
/// batch could not be written (the client gets 503 and may retry).
pub type AckOutcome = Result<Vec<EventResult>, String>;

/// A one-time answer channel that survives fan-out clones: whichever clone
/// answers first is heard; the rest are ignored. Dropping every clone
/// without answering tells the waiter the batch was lost.
#[derive(Debug, Clone)]
pub struct Ack(Arc<Mutex<Option<oneshot::Sender<AckOutcome>>>>);

impl Ack {
    /// A new ack and the receiver its answer arrives on.
    pub fn new() -> (Ack, oneshot::Receiver<AckOutcome>) {
        let (tx, rx) = oneshot::channel();
        (Ack(Arc::new(Mutex::new(Some(tx)))), rx)
    }

    /// Answers the waiter (first answer wins).
    pub fn complete(&self, outcome: AckOutcome) {
        let sender = match self.0.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(sender) = sender {
            // The waiter may have given up (timeout); nothing to do then.
            let _ = sender.send(outcome);
        }
    }
}

/// What every edge of the history DAG carries: many ops in one send.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// The ops, in arrival order.
    pub ops: Vec<Op>,
    /// The uid region all ops belong to, once the aggregate stage has
    /// sharded them (and the Kafka message key).
    pub shard: Option<u32>,
    /// Who waits for this batch's realtime write (an HTTP request).
    pub ack: Option<Ack>,
    /// The upserts' records must travel whole whatever the payload mode:
    /// their items are no longer in Redis for the job to re-read (the write
    /// that recorded them trimmed them at once).
    pub keep_records: bool,
}

impl Batch {
    /// A batch of `ops` with no shard and no waiter.
    pub fn of(ops: Vec<Op>) -> Self {
        Batch { ops, shard: None, ack: None, keep_records: false }
    }
}

impl pipeline::Message for Batch {
    fn event_count(&self) -> usize {
        self.ops.len()
    }
}
