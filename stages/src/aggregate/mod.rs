//! The `aggregate` stage: folds events last-write-wins per (uid, item) in
//! memory, sharded by uid region, and flushes a shard on size or timer.
//!
//! - `config`: the stage's topology fields and their checks.
//! - `build`: how the stage is built, and the shared resources it uses.
//! - `fold`: the pure fold and its compact `ids`-mode entries.
//! - `stage`: the flush loop.
//! - `events`: what the stage reports.

mod build;
mod config;
mod events;
pub mod fold;
pub mod stage;

pub(crate) use build::USES;
pub use config::{AggregateConfig, DEFAULT_SHARDS};
pub(crate) use events::figures;
pub use stage::AggregateStage;
