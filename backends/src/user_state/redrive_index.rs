//! The re-drive index on a real Redis: which users may hold pending marks,
//! and the re-drive that claims the due ones.
//!
//! On one Redis a shard's users are in its index (`h:pending:{shard}`); on a
//! Redis Cluster each hash slot's users are in that slot's index
//! (`h:marked:{tag}`), so the scripts that write and claim a user's marks
//! keep its index in the same atomic step on both. A settle leaves the
//! user listed (`settle.lua`); the claim of a user it finds with no mark
//! left takes it out. The claims of a round go many users a script call.
//! The re-drive of shard `s` on a cluster looks at the slots
//! [`keys::slots_of_shard`] gives it, one of `SLOT_PARTS` (`slot_scan`)
//! parts of them a pass, a node's in one script call (`due.lua`), which
//! also counts what the indexes hold for the marks gauge.
//!
//! A cluster's shard indexes are where builds before the slot indexes put
//! its users: still read, never written, so what they hold is re-driven and
//! drained. Taking a user out of such an index cannot be one step with the
//! look at its marks (they are in other slots): [`RedisStore::unindex`]
//! moves it to a leaving set first, and a user a kill strands there is put
//! back by [`RedisStore::return_stranded`].

use model::keys;
use redis::Value;

use super::calls::{plan_sized_calls, plan_slotted_calls, script_call, CallShape};
use super::link::{NodeMap, SlotCommand};
use super::marks::{ClaimedMark, PendingStats, Redriven};
use super::params::StoreError;
use super::redis::{decode, of_user, parse_error, store_error, RedisStore};
use super::slot_scan::SLOT_PARTS;

/// Most marks one claim takes of one user; the rest wait for the next pass.
const MAX_CLAIMS_PER_USER: usize = 1024;
/// Most users one claim call carries (a call blocks its node).
const MAX_USERS_PER_CLAIM: usize = 64;
/// Users stranded in a leaving set put back per shard per look.
const MAX_STRANDED: usize = 1024;
/// Most slot indexes one script call looks at (a call blocks its node).
const MAX_SLOTS_PER_CALL: usize = 1024;

/// A user due for a look, and the index it was found in: `Some` when the
/// claim keeps that index itself (it is in the user's slot, or on one
/// Redis), `None` for a cluster's shard index (the caller keeps it).
type Due = (u64, Option<String>);

/// `ZADD NX` of `uids` to `index`.
fn add_to_index(index: &str, uids: &[u64], now_ms: i64) -> SlotCommand {
    let mut add = redis::cmd("ZADD");
    add.arg(index).arg("NX");
    for uid in uids {
        add.arg(now_ms).arg(uid);
    }
    SlotCommand { slot: keys::key_slot(index), command: add }
}

impl RedisStore {
    /// `due.lua` calls over the slot indexes of `slots`, grouped as any
    /// script call is (`plan_slotted_calls`: by the node serving them when
    /// `nodes` is known, else one call per slot), at most
    /// `MAX_SLOTS_PER_CALL` indexes a call.
    fn due_calls(&self, slots: &[u16], nodes: Option<&NodeMap>, due_ms: i64, max_users: usize) -> Vec<SlotCommand> {
        let sized: Vec<(u16, usize)> = slots.iter().map(|&slot| (slot, 1)).collect();
        let shape = CallShape { cluster: true, max_events: MAX_SLOTS_PER_CALL };
        plan_slotted_calls(&sized, shape, nodes)
            .into_iter()
            .map(|call_slots| {
                let indexes: Vec<String> = call_slots.iter().map(|&at| keys::slot_pending_index(slots[at])).collect();
                let mut call = script_call(&self.scripts.due, &indexes, nodes.is_some());
                call.arg(due_ms).arg(max_users);
                SlotCommand { slot: slots[call_slots[0]], command: call }
            })
            .collect()
    }

    /// Users of one part of `shard`'s slot indexes (a cluster's) due by
    /// `due_ms`, at most `max_users`; what those indexes hold is kept for
    /// [`Self::pending_stats`].
    async fn due_in_slots(&self, shard: u32, shards: u32, due_ms: i64, max_users: usize) -> Result<Vec<u64>, StoreError> {
        let part = self.slot_scan.take_part(shards, shard);
        let slots: Vec<u16> = keys::slots_of_shard(shard, shards).skip(part).step_by(SLOT_PARTS).collect();
        let build = |nodes: Option<&NodeMap>| (vec![self.due_calls(&slots, nodes, due_ms, max_users)], ());
        let (replies, ()) = self.run_by_node(&self.scripts.due, build).await?;
        let (mut users, mut oldest, mut uids) = (0u64, None::<i64>, Vec::new());
        for reply in &replies {
            let reply: Vec<i64> = decode(reply)?;
            let [indexed, first, due @ ..] = &reply[..] else {
                return Err(StoreError("the re-drive look-up answered too little".to_owned()));
            };
            users += *indexed as u64;
            if *first >= 0 {
                oldest = Some(oldest.map_or(*first, |known| known.min(*first)));
            }
            uids.extend(due.iter().map(|&uid| uid as u64));
        }
        self.slot_scan.record(shards, shard, part, users, oldest);
        uids.truncate(max_users);
        Ok(uids)
    }

    /// Claims the due marks of `shard` (at most `max_users` users) and
    /// answers what to ship again.
    pub(super) async fn redrive(&self, shard: u32, shards: u32, grace_ms: i64, max_users: usize) -> Result<Redriven, StoreError> {
        self.return_stranded(shard, grace_ms).await?;
        let mut connection = self.connection.clone();
        let index = keys::pending_index(shard);
        let due = model::now_ms() - grace_ms;
        let listed: Vec<u64> = redis::cmd("ZRANGEBYSCORE")
            .arg(&index)
            .arg("-inf")
            .arg(due)
            .arg("LIMIT")
            .arg(0)
            .arg(max_users)
            .query_async(&mut connection)
            .await
            .map_err(store_error)?;
        let cluster = self.shape.cluster;
        let mut candidates: Vec<Due> = listed.into_iter().map(|uid| (uid, (!cluster).then(|| index.clone()))).collect();
        if cluster && candidates.len() < max_users {
            let in_slots = self.due_in_slots(shard, shards, due, max_users - candidates.len()).await?;
            candidates.extend(in_slots.into_iter().map(|uid| (uid, Some(keys::slot_pending_index(keys::cluster_slot(uid))))));
        }
        let mut redriven = Redriven { examined: candidates.len(), ..Redriven::default() };
        if candidates.is_empty() {
            return Ok(redriven);
        }
        let claimed = self.claim(&candidates, grace_ms).await?;
        // A cluster's shard index is kept here: due again when the user's
        // oldest mark is, left when it has none.
        let mut settled = Vec::new();
        let mut next = redis::cmd("ZADD");
        next.arg(&index).arg("XX");
        let mut any_next = false;
        for ((uid, kept_by_claim), (oldest, marks)) in candidates.iter().zip(claimed) {
            redriven.add_user(*uid, marks);
            match (kept_by_claim, oldest < 0) {
                (Some(_), _) => {}
                (None, true) => settled.push(*uid),
                (None, false) => {
                    next.arg(oldest).arg(uid);
                    any_next = true;
                }
            }
        }
        if any_next {
            next.query_async::<()>(&mut connection).await.map_err(store_error)?;
        }
        // A record that cannot be decoded never will be: its mark goes.
        if !redriven.undecodable.is_empty() {
            let drops = redriven
                .undecodable
                .iter()
                .map(|(uid, field, _)| of_user(*uid, redis::cmd("HDEL").arg(keys::pending(*uid)).arg(field).clone()));
            self.run_plain(vec![drops.collect()]).await?;
        }
        self.unindex(shard, &settled, model::now_ms()).await?;
        Ok(redriven)
    }

    /// Claims the due marks of `candidates` (`claim.lua`), many users a
    /// call: on a cluster whose node map is known, users one node serves
    /// together; a call that met a slot now served by another node claimed
    /// nothing (the script reads every user first), and its users are
    /// claimed again, grouped by slot. Answers, per candidate, the oldest
    /// mark left (-1: none) and the marks claimed.
    async fn claim(&self, candidates: &[Due], grace_ms: i64) -> Result<Vec<(i64, Vec<ClaimedMark>)>, StoreError> {
        let steps = |candidates: &[Due], nodes: Option<&NodeMap>| self.claim_calls(candidates, grace_ms, nodes);
        self.run_read_first(&self.scripts.claim, candidates, steps, |reply, call_users, _| parse_claims(reply, call_users.len())).await
    }

    /// The `claim.lua` calls of `candidates`, grouped as any script call
    /// is (`plan_sized_calls`), and the candidates each call carries.
    fn claim_calls(&self, candidates: &[Due], grace_ms: i64, nodes: Option<&NodeMap>) -> (Vec<Vec<usize>>, Vec<SlotCommand>) {
        let sizes: Vec<(u64, usize)> = candidates.iter().map(|(uid, _)| (*uid, 1)).collect();
        let shape = CallShape { cluster: self.shape.cluster, max_events: MAX_USERS_PER_CLAIM };
        let calls = plan_sized_calls(&sizes, shape, nodes);
        let commands = calls
            .iter()
            .map(|call_users| {
                let user_keys: Vec<String> = call_users
                    .iter()
                    .flat_map(|&at| {
                        let uid = candidates[at].0;
                        [keys::pending(uid), keys::records(uid), keys::kept(uid), keys::meta(uid)]
                    })
                    .collect();
                let mut call = script_call(&self.scripts.claim, &user_keys, nodes.is_some());
                call.arg(grace_ms).arg(MAX_CLAIMS_PER_USER);
                for &at in call_users {
                    call.arg(candidates[at].1.as_deref().unwrap_or(""));
                }
                of_user(candidates[call_users[0]].0, call)
            })
            .collect();
        (calls, commands)
    }

    /// Removes users with no pending marks from `shard`'s index (a
    /// cluster's, where it is in another slot than theirs), without ever
    /// leaving a marked user unindexed, even if this process dies half
    /// way: each user is first moved to the leaving set, then its marks
    /// are counted, then the marked ones go back to the index (a write may
    /// have marked one after the caller looked) and all leave the leaving
    /// set. Each step is ordered on one connection; a user stranded in the
    /// leaving set by a kill is put back by [`Self::return_stranded`].
    async fn unindex(&self, shard: u32, uids: &[u64], now_ms: i64) -> Result<(), StoreError> {
        if uids.is_empty() {
            return Ok(());
        }
        let (index, leaving) = (keys::pending_index(shard), keys::leaving_index(shard));
        let slot = keys::key_slot(&index);
        let mut park = redis::cmd("ZADD");
        park.arg(&leaving);
        for uid in uids {
            park.arg(now_ms).arg(uid);
        }
        let mut out = redis::cmd("ZREM");
        out.arg(&index).arg(uids);
        // Its fields: a pending mark marks it again; a shipped reference
        // (not re-driven) and the keeper do not.
        let fields = uids.iter().map(|uid| of_user(*uid, redis::cmd("HKEYS").arg(keys::pending(*uid)).clone())).collect();
        let replies = self.run_plain(vec![vec![SlotCommand { slot, command: park }, SlotCommand { slot, command: out }], fields]).await?;
        let fields: Vec<Vec<String>> = replies[2..].iter().map(decode).collect::<Result<_, _>>()?;
        let marked_again: Vec<u64> = uids
            .iter()
            .zip(fields)
            .filter(|(_, fields)| fields.iter().any(|field| keys::is_pending_mark(field)))
            .map(|(uid, _)| *uid)
            .collect();
        let mut done = Vec::new();
        if !marked_again.is_empty() {
            done.push(add_to_index(&index, &marked_again, now_ms));
        }
        let mut gone = redis::cmd("ZREM");
        gone.arg(&leaving).arg(uids);
        done.push(SlotCommand { slot, command: gone });
        self.run_plain(vec![done]).await.map(drop)
    }

    /// Puts users left in `shard`'s leaving set for longer than `stale_ms`
    /// (their remover was killed between its steps) back in the index, as
    /// due: the next look re-drives their marks or lets them go.
    async fn return_stranded(&self, shard: u32, stale_ms: i64) -> Result<(), StoreError> {
        let (index, leaving) = (keys::pending_index(shard), keys::leaving_index(shard));
        let mut connection = self.connection.clone();
        let stranded: Vec<(u64, f64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(&leaving)
            .arg("-inf")
            .arg(model::now_ms() - stale_ms)
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(MAX_STRANDED)
            .query_async(&mut connection)
            .await
            .map_err(store_error)?;
        if stranded.is_empty() {
            return Ok(());
        }
        let mut back = redis::cmd("ZADD");
        back.arg(&index).arg("NX");
        for (uid, since) in &stranded {
            back.arg(*since as i64).arg(uid);
        }
        let uids: Vec<u64> = stranded.iter().map(|(uid, _)| *uid).collect();
        // Back in the index first, then out of the leaving set.
        redis::pipe()
            .add_command(back)
            .ignore()
            .cmd("ZREM")
            .arg(&leaving)
            .arg(&uids)
            .ignore()
            .query_async::<()>(&mut connection)
            .await
            .map_err(store_error)
    }

    /// Users in the re-drive indexes (`shards` shard indexes, and on a
    /// cluster every slot's as the re-drive last looked at them), and the
    /// oldest entry.
    pub(super) async fn pending_stats(&self, shards: u32) -> Result<PendingStats, StoreError> {
        let mut commands = Vec::with_capacity(2 * shards as usize);
        for shard in 0..shards {
            let index = keys::pending_index(shard);
            let slot = keys::key_slot(&index);
            // Its keeper (score +inf) is no user.
            commands.push(SlotCommand { slot, command: redis::cmd("ZCOUNT").arg(&index).arg("-inf").arg("(+inf").clone() });
            let oldest =
                redis::cmd("ZRANGEBYSCORE").arg(&index).arg("-inf").arg("(+inf").arg("WITHSCORES").arg("LIMIT").arg(0).arg(1).clone();
            commands.push(SlotCommand { slot, command: oldest });
        }
        let replies = self.run_plain(vec![commands]).await?;
        let mut stats = PendingStats::default();
        let mut count = |users: u64, oldest: Option<i64>| {
            stats.users += users;
            if let Some(at) = oldest {
                stats.oldest_ms = Some(stats.oldest_ms.map_or(at, |known| known.min(at)));
            }
        };
        for pair in replies.chunks(2) {
            let users: u64 = redis::from_redis_value_ref(&pair[0]).map_err(parse_error)?;
            let oldest: Vec<(u64, f64)> = redis::from_redis_value_ref(&pair[1]).map_err(parse_error)?;
            count(users, oldest.first().map(|&(_, at)| at as i64));
        }
        for (users, oldest) in self.slot_scan.seen(shards) {
            count(users, oldest);
        }
        Ok(stats)
    }
}

/// `claim.lua`'s answer for a call of `users` users: per user the oldest
/// mark left (-1: none) and the marks claimed.
fn parse_claims(reply: &Value, users: usize) -> Result<Vec<(i64, Vec<ClaimedMark>)>, StoreError> {
    let values: Vec<Value> = decode(reply)?;
    let too_little = || StoreError("the claim answered too little".to_owned());
    let int = |value: &Value| -> Result<i64, StoreError> { redis::from_redis_value_ref(value).map_err(parse_error) };
    let mut at = 0;
    let mut parsed = Vec::with_capacity(users);
    for _ in 0..users {
        let [oldest, count] = values.get(at..at + 2).ok_or_else(too_little)? else { unreachable!("a slice of two") };
        let (oldest, count) = (int(oldest)?, usize::try_from(int(count)?).map_err(|_| too_little())?);
        at += 2;
        let triples = values.get(at..at + 3 * count).ok_or_else(too_little)?;
        at += 3 * count;
        let mut marks = Vec::with_capacity(count);
        for triple in triples.chunks_exact(3) {
            marks.push(ClaimedMark {
                field: redis::from_redis_value_ref(&triple[0]).map_err(parse_error)?,
                version: int(&triple[1])?,
                payload: redis::from_redis_value_ref(&triple[2]).map_err(parse_error)?,
            });
        }
        parsed.push((oldest, marks));
    }
    if at != values.len() {
        return Err(StoreError("the claim answered more than its users".to_owned()));
    }
    Ok(parsed)
}
