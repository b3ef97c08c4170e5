//! The user-state rules on a real Redis (`record.lua`) and in the embedded
//! store (`rules.rs`), driven through the same scenario: both must answer
//! the same statuses. Needs the Redis at `REDIS_URL` (scripts/test.sh
//! starts one).

// Tests may unwrap: a failure is the point.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use backends::user_state::{
    CallShape, EmbeddedStore, EventWrite, Link, RedisStore, Status, UserStore, UserWrite, WriteParams, NOT_RECORDED, RECORDED,
    RECORDED_FIRST_TODAY, TRIMMED_AT_ONCE,
};

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A connection for the tests' own commands: to one Redis, or to a
/// cluster when `REDIS_URL` lists its seeds.
fn direct() -> Link {
    Link::connect_lazy(&redis_url(), false).unwrap()
}

/// A uid no other run has written.
fn fresh_uid() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    nanos % 1_000_000_000_000 + 1
}

fn write(uid: u64, events: &[(&str, i64)]) -> Vec<UserWrite> {
    let events = events.iter().map(|(item, view_at)| EventWrite { item: (*item).to_owned(), view_at: *view_at, record: vec![1] }).collect();
    vec![UserWrite { uid, events }]
}

/// Takes `uids`' marks and re-drive index entries away at the end of a
/// test. The suite shares its Redis with the service suites, and on a
/// cluster every service's re-drive looks at every slot's index: a mark a
/// test here left would be shipped, 30 s later, into whatever merge topic
/// that service writes (`tests/job.rs`'s replay saw it as messages no
/// report of its own made).
async fn forget_marks(uids: impl IntoIterator<Item = u64>, shards: u32) {
    let mut connection = direct();
    let cluster = connection.is_cluster();
    for uid in uids {
        let () = redis::cmd("DEL").arg(model::keys::pending(uid)).query_async(&mut connection).await.map(drop::<i64>).unwrap();
        for index in [model::keys::user_pending_index(uid, shards, cluster), model::keys::pending_index(model::keys::shard_of(uid, shards))]
        {
            let () = redis::cmd("ZREM").arg(index).arg(uid).query_async(&mut connection).await.map(drop::<i64>).unwrap();
        }
    }
}

/// Forgets a test user's marks when the test ends, passed or failed: a
/// failed test's marks left behind would be re-driven into the merge
/// topic of another suite's service (see [`forget_marks`]).
struct ForgetMarks {
    uid: u64,
    shards: u32,
}

impl Drop for ForgetMarks {
    fn drop(&mut self) {
        let (uid, shards) = (self.uid, self.shards);
        // Its own thread and runtime: a drop cannot await, and may run
        // inside the test's runtime.
        let forgotten = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(forget_marks([uid], shards))
        });
        let _ = forgotten.join();
    }
}

/// Each step: events, today, and the statuses both stores must answer.
type Step = (&'static [(&'static str, i64)], i64, &'static [Status]);

#[tokio::test]
async fn redis_and_the_embedded_store_agree_on_trims_and_first_watches() {
    // Two items kept per user.
    let steps: [Step; 5] = [
        (&[("a:1", 10), ("a:2", 20)], 1, &[RECORDED_FIRST_TODAY, RECORDED]),
        // Older and equal views never win.
        (&[("a:1", 9), ("a:2", 20)], 1, &[NOT_RECORDED, NOT_RECORDED]),
        // A backdated view of a full timeline is trimmed by its own write:
        // recorded (HBase will hold it), and said to be trimmed at once so
        // its record travels whole.
        (&[("a:0", 5), ("a:3", 30)], 2, &[RECORDED_FIRST_TODAY + TRIMMED_AT_ONCE, RECORDED]),
        (&[("a:9", 1)], 3, &[RECORDED_FIRST_TODAY + TRIMMED_AT_ONCE]),
        (&[("a:4", 40)], 3, &[RECORDED]),
    ];
    let redis = UserStore::Redis(RedisStore::connect_lazy(&redis_url(), CallShape { cluster: false, max_events: 128 }).unwrap());
    let embedded = UserStore::Embedded(Arc::new(EmbeddedStore::default()));
    let uid = fresh_uid();
    for (index, (events, today, expected)) in steps.into_iter().enumerate() {
        let params = WriteParams { max_items: 2, ttl_s: 3600, today, now_ms: 1_000 + index as i64, shards: 4, marks: false };
        for (name, store) in [("redis", &redis), ("embedded", &embedded)] {
            let statuses = store.write(&write(uid, events), params).await.unwrap();
            assert_eq!(statuses, vec![expected.to_vec()], "{name}, step {index}");
        }
    }
    let kept = redis.read_records(&[(uid, vec!["a:0".into(), "a:3".into(), "a:4".into(), "a:9".into()])]).await.unwrap();
    assert_eq!(kept, vec![vec![None, Some(vec![1]), Some(vec![1]), None]]);
}

/// On a cluster, users are grouped by the node serving them, a call over
/// several slots of one node. A call grouped by an out-of-date node map
/// meets a key another node serves; it must have written nothing then
/// (`record.lua` reads every user before writing any), so the users sent
/// again by slot are each applied once: every event answers recorded.
/// (On one Redis there is no map: the same write, one call.)
#[tokio::test]
async fn a_write_grouped_by_an_out_of_date_node_map_is_applied_once() {
    let store = RedisStore::connect_lazy(&redis_url(), CallShape { cluster: false, max_events: 128 }).unwrap();
    store.link().pretend_one_node();
    let first = fresh_uid();
    // 100 users: on three masters, two thirds are not where the map says.
    let users: Vec<UserWrite> = (first..first + 100).flat_map(|uid| write(uid, &[("a:1", 10), ("a:2", 20)])).collect();
    let params = WriteParams { max_items: 10, ttl_s: 600, today: 1, now_ms: model::now_ms(), shards: 4, marks: true };
    let statuses = UserStore::Redis(store).write(&users, params).await.unwrap();
    let expected: Vec<Vec<Status>> = vec![vec![RECORDED_FIRST_TODAY, RECORDED]; 100];
    assert_eq!(statuses, expected, "a user written by the refused call was written again");
    forget_marks(first..first + 100, params.shards).await;
}

/// A fresh user on the test Redis, with its marks' keys and the write
/// parameters that keep marks.
struct MarksCase {
    store: UserStore,
    uid: u64,
    shard: u32,
    /// The shard whose re-drive looks at the user's index.
    looked_at_by: u32,
    marks: Marks,
    params: WriteParams,
}

impl MarksCase {
    fn new() -> Self {
        let store = UserStore::Redis(RedisStore::connect_lazy(&redis_url(), CallShape { cluster: false, max_events: 128 }).unwrap());
        let uid = fresh_uid();
        // So many shards that this user's index holds nobody else's marks.
        let shards = u32::MAX;
        let shard = model::keys::shard_of(uid, shards);
        let connection = direct();
        let cluster = connection.is_cluster();
        let marks = Marks { uid, index: model::keys::user_pending_index(uid, shards, cluster), connection };
        let params = WriteParams { max_items: 10, ttl_s: 3600, today: 1, now_ms: model::now_ms(), shards, marks: true };
        let looked_at_by = model::keys::redrive_shard_of(uid, shards, cluster);
        MarksCase { store, uid, shard, looked_at_by, marks, params }
    }
}

/// The keys of a user's marks.
struct Marks {
    connection: Link,
    uid: u64,
    index: String,
}

impl Marks {
    async fn fields(&mut self) -> Vec<String> {
        let mut fields: Vec<String> =
            redis::cmd("HKEYS").arg(model::keys::pending(self.uid)).query_async(&mut self.connection).await.unwrap();
        fields.sort();
        fields
    }
    /// The pending marks' fields.
    async fn pending(&mut self) -> Vec<String> {
        self.fields().await.into_iter().filter(|field| model::keys::is_pending_mark(field)).collect()
    }
    /// The items of the shipped references.
    async fn shipped(&mut self) -> Vec<String> {
        self.fields().await.into_iter().filter_map(|field| Some(model::keys::shipped_item(&field)?.to_owned())).collect()
    }
    /// Whether every pending mark was marked (or last claimed) more than
    /// `ms` ago by Redis's clock (`marks.lua`: value `version,marked_at`).
    async fn all_older_than(&mut self, ms: i64) -> bool {
        let held: Vec<(String, String)> =
            redis::cmd("HGETALL").arg(model::keys::pending(self.uid)).query_async(&mut self.connection).await.unwrap();
        let (seconds, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut self.connection).await.unwrap();
        let now_ms = seconds * 1000 + micros / 1000;
        held.iter()
            .filter(|(field, _)| model::keys::is_pending_mark(field))
            .all(|(_, value)| value.split(',').nth(1).and_then(|at| at.parse::<i64>().ok()).is_some_and(|at| at < now_ms - ms))
    }
    async fn indexed(&mut self) -> bool {
        let score: Option<f64> = redis::cmd("ZSCORE").arg(&self.index).arg(self.uid).query_async(&mut self.connection).await.unwrap();
        score.is_some()
    }
}

fn record(uid: u64, oid: u64, view_at: i64) -> model::Record {
    model::Record { uid, business: "a".into(), oid, sub_id: None, progress: 1, duration: None, device: None, view_at }
}

#[tokio::test]
async fn marks_are_settled_by_what_a_delivery_carried_and_stale_ones_are_claimed_once() {
    use model::{codec, Op};
    let MarksCase { store, uid, looked_at_by, mut marks, params, .. } = MarksCase::new();
    let _forget = ForgetMarks { uid, shards: params.shards };
    let write = |events: Vec<model::Record>| UserWrite {
        uid,
        events: events.iter().map(|r| EventWrite { item: r.item_key(), view_at: r.view_at, record: codec::encode_record(r) }).collect(),
    };
    store.write(&[write(vec![record(uid, 1, 10), record(uid, 2, 20)])], params).await.unwrap();
    assert_eq!(marks.pending().await, ["a:1", "a:2"]);
    assert!(marks.indexed().await);

    // A delivered reference ships a:1 (the job must still read it); a
    // delivery of an older view of a:2 settles nothing.
    store.settle(&[Op::UpsertRef { uid, item: "a:1".into(), view_at: 10 }, Op::Upsert(record(uid, 2, 19))]).await.unwrap();
    assert_eq!(marks.pending().await, ["a:2"]);
    assert_eq!(marks.shipped().await, ["a:1"]);
    // A newer view of a:1 is marked again; so is a delete.
    store.write(&[write(vec![record(uid, 1, 15)])], params).await.unwrap();
    store.mutate(&[&Op::Delete { uid, item: "a:3".into(), at: 5 }], params).await.unwrap();
    assert_eq!(marks.pending().await, ["a:1", "a:2", "~del|a:3"]);

    // Once all are older than the grace (by Redis's clock, which stamps
    // them), the first look that claims anything claims them all: the
    // records whole, and the delete; a second pass within the grace
    // claims nothing. (Looking while only some were due would claim
    // those, and claim them again a grace later, before the last came
    // due: on a cluster a pass looks at this slot every eighth time.)
    let grace_ms = 200;
    eventually(async || marks.all_older_than(grace_ms).await.then_some(())).await;
    let claimed = eventually(async || {
        let ops = store.redrive(looked_at_by, params.shards, grace_ms, 16).await.unwrap().ops;
        (!ops.is_empty()).then_some(ops)
    })
    .await;
    let mut shipped: Vec<String> = claimed
        .iter()
        .map(|op| match op {
            Op::Upsert(r) => format!("{}@{}", r.item_key(), r.view_at),
            Op::Delete { item, at, .. } => format!("delete {item}@{at}"),
            other => format!("{other:?}"),
        })
        .collect();
    shipped.sort();
    assert_eq!(shipped, ["a:1@15", "a:2@20", "delete a:3@5"]);
    assert_eq!(store.redrive(looked_at_by, params.shards, grace_ms, 16).await.unwrap().items, 0, "claimed twice within the grace");

    // Their delivery settles everything; the user stays indexed until its
    // next look finds no mark left.
    store.settle(&claimed).await.unwrap();
    assert!(marks.pending().await.is_empty());
    assert!(marks.indexed().await, "a settle took the user out of its index");
    unindexed_by_its_next_look(&store, looked_at_by, params.shards, &mut marks).await;
    // a:1 was shipped as a reference at view 10, and a:1@15 delivered
    // whole since; a reference the job must still read survives a trim:
    // ship a:2 as a reference, then push it out of the full timeline.
    store.write(&[write(vec![record(uid, 2, 25)])], params).await.unwrap();
    store.settle(&[Op::UpsertRef { uid, item: "a:2".into(), view_at: 25 }]).await.unwrap();
    store.write(&[write((100..110).map(|oid| record(uid, oid, 1000 + oid as i64)).collect())], params).await.unwrap();
    let read = |store: &UserStore| {
        let store = store.clone();
        async move { store.read_records(&[(uid, vec!["a:2".into()])]).await.unwrap().remove(0).remove(0) }
    };
    let kept = read(&store).await.expect("a trimmed reference the job has not written is kept");
    assert_eq!(codec::decode_record(&kept).unwrap().view_at, 25);
    // The job's write releases the references it read; the kept copy goes.
    store.release_written(&[(uid, vec![("a:1".into(), 10), ("a:2".into(), 25)])]).await.unwrap();
    assert!(marks.shipped().await.is_empty());
    assert_eq!(read(&store).await, None);
}

#[tokio::test]
async fn a_delete_or_a_business_clear_takes_the_shipped_references_it_hides() {
    use model::{codec, Op};
    let MarksCase { store, uid, looked_at_by, mut marks, params, .. } = MarksCase::new();
    let _forget = ForgetMarks { uid, shards: params.shards };
    let events = [record(uid, 1, 10), record(uid, 2, 20), model::Record { business: "b".into(), ..record(uid, 3, 30) }];
    let write = UserWrite {
        uid,
        events: events.iter().map(|r| EventWrite { item: r.item_key(), view_at: r.view_at, record: codec::encode_record(r) }).collect(),
    };
    store.write(&[write], params).await.unwrap();
    let refs: Vec<Op> = events.iter().map(|r| Op::UpsertRef { uid, item: r.item_key(), view_at: r.view_at }).collect();
    store.settle(&refs).await.unwrap();
    assert_eq!(marks.shipped().await, ["a:1", "a:2", "b:3"]);
    // Shipped references alone keep no user in the re-drive index.
    assert!(marks.pending().await.is_empty());
    unindexed_by_its_next_look(&store, looked_at_by, params.shards, &mut marks).await;

    store.mutate(&[&Op::Delete { uid, item: "a:1".into(), at: 11 }], params).await.unwrap();
    assert_eq!(marks.shipped().await, ["a:2", "b:3"]);
    store.mutate(&[&Op::Clear { uid, business: Some("a".into()), at: 21 }], params).await.unwrap();
    assert_eq!(marks.shipped().await, ["b:3"]);
    // What is left to ship is the two mutations.
    assert_eq!(marks.pending().await, ["~clear|a", "~del|a:1"]);
    assert!(marks.indexed().await);
}

/// Looks at the user's index (a re-drive with no grace) until a user with
/// no mark left is out of it: a settle leaves it there (`settle.lua`), and
/// on a cluster a pass looks at a part of the slots at a time.
async fn unindexed_by_its_next_look(store: &UserStore, looked_at_by: u32, shards: u32, marks: &mut Marks) {
    eventually(async || {
        let redriven = store.redrive(looked_at_by, shards, 0, 16).await.unwrap();
        assert!(redriven.ops.iter().all(|op| op.uid() != marks.uid), "a look claimed a mark of a settled user: {:?}", redriven.ops);
        (!marks.indexed().await).then_some(())
    })
    .await;
}

/// Polls `check` every 20 ms until it answers, for at most 10 s.
async fn eventually<T>(mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(std::time::Instant::now() < deadline, "nothing became due within 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_pause_does_not_expire_while_the_user_is_paused() {
    use model::Op;
    let store = UserStore::Redis(RedisStore::connect_lazy(&redis_url(), CallShape { cluster: false, max_events: 128 }).unwrap());
    let mut connection = direct();
    let uid = fresh_uid();
    let params = WriteParams { max_items: 10, ttl_s: 3600, today: 1, now_ms: 1_000, shards: 4, marks: false };
    let ttl = async |connection: &mut Link| -> i64 { redis::cmd("TTL").arg(model::keys::meta(uid)).query_async(connection).await.unwrap() };
    store.write(&write(uid, &[("a:1", 10)]), params).await.unwrap();
    assert!(ttl(&mut connection).await > 0, "a user's meta expires after inactivity");

    store.mutate(&[&Op::SetRecording { uid, paused: true, at: 20 }], params).await.unwrap();
    assert_eq!(ttl(&mut connection).await, -1, "the pause would lapse with the meta's expiry");
    // Nothing a paused user does gives it an expiry back.
    assert_eq!(store.write(&write(uid, &[("a:2", 30)]), params).await.unwrap(), vec![vec![NOT_RECORDED]]);
    store.mutate(&[&Op::Delete { uid, item: "a:1".into(), at: 40 }, &Op::Clear { uid, business: None, at: 50 }], params).await.unwrap();
    assert_eq!(ttl(&mut connection).await, -1);

    store.mutate(&[&Op::SetRecording { uid, paused: false, at: 60 }], params).await.unwrap();
    assert!(ttl(&mut connection).await > 0, "a resumed user's meta expires again");
}

#[tokio::test]
async fn redis_and_the_embedded_store_agree_on_clears_by_business() {
    use model::Op;
    let redis = UserStore::Redis(RedisStore::connect_lazy(&redis_url(), CallShape { cluster: false, max_events: 128 }).unwrap());
    let embedded = UserStore::Embedded(Arc::new(EmbeddedStore::default()));
    let mut connection = direct();
    let uid = fresh_uid();
    let params = WriteParams { max_items: 10, ttl_s: 3600, today: 1, now_ms: 1_000, shards: 4, marks: true };
    let clear = |business: &str, at| Op::Clear { uid, business: Some(business.to_owned()), at };
    for (name, store) in [("redis", &redis), ("embedded", &embedded)] {
        store.write(&write(uid, &[("pgc:1", 10), ("pgc:2", 40), ("archive:1", 50), ("comic:1", 20)]), params).await.unwrap();
        // Each clear moves past its own business's newest view only.
        let effective = store.mutate(&[&clear("pgc", 30), &clear("comic", 15)], params).await.unwrap();
        assert_eq!(effective, vec![40, 20], "{name}");
        assert_eq!(store.whole_timeline(uid).await.unwrap(), vec![("archive:1".to_owned(), 50)], "{name}");
        // A late older view of a cleared business stays hidden, a newer one
        // comes back; another business's old view is recorded.
        let late = [("pgc:1", 40), ("pgc:2", 41), ("archive:2", 1), ("comic:1", 20), ("comic:1", 21)];
        let statuses = store.write(&write(uid, &late), params).await.unwrap();
        assert_eq!(statuses, vec![vec![NOT_RECORDED, RECORDED, RECORDED, NOT_RECORDED, RECORDED]], "{name}");
        // What hides HBase's copies: the business's clear, or an item's
        // own delete.
        let (_, markers) = store.meta_and_markers(uid, &["pgc:1".into(), "archive:1".into(), "comic:9".into()]).await.unwrap();
        assert_eq!(markers, vec![Some(40), None, Some(20)], "{name}");
    }
    // In Redis the cleared items' pending marks gave way to the clears'.
    let fields: Vec<String> = redis::cmd("HKEYS").arg(model::keys::pending(uid)).query_async(&mut connection).await.unwrap();
    let pending: std::collections::BTreeSet<String> = fields.into_iter().filter(|field| field != model::keys::PENDING_KEEPER).collect();
    let expected = ["archive:1", "archive:2", "comic:1", "pgc:2", "~clear|comic", "~clear|pgc"];
    assert_eq!(pending, expected.into_iter().map(str::to_owned).collect());
    forget_marks([uid], params.shards).await;
}

#[tokio::test]
async fn keys_made_anew_later_the_same_day_expire_at_one_instant() {
    use model::Op;
    let store = UserStore::Redis(RedisStore::connect_lazy(&redis_url(), CallShape { cluster: false, max_events: 128 }).unwrap());
    let mut connection = direct();
    let uid = fresh_uid();
    let params = WriteParams { max_items: 10, ttl_s: 3600, today: 1, now_ms: 1_000, shards: 4, marks: true };
    let user_keys = [model::keys::timeline(uid), model::keys::records(uid), model::keys::meta(uid)];
    // The expiry of each key, ms (-1: none, -2: no key).
    async fn expiries(connection: &mut Link, keys: &[String]) -> Vec<i64> {
        let mut found = Vec::new();
        for key in keys {
            found.push(redis::cmd("PEXPIRETIME").arg(key).query_async(connection).await.unwrap());
        }
        found
    }
    store.write(&write(uid, &[("a:1", 10)]), params).await.unwrap();
    let first = expiries(&mut connection, &user_keys).await;
    assert!(first[0] > 0 && first.iter().all(|at| *at == first[0]), "one instant for timeline, records and meta: {first:?}");

    // A clear drops the timeline and the records; the next write the same
    // day (no first watch of the day to refresh them) makes them anew.
    store.mutate(&[&Op::Clear { uid, business: None, at: 20 }], params).await.unwrap();
    assert_eq!(store.write(&write(uid, &[("a:2", 30)]), params).await.unwrap(), vec![vec![RECORDED]]);
    let again = expiries(&mut connection, &user_keys).await;
    assert!(again[0] > 0 && again.iter().all(|at| *at == again[0]), "keys made anew expire, at one instant: {again:?}");
    let pending: i64 = redis::cmd("PTTL").arg(model::keys::pending(uid)).query_async(&mut connection).await.unwrap();
    assert!(pending > 0, "a pending hash made anew expires: {pending}");

    // An item deleted down to an empty timeline, then a new one.
    store.mutate(&[&Op::Delete { uid, item: "a:2".into(), at: 40 }], params).await.unwrap();
    assert_eq!(store.write(&write(uid, &[("a:3", 50)]), params).await.unwrap(), vec![vec![RECORDED]]);
    let after_delete = expiries(&mut connection, &user_keys).await;
    assert!(after_delete[0] > 0 && after_delete.iter().all(|at| *at == after_delete[0]), "{after_delete:?}");
    forget_marks([uid], params.shards).await;
}

#[tokio::test]
async fn a_newer_view_of_a_kept_record_drops_the_kept_copy() {
    let store = UserStore::Redis(RedisStore::connect_lazy(&redis_url(), CallShape { cluster: false, max_events: 128 }).unwrap());
    let mut connection = direct();
    let uid = fresh_uid();
    // One item kept per user, marks on: a record trimmed while pending is
    // kept in h:{uid}:k.
    let params = WriteParams { max_items: 1, ttl_s: 3600, today: 1, now_ms: 1_000, shards: 4, marks: true };
    let kept = async |connection: &mut Link| -> Vec<String> {
        let mut items: Vec<String> = redis::cmd("HKEYS").arg(model::keys::kept(uid)).query_async(connection).await.unwrap();
        items.sort();
        items
    };
    store.write(&write(uid, &[("a:1", 10)]), params).await.unwrap();
    store.write(&write(uid, &[("a:2", 20)]), params).await.unwrap();
    assert_eq!(kept(&mut connection).await, ["a:1"], "a:1 trimmed while pending");
    // a:1 again, newer: recorded, it trims a:2 (kept in turn), and its
    // older kept copy is superseded.
    assert_eq!(store.write(&write(uid, &[("a:1", 30)]), params).await.unwrap(), vec![vec![RECORDED]]);
    assert_eq!(kept(&mut connection).await, ["a:2"]);
    forget_marks([uid], params.shards).await;
}

#[tokio::test]
async fn a_record_kept_while_pending_leaves_k_when_delivered_whole_even_after_a_claim() {
    use model::codec;
    let MarksCase { store, uid, looked_at_by, mut marks, mut params, .. } = MarksCase::new();
    let _forget = ForgetMarks { uid, shards: params.shards };
    params.max_items = 1;
    let write = |r: model::Record| UserWrite {
        uid,
        events: vec![EventWrite { item: r.item_key(), view_at: r.view_at, record: codec::encode_record(&r) }],
    };
    store.write(&[write(record(uid, 1, 10))], params).await.unwrap();
    store.write(&[write(record(uid, 2, 20))], params).await.unwrap();
    let kept = async |marks: &mut Marks| -> Vec<String> {
        let mut items: Vec<String> = redis::cmd("HKEYS").arg(model::keys::kept(uid)).query_async(&mut marks.connection).await.unwrap();
        items.sort();
        items
    };
    assert_eq!(kept(&mut marks).await, ["a:1"], "a:1 trimmed while pending");
    // A re-drive claims both (stamping them anew), as a killed instance's.
    let mut claimed = Vec::new();
    eventually(async || {
        claimed.extend(store.redrive(looked_at_by, params.shards, 100, 16).await.unwrap().ops);
        (claimed.len() >= 2).then_some(())
    })
    .await;
    // Delivered whole: the marks go, and with a:1's mark its kept copy.
    store.settle(&claimed).await.unwrap();
    assert!(marks.pending().await.is_empty());
    assert!(kept(&mut marks).await.is_empty(), "the kept copy of a record delivered whole stays behind");
    unindexed_by_its_next_look(&store, looked_at_by, params.shards, &mut marks).await;
}

#[tokio::test]
async fn the_pending_hash_outlives_its_marks_and_always_expires() {
    use model::{codec, Op};
    let MarksCase { store, uid, looked_at_by, mut marks, params, .. } = MarksCase::new();
    let _forget = ForgetMarks { uid, shards: params.shards };
    let pttl = async |marks: &mut Marks| -> i64 {
        redis::cmd("PTTL").arg(model::keys::pending(uid)).query_async(&mut marks.connection).await.unwrap()
    };
    let write = |r: &model::Record| UserWrite {
        uid,
        events: vec![EventWrite { item: r.item_key(), view_at: r.view_at, record: codec::encode_record(r) }],
    };
    // The day's first write made without marks (a topology that keeps
    // none, reloaded since): the next write makes the hash, past the
    // first write of the day that renews the user's expiries.
    store.write(&[write(&record(uid, 9, 5))], WriteParams { marks: false, ..params }).await.unwrap();
    let first = record(uid, 1, 10);
    store.write(&[write(&first)], params).await.unwrap();
    assert!(pttl(&mut marks).await > 0, "a pending hash made by a write expires");
    assert!(marks.indexed().await);
    // Settled: no mark left, and out of the index at its next look, but
    // the hash stays (its keeper), still expiring, so the next mark needs
    // no expiry of its own.
    store.settle(&[Op::Upsert(first)]).await.unwrap();
    assert!(marks.pending().await.is_empty());
    unindexed_by_its_next_look(&store, looked_at_by, params.shards, &mut marks).await;
    assert_eq!(marks.fields().await, [model::keys::PENDING_KEEPER]);
    // Its index (this user's alone) stays too, kept by a member no user is.
    let index: Vec<String> = redis::cmd("ZRANGE").arg(&marks.index).arg(0).arg(-1).query_async(&mut marks.connection).await.unwrap();
    assert_eq!(index, [model::keys::INDEX_KEEPER], "the re-drive index went with its last user");
    assert!(pttl(&mut marks).await > 0);
    store.write(&[write(&record(uid, 2, 20))], params).await.unwrap();
    assert_eq!(marks.pending().await, ["a:2"]);
    assert!(marks.indexed().await, "a mark in a hash kept in being indexes its user again");
    assert!(pttl(&mut marks).await > 0);
    // A clear drops the hash and marks itself; the next write restores
    // the keeper, and the hash still expires.
    store.mutate(&[&Op::Clear { uid, business: None, at: 30 }], params).await.unwrap();
    store.write(&[write(&record(uid, 3, 40))], params).await.unwrap();
    assert_eq!(marks.pending().await, ["a:3", "~clear"]);
    assert!(pttl(&mut marks).await > 0);
}

#[tokio::test]
async fn a_nothing_more_note_is_made_only_in_a_known_user_never_trimmed_alike_in_redis_and_embedded() {
    let redis = UserStore::Redis(RedisStore::connect_lazy(&redis_url(), CallShape { cluster: false, max_events: 128 }).unwrap());
    let embedded = UserStore::Embedded(Arc::new(EmbeddedStore::default()));
    for (name, store) in [("redis", redis), ("embedded", embedded)] {
        let params = WriteParams { max_items: 2, ttl_s: 3600, today: 1, now_ms: 1_000, shards: 4, marks: false };
        let noted = async |uid: u64| -> (bool, bool) {
            let (meta, _) = store.meta_and_markers(uid, &[]).await.unwrap();
            (meta.exists, meta.hbase_checked_at == Some(5_000))
        };
        // A user the store knows nothing of: no state is made.
        let unknown = fresh_uid();
        store.mark_hbase_checked(unknown, 5_000).await.unwrap();
        assert_eq!(noted(unknown).await, (false, false), "{name}: a read made state");
        // A user never trimmed is noted.
        let uid = fresh_uid();
        store.write(&write(uid, &[("a:1", 10)]), params).await.unwrap();
        store.mark_hbase_checked(uid, 5_000).await.unwrap();
        assert_eq!(noted(uid).await, (true, true), "{name}");
        let (meta, _) = store.meta_and_markers(uid, &[]).await.unwrap();
        assert!(!meta.hbase_may_hold_more(5_000) && meta.hbase_may_hold_more(5_000 + backends::user_state::NOTE_LIFETIME_MS));
        // Once trimmed, no note is trusted, nor made again.
        store.write(&write(uid, &[("a:2", 20), ("a:3", 30)]), params).await.unwrap();
        let (meta, _) = store.meta_and_markers(uid, &[]).await.unwrap();
        assert!(meta.trimmed && meta.hbase_may_hold_more(5_000), "{name}: a trimmed user's note is trusted");
        let trimmed = fresh_uid();
        store.write(&write(trimmed, &[("a:1", 10), ("a:2", 20), ("a:3", 30)]), params).await.unwrap();
        store.mark_hbase_checked(trimmed, 5_000).await.unwrap();
        assert_eq!(noted(trimmed).await, (true, false), "{name}: a trimmed user was noted");
    }
}

#[tokio::test]
async fn a_lowered_limit_trims_on_the_first_write_of_a_day_without_a_new_item() {
    let store = UserStore::Redis(RedisStore::connect_lazy(&redis_url(), CallShape { cluster: false, max_events: 128 }).unwrap());
    let mut connection = direct();
    let uid = fresh_uid();
    let params = WriteParams { max_items: 3, ttl_s: 3600, today: 1, now_ms: 1_000, shards: 4, marks: false };
    store.write(&write(uid, &[("a:1", 10), ("a:2", 20), ("a:3", 30)]), params).await.unwrap();
    // The limit lowered to 2 (a reload), and the next day a newer view of
    // an item the timeline already holds.
    let lowered = WriteParams { max_items: 2, today: 2, ..params };
    assert_eq!(store.write(&write(uid, &[("a:3", 40)]), lowered).await.unwrap(), vec![vec![RECORDED_FIRST_TODAY]]);
    let members: Vec<String> =
        redis::cmd("ZRANGE").arg(model::keys::timeline(uid)).arg(0).arg(-1).query_async(&mut connection).await.unwrap();
    assert_eq!(members, ["a:2", "a:3"]);
}

/// On a cluster a user's marks are indexed in its slot's index; a build
/// before that indexed them in the shard's. A user left only there (its
/// marks made by the older build, never settled) is still re-driven, and
/// leaves the shard's index once nothing is pending. On one Redis the two
/// are the same index, and the same holds.
#[tokio::test]
async fn a_user_only_in_its_shards_index_is_re_driven_from_there_and_leaves_it() {
    use model::{codec, keys, Op};
    let MarksCase { store, uid, shard, mut marks, params, .. } = MarksCase::new();
    let _forget = ForgetMarks { uid, shards: params.shards };
    let first = record(uid, 1, 10);
    let write = UserWrite { uid, events: vec![EventWrite { item: first.item_key(), view_at: 10, record: codec::encode_record(&first) }] };
    store.write(&[write], params).await.unwrap();
    assert!(marks.indexed().await);
    // What an older build left: the user in its shard's index alone.
    let shard_index = keys::pending_index(shard);
    let () = redis::cmd("ZREM").arg(&marks.index).arg(uid).query_async(&mut marks.connection).await.map(drop::<i64>).unwrap();
    let () = redis::cmd("ZADD").arg(&shard_index).arg(1).arg(uid).query_async(&mut marks.connection).await.map(drop::<i64>).unwrap();
    let in_shard_index = async |marks: &mut Marks| -> bool {
        let score: Option<f64> = redis::cmd("ZSCORE").arg(&shard_index).arg(uid).query_async(&mut marks.connection).await.unwrap();
        score.is_some()
    };
    let claimed = eventually(async || {
        let ops = store.redrive(shard, params.shards, 0, 16).await.unwrap().ops;
        (!ops.is_empty()).then_some(ops)
    })
    .await;
    assert!(matches!(&claimed[..], [Op::Upsert(shipped)] if shipped.view_at == 10), "{claimed:?}");
    assert!(in_shard_index(&mut marks).await, "a claimed user stays indexed until its marks are settled");
    store.settle(&claimed).await.unwrap();
    assert!(marks.pending().await.is_empty());
    // With nothing pending, the next look lets the user go.
    eventually(async || {
        store.redrive(shard, params.shards, 0, 16).await.unwrap();
        (!in_shard_index(&mut marks).await).then_some(())
    })
    .await;
    assert!(!marks.indexed().await);
}

/// A mutation's mark indexes its user in the same step, in the index the
/// user's writes use.
#[tokio::test]
async fn a_mutation_indexes_its_user_where_its_writes_do() {
    use model::Op;
    let MarksCase { store, uid, looked_at_by, mut marks, params, .. } = MarksCase::new();
    let _forget = ForgetMarks { uid, shards: params.shards };
    store.mutate(&[&Op::Delete { uid, item: "a:1".into(), at: 5 }], params).await.unwrap();
    assert_eq!(marks.pending().await, ["~del|a:1"]);
    assert!(marks.indexed().await, "a mutation's mark left its user out of the re-drive index");
    let claimed = eventually(async || {
        let ops = store.redrive(looked_at_by, params.shards, 0, 16).await.unwrap().ops;
        (!ops.is_empty()).then_some(ops)
    })
    .await;
    assert!(matches!(&claimed[..], [Op::Delete { item, .. }] if item == "a:1"), "{claimed:?}");
    store.settle(&claimed).await.unwrap();
    unindexed_by_its_next_look(&store, looked_at_by, params.shards, &mut marks).await;
}
