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
//! - `hbase_checked`: when (unix ms) a read found nothing in HBase the
//!   timeline lacks, in a user never trimmed (see [`NOTE_LIFETIME_MS`]).
//!
//! (`hbase_written`, the job's count of its writes that the note once
//! depended on, is read no more; a meta written by an older build may
//! still hold it.)

/// The meta fields a read needs, in the order `page.lua` and
/// `meta_and_markers` return them (the scripts get this list as
/// arguments, so it is written once).
pub(crate) const READ_FIELDS: [&str; 4] = ["paused", "cleared_at", "trimmed_at", "hbase_checked"];

/// How long a read trusts an "HBase holds nothing more" note.
///
/// A user never trimmed has nothing in flight to HBase that its timeline
/// lacks: every item it recorded is in the timeline unless deleted or
/// cleared, whose markers hide HBase's copies. So only a trim (which sets
/// `trimmed_at`, and no note is made or trusted after one) or a loss of
/// Redis data (a failover to a replica that lagged, a restart from an older
/// snapshot) can leave HBase holding items the timeline lacks. After such a
/// loss the note is trusted this long at most, then HBase is read again.
pub const NOTE_LIFETIME_MS: i64 = 10 * 60 * 1000;

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
    /// A write trimmed the timeline once (`trimmed_at`): older items are
    /// only in HBase, and no "nothing more" note is made or trusted.
    pub trimmed: bool,
    /// When a read found nothing in HBase the timeline lacks (unix ms).
    pub hbase_checked_at: Option<i64>,
}

impl UserMeta {
    /// Whether HBase may hold items the timeline does not, at `now_ms`:
    /// always for a user ever trimmed, and otherwise unless a read found
    /// it did not less than [`NOTE_LIFETIME_MS`] ago (either way: clocks
    /// apart by more than that trust no note).
    pub fn hbase_may_hold_more(&self, now_ms: i64) -> bool {
        self.trimmed || self.hbase_checked_at.is_none_or(|at| (now_ms - at).abs() >= NOTE_LIFETIME_MS)
    }

    /// The meta from the values of [`READ_FIELDS`], in order ('' where a
    /// field is absent).
    pub(crate) fn parse(values: &[String], exists: bool) -> Self {
        let field = |index: usize| values.get(index).map_or("", String::as_str);
        UserMeta {
            exists,
            paused: field(0) == "1",
            cleared_at: field(1).parse().unwrap_or(-1),
            trimmed: !field(2).is_empty(),
            // A note of an older build (`trimmed_at:hbase_written`) is no
            // time: not trusted.
            hbase_checked_at: field(3).parse().ok(),
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
    fn absent_fields_read_as_a_user_never_cleared_trimmed_or_checked() {
        let meta = UserMeta::parse(&[], false);
        assert_eq!((meta.paused, meta.cleared_at, meta.trimmed, meta.hbase_checked_at), (false, -1, false, None));
        assert!(meta.hbase_may_hold_more(1_000));
        let values: Vec<String> = ["1", "50", "", "1000"].map(str::to_owned).into();
        let meta = UserMeta::parse(&values, true);
        assert_eq!((meta.paused, meta.cleared_at, meta.trimmed, meta.hbase_checked_at), (true, 50, false, Some(1_000)));
    }

    #[test]
    fn a_note_is_trusted_for_its_lifetime_and_never_in_a_trimmed_user() {
        let noted = |trimmed_at: &str, checked: &str| UserMeta::parse(&["", "", trimmed_at, checked].map(str::to_owned), true);
        let meta = noted("", "1000");
        assert!(!meta.hbase_may_hold_more(1_000));
        assert!(!meta.hbase_may_hold_more(1_000 + NOTE_LIFETIME_MS - 1));
        assert!(meta.hbase_may_hold_more(1_000 + NOTE_LIFETIME_MS), "a note outlived its lifetime");
        assert!(meta.hbase_may_hold_more(1_000 - NOTE_LIFETIME_MS), "a note from a clock far ahead");
        assert!(noted("900", "1000").hbase_may_hold_more(1_000), "a trimmed user's note");
        assert!(noted("", "7:3").hbase_may_hold_more(1_000), "an older build's note");
    }
}
