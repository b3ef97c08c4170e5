//! The backends histflow's stages and read side share, each with one home:
//!
//! # Layout
//! - `user_state`: the per-user state in Redis (timeline, records, meta,
//!   pending marks), every rule as a Lua script with the embedded store's copy
//!   of the same rules beside it.
//! - `history_table`: the HBase history table, through a Thrift1 gateway
//!   or (feature `embedded`) the embedded on-disk store.
//! - `kafka`: the Kafka client settings of every producer and consumer,
//!   and topic creation.
//! - `retry`: capped exponential backoff, used by every call that retries.
//! - `sweep_ledger`: the lock and place of the HBase retention sweep.

pub mod history_table;
pub mod kafka;
pub mod retry;
pub mod sweep_ledger;
pub mod user_state;
