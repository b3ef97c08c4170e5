//! The job role end to end: `histflow run --role job` as a process, real
//! Redis, a real Kafka-protocol broker (tansu), and the project's
//! HBase-compatible server over Thrift in place of HBase.

// Tests may unwrap: a failure is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Histflow, TestCompat};
use model::{codec, keys, Op, Record};
use rdkafka::message::Headers;
use rdkafka::Message as _;
use serde_json::{json, Value};

/// Names one test's topics and group.
struct Names {
    topic: String,
    group: String,
    dead_letters: String,
}

impl Names {
    fn new() -> Self {
        let topic = common::unique("merge");
        Names { group: format!("{topic}-job"), dead_letters: format!("{topic}-dlq"), topic }
    }
}

/// The topology both roles run: the service part and the job part.
fn topology(http: u16, compat: &TestCompat, names: &Names, payload: &str, flush_max_rows: usize, rows_per_second: u32) -> String {
    let (redis, brokers) = (common::redis_url(), common::kafka_brokers());
    let Names { topic, group, dead_letters } = names;
    format!(
        r#"
[pipeline]
shutdown_timeout_ms = 20000
admin_listen = "${{ADMIN_ADDR}}"

[businesses]
archive = {{ id = 1, retention_days = 1 }}

[[stages]]
name = "ingest"
type = "http_ingest"
listen = "127.0.0.1:{http}"

[[stages]]
name = "realtime"
type = "realtime"
inputs = ["ingest"]
redis_url = "{redis}"

[[stages]]
name = "aggregate"
type = "aggregate"
inputs = ["realtime"]
flush_interval_ms = 100

[[stages]]
name = "kafka_batch"
type = "kafka_batch"
inputs = ["aggregate"]
brokers = "{brokers}"
topic = "{topic}"
consumer_group = "{group}"
dead_letter_topic = "{dead_letters}"
consumer_instance_id = "{group}-instance"
payload = "{payload}"
partitions = 4

[[stages]]
name = "persist"
type = "persist"
inputs = ["kafka_batch"]
hbase_thrift = "{compat}"
redis_url = "{redis}"
flush_max_rows = {flush_max_rows}
flush_interval_ms = 200
batch_rows = 50
write_rate_limit = {{ per_second = {rows_per_second}, burst = 3 }}
# These tests write views of 1970, long past archive's retention: no sweep.
retention_sweep = {{ enabled = false }}
"#,
        compat = compat.address()
    )
}

fn record(uid: u64, oid: u64, progress: i64, view_at: i64) -> Record {
    Record { uid, business: "archive".into(), oid, sub_id: None, progress, duration: None, device: None, view_at }
}

/// The cell of `uid`'s `item` in the snapshot: (timestamp, decoded record).
fn cell(snapshot: &BTreeMap<(String, String), (i64, Vec<u8>)>, uid: u64, item: &str) -> Option<(i64, Record)> {
    snapshot.get(&(keys::hbase_row(uid), format!("r:{item}"))).map(|(ts, value)| (*ts, codec::decode_record(value).unwrap()))
}

/// Waits until `done` holds for the compat server's table.
async fn until_table(
    compat: &TestCompat,
    what: &str,
    done: impl Fn(&BTreeMap<(String, String), (i64, Vec<u8>)>) -> bool,
) -> BTreeMap<(String, String), (i64, Vec<u8>)> {
    common::eventually(what, Duration::from_secs(45), async || {
        let snapshot = compat.snapshot("history");
        done(&snapshot).then_some(snapshot)
    })
    .await
}

async fn service_and_job_persist_the_latest_record(payload: &str) {
    let compat = TestCompat::start();
    let names = Names::new();
    let http = common::free_port();
    let topo = topology(http, &compat, &names, payload, 10_000, 100_000);
    let service = common::start_role(&topo, "service", Some(http)).await;
    let mut job = common::start_role(&topo, "job", None).await;
    let client = reqwest::Client::new();
    let uid_base = common::unique_uid_base();
    let start = model::now_ms() - 100_000;

    let mut latest: BTreeMap<(u64, u64), Record> = BTreeMap::new();
    for report in 0..3i64 {
        let mut events: Vec<Value> = Vec::new();
        for user in 0..20u64 {
            for oid in 0..3u64 {
                let latest_record = record(uid_base + user, oid, report * 10, start + report * 1000 + oid as i64);
                events.push(json!({"uid": latest_record.uid, "business": "archive", "oid": oid, "progress": latest_record.progress, "view_at": latest_record.view_at}));
                latest.insert((latest_record.uid, oid), latest_record);
            }
        }
        let response = client.post(format!("{}/v1/events", service.base)).json(&json!({ "events": events })).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }

    let snapshot = until_table(&compat, "every item's latest record in HBase", |snapshot| {
        latest.values().all(|expected| cell(snapshot, expected.uid, &expected.item_key()).is_some_and(|(ts, _)| ts == expected.view_at))
    })
    .await;
    for expected in latest.values() {
        let (timestamp, stored) = cell(&snapshot, expected.uid, &expected.item_key()).unwrap();
        assert_eq!(timestamp, expected.view_at, "cell timestamp = view_at");
        assert_eq!(&stored, expected);
    }
    assert_eq!(job.stop(Duration::from_secs(30)), Some(0), "{}", job.log_text());

    // Replay from offset 0 with a new group: nothing changes.
    let replay_names =
        Names { group: format!("{}-replay", names.group), topic: names.topic.clone(), dead_letters: names.dead_letters.clone() };
    let mut replay = common::start_role(&topology(http, &compat, &replay_names, payload, 10_000, 100_000), "job", None).await;
    // The first job committed the whole topic when it stopped cleanly; the
    // replay has read it all when its group reaches the same offsets.
    let brokers = common::kafka_brokers();
    let ends = common::committed(&brokers, &names.group, &names.topic, 4);
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    loop {
        let committed = common::committed(&brokers, &replay_names.group, &names.topic, 4);
        if committed == ends {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replay did not reach the first job's offsets {ends:?} in 45 s (at {committed:?})\nthe replay:\n{}\nthe service (what it shipped since):\n{}",
            replay.log_text(),
            service.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(replay.stop(Duration::from_secs(30)), Some(0));
    assert_eq!(compat.snapshot("history"), snapshot, "replaying the topic from offset 0 changed HBase");
}

#[tokio::test]
async fn service_and_job_persist_the_latest_record_in_ids_mode_and_replays_change_nothing() {
    service_and_job_persist_the_latest_record("ids").await;
}

#[tokio::test]
async fn service_and_job_persist_the_latest_record_in_full_mode_and_replays_change_nothing() {
    service_and_job_persist_the_latest_record("full").await;
}

/// A job alone, fed by messages the test writes to a one-partition topic.
struct JobOnly {
    compat: TestCompat,
    names: Names,
    job: Histflow,
}

impl JobOnly {
    async fn start(flush_max_rows: usize, rows_per_second: u32) -> Self {
        let compat = TestCompat::start();
        let names = Names::new();
        common::create_topic(&common::kafka_brokers(), &names.topic, 1).await;
        let job =
            common::start_role(&topology(common::free_port(), &compat, &names, "full", flush_max_rows, rows_per_second), "job", None).await;
        JobOnly { compat, names, job }
    }

    async fn send(&self, ops: Vec<Op>) {
        let shard = keys::shard_of(ops[0].uid(), 64);
        for message in codec::encode_merge_batch(shard, &ops, 1 << 20) {
            common::produce(&common::kafka_brokers(), &self.names.topic, &shard.to_string(), &message).await;
        }
    }
}

#[tokio::test]
async fn older_reports_deletes_and_clears_never_resurrect_in_hbase() {
    let job = JobOnly::start(10_000, 100_000).await;
    let uid = common::unique_uid_base();
    let (a, b, c) = (uid, uid + 1, uid + 2);
    job.send(vec![Op::Upsert(record(a, 1, 20, 200)), Op::Upsert(record(a, 1, 10, 100))]).await;
    job.send(vec![Op::Delete { uid: b, item: "archive:1".into(), at: 300 }, Op::Upsert(record(b, 1, 25, 250))]).await;
    job.send(vec![Op::Upsert(record(c, 1, 50, 500)), Op::Clear { uid: c, business: None, at: 600 }, Op::Upsert(record(c, 2, 55, 550))])
        .await;
    // Sentinels, sent last: a newer view after the delete, and after the clear.
    job.send(vec![Op::Upsert(record(b, 1, 35, 350)), Op::Upsert(record(c, 3, 70, 700))]).await;

    // A window's rows go out in concurrent calls (one per timestamp), so
    // a sentinel in the table says nothing of another row of its window:
    // the wait covers user a's row as well (its first write is already
    // the folded one, so waiting for it hides nothing the test checks).
    let snapshot = until_table(&job.compat, "the sentinels and user a's row", |snapshot| {
        cell(snapshot, b, "archive:1").is_some_and(|(ts, _)| ts == 350)
            && cell(snapshot, c, "archive:3").is_some()
            && cell(snapshot, a, "archive:1").is_some()
    })
    .await;
    assert_eq!(cell(&snapshot, a, "archive:1").map(|(ts, r)| (ts, r.progress)), Some((200, 20)), "an older report never hides a newer one");
    assert_eq!(cell(&snapshot, c, "archive:1"), None, "cleared");
    assert_eq!(cell(&snapshot, c, "archive:2"), None, "an older write after a clear stays hidden");
    assert_eq!(snapshot.keys().filter(|(row, _)| *row == keys::hbase_row(c)).count(), 1, "only the view after the clear is visible");
}

#[tokio::test]
async fn a_business_clear_deletes_only_that_business_in_hbase_and_older_reports_stay_hidden() {
    let job = JobOnly::start(10_000, 100_000).await;
    let uid = common::unique_uid_base();
    let of = |business: &str, oid, view_at| Op::Upsert(Record { business: business.into(), ..record(uid, oid, 1, view_at) });
    let clear = Op::Clear { uid, business: Some("pgc".into()), at: 600 };
    job.send(vec![of("pgc", 1, 500), of("archive", 1, 400)]).await;
    until_table(&job.compat, "the first views", |snapshot| cell(snapshot, uid, "pgc:1").is_some()).await;
    // The clear meets a column already in HBase (pgc:1) and one its own
    // window writes (pgc:2, older than the clear).
    job.send(vec![of("pgc", 2, 550), clear, of("archive", 2, 450)]).await;
    until_table(&job.compat, "the clear", |snapshot| cell(snapshot, uid, "pgc:1").is_none()).await;
    // Written after the clear is durable: an older view of a cleared item,
    // then (the sentinel) a newer view of the business.
    job.send(vec![of("pgc", 1, 590)]).await;
    job.send(vec![of("pgc", 3, 700)]).await;
    let snapshot = until_table(&job.compat, "the sentinel", |snapshot| cell(snapshot, uid, "pgc:3").is_some()).await;
    let row = keys::hbase_row(uid);
    let visible: Vec<&str> = snapshot.keys().filter(|(r, _)| *r == row).map(|(_, column)| column.as_str()).collect();
    assert_eq!(visible, vec!["r:archive:1", "r:archive:2", "r:pgc:3"], "only the other business and the newer view are visible");
}

#[tokio::test]
async fn an_undecodable_message_goes_to_dead_letters_and_later_ones_persist() {
    let job = JobOnly::start(10_000, 100_000).await;
    let brokers = common::kafka_brokers();
    common::produce(&brokers, &job.names.topic, "0", b"\xff\xfe not a merge batch").await;
    let uid = common::unique_uid_base();
    // Well-formed, but no service sends a view before 1970: HBase would
    // keep a negative cell timestamp for good.
    job.send(vec![Op::Upsert(record(uid + 1, 9, 1, -1000))]).await;
    job.send(vec![Op::Upsert(record(uid, 9, 1, 1000))]).await;

    until_table(&job.compat, "the message after the bad ones", |snapshot| cell(snapshot, uid, "archive:9").is_some()).await;
    assert!(cell(&job.compat.snapshot("history"), uid + 1, "archive:9").is_none(), "a negative view reached the table");
    let dead = common::consumer(&brokers, &job.names.dead_letters);
    let mut reasons = Vec::new();
    common::read_until(&dead, "both dead letters", Duration::from_secs(30), |message| {
        let reason =
            message.headers().and_then(|headers| headers.iter().find(|h| h.key == "reason").and_then(|h| h.value.map(<[u8]>::to_vec)));
        reasons.push(String::from_utf8_lossy(&reason.unwrap_or_default()).into_owned());
        reasons.len() == 2
    })
    .await;
    assert!(reasons[0].contains("not a valid MergeBatch"), "{reasons:?}");
    assert!(reasons[1].contains("merge op 0 is not valid: time -1000"), "{reasons:?}");
}

#[tokio::test]
async fn a_job_killed_mid_batch_catches_up_to_the_same_state() {
    // Small windows written slowly (20 rows/s), so the job is killed
    // between its writes.
    let mut job = JobOnly::start(3, 20).await;
    let uid_base = common::unique_uid_base();
    let mut expected = BTreeMap::new();
    for user in 0..60u64 {
        let ops: Vec<Op> = (0..2u64).map(|oid| Op::Upsert(record(uid_base + user, oid, user as i64, 1000 + user as i64))).collect();
        for op in &ops {
            if let Op::Upsert(r) = op {
                expected.insert((r.uid, r.item_key()), r.view_at);
            }
        }
        job.send(ops).await;
    }
    until_table(&job.compat, "some rows written before the kill", |snapshot| !snapshot.is_empty()).await;
    job.job.kill();
    let compat_before = job.compat.snapshot("history").len();
    let restarted = common::start_role(&topology(common::free_port(), &job.compat, &job.names, "full", 3, 20), "job", None).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    let snapshot = loop {
        let snapshot = job.compat.snapshot("history");
        if expected.iter().all(|((uid, item), &view_at)| cell(&snapshot, *uid, item).is_some_and(|(ts, _)| ts == view_at)) {
            break snapshot;
        }
        if std::time::Instant::now() >= deadline {
            let missing: Vec<u64> =
                expected.keys().filter(|(uid, item)| cell(&snapshot, *uid, item).is_none()).map(|(uid, _)| uid - uid_base).collect();
            let committed = common::committed(&common::kafka_brokers(), &job.names.group, &job.names.topic, 1);
            panic!(
                "not every row within 45 s of the restart ({} of {} cells); missing users {missing:?}; committed {committed:?}\n{}",
                snapshot.len(),
                expected.len(),
                restarted.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(compat_before < expected.len(), "the kill came too late to be mid-batch ({compat_before} of {} cells)", expected.len());
    assert_eq!(snapshot.len(), expected.len(), "exactly the expected cells, nothing else");
    drop(restarted);
}

/// What a held-back job's metrics said at the end.
struct HeldBack {
    /// Offsets dropped because the group took a partition away.
    dropped: f64,
    /// Times the consumer paused its partitions.
    pauses: f64,
}

/// One window of 500 rows written at 20 rows/s keeps persist from reading
/// for about 25 s while the edge to it (10 events) is full, longer than
/// max.poll.interval.ms (20 s); `hold_max_bytes` is the consumer's
/// read-ahead. Every row lands and every message is committed.
async fn held_back_for_25_s(hold_max_bytes: usize) -> HeldBack {
    let compat = TestCompat::start();
    let names = Names::new();
    let brokers = common::kafka_brokers();
    common::create_topic(&brokers, &names.topic, 1).await;
    let topo = topology(common::free_port(), &compat, &names, "full", 500, 20)
        .replace("inputs = [\"kafka_batch\"]", "inputs = [{ from = \"kafka_batch\", capacity = 10 }]")
        .replace("type = \"kafka_batch\"\n", &format!("type = \"kafka_batch\"\nhold_max_bytes = {hold_max_bytes}\n"));
    let job = JobOnly { job: common::start_role(&topo, "job", None).await, compat, names };
    let uid_base = common::unique_uid_base();
    let mut expected = BTreeMap::new();
    let mut batches: Vec<Vec<Op>> = vec![(0..500).map(|user| Op::Upsert(record(uid_base + user, 1, 1, 1000))).collect()];
    batches.extend((0..3).map(|batch| (0..20).map(|user| Op::Upsert(record(uid_base + 500 + batch * 20 + user, 1, 1, 1000))).collect()));
    let mut messages = 0;
    for ops in batches {
        for op in &ops {
            if let Op::Upsert(r) = op {
                expected.insert((r.uid, r.item_key()), r.view_at);
            }
        }
        messages += codec::encode_merge_batch(0, &ops, 1 << 20).len() as i64;
        job.send(ops).await;
    }
    let mut job = job;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let snapshot = job.compat.snapshot("history");
        if expected.iter().all(|((uid, item), &view_at)| cell(&snapshot, *uid, item).is_some_and(|(ts, _)| ts == view_at)) {
            break;
        }
        assert!(job.job.is_running(), "the job exited:\n{}", job.job.log_text());
        assert!(std::time::Instant::now() < deadline, "not every row within 120 s ({} cells)\n{}", snapshot.len(), job.job.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(job.job.is_running(), "the job exited:\n{}", job.job.log_text());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let committed = common::committed(&brokers, &job.names.group, &job.names.topic, 1);
        if committed == [messages] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not every message committed within 60 s: committed {committed:?} of {messages}\n{}",
            job.job.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = reqwest::get(format!("{}/metrics", job.job.base)).await.unwrap().text().await.unwrap();
    let metrics = ingest_http::admin::stats::Exposition::parse(&metrics);
    HeldBack {
        dropped: metrics.sum("histflow_kafka_lost_partition_offsets_total", &[]).unwrap_or_default(),
        pauses: metrics.sum("histflow_kafka_consumer_pauses_total", &[]).unwrap_or_default(),
    }
}

#[tokio::test]
async fn a_job_held_back_past_the_poll_interval_keeps_polling_its_group_and_writes_everything() {
    // The consumer reads ahead and holds what it cannot hand on yet, so it
    // keeps polling and the group never takes its partition away: no
    // offset is dropped.
    let held = held_back_for_25_s(64 * 1024 * 1024).await;
    assert_eq!(held.dropped, 0.0, "the group took the partition away from a consumer that kept polling");
}

#[tokio::test]
async fn a_job_held_back_past_the_poll_interval_without_read_ahead_pauses_keeps_its_partition_and_writes_everything() {
    // No read-ahead: the consumer has no room while a batch waits for the
    // full edge, so it pauses its partition and polls on, and the group
    // keeps it for the whole 25 s. (When it stopped polling instead, the
    // group dropped it after max.poll.interval.ms, 20 s, and on tansu the
    // static member's rejoin could wedge the group: the test then failed
    // about one run in three on a loaded machine, every row written and
    // nothing more committed for a minute.)
    let held = held_back_for_25_s(0).await;
    assert!(held.pauses > 0.0, "the consumer never paused, so this test did not hold it back past its read-ahead");
    assert_eq!(held.dropped, 0.0, "the group took the partition away from a paused consumer that kept polling");
}

#[tokio::test]
async fn two_jobs_share_the_partitions_and_the_survivor_of_a_kill_writes_everything() {
    let compat = TestCompat::start();
    let names = Names::new();
    let brokers = common::kafka_brokers();
    common::create_topic(&brokers, &names.topic, 4).await;
    // Dynamic members; small windows written slowly, so the kill lands
    // mid-stream.
    let instance = |id: &str| {
        topology(common::free_port(), &compat, &names, "full", 5, 200).replace(
            &format!("consumer_instance_id = \"{}-instance\"", names.group),
            &format!("consumer_instance_id = \"{}-{id}\"", names.group),
        )
    };
    let mut doomed = common::start_role(&instance("a"), "job", None).await;
    let survivor = common::start_role(&instance("b"), "job", None).await;
    let uid_base = common::unique_uid_base();
    let mut expected = BTreeMap::new();
    let mut sent_messages = 0;
    for batch in 0..40u64 {
        let ops: Vec<Op> = (0..10).map(|user| Op::Upsert(record(uid_base + batch * 10 + user, 1, 1, 1000 + batch as i64))).collect();
        for op in &ops {
            if let Op::Upsert(r) = op {
                expected.insert((r.uid, r.item_key()), r.view_at);
            }
        }
        // Spread over the four partitions by key.
        let shard = (batch % 4) as u32;
        for message in codec::encode_merge_batch(shard, &ops, 1 << 20) {
            common::produce(&brokers, &names.topic, &shard.to_string(), &message).await;
            sent_messages += 1;
        }
        if batch == 20 {
            // Both have written something by now: the kill is mid-stream.
            until_table(&compat, "rows from before the kill", |snapshot| snapshot.len() >= 50).await;
            doomed.kill();
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let snapshot = compat.snapshot("history");
        if expected.iter().all(|((uid, item), &view_at)| cell(&snapshot, *uid, item).is_some_and(|(ts, _)| ts == view_at)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the survivor did not write everything within 90 s ({} of {} cells, {sent_messages} messages sent)\n{}",
            snapshot.len(),
            expected.len(),
            survivor.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = reqwest::get(format!("{}/metrics", survivor.base)).await.unwrap().text().await.unwrap();
    let rejoins = ingest_http::admin::stats::Exposition::parse(&metrics).sum("histflow_kafka_group_rejoins_total", &[]);
    eprintln!("the survivor rejoined its group {rejoins:?} time(s) to take the orphaned partitions");
}

#[tokio::test]
async fn a_compat_server_outage_is_retried_and_nothing_is_committed_meanwhile() {
    let mut job = JobOnly::start(10_000, 100_000).await;
    let brokers = common::kafka_brokers();
    let uid = common::unique_uid_base();
    job.send(vec![Op::Upsert(record(uid, 0, 1, 1000))]).await;
    until_table(&job.compat, "the first record", |snapshot| cell(snapshot, uid, "archive:0").is_some()).await;
    let committed_before = common::eventually("the first offset committed", Duration::from_secs(20), async || {
        let committed = common::committed(&brokers, &job.names.group, &job.names.topic, 1)[0];
        (committed == 1).then_some(committed)
    })
    .await;

    job.compat.kill();
    for oid in 1..=10u64 {
        job.send(vec![Op::Upsert(record(uid, oid, 1, 1000 + oid as i64))]).await;
    }
    let metrics_url = format!("{}/metrics", job.job.base);
    common::eventually("persist to retry the failing writes", Duration::from_secs(30), async || {
        let text = reqwest::get(&metrics_url).await.ok()?.text().await.ok()?;
        text.lines().any(|line| line.starts_with("histflow_persist_retries_total") && !line.ends_with(" 0")).then_some(())
    })
    .await;
    assert_eq!(
        common::committed(&brokers, &job.names.group, &job.names.topic, 1)[0],
        committed_before,
        "nothing may be committed while HBase is down"
    );

    job.compat.restart();
    until_table(&job.compat, "all ten records after the outage", |snapshot| {
        (1..=10).all(|oid| cell(snapshot, uid, &format!("archive:{oid}")).is_some())
    })
    .await;
    common::eventually("the offsets to catch up", Duration::from_secs(20), async || {
        (common::committed(&brokers, &job.names.group, &job.names.topic, 1)[0] == 11).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_row_the_table_rejects_goes_to_dead_letters_and_the_rest_persists() {
    use hbase_thrift::hbase::{ColumnDescriptor, THbaseSyncClient};
    // A table without family m: the pause flag can never be written there.
    let compat = TestCompat::start();
    let only_r = ColumnDescriptor { name: Some(b"r:".to_vec()), max_versions: Some(1), ..ColumnDescriptor::default() };
    compat.client().create_table(b"history".to_vec(), vec![only_r]).unwrap();
    let names = Names::new();
    let brokers = common::kafka_brokers();
    common::create_topic(&brokers, &names.topic, 1).await;
    let _job = common::start_role(&topology(common::free_port(), &compat, &names, "full", 10_000, 100_000), "job", None).await;

    let (kept, refused) = (common::unique_uid_base(), common::unique_uid_base() + 1);
    let ops = vec![Op::Upsert(record(kept, 4, 1, 1000)), Op::SetRecording { uid: refused, paused: true, at: 2000 }];
    for message in codec::encode_merge_batch(0, &ops, 1 << 20) {
        common::produce(&brokers, &names.topic, "0", &message).await;
    }

    until_table(&compat, "the record the table accepts", |snapshot| cell(snapshot, kept, "archive:4").is_some()).await;
    let dead = common::consumer(&brokers, &names.dead_letters);
    common::read_until(&dead, "the rejected row on the dead-letter topic", Duration::from_secs(30), |message| {
        let reason =
            message.headers().and_then(|headers| headers.iter().find(|h| h.key == "reason").and_then(|h| h.value.map(<[u8]>::to_vec)));
        let reason = String::from_utf8_lossy(&reason.unwrap_or_default()).into_owned();
        let (_, ops) = codec::decode_merge_batch(common::payload(message)).unwrap();
        assert_eq!(ops, vec![Op::SetRecording { uid: refused, paused: true, at: 2000 }], "the dead letter replays the refused row");
        assert!(reason.contains("has no family"), "{reason}");
        true
    })
    .await;
    common::eventually("the message committed past the rejection", Duration::from_secs(20), async || {
        (common::committed(&brokers, &names.group, &names.topic, 1)[0] == 1).then_some(())
    })
    .await;
}
