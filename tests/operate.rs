//! The operator's commands on real processes: `histflow inspect`, `audit`
//! and `replay` against a service and a job on real Redis, a real
//! Kafka-protocol broker (tansu) and the HBase-compatible server, with
//! users prepared into each verdict. The inspect and audit test runs on
//! one Redis and, in the test command's cluster pass, on a Redis Cluster.

// Tests may unwrap: a failure is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::TestCompat;
use serde_json::{json, Value};

fn topology(http: u16, redis: &str, compat: &TestCompat, topic: &str, payload: &str) -> String {
    common::StackTopology {
        http,
        compat,
        realtime_redis: redis.to_owned(),
        job_redis: Some(redis.to_owned()),
        brokers: common::kafka_brokers(),
        topic,
        payload,
        shutdown_timeout_ms: 20000,
        request_timeout_ms: 5000,
        aggregate_flush_ms: 200,
        realtime_extra: String::new(),
        ingest_extra: String::new(),
    }
    .render()
}

/// Posts one event per (uid, oid), all viewed at `view_at` with `progress`.
async fn post(base: &str, events: &[(u64, u64)], view_at: i64, progress: i64) {
    let events: Vec<Value> = events
        .iter()
        .map(|(uid, oid)| json!({"uid": uid, "business": "archive", "oid": oid, "progress": progress, "view_at": view_at}))
        .collect();
    let answer = reqwest::Client::new().post(format!("{base}/v1/events")).json(&json!({ "events": events })).send().await.unwrap();
    assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
}

/// `histflow <args>` on `topology`: exit code, stdout, stderr.
async fn histflow(topology: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut command = common::histflow();
    // The file's `${ADMIN_ADDR}` must resolve; the commands listen on nothing.
    command.arg(args[0]).arg(topology).args(&args[1..]).env("ADMIN_ADDR", "127.0.0.1:0");
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

async fn inspect(topology: &Path, uid: u64) -> Value {
    let (code, out, err) = histflow(topology, &["inspect", "--uid", &uid.to_string(), "--json"]).await;
    assert_eq!(code, Some(0), "inspect {uid}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|error| panic!("inspect {uid} printed no JSON ({error}): {out}"))
}

/// (item, verdict) of every item of an inspect answer.
fn verdicts(report: &Value) -> Vec<(String, String)> {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| (item["item"].as_str().unwrap().to_owned(), item["verdict"].as_str().unwrap().to_owned()))
        .collect()
}

/// A durable item, one only in HBase (its Redis keys deleted), a cleared
/// business, one pending (the job stopped) and one missing (its record
/// removed from Redis and its cell from the table): `inspect` names each,
/// `audit` passes the others and fails the missing one.
#[tokio::test]
async fn inspect_names_where_each_item_is_and_audit_fails_only_on_a_missing_one_in_ids_mode() {
    verdicts_of_prepared_users("ids").await;
}

/// The same in `full` mode: no shipped references there, so the item
/// written while the job is stopped is pending by the job's lag.
#[tokio::test]
async fn inspect_names_where_each_item_is_and_audit_fails_only_on_a_missing_one_in_full_mode() {
    verdicts_of_prepared_users("full").await;
}

async fn verdicts_of_prepared_users(payload: &str) {
    let redis = common::redis_url();
    let compat = TestCompat::start();
    let http = common::free_port();
    let topo = topology(http, &redis, &compat, &common::unique("inspect"), payload);
    let service = common::start_role(&topo, "service", Some(http)).await;
    let mut job = common::start_role(&topo, "job", None).await;
    let path = service.topology_path();
    let base = common::unique_uid_base();
    let [durable, only_hbase, cleared, pending, missing] = [1u64, 2, 3, 4, 5].map(|n| base + n);
    let view_at = model::now_ms() - 5000;
    post(&service.base, &[(durable, 1), (only_hbase, 1), (cleared, 1), (cleared, 2), (missing, 1)], view_at, 30).await;
    let written: BTreeMap<(u64, String), i64> = [(durable, 1), (only_hbase, 1), (cleared, 1), (cleared, 2), (missing, 1)]
        .into_iter()
        .map(|(uid, oid)| ((uid, format!("archive:{oid}")), view_at))
        .collect();
    if let Err(not_durable) = common::until_durable(&compat, &written).await {
        panic!("{not_durable}");
    }
    // The job stops: what comes next stays pending.
    job.stop(Duration::from_secs(30));

    let mut link = common::redis_connection(&redis).await;
    let keys = |uid: u64| ["t", "r", "m", "p", "s", "k"].map(|suffix| format!("h:{{{uid}}}:{suffix}"));
    let _: i64 = redis::cmd("DEL").arg(&keys(only_hbase)).query_async(&mut link).await.unwrap();
    let answer =
        reqwest::Client::new().delete(format!("{}/v1/users/{cleared}/history?business=archive", service.base)).send().await.unwrap();
    assert_eq!(answer.status(), 204, "{}", answer.text().await.unwrap());
    post(&service.base, &[(pending, 1)], view_at, 40).await;
    let _: i64 = redis::cmd("HDEL").arg(format!("h:{{{missing}}}:r")).arg("archive:1").query_async(&mut link).await.unwrap();
    {
        use hbase_thrift::hbase::THbaseSyncClient;
        let row = model::keys::hbase_row(missing).into_bytes();
        compat.client().delete_all(b"history".to_vec(), row, b"r:archive:1".to_vec(), Default::default()).unwrap();
    }

    let report = inspect(&path, durable).await;
    assert_eq!(verdicts(&report), [("archive:1".to_owned(), "durable".to_owned())], "{report}");
    let item = &report["items"][0];
    assert_eq!(
        (item["redis"]["record"]["view_at"].as_i64(), item["redis"]["record"]["progress"].as_i64()),
        (Some(view_at), Some(30)),
        "{item}"
    );
    assert_eq!((item["hbase"]["view_at"].as_i64(), item["hbase"]["progress"].as_i64()), (Some(view_at), Some(30)), "{item}");
    assert_eq!(report["uid"], durable);
    assert!(report["keys"].as_object().unwrap().contains_key(&format!("h:{{{durable}}}:t")), "{report}");

    let report = inspect(&path, only_hbase).await;
    assert_eq!(verdicts(&report), [("archive:1".to_owned(), "only in HBase".to_owned())], "{report}");
    assert_eq!(report["items"][0]["redis"], Value::Null, "{report}");

    let report = inspect(&path, cleared).await;
    assert_eq!(
        verdicts(&report),
        [("archive:1".to_owned(), "deleted".to_owned()), ("archive:2".to_owned(), "deleted".to_owned())],
        "{report}"
    );
    assert!(report["items"][0]["markers"]["business_cleared_at"].as_i64().is_some_and(|at| at > view_at), "{report}");

    let report = inspect(&path, pending).await;
    assert_eq!(verdicts(&report), [("archive:1".to_owned(), "pending".to_owned())], "{report}");
    assert_eq!(report["items"][0]["hbase"], Value::Null, "{report}");

    let report = inspect(&path, missing).await;
    assert_eq!(verdicts(&report), [("archive:1".to_owned(), "missing".to_owned())], "{report}");

    // The text form names the verdicts too.
    let (code, text, _) = histflow(&path, &["inspect", "--uid", &pending.to_string(), "--item", "archive:1"]).await;
    assert_eq!(code, Some(0));
    assert!(text.contains("archive:1") && text.contains("pending"), "{text}");

    let list = [durable, only_hbase, cleared, pending].map(|uid| uid.to_string()).join(",");
    let (code, out, err) = histflow(&path, &["audit", "--uid", &list]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("4 users"), "{out}");
    let (code, out, err) = histflow(&path, &["audit", "--uid", &missing.to_string()]).await;
    assert_eq!(code, Some(3), "{out}{err}");
    assert!(out.contains(&format!("missing: user {missing} archive:1")), "{out}");
    let (code, out, err) = histflow(&path, &["audit", "--sample", "10", "--json"]).await;
    assert!(matches!(code, Some(0 | 3)), "{out}{err}");
    let sampled: Value = serde_json::from_str(&out).unwrap();
    assert!(sampled["users"].as_u64().unwrap() >= 3, "{sampled}");

    // A topology without the stores the commands read is refused, by name.
    let ingest_only = topo.split("[[stages]]\nname = \"realtime\"").next().unwrap().to_owned()
        + "[[stages]]\nname = \"sink\"\ntype = \"discard\"\ninputs = [\"ingest\"]\n";
    let (dir, bare) = common::temp_file("bare.toml", &ingest_only);
    let (code, _, err) = histflow(&bare, &["inspect", "--uid", "1"]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no `realtime` stage"), "{err}");
    drop(dir);
}

/// The history table lost (truncated): a replay of the topic's range puts
/// every cell back as it was; a second replay writes nothing; a message
/// older than what the table holds is skipped.
#[tokio::test]
async fn replay_restores_a_lost_table_and_changes_nothing_the_second_time() {
    let compat = TestCompat::start();
    let http = common::free_port();
    let topo = topology(http, &common::redis_url(), &compat, &common::unique("replay"), "full");
    let service = common::start_role(&topo, "service", Some(http)).await;
    let _job = common::start_role(&topo, "job", None).await;
    let path = service.topology_path();
    let from = humantime::format_rfc3339_millis(std::time::SystemTime::now() - Duration::from_secs(1)).to_string();
    let base = common::unique_uid_base();
    let view_at = model::now_ms() - 10_000;
    let events: Vec<(u64, u64)> = (0..40).flat_map(|n| [(base + n, 1), (base + n, 2)]).collect();
    post(&service.base, &events, view_at, 12).await;
    let written: BTreeMap<(u64, String), i64> = events.iter().map(|(uid, oid)| ((*uid, format!("archive:{oid}")), view_at)).collect();
    if let Err(not_durable) = common::until_durable(&compat, &written).await {
        panic!("{not_durable}");
    }
    let before = compat.snapshot("history");

    // Lost: the table truncated (cells and delete markers gone).
    {
        use hbase_thrift::hbase::THbaseSyncClient;
        let mut client = compat.client();
        client.disable_table(b"history".to_vec()).unwrap();
        client.delete_table(b"history".to_vec()).unwrap();
    }
    backends::history_table::ThriftTable::new(&compat.address(), "history").ensure_table().unwrap();
    assert!(compat.snapshot("history").is_empty());

    let (code, out, err) = histflow(&path, &["replay", "--from", &from, "--dry-run"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("would write 80"), "{out}");
    assert!(compat.snapshot("history").is_empty(), "a dry run wrote");

    let (code, out, err) = histflow(&path, &["replay", "--from", &from]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("written 80, skipped (the table holds that view or newer) 0"), "{out}");
    assert_eq!(compat.snapshot("history"), before, "the replay did not restore the table as it was");

    let (code, out, err) = histflow(&path, &["replay", "--from", &from]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("written 0, skipped (the table holds that view or newer) 80"), "{out}");
    assert_eq!(compat.snapshot("history"), before, "a second replay changed the table");

    // A newer view of one item: replaying only the older message skips it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let middle = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    tokio::time::sleep(Duration::from_millis(50)).await;
    post(&service.base, &[(base, 1)], view_at + 1000, 99).await;
    let newer: BTreeMap<(u64, String), i64> = [((base, "archive:1".to_owned()), view_at + 1000)].into();
    if let Err(not_durable) = common::until_durable(&compat, &newer).await {
        panic!("{not_durable}");
    }
    let (code, out, err) = histflow(&path, &["replay", "--from", &from, "--to", &middle, "--uid", &base.to_string()]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("written 0, skipped (the table holds that view or newer) 2"), "{out}");
    let cell = compat.snapshot("history")[&(model::keys::hbase_row(base), "r:archive:1".to_owned())].clone();
    assert_eq!(cell.0, view_at + 1000, "the replay put an older view back");
    assert_eq!(model::codec::decode_record(&cell.1).unwrap().progress, 99);
}
