//! The in-process queue that stands in for the broker under `--embedded`.
//!
//! The producing half is a sink that moves each batch into a bounded queue
//! (waiting when it is full, as a slow broker would make it wait); the
//! consuming half is a source that emits what the queue holds. Unlike a
//! broker consumer, the consuming half does not stop on the stop signal: the
//! queue lives only in this process, so it drains until the producing half
//! has finished and the queue is empty, and nothing accepted is lost.

use std::sync::Arc;

use futures::FutureExt;
use model::Batch;
use pipeline::{Stage, StageContext, StageFuture};
use tokio::sync::mpsc;

/// Creates the two halves of one in-process queue holding `capacity`
/// batches. (No marks to settle: the embedded store keeps none, since
/// nothing of it outlives the process.)
pub fn queue(capacity: usize) -> (QueueProducer, QueueConsumer) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (QueueProducer { queue: tx }, QueueConsumer { queue: rx })
}

/// The producing half (service side).
pub struct QueueProducer {
    queue: mpsc::Sender<Batch>,
}

/// The consuming half (job side).
pub struct QueueConsumer {
    queue: mpsc::Receiver<Batch>,
}

/// The consuming half stopped before the producer: its downstream failed.
#[derive(Debug, thiserror::Error)]
#[error("the in-process queue's consuming side stopped before the producing side ({events} events of a batch could not be queued)")]
pub struct ConsumerGone {
    events: usize,
}

/// Downstream of the consuming half refused a batch.
#[derive(Debug, thiserror::Error)]
#[error("stage `{stage}` could not hand a batch downstream: {reason}")]
pub struct DownstreamGone {
    stage: Arc<str>,
    reason: String,
}

impl Stage<Batch> for QueueProducer {
    fn run(self: Box<Self>, mut cx: StageContext<Batch>) -> StageFuture {
        async move {
            while let Some(batch) = cx.input.recv().await {
                let events = batch.ops.len();
                if self.queue.send(batch).await.is_err() {
                    cx.metrics.error();
                    return Err(ConsumerGone { events }.into());
                }
            }
            Ok(())
        }
        .boxed()
    }
}

impl Stage<Batch> for QueueConsumer {
    fn run(mut self: Box<Self>, cx: StageContext<Batch>) -> StageFuture {
        async move {
            while let Some(batch) = self.queue.recv().await {
                if let Err(error) = cx.output.send(batch).await {
                    cx.metrics.error();
                    return Err(DownstreamGone { stage: cx.name.clone(), reason: error.to_string() }.into());
                }
            }
            Ok(())
        }
        .boxed()
    }
}
