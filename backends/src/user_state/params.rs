//! What every write of a commit shares ([`WriteParams`]), and the error
//! of a store call that did not happen ([`StoreError`]), for both stores.

/// What every write of a commit shares.
#[derive(Debug, Clone, Copy)]
pub struct WriteParams {
    /// Timeline length kept per user.
    pub max_items: usize,
    /// Key expiry after inactivity, seconds.
    pub ttl_s: u64,
    /// Today's UTC day number (first watch of the day).
    pub today: i64,
    /// Now, unix ms (the score in the re-drive index).
    pub now_ms: i64,
    /// Number of uid shards (which re-drive index a user goes in).
    pub shards: u32,
    /// Keep marks: something downstream settles them (a Kafka producer).
    pub marks: bool,
}

/// A store call that did not happen (Redis away, timed out, or answered an
/// error); the same call may succeed later.
#[derive(Debug, thiserror::Error)]
#[error("realtime store: {0}")]
pub struct StoreError(pub String);
