//! The HBase retention sweep of the job role, on real processes: the
//! HBase-compatible server over Thrift and Redis (the sweep's lock and
//! place). The table is filled through the Thrift client directly, with
//! views older than their business's retention (ingest would refuse them).

// Tests may unwrap: a failure is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use backends::history_table::{RowMutation, ThriftTable};
use common::{Histflow, TestCompat};
use model::{codec, keys, Record};

const DAY: i64 = 86_400_000;
/// Rows in the table; the sweep scans them 50 a step at 400 rows/s, so a
/// pass takes about 4 s.
const USERS: u64 = 1_600;

/// The job role, sweeping always, slowly, with a 2 s lease.
fn topology(compat: &TestCompat, table: &str, topic: &str) -> String {
    let (redis, brokers) = (common::redis_url(), common::kafka_brokers());
    format!(
        r#"
[pipeline]
admin_listen = "${{ADMIN_ADDR}}"

[businesses]
archive = {{ id = 1, retention_days = 30 }}
live = {{ id = 2, retention_days = 1 }}

[[stages]]
name = "ingest"
type = "http_ingest"
listen = "127.0.0.1:{ingest}"

[[stages]]
name = "realtime"
type = "realtime"
inputs = ["ingest"]
redis_url = "{redis}"

[[stages]]
name = "aggregate"
type = "aggregate"
inputs = ["realtime"]

[[stages]]
name = "kafka_batch"
type = "kafka_batch"
inputs = ["aggregate"]
brokers = "{brokers}"
topic = "{topic}"
consumer_group = "{topic}-job"
partitions = 1

[[stages]]
name = "persist"
type = "persist"
inputs = ["kafka_batch"]
hbase_thrift = "{compat}"
table = "{table}"
redis_url = "{redis}"
retention_sweep = {{ hours = [0, 24], step_rows = 50, rows_per_second = 400, lock_ttl_s = 2 }}
"#,
        ingest = common::free_port(),
        compat = compat.address()
    )
}

fn cell(uid: u64, business: &str, oid: u64, view_at: i64) -> (String, i64, Vec<u8>) {
    let record = Record { uid, business: business.into(), oid, sub_id: None, progress: 1, duration: None, device: None, view_at };
    (format!("r:{business}:{oid}"), view_at, codec::encode_record(&record))
}

/// Each user: a `live` view two days old (past live's one day), a fresh
/// `live` view, and an `archive` view two days old (within its 30).
async fn fill(compat: &TestCompat, table: &str, base: u64) {
    let table = ThriftTable::new(&compat.address(), table);
    let writer = table.clone();
    tokio::task::spawn_blocking(move || writer.ensure_table()).await.unwrap().unwrap();
    let now = model::now_ms();
    let rows: Vec<RowMutation> = (base..base + USERS)
        .map(|uid| RowMutation {
            row: keys::hbase_row(uid),
            puts: vec![cell(uid, "live", 1, now - 2 * DAY), cell(uid, "live", 2, now - 3_600_000), cell(uid, "archive", 3, now - 2 * DAY)],
            column_deletes: Vec::new(),
        })
        .collect();
    for chunk in rows.chunks(400) {
        table.mutate_rows(chunk.to_vec()).await.unwrap();
    }
}

/// How many cells of each item the table shows: (live:1, live:2, archive:3).
fn counts(compat: &TestCompat, table: &str) -> (usize, usize, usize) {
    let snapshot = compat.snapshot(table);
    let count = |column: &str| snapshot.keys().filter(|(_, c)| c == column).count();
    (count("r:live:1"), count("r:live:2"), count("r:archive:3"))
}

async fn examined(job: &Histflow) -> f64 {
    common::metric(job, "histflow_sweep_rows_examined_total").await.unwrap_or(0.0)
}

#[tokio::test]
async fn the_sweep_deletes_only_views_past_their_retention_and_one_killed_mid_pass_resumes_and_finishes() {
    let compat = TestCompat::start();
    let table = common::unique("history");
    fill(&compat, &table, common::unique_uid_base()).await;
    let users = USERS as usize;
    assert_eq!(counts(&compat, &table), (users, users, users));
    let topic = common::unique("sweep");
    common::create_topic(&common::kafka_brokers(), &topic, 1).await;
    let topology = topology(&compat, &table, &topic);

    // A first job sweeps part of the table and is SIGKILLed mid-pass.
    let mut first = common::start_role(&topology, "job", None).await;
    common::eventually("the first job a quarter through", Duration::from_secs(60), async || {
        (examined(&first).await >= USERS as f64 / 4.0).then_some(())
    })
    .await;
    first.kill();
    let (expired_left, _, _) = counts(&compat, &table);
    assert!(expired_left > 0 && expired_left < users, "killed mid-pass: {expired_left} of {users} expired views left");

    // A second job takes the lock once the first's lease lapses, goes on
    // from where the first left off, and finishes the pass.
    let second = common::start_role(&topology, "job", None).await;
    common::eventually("the second job to finish the pass", Duration::from_secs(60), async || {
        (common::metric(&second, "histflow_sweep_passes_total").await? >= 1.0).then_some(())
    })
    .await;
    let again = examined(&second).await;
    assert!(again < USERS as f64 * 0.9, "the second job examined {again} of {USERS} rows: it started the pass over instead of resuming");
    assert_eq!(counts(&compat, &table), (0, users, users), "expired live views gone; fresh live and archive views kept");
}
