//! Redis key names and the uid sharding every stage agrees on.
//!
//! User keys carry the uid in a hash tag (`{42}`), so a Redis Cluster keeps
//! all of one user's keys in one slot and a script may touch them together.

/// `h:{uid}:t`: ZSET member = item key, score = view_at (the timeline).
pub fn timeline(uid: u64) -> String {
    format!("h:{{{uid}}}:t")
}

/// `h:{uid}:r`: HASH item key -> encoded record.
pub fn records(uid: u64) -> String {
    format!("h:{{{uid}}}:r")
}

/// `h:{uid}:m`: HASH of meta: `paused`, `day` (of the last first watch),
/// `cleared_at`, `d:{item}` delete markers, `c:{business}` clear markers,
/// `trimmed_at` (when a write last trimmed the timeline) and
/// `hbase_checked` (when a read found nothing in HBase the timeline of a
/// user never trimmed lacks).
pub fn meta(uid: u64) -> String {
    format!("h:{{{uid}}}:m")
}

/// `h:{uid}:p`: HASH of the user's pending marks, what a service
/// acknowledged and has not yet handed to Kafka: field (an item key,
/// `~clear`, `~switch` or `~del|{item}`) -> `version,marked_at`, followed
/// by `,k` when a trim kept the item's record in [`kept`]; of its shipped
/// references (`ids` payload) handed to Kafka that the job has not yet
/// written to HBase: field [`shipped_field`] -> version; and of
/// [`PENDING_KEEPER`].
pub fn pending(uid: u64) -> String {
    format!("h:{{{uid}}}:p")
}

/// The field of [`pending`] that keeps the hash in being while it holds no
/// mark (value: the UTC day a write last set it), so a mark written to it
/// needs no new expiry.
pub const PENDING_KEEPER: &str = "~keep";

/// Whether a field of [`pending`] is a pending mark (not a shipped
/// reference, not [`PENDING_KEEPER`]).
pub fn is_pending_mark(field: &str) -> bool {
    field != PENDING_KEEPER && shipped_item(field).is_none()
}

/// What a shipped reference's field in [`pending`] starts with: an item key
/// never does (its business is non-empty).
const SHIPPED: char = ':';

/// The field in [`pending`] of `item`'s shipped reference.
pub fn shipped_field(item: &str) -> String {
    format!("{SHIPPED}{item}")
}

/// The item a field of [`pending`] names as a shipped reference; `None` for
/// a pending mark's field.
pub fn shipped_item(field: &str) -> Option<&str> {
    field.strip_prefix(SHIPPED)
}

/// `h:{uid}:k`: HASH item -> record of records trimmed from the timeline
/// while still pending or shipped (named in [`pending`]).
pub fn kept(uid: u64) -> String {
    format!("h:{{{uid}}}:k")
}

/// `h:pending:{shard}`: ZSET member = uid, score = when to look at the
/// user's pending marks next (ms) — the re-drive's index of users that may
/// have marks, kept at-least-once, on one Redis: a settle leaves a user
/// listed, and the look that finds it with no mark left takes it out. On a Redis Cluster each
/// slot has its own ([`slot_pending_index`]); a shard's there holds only
/// users that builds before the slot indexes put in it, re-driven and
/// drained.
pub fn pending_index(shard: u32) -> String {
    format!("h:pending:{{{shard}}}")
}

/// `h:leaving:{shard}`: ZSET member = uid, score = when it was moved here
/// (ms) — users on their way out of `shard`'s pending index on a cluster,
/// where the index is in another slot than theirs. A user is
/// moved here before its marks are looked at and taken out only after, so
/// a process killed in between leaves it here, where the re-drive finds it
/// and puts it back (same hash tag as the index: one Cluster slot).
pub fn leaving_index(shard: u32) -> String {
    format!("h:leaving:{{{shard}}}")
}

/// The member of a re-drive index ([`pending_index`],
/// [`slot_pending_index`]) that keeps it in being while no user is in it,
/// scored `+inf` (never due), so the first user added and the last taken
/// out make and delete no key: an index of a few users, a slot's, would
/// otherwise be made and deleted with nearly every mark. Never a uid.
pub const INDEX_KEEPER: &str = "~";

/// `h:marked:{tag}`: ZSET as [`pending_index`], on a Redis Cluster: the
/// re-drive's index of the users of one hash slot (`tag` is
/// [`slot_tag`]`(slot)`, so the index lives in its users' slot and the
/// scripts that write and claim their marks keep it in the same atomic
/// step, as on one Redis). The re-drive of shard `s` looks at the slots
/// [`slots_of_shard`] gives it.
pub fn slot_pending_index(slot: u16) -> String {
    format!("h:marked:{{{}}}", slot_tag(slot))
}

/// The re-drive index a write of `uid` puts the user in: its slot's on a
/// Redis Cluster ([`slot_pending_index`]), its shard's on one Redis
/// ([`pending_index`]).
pub fn user_pending_index(uid: u64, shards: u32, cluster: bool) -> String {
    user_pending_index_in(uid, shard_of(uid, shards), cluster)
}

/// [`user_pending_index`] of `uid`, known to be in shard `shard`.
pub fn user_pending_index_in(uid: u64, shard: u32, cluster: bool) -> String {
    if cluster {
        slot_pending_index(cluster_slot(uid))
    } else {
        pending_index(shard)
    }
}

/// The hash slots whose users' re-drive indexes shard `shard` of `shards`
/// looks at on a Redis Cluster: every slot falls to exactly one shard.
pub fn slots_of_shard(shard: u32, shards: u32) -> impl Iterator<Item = u16> {
    let shards = shards.max(1);
    (0..CLUSTER_SLOTS).filter(move |&slot| u32::from(slot) % shards == shard)
}

/// The shard whose re-drive looks at `uid`'s index: its own on one Redis,
/// its slot's on a cluster ([`slots_of_shard`]).
pub fn redrive_shard_of(uid: u64, shards: u32, cluster: bool) -> u32 {
    if cluster {
        u32::from(cluster_slot(uid)) % shards.max(1)
    } else {
        shard_of(uid, shards)
    }
}

/// Hash slots of a Redis Cluster.
const CLUSTER_SLOTS: u16 = 16384;

/// A hash tag of `slot`: the smallest decimal number whose slot it is
/// (fixed: every process finds the same tags).
pub fn slot_tag(slot: u16) -> u32 {
    static TAGS: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let mut tags = vec![u32::MAX; usize::from(CLUSTER_SLOTS)];
        let mut missing = tags.len();
        let mut tag = 0u32;
        while missing > 0 {
            let slot = usize::from(crc16_xmodem(tag.to_string().as_bytes()) % CLUSTER_SLOTS);
            if tags[slot] == u32::MAX {
                tags[slot] = tag;
                missing -= 1;
            }
            tag += 1;
        }
        tags
    });
    tags[usize::from(slot % CLUSTER_SLOTS)]
}

/// `h:sweep:{table}`: HASH of the retention sweep of HBase table `table`:
/// `cursor` (the last row swept in the current pass; absent: a pass starts
/// from the first row), `pass_started` and `pass_done` (unix ms).
pub fn sweep_progress(table: &str) -> String {
    format!("h:sweep:{{{table}}}")
}

/// `h:sweep:{table}:lock`: STRING, the owner of the sweep of `table`,
/// expiring unless renewed (one instance sweeps at a time).
pub fn sweep_lock(table: &str) -> String {
    format!("h:sweep:{{{table}}}:lock")
}

/// The shard (uid region) of `uid` among `shards`: a fixed 64-bit mix of
/// the uid (splitmix64's finalizer) modulo `shards`. Fixed forever: the
/// service and the job, of any version, must agree on it.
pub fn shard_of(uid: u64, shards: u32) -> u32 {
    let mut x = uid;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x % u64::from(shards.max(1))) as u32
}

/// The HBase row key of `uid`: 4 hex chars of md5(decimal uid), which
/// spreads users over regions, then the decimal uid.
pub fn hbase_row(uid: u64) -> String {
    use md5::{Digest, Md5};
    let decimal = uid.to_string();
    let digest = Md5::digest(decimal.as_bytes());
    format!("{:02x}{:02x}{decimal}", digest[0], digest[1])
}

/// The uid of an HBase row key made by [`hbase_row`].
pub fn uid_of_hbase_row(row: &str) -> Option<u64> {
    row.get(4..)?.parse().ok()
}

/// The Redis Cluster hash slot of every key of `uid` (the slot of its hash
/// tag, the decimal uid): CRC16-XMODEM mod 16384, as the cluster computes it.
pub fn cluster_slot(uid: u64) -> u16 {
    crc16_xmodem(uid.to_string().as_bytes()) % CLUSTER_SLOTS
}

/// The Redis Cluster hash slot of `key`: of its hash tag (what lies
/// between the first `{` and the next `}`, if not empty), else of the whole
/// key, as the cluster computes it.
pub fn key_slot(key: &str) -> u16 {
    let tagged = key.find('{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.find('}').filter(|&close| close > 0).map(|close| &rest[..close])
    });
    crc16_xmodem(tagged.unwrap_or(key).as_bytes()) % CLUSTER_SLOTS
}

fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

/// Days since the unix epoch (UTC) of a unix-ms instant.
pub fn utc_day(unix_ms: i64) -> i64 {
    unix_ms.div_euclid(86_400_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_users_hash_tag() {
        assert_eq!(timeline(42), "h:{42}:t");
        assert_eq!(records(42), "h:{42}:r");
        assert_eq!(meta(42), "h:{42}:m");
        assert_eq!(pending_index(7), "h:pending:{7}");
        assert_eq!(pending(42), "h:{42}:p");
    }

    #[test]
    fn hbase_rows_prefix_the_md5_of_the_uid() {
        // md5("42") = a1d0c6e83f027327d8461063f4ac58a6
        assert_eq!(hbase_row(42), "a1d042");
        assert_eq!(uid_of_hbase_row(&hbase_row(1_234_567)), Some(1_234_567));
        assert_eq!(uid_of_hbase_row("a1d0"), None);
    }

    #[test]
    fn cluster_slots_match_the_redis_spec() {
        // The Redis Cluster specification's CRC16 test vector.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31c3);
        // A user's keys share its tag's slot; the index keys their shard's.
        assert_eq!(key_slot(&timeline(42)), cluster_slot(42));
        assert_eq!(key_slot(&pending_index(3)), key_slot(&leaving_index(3)));
        assert_eq!(key_slot("foo{}{bar}"), crc16_xmodem(b"foo{}{bar}") % 16384);
        assert_eq!(cluster_slot(123_456_789), 12_739); // 0x31c3 is below 16384
    }

    #[test]
    fn a_slots_re_drive_index_lives_in_that_slot_and_one_shard_looks_at_it() {
        for slot in 0..CLUSTER_SLOTS {
            assert_eq!(key_slot(&slot_pending_index(slot)), slot);
        }
        for uid in [1, 42, 123_456_789, u64::MAX] {
            let index = user_pending_index(uid, 64, true);
            assert_eq!(key_slot(&index), cluster_slot(uid));
            let shard = redrive_shard_of(uid, 64, true);
            assert!(slots_of_shard(shard, 64).any(|slot| slot == cluster_slot(uid)));
            assert_eq!(redrive_shard_of(uid, 64, false), shard_of(uid, 64));
            assert_eq!(user_pending_index(uid, 64, false), pending_index(shard_of(uid, 64)));
        }
        let looked_at: usize = (0..7).map(|shard| slots_of_shard(shard, 7).count()).sum();
        assert_eq!(looked_at, usize::from(CLUSTER_SLOTS));
        // A slot's index is never a shard's.
        assert_eq!(slot_pending_index(0), format!("h:marked:{{{}}}", slot_tag(0)));
    }

    #[test]
    fn sharding_is_fixed_and_spread() {
        // Pinned values: changing the function would split users between
        // service and job versions.
        // (Computed independently from splitmix64's published finalizer.)
        let pinned: Vec<u32> = (1..=5).map(|uid| shard_of(uid, 64)).collect();
        assert_eq!(pinned, vec![37, 10, 48, 20, 28]);
        let mut counts = [0u32; 16];
        for uid in 1..=16_000u64 {
            counts[shard_of(uid, 16) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (850..=1150).contains(&c)), "{counts:?}");
    }
}
