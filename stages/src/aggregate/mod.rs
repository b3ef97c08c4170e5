//! The `aggregate` stage: folds events last-write-wins per (uid, item) in
//! memory, sharded by uid region, and flushes a shard on size or timer.

mod config;

pub use config::AggregateConfig;
