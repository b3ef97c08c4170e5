//! How a commit's batches become user writes: the upserts grouped per
//! user (first-seen order), so each user's events go to the store in one
//! atomic call, and where each event went, so results return in request
//! order.

use std::collections::HashMap;

use backends::user_state::{EventWrite, UserWrite};
use model::{codec, Op};

/// Where each event of a commit went: `(user index, event index)` per op of
/// each batch, so results can be put back in request order.
pub type Placement = Vec<Vec<(usize, usize)>>;

/// Groups the upserts of `batches` per user (first-seen order), so each
/// user's events go to the store in one atomic call.
pub fn group_by_user<'a>(batches: impl IntoIterator<Item = &'a [Op]>) -> (Vec<UserWrite>, Placement) {
    let mut users: Vec<UserWrite> = Vec::new();
    let mut index_of: HashMap<u64, usize> = HashMap::new();
    let mut placement = Vec::new();
    for ops in batches {
        let mut places = Vec::with_capacity(ops.len());
        for op in ops {
            let Op::Upsert(record) = op else {
                // Deletes, clears and recording switches are applied one
                // by one after the commit's upserts (`mutate.lua`); they
                // take no place in a user's write.
                places.push((usize::MAX, usize::MAX));
                continue;
            };
            let user = *index_of.entry(record.uid).or_insert_with(|| {
                users.push(UserWrite { uid: record.uid, events: Vec::new() });
                users.len() - 1
            });
            let events = &mut users[user].events;
            events.push(EventWrite { item: record.item_key(), view_at: record.view_at, record: codec::encode_record(record) });
            places.push((user, events.len() - 1));
        }
        placement.push(places);
    }
    (users, placement)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_keeps_request_order_per_user() {
        let record = |uid, oid| {
            Op::Upsert(model::Record {
                uid,
                business: "archive".into(),
                oid,
                sub_id: None,
                progress: 1,
                duration: None,
                device: None,
                view_at: 5,
            })
        };
        let first = [record(1, 1), record(2, 1)];
        let second = [record(1, 2)];
        let (users, placement) = group_by_user([&first[..], &second[..]]);
        assert_eq!(users.iter().map(|u| (u.uid, u.events.len())).collect::<Vec<_>>(), vec![(1, 2), (2, 1)]);
        assert_eq!(placement, vec![vec![(0, 0), (1, 0)], vec![(0, 1)]]);
    }
}
