//! One item's latest playback state for one user.

/// One item's playback state for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// When the user watched, unix milliseconds.
    pub view_at: i64,
}

impl Record {
    /// The item key `business:oid` used in Redis and HBase.
    pub fn item_key(&self) -> String {
        item_key(&self.business, self.oid)
    }
}

/// The item key `business:oid`.
pub fn item_key(business: &str, oid: u64) -> String {
    format!("{business}:{oid}")
}
