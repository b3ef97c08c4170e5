//! How a commit's users are grouped into script calls: whole users, a
//! bounded number of events a call, and on a Redis Cluster only users
//! one node serves together (one slot's, while the nodes are unknown);
//! and how such a call names its keys.

use std::collections::BTreeMap;

use model::keys;
use redis::Cmd;

use super::link::{Lua, NodeMap};
use super::rules::UserWrite;

/// First argument of a script call that names its keys in its arguments
/// (`marks.lua`): a cluster call carrying users of several slots.
const KEYS_IN_ARGUMENTS: &str = "@keys";

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
/// `cluster` only users `nodes` says one node serves together (with no
/// node map, users of one hash slot).
pub(crate) fn plan_calls(users: &[UserWrite], shape: CallShape, nodes: Option<&NodeMap>) -> Vec<Vec<usize>> {
    let sizes: Vec<(u64, usize)> = users.iter().map(|user| (user.uid, user.events.len())).collect();
    plan_sized_calls(&sizes, shape, nodes)
}

/// [`plan_calls`] over `(uid, size)` pairs: any per-user script call
/// (writes, settling marks).
pub(crate) fn plan_sized_calls(users: &[(u64, usize)], shape: CallShape, nodes: Option<&NodeMap>) -> Vec<Vec<usize>> {
    // One Redis groups everything together: no slot to compute.
    let slotted: Vec<(u16, usize)> =
        users.iter().map(|&(uid, size)| (if shape.cluster { keys::cluster_slot(uid) } else { 0 }, size)).collect();
    plan_slotted_calls(&slotted, shape, nodes)
}

/// [`plan_sized_calls`] over `(hash slot, size)` pairs: calls on keys
/// named by their slot (a cluster's slot re-drive indexes, one each).
pub(crate) fn plan_slotted_calls(items: &[(u16, usize)], shape: CallShape, nodes: Option<&NodeMap>) -> Vec<Vec<usize>> {
    let group_of = |slot: u16| match (shape.cluster, nodes) {
        (false, _) => 0,
        (true, Some(nodes)) => nodes.node_of(slot),
        (true, None) => u32::from(slot),
    };
    let mut groups: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (index, &(slot, _)) in items.iter().enumerate() {
        groups.entry(group_of(slot)).or_default().push(index);
    }
    let mut calls = Vec::new();
    for members in groups.into_values() {
        let mut call: Vec<usize> = Vec::new();
        let mut events = 0;
        for index in members {
            let size = items[index].1;
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

/// An `EVALSHA` of `script` on `keys`; add its arguments. The keys are
/// declared, except in a call grouped `by_node` (`plan_calls` with a node
/// map): it may carry users of several slots, and declared keys must
/// share a slot, so it names them in its arguments (`marks.lua`). Such a
/// call is never redirected: a key of a slot that moved to another node
/// is an error reply, at the first command that touches it.
pub(crate) fn script_call(script: &Lua, keys: &[String], by_node: bool) -> Cmd {
    if !by_node {
        return script.call(keys);
    }
    let mut call = redis::cmd("EVALSHA");
    call.arg(script.get_hash()).arg(0).arg(KEYS_IN_ARGUMENTS).arg(keys.len()).arg(keys);
    call
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
        let calls = plan_calls(&users, CallShape { cluster: false, max_events: 4 }, None);
        assert_eq!(calls, vec![vec![0, 1], vec![2], vec![3]]);
    }

    #[test]
    fn cluster_calls_never_mix_slots() {
        let users: Vec<UserWrite> = (1..=500).map(|uid| user(uid, 1)).collect();
        let calls = plan_calls(&users, CallShape { cluster: true, max_events: 128 }, None);
        for call in &calls {
            let slot = keys::cluster_slot(users[call[0]].uid);
            assert!(call.iter().all(|&i| keys::cluster_slot(users[i].uid) == slot), "a call mixes hash slots");
        }
        assert_eq!(calls.iter().map(Vec::len).sum::<usize>(), 500);
    }

    /// A `CLUSTER SLOTS` answer: three masters, each a third of the slots.
    fn three_masters() -> NodeMap {
        let int = redis::Value::Int;
        let master = |port: i64| redis::Value::Array(vec![redis::Value::BulkString(b"127.0.0.1".to_vec()), int(port), int(0)]);
        let range = |start: i64, end: i64, port: i64| redis::Value::Array(vec![int(start), int(end), master(port)]);
        NodeMap::parse(&redis::Value::Array(vec![range(0, 5460, 7100), range(5461, 10922, 7101), range(10923, 16383, 7102)]))
            .expect("a well-formed answer")
    }

    #[test]
    fn with_a_node_map_a_cluster_call_carries_users_of_many_slots_of_one_node() {
        let nodes = three_masters();
        assert_eq!((nodes.node_of(0), nodes.node_of(5461), nodes.node_of(16383)), (0, 1, 2));
        let users: Vec<UserWrite> = (1..=300).map(|uid| user(uid, 1)).collect();
        let calls = plan_calls(&users, CallShape { cluster: true, max_events: 128 }, Some(&nodes));
        for call in &calls {
            let node = nodes.node_of(keys::cluster_slot(users[call[0]].uid));
            assert!(call.iter().all(|&i| nodes.node_of(keys::cluster_slot(users[i].uid)) == node), "a call mixes nodes");
        }
        // 300 users on three nodes, at most 128 a call: a few calls, not
        // one per slot.
        assert!(calls.len() <= 6, "{} calls for 300 users on three nodes", calls.len());
        assert_eq!(calls.iter().map(Vec::len).sum::<usize>(), 300);
    }

    #[test]
    fn a_call_grouped_by_node_names_its_keys_in_its_arguments() {
        let script = Lua::new("return 1");
        let arguments = |call: &Cmd| {
            let text = |arg| match arg {
                redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                _ => String::new(),
            };
            call.args_iter().map(text).collect::<Vec<_>>().join(" ")
        };
        let two_slots = [keys::timeline(7), keys::timeline(8)];
        let declared = arguments(&script_call(&script, &two_slots, false));
        assert!(declared.ends_with(&format!(" 2 {} {}", two_slots[0], two_slots[1])), "{declared}");
        let by_node = arguments(&script_call(&script, &two_slots, true));
        assert!(by_node.ends_with(&format!(" 0 @keys 2 {} {}", two_slots[0], two_slots[1])), "{by_node}");
    }
}
