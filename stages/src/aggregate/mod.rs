//! The `aggregate` stage: folds events last-write-wins per (uid, item) in
//! memory, sharded by uid region, and flushes a shard on size or timer.
//!
//! - `config`: the stage's topology fields.
//! - `fold`: the pure fold and its compact `ids`-mode entries.
//! - `stage`: the flush loop.

mod config;
pub mod fold;
pub mod stage;

pub use config::AggregateConfig;
pub use stage::AggregateStage;
