//! The backends histflow's stages and read side share, each with one home:
//!
//! # Layout
//! - `user_state`: the per-user state in Redis (timeline, records, meta,
//!   pending marks), every rule as a Lua script with the embedded store's copy
//!   of the same rules beside it.
//! - `history_table`: the HBase history table, through a Thrift1 gateway
//!   or (feature `embedded`) the embedded on-disk store; its row layout in
//!   one module (`layout`).
//! - `kafka`: the Kafka client settings of every producer and consumer,
//!   topic creation, and the one producer type every producer sends
//!   through (replaced after a fatal error).
//! - `retry`: capped exponential backoff with full jitter, used by every
//!   call that retries.
//! - `sweep_ledger`: the lock and place of the HBase retention sweep (its
//!   scripts in `.lua` files).

pub mod history_table;
pub mod kafka;
pub mod retry;
pub mod sweep_ledger;
pub mod user_state;
