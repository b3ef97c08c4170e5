//! Operations on a user's history. Ops of one user keep their order from
//! ingest to HBase: they share a shard, hence a Kafka partition.

use crate::record::Record;

/// One change to a user's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Record a report; the newer `view_at` wins.
    Upsert(Record),
    /// An item's latest view without its record (`ids` payload): whoever
    /// persists it reads the record from the realtime store.
    UpsertRef {
        /// The user.
        uid: u64,
        /// Item key `business:oid`.
        item: String,
        /// The view the stored record is at least as new as.
        view_at: i64,
    },
    /// Remove one item as of `at` (unix ms); older reports stay hidden.
    Delete {
        /// The user.
        uid: u64,
        /// The item key `business:oid`.
        item: String,
        /// When the delete happened, unix ms.
        at: i64,
    },
    /// Remove every item (or every item of one business) as of `at`;
    /// older reports stay hidden.
    Clear {
        /// The user.
        uid: u64,
        /// Only this business's items (`None`: every item).
        business: Option<String>,
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
            Op::UpsertRef { uid, .. } | Op::Delete { uid, .. } | Op::Clear { uid, .. } | Op::SetRecording { uid, .. } => *uid,
        }
    }
}
