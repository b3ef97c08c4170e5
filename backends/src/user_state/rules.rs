//! The user-state rules as data: what one commit writes per user, the
//! status codes the write answers, and the decision itself for the
//! embedded store. `record.lua` and `mutate.lua`, beside this file, are the
//! same decisions for Redis; the two are kept in step and tested on the
//! same scenarios.

use std::collections::{BTreeSet, HashMap, HashSet};

use model::{EventResult, Op};

use super::meta::business_of;

/// One event to write: the item, when, and the encoded record.
#[derive(Debug, Clone)]
pub struct EventWrite {
    /// Item key `business:oid`.
    pub item: String,
    /// Unix ms.
    pub view_at: i64,
    /// The encoded record.
    pub record: Vec<u8>,
}

/// All of one user's events in a commit, in arrival order.
#[derive(Debug, Clone)]
pub struct UserWrite {
    /// The user.
    pub uid: u64,
    /// Its events.
    pub events: Vec<EventWrite>,
}

/// Outcome code of one event, as `record.lua` returns it.
pub type Status = i64;
/// Not recorded (paused, not newer, deleted or cleared after it).
pub const NOT_RECORDED: Status = 0;
/// Recorded.
pub const RECORDED: Status = 1;
/// Recorded, and the user's first recorded watch of the day.
pub const RECORDED_FIRST_TODAY: Status = 2;
/// Added to a recorded status when the same write trimmed the report at
/// once (a backdated view of a full timeline): only HBase will hold it, so
/// its record must travel whole.
pub const TRIMMED_AT_ONCE: Status = 2;

/// Whether a status says the report was trimmed by its own write.
pub fn trimmed_at_once(status: Status) -> bool {
    status > RECORDED_FIRST_TODAY
}

/// The result an HTTP client sees for a status.
pub fn result_of(status: Status) -> EventResult {
    EventResult {
        recorded: status != NOT_RECORDED,
        first_today: status == RECORDED_FIRST_TODAY || status == RECORDED_FIRST_TODAY + TRIMMED_AT_ONCE,
    }
}

/// One user's realtime state in the embedded store (what Redis holds in
/// the user's three keys).
#[derive(Debug, Clone)]
pub struct UserState {
    /// Recording paused.
    pub paused: bool,
    /// UTC day of the last first watch.
    pub day: Option<i64>,
    /// Items viewed at or before this were cleared.
    pub cleared_at: i64,
    /// Per item: viewed at or before this were deleted.
    pub deleted: HashMap<String, i64>,
    /// Per business: its items viewed at or before this were cleared.
    pub business_cleared: HashMap<String, i64>,
    /// (view_at, item), oldest first.
    pub timeline: BTreeSet<(i64, String)>,
    /// item -> (view_at, record).
    pub records: HashMap<String, (i64, Vec<u8>)>,
    /// When a write last trimmed the timeline (items now only in HBase).
    pub trimmed_at: Option<i64>,
    /// When (unix ms) a read found nothing in HBase that the timeline
    /// lacks (`meta::NOTE_LIFETIME_MS`).
    pub hbase_checked: Option<i64>,
}

impl Default for UserState {
    /// A user nobody has written yet (never cleared: `cleared_at` = -1, as
    /// `record.lua` reads an absent field).
    fn default() -> Self {
        UserState {
            paused: false,
            day: None,
            cleared_at: -1,
            deleted: HashMap::new(),
            business_cleared: HashMap::new(),
            timeline: BTreeSet::new(),
            records: HashMap::new(),
            trimmed_at: None,
            hbase_checked: None,
        }
    }
}

impl UserState {
    /// Applies `events` at `now_ms` exactly as `record.lua` does; returns
    /// their statuses.
    pub fn apply(&mut self, events: &[EventWrite], max_items: usize, today: i64, now_ms: i64) -> Vec<Status> {
        if self.paused {
            return vec![NOT_RECORDED; events.len()];
        }
        let new_day = self.day != Some(today);
        let mut first_given = false;
        let mut statuses = Vec::with_capacity(events.len());
        // Index of each recorded event.
        let mut recorded = Vec::new();
        for event in events {
            let mut status = NOT_RECORDED;
            let deleted_after = self.deleted.get(&event.item).is_some_and(|&at| event.view_at <= at)
                || self.business_cleared.get(business_of(&event.item)).is_some_and(|&at| event.view_at <= at);
            let current = self.records.get(&event.item).map(|(view_at, _)| *view_at);
            if event.view_at > self.cleared_at && !deleted_after && current.is_none_or(|current| event.view_at > current) {
                if let Some(current) = current {
                    self.timeline.remove(&(current, event.item.clone()));
                }
                self.timeline.insert((event.view_at, event.item.clone()));
                self.records.insert(event.item.clone(), (event.view_at, event.record.clone()));
                status = RECORDED;
                if new_day && !first_given {
                    first_given = true;
                    status = RECORDED_FIRST_TODAY;
                }
                recorded.push(statuses.len());
            }
            statuses.push(status);
        }
        if recorded.is_empty() {
            return statuses;
        }
        if first_given {
            self.day = Some(today);
        }
        if self.timeline.len() > max_items {
            self.trimmed_at = Some(now_ms);
        }
        let mut trimmed = HashSet::new();
        while self.timeline.len() > max_items {
            if let Some((_, item)) = self.timeline.pop_first() {
                self.records.remove(&item);
                trimmed.insert(item);
            }
        }
        // A report trimmed by the write that made it (a backdated view of a
        // full timeline) is recorded, but only HBase will hold it.
        for index in recorded {
            if trimmed.contains(&events[index].item) {
                statuses[index] += TRIMMED_AT_ONCE;
            }
        }
        statuses
    }

    /// Applies a delete, clear or recording switch exactly as
    /// `mutate.lua` does; returns its effective time (a delete or clear
    /// moves past the newest view it removes). `None` for upserts.
    pub fn mutate(&mut self, op: &Op) -> Option<i64> {
        match op {
            Op::Delete { item, at, .. } => {
                let current = self.records.remove(item).map_or(-1, |(view_at, _)| view_at);
                self.timeline.remove(&(current, item.clone()));
                let marked = self.deleted.get(item).copied().unwrap_or(-1);
                let effective = (*at).max(current).max(marked);
                self.deleted.insert(item.clone(), effective);
                Some(effective)
            }
            Op::Clear { business: None, at, .. } => {
                let newest = self.timeline.last().map_or(-1, |(view_at, _)| *view_at);
                let effective = (*at).max(newest).max(self.cleared_at);
                self.cleared_at = effective;
                self.timeline.clear();
                self.records.clear();
                self.deleted.retain(|_, marked| *marked > effective);
                self.business_cleared.retain(|_, marked| *marked > effective);
                Some(effective)
            }
            Op::Clear { business: Some(business), at, .. } => {
                let ours = |item: &str| business_of(item) == business;
                let gone: Vec<(i64, String)> = self.timeline.iter().filter(|(_, item)| ours(item)).cloned().collect();
                let newest = gone.iter().map(|(view_at, _)| *view_at).max().unwrap_or(-1);
                let marked = self.business_cleared.get(business).copied().unwrap_or(-1);
                let effective = (*at).max(newest).max(marked);
                self.business_cleared.insert(business.clone(), effective);
                for (view_at, item) in gone {
                    self.timeline.remove(&(view_at, item.clone()));
                    self.records.remove(&item);
                }
                self.deleted.retain(|item, marked| !ours(item) || *marked > effective);
                Some(effective)
            }
            Op::SetRecording { paused, at, .. } => {
                self.paused = *paused;
                Some(*at)
            }
            Op::Upsert(_) | Op::UpsertRef { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(item: &str, view_at: i64) -> EventWrite {
        EventWrite { item: item.to_owned(), view_at, record: view_at.to_string().into_bytes() }
    }

    #[test]
    fn newer_wins_older_and_equal_are_ignored() {
        let mut user = UserState::default();
        assert_eq!(user.apply(&[event("a:1", 10)], 10, 1, 0), vec![RECORDED_FIRST_TODAY]);
        assert_eq!(
            user.apply(&[event("a:1", 5), event("a:1", 10), event("a:1", 11)], 10, 1, 0),
            vec![NOT_RECORDED, NOT_RECORDED, RECORDED]
        );
        assert_eq!(user.records["a:1"].0, 11);
        assert_eq!(user.timeline.len(), 1);
    }

    #[test]
    fn first_watch_once_per_day_and_pause_records_nothing() {
        let mut user = UserState::default();
        assert_eq!(user.apply(&[event("a:1", 1), event("a:2", 2)], 10, 7, 0), vec![RECORDED_FIRST_TODAY, RECORDED]);
        assert_eq!(user.apply(&[event("a:3", 3)], 10, 7, 0), vec![RECORDED]);
        assert_eq!(user.apply(&[event("a:4", 4)], 10, 8, 0), vec![RECORDED_FIRST_TODAY]);
        user.paused = true;
        assert_eq!(user.apply(&[event("a:5", 5)], 10, 9, 0), vec![NOT_RECORDED]);
        assert!(!user.records.contains_key("a:5"));
    }

    #[test]
    fn trims_oldest_and_respects_delete_and_clear_markers() {
        let mut user = UserState::default();
        user.apply(&[event("a:1", 1), event("a:2", 2), event("a:3", 3)], 2, 1, 0);
        assert_eq!(user.records.keys().map(String::as_str).collect::<BTreeSet<_>>(), ["a:2", "a:3"].into());
        user.deleted.insert("a:3".into(), 5);
        assert_eq!(user.apply(&[event("a:3", 4), event("a:3", 6)], 2, 1, 0), vec![NOT_RECORDED, RECORDED]);
        user.cleared_at = 100;
        assert_eq!(user.apply(&[event("a:9", 100), event("a:9", 101)], 2, 1, 0), vec![NOT_RECORDED, RECORDED]);
    }

    #[test]
    fn deletes_and_clears_move_past_the_views_they_remove() {
        let mut user = UserState::default();
        user.apply(&[event("a:1", 10), event("a:2", 50)], 10, 1, 0);
        // A delete stamped before the item's view still removes it, at the
        // view's time, so an older late report stays hidden.
        assert_eq!(user.mutate(&Op::Delete { uid: 1, item: "a:2".into(), at: 20 }), Some(50));
        assert!(!user.records.contains_key("a:2") && user.timeline.len() == 1);
        assert_eq!(user.apply(&[event("a:2", 50), event("a:2", 51)], 10, 1, 0), vec![NOT_RECORDED, RECORDED]);
        assert_eq!(user.mutate(&Op::Clear { uid: 1, business: None, at: 30 }), Some(51));
        assert!(user.timeline.is_empty() && user.records.is_empty());
        assert!(user.deleted.is_empty(), "markers at or before the clear are dropped");
        assert_eq!(user.mutate(&Op::SetRecording { uid: 1, paused: true, at: 60 }), Some(60));
        assert_eq!(user.apply(&[event("a:3", 70)], 10, 1, 0), vec![NOT_RECORDED]);
        assert_eq!(user.mutate(&Op::SetRecording { uid: 1, paused: false, at: 61 }), Some(61));
        assert_eq!(user.apply(&[event("a:3", 70)], 10, 1, 0), vec![RECORDED]);
    }

    #[test]
    fn a_business_clear_removes_only_that_business_and_hides_its_older_views() {
        let mut user = UserState::default();
        user.apply(&[event("pgc:1", 10), event("pgc:2", 40), event("archive:1", 50), event("pgcx:1", 5)], 10, 1, 0);
        user.deleted.insert("pgc:9".into(), 20);
        // Moved past the business's newest view (40), not past archive's.
        assert_eq!(user.mutate(&Op::Clear { uid: 1, business: Some("pgc".into()), at: 30 }), Some(40));
        let left: BTreeSet<&str> = user.records.keys().map(String::as_str).collect();
        assert_eq!(left, ["archive:1", "pgcx:1"].into());
        assert!(user.deleted.is_empty(), "the business's markers at or before the clear are dropped");
        // A late older view stays hidden, a newer one comes back; other
        // businesses' older views are not affected.
        assert_eq!(
            user.apply(&[event("pgc:1", 40), event("pgc:2", 41), event("archive:2", 1)], 10, 1, 0),
            vec![NOT_RECORDED, RECORDED, RECORDED]
        );
        // A later full clear makes the business marker say nothing more.
        user.mutate(&Op::Clear { uid: 1, business: None, at: 60 });
        assert!(user.business_cleared.is_empty());
    }

    #[test]
    fn a_report_trimmed_by_its_own_write_is_recorded_for_hbase_only() {
        let mut user = UserState::default();
        user.apply(&[event("a:1", 10), event("a:2", 20)], 2, 1, 0);
        // A backdated view of a full timeline is trimmed at once: recorded
        // (HBase will hold it) and said so; it may be the day's first watch.
        let statuses = user.apply(&[event("a:0", 5), event("a:3", 30)], 2, 2, 0);
        assert_eq!(statuses, vec![RECORDED_FIRST_TODAY + TRIMMED_AT_ONCE, RECORDED]);
        assert!(trimmed_at_once(statuses[0]) && !trimmed_at_once(statuses[1]));
        assert_eq!(result_of(statuses[0]), EventResult { recorded: true, first_today: true });
        assert!(!user.records.contains_key("a:0"));
    }

    #[test]
    fn trims_are_timed() {
        let mut user = UserState::default();
        user.apply(&[event("a:1", 1), event("a:2", 2)], 2, 1, 100);
        assert_eq!(user.trimmed_at, None);
        user.apply(&[event("a:3", 3)], 2, 1, 200);
        assert_eq!(user.trimmed_at, Some(200));
    }
}
