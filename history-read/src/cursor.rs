//! The page cursor and the shapes of a page request and answer.
//!
//! The cursor is opaque to clients but exact: it names the last item a
//! page returned by (view_at, item key), and the next page starts strictly
//! after it in (view_at, item) descending order, so items sharing a view_at
//! are never skipped or repeated.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use model::Record;

/// Where a history page starts: strictly after this (view_at, item).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The last returned item's view_at.
    pub view_at: i64,
    /// The last returned item's key `business:oid`.
    pub item: String,
}

/// Why a cursor could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`cursor` is not a cursor this API returned")]
pub struct BadCursor;

impl Cursor {
    /// The opaque text form: URL-safe base64 of `v1:{view_at}:{item}`.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("v1:{}:{}", self.view_at, self.item))
    }

    /// Reads a cursor made by [`Cursor::encode`].
    pub fn decode(text: &str) -> Result<Self, BadCursor> {
        let bytes = URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| BadCursor)?;
        let text = String::from_utf8(bytes).map_err(|_| BadCursor)?;
        let rest = text.strip_prefix("v1:").ok_or(BadCursor)?;
        let (view_at, item) = rest.split_once(':').ok_or(BadCursor)?;
        let view_at: i64 = view_at.parse().map_err(|_| BadCursor)?;
        let (business, oid) = item.split_once(':').ok_or(BadCursor)?;
        if business.is_empty() || oid.parse::<u64>().is_err() || view_at < 0 {
            return Err(BadCursor);
        }
        Ok(Cursor { view_at, item: item.to_owned() })
    }

    /// Whether (view_at, item) comes after the cursor, newest first.
    pub fn precedes(&self, view_at: i64, item: &str) -> bool {
        (view_at, item) < (self.view_at, self.item.as_str())
    }
}

/// One history page request, validated.
#[derive(Debug, Clone)]
pub struct PageQuery {
    /// Only items of these businesses; `None`: all.
    pub businesses: Option<std::collections::BTreeSet<String>>,
    /// Most items in the page (1..=100).
    pub limit: usize,
    /// Start after this item; from the newest when absent.
    pub cursor: Option<Cursor>,
}

impl PageQuery {
    /// Whether the page shows items of `business`.
    pub fn admits(&self, business: &str) -> bool {
        self.businesses.as_ref().is_none_or(|businesses| businesses.contains(business))
    }

    /// Whether the page shows the item `business:oid`.
    pub fn admits_item(&self, item: &str) -> bool {
        self.businesses.is_none() || item.split_once(':').is_some_and(|(business, _)| self.admits(business))
    }
}

/// One history page, newest first.
#[derive(Debug, Clone)]
pub struct Page {
    /// The records.
    pub items: Vec<Record>,
    /// Where the next page starts, if there are more items.
    pub next: Option<Cursor>,
}

/// A read that could not be answered now (the client gets 503).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReadError(pub String);

/// Why a page was not served: a store failed, or the caller refused the
/// HBase read the page needed.
#[derive(Debug)]
pub enum PageError<E> {
    /// A store did not answer.
    Read(ReadError),
    /// The caller's `before_hbase` refused.
    Refused(E),
}

impl<E> From<ReadError> for PageError<E> {
    fn from(error: ReadError) -> Self {
        PageError::Read(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_forgeries() {
        let cursor = Cursor { view_at: 1_700_000_000_123, item: "archive:42".to_owned() };
        assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
        for bad in ["", "!!", "djE6", &URL_SAFE_NO_PAD.encode("v2:1:archive:1"), &URL_SAFE_NO_PAD.encode("v1:x:archive:1")] {
            assert_eq!(Cursor::decode(bad), Err(BadCursor), "{bad:?}");
        }
        assert_eq!(Cursor::decode(&URL_SAFE_NO_PAD.encode("v1:5:archive:x")), Err(BadCursor));
    }

    #[test]
    fn order_is_view_at_then_item_descending() {
        let cursor = Cursor { view_at: 10, item: "archive:5".to_owned() };
        assert!(cursor.precedes(9, "zzz:1"));
        assert!(cursor.precedes(10, "archive:4"));
        assert!(!cursor.precedes(10, "archive:5"));
        assert!(!cursor.precedes(10, "archive:6"));
        assert!(!cursor.precedes(11, "archive:1"));
    }
}
