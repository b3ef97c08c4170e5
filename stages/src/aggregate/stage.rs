//! The aggregate stage's loop: fold what arrives, flush a shard when it
//! holds `flush_max_entries`, every shard every `flush_interval_ms`, the
//! largest shards early when `max_pending_entries` is reached, and all of
//! them when the input closes. A flush waits for room downstream (never
//! drops), which is how a slow or absent Kafka reaches ingest.
//!
//! The timed flushes are staggered: a tick every `flush_interval_ms /
//! shards` flushes the next shard in turn, so each shard still flushes once
//! an interval but the work (and the settling of marks in Redis that
//! follows it) is spread evenly instead of arriving as one burst that held
//! up the realtime writes behind it.

use std::time::Duration;

use futures::FutureExt;
use model::{Batch, Op};
use pipeline::{Stage, StageContext, StageError, StageFuture};

use super::events::FoldMeasured;
use super::fold::Fold;

/// A built aggregate stage.
pub struct AggregateStage {
    /// The pending items.
    pub fold: Fold,
    /// Flush a shard at this many items.
    pub flush_max_entries: usize,
    /// Flush every shard this often.
    pub flush_interval: Duration,
    /// Flush the largest shards early above this many items in all.
    pub max_pending_entries: usize,
}

impl AggregateStage {
    async fn flush(&mut self, shard: u32, cx: &StageContext<Batch>) -> Result<(), StageError> {
        let ops = self.fold.take(shard);
        if !ops.is_empty() {
            cx.output.send(Batch { shard: Some(shard), ..Batch::of(ops) }).await?;
        }
        Ok(())
    }

    async fn flush_all(&mut self, cx: &StageContext<Batch>) -> Result<(), StageError> {
        for shard in 0..self.fold.shard_count() {
            if self.fold.shard_len(shard) > 0 {
                self.flush(shard, cx).await?;
            }
        }
        Ok(())
    }

    /// The timed flush of one tick: the next shard in turn.
    async fn flush_next(&mut self, next: &mut u32, cx: &StageContext<Batch>) -> Result<(), StageError> {
        let shard = *next;
        *next = (*next + 1) % self.fold.shard_count().max(1);
        if self.fold.shard_len(shard) > 0 {
            self.flush(shard, cx).await?;
        }
        if *next == 0 {
            self.report();
        }
        Ok(())
    }

    /// Refreshes the gauges; on the flush timer only, since measuring the
    /// tables walks every pending record in `full` mode.
    fn report(&self) {
        FoldMeasured { pending_items: self.fold.pending(), table_bytes: self.fold.memory_bytes() }.emit();
    }

    async fn fold_batch(&mut self, batch: Batch, cx: &StageContext<Batch>) -> Result<(), StageError> {
        for op in batch.ops {
            match op {
                Op::Upsert(record) => {
                    let shard = if batch.keep_records { self.fold.upsert_whole(record) } else { self.fold.upsert(record) };
                    if self.fold.shard_len(shard) >= self.flush_max_entries {
                        self.flush(shard, cx).await?;
                    }
                }
                other => {
                    // Deletes, clears and switches must not overtake the
                    // user's pending upserts: flush them first, then send
                    // the op alone, in order.
                    let shard = model::keys::shard_of(other.uid(), self.fold.shard_count());
                    self.flush(shard, cx).await?;
                    cx.output.send(Batch { shard: Some(shard), ..Batch::of(vec![other]) }).await?;
                }
            }
        }
        while self.fold.pending() > self.max_pending_entries {
            let Some(largest) = self.fold.largest_shard() else { break };
            self.flush(largest, cx).await?;
        }
        Ok(())
    }
}

impl Stage<Batch> for AggregateStage {
    fn run(mut self: Box<Self>, mut cx: StageContext<Batch>) -> StageFuture {
        async move {
            let period = (self.flush_interval / self.fold.shard_count().max(1)).max(Duration::from_millis(1));
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut next = 0;
            loop {
                tokio::select! {
                    received = cx.input.recv() => match received {
                        Some(batch) => self.fold_batch(batch, &cx).await?,
                        None => break,
                    },
                    _ = tick.tick() => self.flush_next(&mut next, &cx).await?,
                }
            }
            // Input closed: nothing more can arrive; hand everything on.
            self.flush_all(&cx).await?;
            Ok(())
        }
        .boxed()
    }
}
