//! The persist stage's fold window, pure: what a window of consumed ops
//! writes. Upserts fold last-write-wins per (uid, item); deletes, clears
//! and recording switches keep their newest time. Because every cell and
//! marker carries its own timestamp (view_at, or the op's time), the order
//! in which a window's writes land does not change what becomes visible.

use std::collections::{HashMap, HashSet};

use model::{Ack, Op, Record};

/// The newest pending view of one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// `ids` payload: read the record from the realtime store.
    Ref(i64),
    /// `full` payload: the record itself.
    Full(Record),
}

impl Pending {
    fn view_at(&self) -> i64 {
        match self {
            Pending::Ref(view_at) => *view_at,
            Pending::Full(record) => record.view_at,
        }
    }
}

/// What a window holds.
#[derive(Debug, Default)]
pub struct Window {
    /// (uid, item) -> newest view.
    pub upserts: HashMap<(u64, String), Pending>,
    /// (uid, item) -> newest delete time.
    pub deletes: HashMap<(u64, String), i64>,
    /// uid -> newest clear time.
    pub clears: HashMap<u64, i64>,
    /// (uid, business) -> newest clear time of the business's items.
    pub business_clears: HashMap<(u64, String), i64>,
    /// uid -> (paused, when) of the newest switch.
    pub recording: HashMap<u64, (bool, i64)>,
    /// Who waits for this window to be written (offsets to commit).
    pub acks: Vec<Ack>,
    /// Ops folded in, for the convergence figures.
    pub ops: usize,
    /// Users the window touches (its HBase rows), kept as ops arrive so
    /// the size check after each batch costs nothing.
    users: HashSet<u64>,
}

impl Window {
    /// Folds one op in.
    pub fn add(&mut self, op: Op) {
        self.ops += 1;
        self.users.insert(op.uid());
        match op {
            Op::Upsert(record) => self.upsert((record.uid, record.item_key()), Pending::Full(record)),
            Op::UpsertRef { uid, item, view_at } => self.upsert((uid, item), Pending::Ref(view_at)),
            Op::Delete { uid, item, at } => {
                let newest = self.deletes.entry((uid, item)).or_insert(at);
                *newest = (*newest).max(at);
            }
            Op::Clear { uid, business: None, at } => {
                let newest = self.clears.entry(uid).or_insert(at);
                *newest = (*newest).max(at);
            }
            Op::Clear { uid, business: Some(business), at } => {
                let newest = self.business_clears.entry((uid, business)).or_insert(at);
                *newest = (*newest).max(at);
            }
            Op::SetRecording { uid, paused, at } => {
                let newest = self.recording.entry(uid).or_insert((paused, at));
                if at >= newest.1 {
                    *newest = (paused, at);
                }
            }
        }
    }

    fn upsert(&mut self, key: (u64, String), pending: Pending) {
        match self.upserts.get(&key) {
            Some(current) if current.view_at() > pending.view_at() => {}
            _ => {
                self.upserts.insert(key, pending);
            }
        }
    }

    /// Users (HBase rows) the window touches.
    pub fn rows(&self) -> usize {
        self.users.len()
    }

    /// Forgets the users once the window's contents have been taken.
    pub fn clear_users(&mut self) {
        self.users.clear();
    }

    /// Whether nothing is pending (acks may still wait).
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty()
            && self.deletes.is_empty()
            && self.clears.is_empty()
            && self.business_clears.is_empty()
            && self.recording.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upserts_fold_to_the_newest_view_and_markers_to_the_newest_time() {
        let mut window = Window::default();
        for view_at in [5, 9, 7] {
            window.add(Op::UpsertRef { uid: 1, item: "archive:1".into(), view_at });
        }
        window.add(Op::Delete { uid: 1, item: "archive:2".into(), at: 4 });
        window.add(Op::Delete { uid: 1, item: "archive:2".into(), at: 3 });
        window.add(Op::Clear { uid: 2, business: None, at: 8 });
        window.add(Op::Clear { uid: 2, business: Some("pgc".into()), at: 9 });
        window.add(Op::Clear { uid: 2, business: Some("pgc".into()), at: 7 });
        window.add(Op::SetRecording { uid: 2, paused: true, at: 10 });
        window.add(Op::SetRecording { uid: 2, paused: false, at: 6 });
        assert_eq!(window.upserts[&(1, "archive:1".into())], Pending::Ref(9));
        assert_eq!(window.deletes[&(1, "archive:2".into())], 4);
        assert_eq!(window.recording[&2], (true, 10));
        assert_eq!(window.business_clears[&(2, "pgc".into())], 9);
        assert_eq!((window.rows(), window.ops), (2, 10));
    }
}
