//! A user's meta hash `h:{uid}:m`, the one list of its fields, and what a
//! read makes of them.
//!
//! Fields (written by the scripts beside this file and by the embedded
//! store's rules):
//! - `paused`: `1` while recording is paused.
//! - `day`: the UTC day number of the user's last first watch.
//! - `cleared_at`: items viewed at or before it were cleared.
//! - `d:{item}`: the item's delete marker (views at or before it are gone).
//! - `c:{business}`: the business's clear marker (views of its items at or
//!   before it are gone).
//! - `trimmed_at`: when a write last trimmed the timeline (older items are
//!   only in HBase now).
//! - `kept`: `1` once a trim kept a record in `h:{uid}:k` (a write then
//!   drops the kept copy of an item it records anew).
//! - `hbase_written`: how many times the job wrote the user to HBase.
//! - `hbase_checked`: the `trimmed_at:hbase_written` token at which a read
//!   found nothing in HBase the timeline lacks.

/// The meta fields a read needs, in the order `page.lua` and
/// `meta_and_markers` return them (the scripts get this list as
/// arguments, so it is written once).
pub(crate) const READ_FIELDS: [&str; 5] = ["paused", "cleared_at", "trimmed_at", "hbase_written", "hbase_checked"];

/// The delete-marker field of `item`.
pub(crate) fn delete_marker(item: &str) -> String {
    format!("d:{item}")
}

/// The clear-marker field of `business`.
pub(crate) fn business_clear_marker(business: &str) -> String {
    format!("c:{business}")
}

/// The business of an item key `business:oid`.
pub(crate) fn business_of(item: &str) -> &str {
    item.split_once(':').map_or(item, |(business, _)| business)
}

/// Each item's hiding marker: the newer of its delete marker and its
/// business's clear marker (views at or before it are gone).
pub(crate) fn hiding_markers(
    items: &[String],
    deleted: impl Fn(&str) -> Option<i64>,
    cleared: impl Fn(&str) -> Option<i64>,
) -> Vec<Option<i64>> {
    items.iter().map(|item| deleted(item).max(cleared(business_of(item)))).collect()
}

/// A user's realtime meta, as a read sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserMeta {
    /// Any of the user's keys exist (a user with none is new, expired, or
    /// lost with a Redis failure).
    pub exists: bool,
    /// Recording paused.
    pub paused: bool,
    /// Items viewed at or before this were cleared (-1: never).
    pub cleared_at: i64,
    /// What HBase holding nothing more depends on: the last trim and the
    /// job's writes of the user, as `trimmed_at:hbase_written`.
    pub check_token: String,
    /// The token at which a read found nothing in HBase the timeline lacks.
    pub hbase_checked: Option<String>,
}

impl UserMeta {
    /// Whether HBase may hold items the timeline does not: not known to be
    /// a subset since the last trim or the job's last write of the user
    /// (or ever, for a user with no meta).
    pub fn hbase_may_hold_more(&self) -> bool {
        self.hbase_checked.as_deref() != Some(self.check_token.as_str())
    }

    /// The meta from the values of [`READ_FIELDS`], in order ('' where a
    /// field is absent).
    pub(crate) fn parse(values: &[String], exists: bool) -> Self {
        let field = |index: usize| values.get(index).map_or("", String::as_str);
        let or_zero = |text: &str| if text.is_empty() { "0".to_owned() } else { text.to_owned() };
        let hbase_checked = field(4);
        UserMeta {
            exists,
            paused: field(0) == "1",
            cleared_at: field(1).parse().unwrap_or(-1),
            check_token: format!("{}:{}", or_zero(field(2)), or_zero(field(3))),
            hbase_checked: (!hbase_checked.is_empty()).then(|| hbase_checked.to_owned()),
        }
    }
}

/// Which part of a timeline to read, newest first.
#[derive(Debug, Clone, Copy)]
pub struct SliceQuery {
    /// Highest view_at to include (`None`: from the newest).
    pub max: Option<i64>,
    /// Read this view_at's ties on top of `count` (the caller skips the
    /// ones it already returned; they come first).
    pub tie: Option<i64>,
    /// Members to skip.
    pub offset: usize,
    /// Members to read (plus the ties).
    pub count: usize,
}

/// A slice of a user's timeline.
#[derive(Debug, Clone, Default)]
pub struct TimelineSlice {
    /// The user's meta at the time of the read.
    pub meta: UserMeta,
    /// Members read: `count` plus this many ties.
    pub ties: usize,
    /// (item, view_at), by view_at then item, both descending.
    pub members: Vec<(String, i64)>,
    /// Each member's encoded record (`None`: gone, e.g. trimmed meanwhile).
    pub records: Vec<Option<Vec<u8>>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_fields_read_as_a_user_never_cleared_or_checked() {
        let meta = UserMeta::parse(&[], false);
        assert_eq!((meta.paused, meta.cleared_at, meta.check_token.as_str(), meta.hbase_checked.as_deref()), (false, -1, "0:0", None));
        assert!(meta.hbase_may_hold_more());
        let values: Vec<String> = ["1", "50", "7", "3", "7:3"].map(str::to_owned).into();
        let meta = UserMeta::parse(&values, true);
        assert_eq!((meta.paused, meta.cleared_at, meta.check_token.as_str()), (true, 50, "7:3"));
        assert!(!meta.hbase_may_hold_more());
    }
}
