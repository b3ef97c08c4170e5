//! The live page (`/ui`) and its figures (`/admin/stats`) on a running
//! `histflow run --embedded`: the JSON's shape and values after known
//! traffic, and the page itself in headless Chromium (driven through
//! chromedriver, both from Debian's packages, which scripts/test.sh
//! installs): its figures follow the traffic, and an edge shows full when
//! the stage it feeds is held to one event a second.

// Tests may unwrap: a failure is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::Histflow;
use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};

/// Events in the first round of traffic.
const FIRST_ROUND: u64 = 30;
/// The first round, as the figures (floats) count it.
const ROUND: f64 = FIRST_ROUND as f64;
/// Capacity of the edge into the held stage.
const HELD_CAPACITY: u64 = 50;

/// The shipped stages under `--embedded` (the backends' addresses are
/// required but unused), short windows, and a `held`
/// discard branch after realtime whose rate limit (1 event/s) stands for a
/// stopped stage: once its edge is full, realtime waits, then ingest
/// refuses.
fn topology(http: u16, data_dir: &std::path::Path) -> String {
    format!(
        r#"
[pipeline]
shutdown_timeout_ms = 2000
admin_listen = "127.0.0.1:{admin}"

[businesses]
archive = {{ id = 1, retention_days = 90 }}

[[stages]]
name = "ingest"
type = "http_ingest"
listen = "127.0.0.1:{http}"
grpc_listen = "127.0.0.1:{grpc}"
request_timeout_ms = 1000

[[stages]]
name = "realtime"
type = "realtime"
inputs = [{{ from = "ingest", capacity = 200, when_full = "reject" }}]
redis_url = "redis://unused.invalid"

[[stages]]
name = "aggregate"
type = "aggregate"
inputs = [{{ from = "realtime", capacity = 1000 }}]
flush_interval_ms = 200

[[stages]]
name = "held"
type = "discard"
inputs = [{{ from = "realtime", capacity = {HELD_CAPACITY} }}]
rate_limit = {{ per_second = 1, burst = 1 }}

[[stages]]
name = "kafka_batch"
type = "kafka_batch"
inputs = ["aggregate"]
brokers = "unused.invalid:9092"
topic = "merge"
consumer_group = "job"

[[stages]]
name = "persist"
type = "persist"
inputs = ["kafka_batch"]
hbase_thrift = "unused.invalid:9090"
flush_interval_ms = 100
embedded_data_dir = "{data}"
"#,
        admin = common::free_port(),
        grpc = common::free_port(),
        data = data_dir.display(),
    )
}

/// Posts `count` events of fresh items for one user; the status.
async fn post(client: &reqwest::Client, base: &str, uid: u64, first_oid: u64, count: u64) -> u16 {
    let events: Vec<Value> = (first_oid..first_oid + count)
        .map(|oid| json!({"uid": uid, "business": "archive", "oid": oid, "progress": 1, "view_at": model::now_ms() - 1000}))
        .collect();
    match client.post(format!("{base}/v1/events")).json(&json!({ "events": events })).send().await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

async fn stats(client: &reqwest::Client, base: &str) -> Value {
    let response = client.get(format!("{base}/admin/stats")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The entry named `name` of `stats[list]`.
fn named<'a>(stats: &'a Value, list: &str, name: &str) -> &'a Value {
    stats[list].as_array().unwrap().iter().find(|entry| entry["name"] == name).unwrap_or_else(|| panic!("no {list} entry `{name}`"))
}

fn edge<'a>(stats: &'a Value, from: &str, to: &str) -> &'a Value {
    stats["edges"].as_array().unwrap().iter().find(|edge| edge["from"] == from && edge["to"] == to).unwrap()
}

fn figure(stage: &Value, label: &str) -> Value {
    stage["figures"].as_array().unwrap().iter().find(|figure| figure["label"] == label).unwrap()["value"].clone()
}

#[tokio::test]
async fn stats_describe_the_topology_and_count_known_traffic() {
    let data = tempfile::tempdir().unwrap();
    let http = common::free_port();
    let histflow = Histflow::start(&topology(http, data.path()), http, &["--embedded"]).await;
    let client = reqwest::Client::new();
    let first = stats(&client, &histflow.base).await;
    assert_eq!(first["interval_s"], Value::Null, "no earlier reading: no rates");
    assert_eq!(first["readiness"], "ready");

    // The topology as drawn: columns by distance from the source.
    let columns: Vec<(String, u64)> = first["topology"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|stage| (stage["name"].as_str().unwrap().to_owned(), stage["column"].as_u64().unwrap()))
        .collect();
    let expected = [("ingest", 0), ("realtime", 1), ("aggregate", 2), ("held", 2), ("kafka_batch", 3), ("persist", 4)];
    assert_eq!(columns, expected.map(|(name, column)| (name.to_owned(), column)).to_vec());
    assert_eq!(named(&first["topology"], "stages", "kafka_batch")["nodes"], json!(["kafka_batch", "kafka_batch.consumer"]));
    let broker_edge = &first["topology"]["edges"].as_array().unwrap()[4];
    assert_eq!((broker_edge["from_node"].as_str(), broker_edge["via_broker"].as_bool()), (Some("kafka_batch.consumer"), Some(true)));
    assert_eq!(edge(&first, "realtime", "held")["capacity"], HELD_CAPACITY);
    assert_eq!(edge(&first, "ingest", "realtime")["capacity"], 200);
    let backends: Vec<&str> = first["backends"].as_array().unwrap().iter().map(|backend| backend["name"].as_str().unwrap()).collect();
    assert!(backends.contains(&"the embedded store"), "{backends:?}");

    let uid = common::unique_uid_base();
    assert_eq!(post(&client, &histflow.base, uid, 1, FIRST_ROUND).await, 200);
    // The fold's gauges are measured on its flush timer; persist's durable
    // lag once it has written its window (taking the events in comes first).
    let after = common::eventually("persist to write the first round, the fold measured empty", Duration::from_secs(20), async || {
        let now = stats(&client, &histflow.base).await;
        let persist = named(&now, "stages", "persist");
        let persisted = persist["events_in_total"].as_f64() == Some(ROUND) && figure(persist, "durable lag p99, s").as_f64().is_some();
        (persisted && figure(named(&now, "stages", "aggregate"), "pending items") == 0.0).then_some(now)
    })
    .await;
    assert!(after["interval_s"].as_f64().unwrap() > 0.0);
    let ingest = named(&after, "stages", "ingest");
    assert_eq!(ingest["events_in_total"], Value::Null, "a source takes nothing in from an edge");
    assert_eq!(ingest["events_out_total"].as_f64(), Some(ROUND));
    for name in ["realtime", "aggregate"] {
        let stage = named(&after, "stages", name);
        assert_eq!((stage["events_in_total"].as_f64(), stage["events_out_total"].as_f64()), (Some(ROUND), Some(ROUND)), "{name}");
        assert_eq!(stage["errors_total"].as_f64(), Some(0.0), "{name}");
        assert_eq!(stage["failing"], false, "{name}");
    }
    // The bridge: taken in by its producing node, emitted by its consuming one.
    let bridge = named(&after, "stages", "kafka_batch");
    assert_eq!((bridge["events_in_total"].as_f64(), bridge["events_out_total"].as_f64()), (Some(ROUND), Some(ROUND)));
    // One request, committed whole by realtime.
    let realtime = named(&after, "stages", "realtime");
    let per_commit = figure(realtime, "events/commit");
    assert!(per_commit.is_null() || (1.0..=FIRST_ROUND as f64).contains(&per_commit.as_f64().unwrap()), "{per_commit}");
    let persist = named(&after, "stages", "persist");
    assert_eq!(figure(persist, "retries/s"), 0.0);
    assert!(figure(persist, "durable lag p99, s").as_f64().unwrap() > 0.0, "the records were a second old");
    for edge in after["edges"].as_array().unwrap() {
        if edge["to"] != "held" {
            assert_eq!((edge["queued"].as_f64(), &edge["full"]), (Some(0.0), &json!(false)), "{edge}");
        }
    }
    // The held stage takes one event a second, and counts a batch once all
    // of it passed its limit: its edge holds the round meanwhile.
    let held = edge(&after, "realtime", "held");
    assert_eq!(held["queued"].as_f64(), Some(ROUND), "{held}");
    assert_eq!(named(&after, "stages", "held")["events_in_total"].as_f64(), Some(0.0));
}

/// A chromedriver owned by the test.
struct Driver {
    port: u16,
    _process: common::Owned,
    profile: tempfile::TempDir,
}

impl Driver {
    async fn start() -> Self {
        let port = common::free_port();
        let process = common::owned_command("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver) not found: run the tests through scripts/test.sh, which installs it");
        let driver = Driver { port, _process: common::Owned(process), profile: tempfile::tempdir().unwrap() };
        common::eventually("chromedriver to listen", Duration::from_secs(20), async || common::tcp_open(port).then_some(())).await;
        driver
    }

    /// A headless Chromium with no background traffic (this machine's
    /// network is closed).
    async fn browser(&self) -> Client {
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1760,700",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain([format!("--user-data-dir={}", self.profile.path().display())])
        .collect::<Vec<_>>();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), json!({ "binary": "/usr/bin/chromium", "args": args }));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a Chromium session through chromedriver")
    }
}

/// Runs `script` in the page; its JSON result.
async fn page_value(browser: &Client, script: &str) -> Value {
    browser.execute(script, Vec::new()).await.unwrap()
}

#[tokio::test]
async fn the_page_draws_the_topology_follows_the_traffic_and_shows_a_full_edge() {
    let data = tempfile::tempdir().unwrap();
    let http = common::free_port();
    let histflow = Histflow::start(&topology(http, data.path()), http, &["--embedded"]).await;
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    browser.goto(&format!("{}/ui", histflow.base)).await.unwrap();

    // Every stage and edge of the topology is drawn, each in its column.
    let drawn = common::eventually("the page to draw the topology", Duration::from_secs(20), async || {
        let drawn = page_value(
            &browser,
            r#"return {
                stages: [...document.querySelectorAll(".stage")].map((box) => box.dataset.stage),
                edges: [...document.querySelectorAll(".edge")].map((label) => label.dataset.edge),
                realtimeLeft: document.querySelector('.stage[data-stage="realtime"]')?.offsetLeft,
                persistLeft: document.querySelector('.stage[data-stage="persist"]')?.offsetLeft,
            };"#,
        )
        .await;
        (drawn["stages"].as_array().is_some_and(|stages| stages.len() == 6)).then_some(drawn)
    })
    .await;
    assert_eq!(drawn["stages"], json!(["ingest", "realtime", "aggregate", "held", "kafka_batch", "persist"]));
    assert_eq!(
        drawn["edges"],
        json!(["ingest->realtime", "realtime->aggregate", "realtime->held", "aggregate->kafka_batch", "kafka_batch->persist"])
    );
    assert!(drawn["realtimeLeft"].as_f64().unwrap() < drawn["persistLeft"].as_f64().unwrap(), "columns run left to right");

    // Known traffic: the figures change without a reload.
    let realtime_in = r#"return document.querySelector('.stage[data-stage="realtime"]').dataset.inTotal;"#;
    assert_eq!(page_value(&browser, realtime_in).await, json!("0"));
    let client = reqwest::Client::new();
    let uid = common::unique_uid_base();
    assert_eq!(post(&client, &histflow.base, uid, 1, FIRST_ROUND).await, 200);
    common::eventually("the page to count the first round", Duration::from_secs(20), async || {
        let total = page_value(&browser, realtime_in).await;
        (total == json!(FIRST_ROUND.to_string())).then_some(())
    })
    .await;
    let rate = common::eventually("a non-zero events/s on realtime", Duration::from_secs(20), async || {
        let rate =
            page_value(&browser, r#"return document.querySelector('.stage[data-stage="realtime"] [data-figure="in"]').textContent;"#).await;
        rate.as_str().filter(|text| *text != "0" && *text != "–").map(str::to_owned)
    })
    .await;
    assert!(rate.parse::<f64>().unwrap() > 0.0, "{rate}");

    // More than the held stage's edge takes: it fills, realtime waits on
    // it, and the page marks it full.
    let mut oid = FIRST_ROUND + 1;
    let mut refused = false;
    for _ in 0..10 {
        let status = post(&client, &histflow.base, uid, oid, 20).await;
        oid += 20;
        if status != 200 {
            refused = true;
            break;
        }
    }
    assert!(refused, "the service kept answering 200 though the held stage takes one event a second");
    let full = common::eventually("the page to mark realtime->held full", Duration::from_secs(20), async || {
        let edge = page_value(
            &browser,
            r#"const label = document.querySelector('.edge[data-edge="realtime->held"]');
               return { full: label.dataset.full, queued: label.dataset.queued, wire: document.querySelector('[data-wire="realtime->held"]').classList.contains("full") };"#,
        )
        .await;
        (edge["full"] == "true").then_some(edge)
    })
    .await;
    assert_eq!(full["wire"], true, "the wire is drawn full too: {full}");
    let other = page_value(&browser, r#"return document.querySelector('.edge[data-edge="aggregate->kafka_batch"]').dataset.full;"#).await;
    assert_eq!(other, "false", "an edge that drains is not full");

    let screenshot = browser.screenshot().await.unwrap();
    let path = common::repo_root().join("target").join("live-page.png");
    std::fs::write(&path, screenshot).unwrap();
    eprintln!("screenshot of the live page: {}", path.display());
    browser.close().await.unwrap();
}
