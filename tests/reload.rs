//! Topology reloads on real processes: twenty reloads under load (edge
//! capacities, a rate limit, aggregate shards, a `discard` branch added and
//! removed, a new persist window) with Redis, the tansu broker and the
//! HBase-compatible server; an invalid edit refused by every trigger; auth
//! tokens replaced in place; a business registered under `--embedded`
//! under load, rebuilding no stage.

// Tests may unwrap: a failure is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::load::{Load, Shape as LoadShape};
use common::{Histflow, TestCompat};
use hbase_compat::store::{ColumnFilter, Store};
use serde_json::{json, Value};

/// A named edit of the shape.
type Edit = (&'static str, fn(&mut Shape));

/// One shape of the reloaded topology.
#[derive(Clone, Copy)]
struct Shape {
    realtime_capacity: usize,
    aggregate_rate: u32,
    shards: usize,
    tap: bool,
    persist_window_ms: u64,
}

fn stack_topology(http: u16, compat: &TestCompat, topic: &str, shape: Shape) -> String {
    let Shape { realtime_capacity, aggregate_rate, shards, tap, persist_window_ms } = shape;
    let (redis, brokers, compat) = (common::redis_url(), common::kafka_brokers(), compat.address());
    let tap =
        if tap { "\n[[stages]]\nname = \"tap\"\ntype = \"discard\"\ninputs = [{ from = \"aggregate\", capacity = 1000 }]\n" } else { "" };
    format!(
        r#"
[pipeline]
shutdown_timeout_ms = 20000

[businesses]
archive = {{ id = 1, retention_days = 1 }}

[[stages]]
name = "ingest"
type = "http_ingest"
listen = "127.0.0.1:{http}"

[[stages]]
name = "realtime"
type = "realtime"
inputs = [{{ from = "ingest", capacity = {realtime_capacity}, when_full = "reject" }}]
redis_url = "{redis}"

[[stages]]
name = "aggregate"
type = "aggregate"
inputs = ["realtime"]
rate_limit = {{ per_second = {aggregate_rate} }}
shards = {shards}
flush_interval_ms = 300

[[stages]]
name = "kafka_batch"
type = "kafka_batch"
inputs = ["aggregate"]
brokers = "{brokers}"
topic = "{topic}"
consumer_group = "{topic}-job"
dead_letter_topic = "{topic}-dlq"
payload = "ids"
partitions = 2

[[stages]]
name = "persist"
type = "persist"
inputs = ["kafka_batch"]
hbase_thrift = "{compat}"
redis_url = "{redis}"
flush_interval_ms = {persist_window_ms}
{tap}"#
    )
}

/// Writes `text` as the process's topology file in one step (a rename).
fn rewrite(process: &Histflow, text: &str) {
    let path = process.topology_path();
    let staged = path.with_extension("new");
    std::fs::write(&staged, text).unwrap();
    std::fs::rename(&staged, &path).unwrap();
}

async fn topology_status(process: &Histflow) -> Value {
    reqwest::get(format!("{}/admin/topology", process.base)).await.unwrap().json().await.unwrap()
}

async fn reload_via_api(process: &Histflow) -> (u16, Value) {
    let answer = reqwest::Client::new().post(format!("{}/admin/reload", process.base)).send().await.unwrap();
    (answer.status().as_u16(), answer.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_reloads_under_load_refuse_no_connection_and_lose_nothing() {
    let compat = TestCompat::start();
    let http = common::free_port();
    let topic = common::unique("reload");
    let mut shape = Shape { realtime_capacity: 4096, aggregate_rate: 1_000_000, shards: 16, tap: false, persist_window_ms: 200 };
    let process = Histflow::start(&stack_topology(http, &compat, &topic, shape), http, &["--role", "all"]).await;

    let load = Load::start(&process.base, LoadShape { clients: 4, events_per_request: 10, users: 300, pace: Duration::ZERO });
    let count = || load.count();
    common::eventually("load before the first reload", Duration::from_secs(30), async || (count() >= 1000).then_some(())).await;

    // Tunable and structural edits, alternating.
    let edits: [Edit; 20] = [
        ("capacity 1024", |shape| shape.realtime_capacity = 1024),
        ("aggregate shards 8", |shape| shape.shards = 8),
        ("aggregate rate 200000/s", |shape| shape.aggregate_rate = 200_000),
        ("add a discard branch", |shape| shape.tap = true),
        ("capacity 16384", |shape| shape.realtime_capacity = 16384),
        ("remove the discard branch", |shape| shape.tap = false),
        ("aggregate rate 1000000/s", |shape| shape.aggregate_rate = 1_000_000),
        ("persist window 500 ms", |shape| shape.persist_window_ms = 500),
        ("capacity 2048", |shape| shape.realtime_capacity = 2048),
        ("aggregate shards 4", |shape| shape.shards = 4),
        ("aggregate rate 300000/s", |shape| shape.aggregate_rate = 300_000),
        ("add a discard branch", |shape| shape.tap = true),
        ("capacity 8192", |shape| shape.realtime_capacity = 8192),
        ("remove the discard branch", |shape| shape.tap = false),
        ("aggregate rate 900000/s", |shape| shape.aggregate_rate = 900_000),
        ("persist window 150 ms", |shape| shape.persist_window_ms = 150),
        ("capacity 4096", |shape| shape.realtime_capacity = 4096),
        ("aggregate shards 16", |shape| shape.shards = 16),
        ("aggregate rate 1000000/s", |shape| shape.aggregate_rate = 1_000_000),
        ("persist window 200 ms", |shape| shape.persist_window_ms = 200),
    ];
    let mut structural = 0;
    for (index, (edit, apply)) in edits.iter().enumerate() {
        apply(&mut shape);
        rewrite(&process, &stack_topology(http, &compat, &topic, shape));
        let before = count();
        let (status, answer) = reload_via_api(&process).await;
        assert_eq!((status, answer["result"].as_str()), (200, Some("applied")), "reload {index} ({edit}): {answer}");
        let changes = &answer["changes"];
        if ["started", "rebuilt", "retired"].iter().any(|kind| !changes[kind].as_array().unwrap().is_empty()) {
            structural += 1;
        }
        assert_eq!(topology_status(&process).await["version"], json!(index as u64 + 2), "reload {index} ({edit})");
        // The load goes on between reloads.
        common::eventually(&format!("load after reload {index} ({edit})"), Duration::from_secs(30), async || {
            (count() >= before + 200).then_some(())
        })
        .await;
    }
    load.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let acknowledged = load.acknowledged();
    common::all_durable(&compat, &acknowledged).await;
    let outcomes = &load.outcomes;
    let (ok, unavailable, other_statuses, connection_errors) = (
        outcomes.ok.load(Ordering::Relaxed),
        outcomes.unavailable.load(Ordering::Relaxed),
        outcomes.other_statuses.load(Ordering::Relaxed),
        outcomes.connection_errors.load(Ordering::Relaxed),
    );
    println!("20 reloads ({structural} structural): {ok} requests answered 200, {unavailable} answered 503, {} items acknowledged and all in HBase", acknowledged.len());
    assert_eq!(connection_errors, 0, "requests failed on the connection:\n{}", process.log_text());
    assert_eq!(other_statuses, 0, "answers other than 200 and 503");
    assert!(structural >= 8, "only {structural} reloads rebuilt, started or retired a stage");
    assert_eq!(common::metric(&process, "histflow_reload_total").await, Some(20.0));

    // New endpoints that do not answer refuse the reload before anything
    // changes.
    let unreachable = stack_topology(http, &compat, &topic, shape)
        .replace(&format!("redis_url = \"{}\"", common::redis_url()), "redis_url = \"redis://127.0.0.1:1\"")
        .replace(&format!("hbase_thrift = \"{}\"", compat.address()), "hbase_thrift = \"127.0.0.1:1\"");
    rewrite(&process, &unreachable);
    let (status, answer) = reload_via_api(&process).await;
    assert_eq!((status, answer["result"].as_str()), (422, Some("rejected")), "{answer}");
    let problems = answer["problems"].to_string();
    assert!(problems.contains("Redis at redis://127.0.0.1:1") && problems.contains("through 127.0.0.1:1"), "{problems}");
    assert_eq!(topology_status(&process).await["version"], json!(21));
    assert_eq!(post_event(&process.base, None).await, 200, "the running topology still serves");
}

/// A topology run `--embedded` (no services), with `extra` in the
/// realtime stage and `auth` as its `[auth]` section.
fn embedded_topology(http: u16, data: &std::path::Path, extra: &str, auth: &str) -> String {
    format!(
        r#"
[businesses]
archive = {{ id = 1, retention_days = 1 }}
{auth}
[[stages]]
name = "ingest"
type = "http_ingest"
listen = "127.0.0.1:{http}"

[[stages]]
name = "realtime"
type = "realtime"
inputs = ["ingest"]
redis_url = "redis://unused"
{extra}

[[stages]]
name = "aggregate"
type = "aggregate"
inputs = ["realtime"]

[[stages]]
name = "kafka_batch"
type = "kafka_batch"
inputs = ["aggregate"]
brokers = "unused:9092"
topic = "merge"
consumer_group = "job"

[[stages]]
name = "persist"
type = "persist"
inputs = ["kafka_batch"]
hbase_thrift = "unused:9090"
embedded_data_dir = "{data}"
"#,
        data = data.display()
    )
}

async fn post_event(base: &str, token: Option<&str>) -> u16 {
    let event = json!({"events": [{"uid": 7, "business": "archive", "oid": 1, "progress": 1, "view_at": model::now_ms() - 1000}]});
    let mut request = reqwest::Client::new().post(format!("{base}/v1/events")).json(&event);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn an_invalid_edit_is_refused_by_every_trigger_with_all_its_problems_and_the_old_topology_keeps_serving() {
    let data = tempfile::tempdir().unwrap();
    let http = common::free_port();
    let good = embedded_topology(http, data.path(), "", "");
    let process = Histflow::start(&good, http, &["--embedded", "--watch"]).await;
    let before = topology_status(&process).await;
    // An unknown field and a cycle (aggregate reads what it feeds).
    let bad = embedded_topology(http, data.path(), "bogus_setting = 1", "")
        .replace("inputs = [\"realtime\"]", "inputs = [\"realtime\", \"kafka_batch\"]");
    let problems_of = |answer: &Value| {
        answer["problems"].as_array().unwrap().iter().map(|problem| problem.as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    let both = |problems: &[String]| {
        problems.iter().any(|problem| problem.contains("unknown field `bogus_setting`"))
            && problems.iter().any(|problem| problem.contains("cyclic dependency"))
    };
    let rejected = async || common::metric(&process, "histflow_reload_total").await.unwrap_or(0.0);

    // --watch: the rewritten file.
    rewrite(&process, &bad);
    let last = common::eventually("the watcher to refuse the edit", Duration::from_secs(20), async || {
        let status = topology_status(&process).await;
        (status["last_reload"]["trigger"] == "watch").then_some(status["last_reload"].clone())
    })
    .await;
    assert_eq!(last["result"], "rejected");
    assert!(both(&problems_of(&last)), "{last}");

    // POST /admin/reload.
    let (status, answer) = reload_via_api(&process).await;
    assert_eq!((status, answer["result"].as_str()), (422, Some("rejected")), "{answer}");
    assert!(both(&problems_of(&answer)), "{answer}");

    // histflow reload.
    let output = common::histflow().args(["reload", "--url", &process.base]).output().unwrap();
    let (stdout, stderr) = common::texts(&output);
    assert_eq!(output.status.code(), Some(2), "{stdout}{stderr}");
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    assert!(both(&problems_of(&answer)), "{answer}");

    // SIGHUP.
    common::signal(process.pid().unwrap(), "HUP");
    common::eventually("SIGHUP's refusal", Duration::from_secs(20), async || {
        let status = topology_status(&process).await;
        (status["last_reload"]["trigger"] == "SIGHUP").then_some(())
    })
    .await;

    let after = topology_status(&process).await;
    assert_eq!(after["last_reload"]["result"], "rejected");
    assert!(both(&problems_of(&after["last_reload"])), "{after}");
    assert_eq!((&after["version"], &after["hash"], &after["nodes"]), (&before["version"], &before["hash"], &before["nodes"]));
    assert_eq!(rejected().await, 4.0, "histflow_reload_total{{result=\"rejected\"}}");
    assert!(process.log_text().matches("topology reload refused").count() >= 4, "{}", process.log_text());
    assert_eq!(post_event(&process.base, None).await, 200, "the old topology still serves");
}

#[tokio::test]
async fn a_removed_token_stops_working_at_once_and_a_new_one_works_at_once() {
    let data = tempfile::tempdir().unwrap();
    let http = common::free_port();
    // An application client (default scopes: write, read, mutate) and an
    // operator with the admin scope.
    let clients = |token: &str| {
        format!("[[auth.clients]]\nname = \"app\"\ntoken = \"{token}\"\n\n[[auth.clients]]\nname = \"ops\"\ntoken = \"ops-token-0123456789\"\nscopes = [\"admin\"]\n")
    };
    let process = Histflow::start(&embedded_topology(http, data.path(), "", &clients("old-token-0123456789")), http, &["--embedded"]).await;
    assert_eq!(post_event(&process.base, Some("old-token-0123456789")).await, 200);
    assert_eq!(post_event(&process.base, Some("new-token-0123456789")).await, 401);
    assert_eq!(post_event(&process.base, Some("ops-token-0123456789")).await, 403, "an admin-only token reported a view");

    rewrite(&process, &embedded_topology(http, data.path(), "", &clients("new-token-0123456789")));
    // The reload itself needs the admin scope in the running topology.
    let reload = |token: Option<&'static str>| {
        let mut request = reqwest::Client::new().post(format!("{}/admin/reload", process.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(reload(None).await.unwrap().status().as_u16(), 401);
    assert_eq!(reload(Some("old-token-0123456789")).await.unwrap().status().as_u16(), 403, "a write-scoped token reloaded");
    let status: Value = reqwest::get(format!("{}/admin/topology", process.base)).await.unwrap().json().await.unwrap_or(Value::Null);
    assert!(status.get("nodes").is_none(), "the topology was shown without a token: {status}");
    let answer = reload(Some("ops-token-0123456789")).await.unwrap();
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["result"], "applied", "{answer}");
    assert_eq!(answer["changes"]["reconfigured"], json!(["ingest"]), "{answer}");
    // The very next requests.
    assert_eq!(post_event(&process.base, Some("old-token-0123456789")).await, 401);
    assert_eq!(post_event(&process.base, Some("new-token-0123456789")).await, 200);
}

#[tokio::test]
async fn under_watch_an_invalid_first_file_waits_for_a_valid_one_instead_of_exiting() {
    let data = tempfile::tempdir().unwrap();
    let http = common::free_port();
    let good = embedded_topology(http, data.path(), "", "");
    let (dir, path) = common::temp_file("topology.toml", &good.replace("type = \"aggregate\"", "type = \"aggregator\""));
    let log = std::fs::File::create(dir.path().join("histflow.log")).unwrap();
    let child = common::histflow()
        .args(["run", "--embedded", "--watch"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut process = common::Owned(child);
    let log_text = || std::fs::read_to_string(dir.path().join("histflow.log")).unwrap_or_default();
    common::eventually("the problem printed", Duration::from_secs(20), async || {
        log_text().contains("unknown stage type `aggregator`").then_some(())
    })
    .await;
    assert!(matches!(process.0.try_wait(), Ok(None)), "histflow exited on a bad first file under --watch:\n{}", log_text());
    assert!(!common::tcp_open(http), "nothing may run before the file is valid");

    std::fs::write(&path, &good).unwrap();
    common::eventually("the pipeline to start on the valid file", Duration::from_secs(20), async || {
        let ready = reqwest::get(format!("http://127.0.0.1:{http}/readyz")).await.ok()?;
        (ready.status() == 200).then_some(())
    })
    .await;
    assert_eq!(post_event(&format!("http://127.0.0.1:{http}"), None).await, 200);
    common::signal(process.0.id(), "TERM");
    let _ = process.0.wait();
}

/// Posts one event of `business` for `uid`; the status and the answer.
async fn post_business(base: &str, uid: u64, business: &str) -> (u16, Value) {
    let event = json!({"events": [{"uid": uid, "business": business, "oid": 1, "progress": 5, "view_at": model::now_ms() - 1000}]});
    let answer = reqwest::Client::new().post(format!("{base}/v1/events")).json(&event).send().await.unwrap();
    (answer.status().as_u16(), answer.json().await.unwrap())
}

/// The README's run mode: a business registered while load runs is
/// accepted within one reload, no stage is rebuilt (the in-process bridge
/// could not be), and every acknowledged event, of the old business and
/// the new, is durable after a clean stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_embedded_a_new_business_is_live_within_one_reload_and_rebuilds_no_stage() {
    let data = tempfile::tempdir().unwrap();
    let http = common::free_port();
    let registry = "archive = { id = 1, retention_days = 1 }";
    let without = embedded_topology(http, data.path(), "", "");
    let mut process = Histflow::start(&without, http, &["--embedded"]).await;
    let load = Load::start(&process.base, LoadShape { clients: 4, events_per_request: 10, users: 300, pace: Duration::ZERO });
    common::eventually("load before the reload", Duration::from_secs(30), async || (load.count() >= 1000).then_some(())).await;

    let uid = common::unique_uid_base();
    let (status, answer) = post_business(&process.base, uid, "music").await;
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("unknown_business")), "before the reload: {answer}");

    rewrite(&process, &without.replace(registry, &format!("{registry}\nmusic = {{ id = 9, retention_days = 30 }}")));
    let (status, answer) = reload_via_api(&process).await;
    assert_eq!((status, answer["result"].as_str()), (200, Some("applied")), "{answer}");
    let changes = &answer["changes"];
    for kind in ["started", "rebuilt", "retired"] {
        assert_eq!(changes[kind], json!([]), "no stage is {kind}: {answer}");
    }
    assert_eq!(changes["registry"], json!(true), "{answer}");
    let (status, answer) = post_business(&process.base, uid, "music").await;
    assert_eq!((status, answer["results"][0]["recorded"].as_bool()), (200, Some(true)), "after the reload: {answer}");

    let before = load.count();
    common::eventually("load after the reload", Duration::from_secs(30), async || (load.count() >= before + 500).then_some(())).await;
    load.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(load.outcomes.connection_errors.load(Ordering::Relaxed), 0, "{}", process.log_text());
    assert_eq!(process.stop(Duration::from_secs(30)), Some(0), "a clean drain exits 0:\n{}", process.log_text());

    let mut acknowledged = load.acknowledged();
    acknowledged.insert((uid, "music:1".to_owned()), -1);
    let store = Store::open(data.path()).unwrap();
    let missing: Vec<&(u64, String)> = acknowledged
        .iter()
        .filter(|((uid, item), view_at)| {
            let cells = store.get_row(b"history", model::keys::hbase_row(*uid).as_bytes(), &ColumnFilter::default(), None).unwrap();
            !cells.iter().any(|cell| cell.column == format!("r:{item}").into_bytes() && (**view_at < 0 || cell.timestamp == **view_at))
        })
        .map(|(key, _)| key)
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged items are not durable: {:?}",
        missing.len(),
        acknowledged.len(),
        &missing[..missing.len().min(5)]
    );
}
