//! histflow's data model: what a playback report is once validated, the
//! operations on a user's history, the batch that flows along the DAG, and
//! the one encoding every stored or shipped value uses.
//!
//! # Layout
//! - `record`: [`Record`], one item's latest playback state for one user.
//! - `op`: [`Op`], an upsert, delete, clear or recording switch.
//! - `batch`: [`Batch`], the unit every edge carries, and [`Ack`], how an
//!   HTTP answer waits for the realtime write of its events.
//! - `keys`: Redis key names (hash-tagged per user) and the uid sharding.
//! - `codec`: protobuf encoding of records, merge-topic batches and
//!   first-watch broadcasts (generated from `proto/` by protox).

pub mod batch;
pub mod codec;
pub mod keys;
pub mod op;
pub mod record;

pub use batch::{Ack, AckOutcome, Batch, EventResult};
pub use op::Op;
pub use record::Record;

/// Unix milliseconds now, from the system clock (0 if it is before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_millis() as i64)
}

/// Whether a view at `view_at` is past a retention of `retention_ms` at
/// `now_ms` (all unix ms): the one rule reads hide by and the HBase
/// retention sweep deletes by.
pub fn past_retention(view_at: i64, retention_ms: i64, now_ms: i64) -> bool {
    view_at < now_ms.saturating_sub(retention_ms)
}

/// Types generated from `proto/histflow/v1/history.proto`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/histflow.v1.rs"));
}
