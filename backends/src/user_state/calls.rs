//! How a commit's users are grouped into script calls: whole users, a
//! bounded number of events a call, and on a Redis Cluster only users of
//! one hash slot together (a script's keys must share a slot).

use std::collections::BTreeMap;

use model::keys;

use super::rules::UserWrite;

/// How users are grouped into script calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallShape {
    /// Redis Cluster: only users of one hash slot share a call.
    pub cluster: bool,
    /// Most events in one call (a user's events are never split).
    pub max_events: usize,
}

/// Groups user indexes into script calls: whole users, at most
/// `max_events` events a call (a larger user goes alone), and under
/// `cluster` only users of the same hash slot together.
pub fn plan_calls(users: &[UserWrite], shape: CallShape) -> Vec<Vec<usize>> {
    let sizes: Vec<(u64, usize)> = users.iter().map(|user| (user.uid, user.events.len())).collect();
    plan_sized_calls(&sizes, shape)
}

/// [`plan_calls`] over `(uid, size)` pairs: any per-user script call
/// (writes, settling marks).
pub fn plan_sized_calls(users: &[(u64, usize)], shape: CallShape) -> Vec<Vec<usize>> {
    let mut groups: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for (index, &(uid, _)) in users.iter().enumerate() {
        let slot = if shape.cluster { keys::cluster_slot(uid) } else { 0 };
        groups.entry(slot).or_default().push(index);
    }
    let mut calls = Vec::new();
    for members in groups.into_values() {
        let mut call: Vec<usize> = Vec::new();
        let mut events = 0;
        for index in members {
            let size = users[index].1;
            if !call.is_empty() && events + size > shape.max_events {
                calls.push(std::mem::take(&mut call));
                events = 0;
            }
            call.push(index);
            events += size;
        }
        if !call.is_empty() {
            calls.push(call);
        }
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user_state::EventWrite;

    fn user(uid: u64, events: usize) -> UserWrite {
        UserWrite { uid, events: (0..events).map(|i| EventWrite { item: format!("a:{i}"), view_at: 1, record: Vec::new() }).collect() }
    }

    #[test]
    fn calls_carry_whole_users_up_to_the_limit() {
        let users = vec![user(1, 2), user(2, 2), user(3, 5), user(4, 1)];
        let calls = plan_calls(&users, CallShape { cluster: false, max_events: 4 });
        assert_eq!(calls, vec![vec![0, 1], vec![2], vec![3]]);
    }

    #[test]
    fn cluster_calls_never_mix_slots() {
        let users: Vec<UserWrite> = (1..=500).map(|uid| user(uid, 1)).collect();
        let calls = plan_calls(&users, CallShape { cluster: true, max_events: 128 });
        for call in &calls {
            let slot = keys::cluster_slot(users[call[0]].uid);
            assert!(call.iter().all(|&i| keys::cluster_slot(users[i].uid) == slot), "a call mixes hash slots");
        }
        assert_eq!(calls.iter().map(Vec::len).sum::<usize>(), 500);
    }
}
