//! The user-state store of `--embedded`: the rules of `rules.rs` (the same
//! as the scripts beside it) kept in process memory. Key expiry is not
//! modelled, nor are the marks: nothing of this store outlives its
//! process, so there is nothing for a re-drive to find.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use model::Op;

use super::meta::{hiding_markers, SliceQuery, TimelineSlice, UserMeta};
use super::params::WriteParams;
use super::rules::{Status, UserState, UserWrite};

/// The in-process user-state store.
#[derive(Debug, Default)]
pub struct EmbeddedStore {
    /// Every user's state.
    users: Mutex<HashMap<u64, UserState>>,
}

impl EmbeddedStore {
    pub(super) fn write(&self, users: &[UserWrite], params: WriteParams) -> Vec<Vec<Status>> {
        let mut states = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        users
            .iter()
            .map(|user| states.entry(user.uid).or_default().apply(&user.events, params.max_items, params.today, params.now_ms))
            .collect()
    }

    pub(super) fn mutate(&self, ops: &[&Op]) -> Vec<i64> {
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        ops.iter().map(|op| users.entry(op.uid()).or_default().mutate(op).unwrap_or_default()).collect()
    }

    /// Runs `read` on `uid`'s state (a default state for an unknown user).
    fn with_user<T>(&self, uid: u64, read: impl FnOnce(&UserState) -> T) -> T {
        let users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        match users.get(&uid) {
            Some(user) => read(user),
            None => read(&UserState::default()),
        }
    }

    pub(super) fn timeline_slice(&self, uid: u64, query: SliceQuery) -> TimelineSlice {
        self.with_user(uid, |user| {
            let ties = query.tie.map_or(0, |tie| user.timeline.iter().filter(|(at, _)| *at == tie).count());
            let members: Vec<(String, i64)> = user
                .timeline
                .iter()
                .rev()
                .filter(|(at, _)| query.max.is_none_or(|max| *at <= max))
                .skip(query.offset)
                .take(query.count + ties)
                .map(|(at, item)| (item.clone(), *at))
                .collect();
            let records = members.iter().map(|(item, _)| user.records.get(item).map(|(_, record)| record.clone())).collect();
            TimelineSlice { meta: meta_of(user), ties, members, records }
        })
    }

    pub(super) fn whole_timeline(&self, uid: u64) -> Vec<(String, i64)> {
        self.with_user(uid, |user| user.timeline.iter().map(|(at, item)| (item.clone(), *at)).collect())
    }

    pub(super) fn meta_and_markers(&self, uid: u64, items: &[String]) -> (UserMeta, Vec<Option<i64>>) {
        self.with_user(uid, |user| {
            let markers =
                hiding_markers(items, |item| user.deleted.get(item).copied(), |business| user.business_cleared.get(business).copied());
            (meta_of(user), markers)
        })
    }

    pub(super) fn mark_hbase_checked(&self, uid: u64, now_ms: i64) {
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(user) = users.get_mut(&uid).filter(|user| meta_of(user).exists && user.trimmed_at.is_none()) {
            user.hbase_checked = Some(now_ms);
        }
    }

    pub(super) fn read_records(&self, wanted: &[(u64, Vec<String>)]) -> Vec<Vec<Option<Vec<u8>>>> {
        let users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        wanted
            .iter()
            .map(|(uid, items)| {
                let user = users.get(uid);
                items.iter().map(|item| user.and_then(|user| user.records.get(item)).map(|(_, record)| record.clone())).collect()
            })
            .collect()
    }
}

/// What a read sees of an embedded user: the same as Redis, where a user
/// the store holds counts as existing.
fn meta_of(user: &UserState) -> UserMeta {
    let exists = !user.timeline.is_empty()
        || user.paused
        || user.cleared_at >= 0
        || !user.deleted.is_empty()
        || !user.business_cleared.is_empty()
        || user.day.is_some();
    UserMeta {
        exists,
        paused: user.paused,
        cleared_at: user.cleared_at,
        trimmed: user.trimmed_at.is_some(),
        hbase_checked_at: user.hbase_checked,
    }
}
