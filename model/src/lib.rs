//! histflow's data model: what a playback report is once validated, the
//! operations on a user's history, and the batch that flows along the DAG.
//!
//! # Layout
//! - [`Record`]: one item's latest playback state for one user.
//! - [`Op`]: an upsert, delete, clear or recording switch, in user order.
//! - [`Batch`]: the unit every edge carries (many ops, one send).

use serde::{Deserialize, Serialize};

/// One item's playback state for one user (DESIGN.md, data model).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// User id, > 0.
    pub uid: u64,
    /// Registered business name (`archive`, `pgc`, ...).
    pub business: String,
    /// Object id inside the business.
    pub oid: u64,
    /// Episode or part, when the object has them.
    pub sub_id: Option<u64>,
    /// Seconds watched; -1 means finished.
    pub progress: i64,
    /// Length of the object in seconds, when known.
    pub duration: Option<i64>,
    /// Reporting device, at most 32 bytes.
    pub device: Option<String>,
    /// When the user watched, unix milliseconds (server time when absent).
    pub view_at: i64,
}

impl Record {
    /// The item key `business:oid` used in Redis and HBase.
    pub fn item_key(&self) -> String {
        format!("{}:{}", self.business, self.oid)
    }
}

/// One change to a user's history. Ops of one user keep their order from
/// ingest to HBase (they share a shard, hence a Kafka partition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Record a report; the newer `view_at` wins.
    Upsert(Record),
    /// Remove one item as of `at` (unix ms); older reports stay hidden.
    Delete {
        /// The user.
        uid: u64,
        /// The item key `business:oid`.
        item: String,
        /// When the delete happened, unix ms.
        at: i64,
    },
    /// Remove every item as of `at`; older reports stay hidden.
    Clear {
        /// The user.
        uid: u64,
        /// When the clear happened, unix ms.
        at: i64,
    },
    /// Pause or resume recording for the user.
    SetRecording {
        /// The user.
        uid: u64,
        /// Whether recording is paused.
        paused: bool,
        /// When it was switched, unix ms.
        at: i64,
    },
}

impl Op {
    /// The user this op belongs to.
    pub fn uid(&self) -> u64 {
        match self {
            Op::Upsert(record) => record.uid,
            Op::Delete { uid, .. } | Op::Clear { uid, .. } | Op::SetRecording { uid, .. } => *uid,
        }
    }
}

/// What every edge of the history DAG carries: many ops in one send, so the
/// runtime's per-send cost is shared by the whole batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// The ops, in arrival order.
    pub ops: Vec<Op>,
}

impl pipeline::Message for Batch {
    fn event_count(&self) -> usize {
        self.ops.len()
    }
}
