//! The `discard` stage (`type = "discard"`): a sink that answers every
//! batch as recorded and drops it. With `http_ingest` alone in front of it,
//! it measures the HTTP edge by itself (decode, validate, answer): the
//! ceiling the benchmark compares the pipeline with.

use futures::FutureExt;
use model::{Batch, EventResult};
use pipeline::{Stage, StageContext, StageFuture};
use serde::Deserialize;

/// `[[stages]] type = "discard"`: no fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscardConfig {}

impl DiscardConfig {
    /// The stage (nothing to set up).
    pub(crate) fn build(&self) -> Box<dyn Stage<Batch>> {
        Box::new(DiscardStage)
    }
}

/// The built stage.
pub struct DiscardStage;

impl Stage<Batch> for DiscardStage {
    fn run(self: Box<Self>, mut cx: StageContext<Batch>) -> StageFuture {
        async move {
            while let Some(batch) = cx.input.recv().await {
                if let Some(ack) = &batch.ack {
                    ack.complete(Ok(vec![EventResult { recorded: true, first_today: false }; batch.ops.len()]));
                }
            }
            Ok(())
        }
        .boxed()
    }
}
