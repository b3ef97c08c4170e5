//! Every metric the README lists is emitted, and each stage's and edge's
//! counters and gauges hold the values known traffic must leave: a service
//! and a job on the real Redis, broker and HBase-compatible server, scraped
//! after ten requests of six new items each and one history page.

// Tests may unwrap: a failure is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::TestCompat;
use ingest_http::admin::stats::Exposition;
use serde_json::{json, Value};

/// Users posting, one request each.
const USERS: u64 = 10;
/// New items per request.
const ITEMS: u64 = 6;
/// Every report of the traffic.
const EVENTS: f64 = (USERS * ITEMS) as f64;
/// The Redis database of this test's keys (its marks gauge counts them all).
const REDIS_DB: u8 = 10;
/// Every edge's capacity when a topology names none.
const DEFAULT_CAPACITY: f64 = 8192.0;

async fn scrape(client: &reqwest::Client, base: &str) -> (String, Exposition) {
    let text = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let exposition = Exposition::parse(&text);
    (text, exposition)
}

/// The metric names of the README's metrics table.
fn readme_metrics() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(common::repo_root().join("README.md")).unwrap();
    let table = readme.split("| metric | labels | meaning |").nth(1).expect("the README's metrics table");
    let rows = table.lines().skip(2).take_while(|line| line.starts_with('|'));
    let names: BTreeSet<String> = rows
        .flat_map(|row| {
            let first_cell = row.split('|').nth(1).unwrap_or_default();
            first_cell.split('`').skip(1).step_by(2).map(str::to_owned).collect::<Vec<_>>()
        })
        .collect();
    assert!(names.len() > 30, "the table was not read: {names:?}");
    names
}

/// The metric family names in a rendering (a summary's `_count` and
/// `_sum` lines count for it too).
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .flat_map(|name| [name.to_owned(), name.trim_end_matches("_count").trim_end_matches("_sum").to_owned()])
        .collect()
}

fn value(exposition: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    exposition.sum(name, labels).unwrap_or_else(|| panic!("no series {name}{labels:?}"))
}

#[tokio::test]
async fn every_listed_metric_is_emitted_and_counts_known_traffic() {
    let compat = TestCompat::start();
    let (http, topic) = (common::free_port(), common::unique("metrics"));
    let redis = format!("{}/{REDIS_DB}", common::redis_url().trim_end_matches('/'));
    let topology = common::StackTopology {
        http,
        compat: &compat,
        realtime_redis: redis.clone(),
        job_redis: Some(redis),
        brokers: common::kafka_brokers(),
        topic: &topic,
        payload: "ids",
        shutdown_timeout_ms: 5000,
        request_timeout_ms: 8000,
        aggregate_flush_ms: 300,
        realtime_extra: "redrive_after_ms = 2000\nredrive_every_ms = 200".to_owned(),
        ingest_extra: String::new(),
    }
    .render();
    let service = common::start_role(&topology, "service", Some(http)).await;
    let job = common::start_role(&topology, "job", None).await;
    let client = reqwest::Client::new();

    let uid_base = common::unique_uid_base();
    let view_at = model::now_ms() - 5_000;
    let mut acknowledged = BTreeMap::new();
    for uid in uid_base..uid_base + USERS {
        let events: Vec<Value> =
            (1..=ITEMS).map(|oid| json!({"uid": uid, "business": "archive", "oid": oid, "progress": 1, "view_at": view_at})).collect();
        let response = client.post(format!("{}/v1/events", service.base)).json(&json!({ "events": events })).send().await.unwrap();
        assert_eq!(response.status(), 200);
        acknowledged.extend((1..=ITEMS).map(|oid| ((uid, format!("archive:{oid}")), view_at)));
    }
    let page = client.get(format!("{}/v1/users/{uid_base}/history", service.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    common::all_durable(&compat, &acknowledged).await;

    // Settled: the job wrote and noted everything, lag measured (every
    // 5 s), marks released, the fold measured empty.
    let (job_text, job_metrics) = common::eventually("the job's figures to settle", Duration::from_secs(30), async || {
        let (text, metrics) = scrape(&client, &job.base).await;
        let settled = metrics.sum("histflow_stage_events_in_total", &[("stage", "persist")]) == Some(EVENTS)
            && metrics.sum("histflow_kafka_consumer_lag_messages", &[]) == Some(0.0);
        settled.then_some((text, metrics))
    })
    .await;
    let (service_text, service_metrics) = common::eventually("the service's figures to settle", Duration::from_secs(30), async || {
        let (text, metrics) = scrape(&client, &service.base).await;
        let settled = metrics.sum("histflow_marks_pending_users", &[]) == Some(0.0)
            && metrics.sum("histflow_aggregate_pending_items", &[]) == Some(0.0);
        settled.then_some((text, metrics))
    })
    .await;

    // Every metric the README lists, in one of the two processes.
    let emitted: BTreeSet<String> = families(&service_text).union(&families(&job_text)).cloned().collect();
    let missing: Vec<String> = readme_metrics().into_iter().filter(|name| !emitted.contains(name)).collect();
    assert!(missing.is_empty(), "listed in the README but not emitted: {missing:?}");

    // Stages, by value.
    let service_at = |name: &str, stage: &str| value(&service_metrics, name, &[("stage", stage)]);
    assert_eq!(service_at("histflow_stage_events_out_total", "ingest"), EVENTS);
    for stage in ["realtime", "aggregate"] {
        assert_eq!(service_at("histflow_stage_events_in_total", stage), EVENTS, "{stage} in");
        assert_eq!(service_at("histflow_stage_events_out_total", stage), EVENTS, "{stage} out (every item new)");
    }
    assert_eq!(service_at("histflow_stage_events_in_total", "kafka_batch"), EVENTS);
    let job_at = |name: &str, stage: &str| value(&job_metrics, name, &[("stage", stage)]);
    assert_eq!(job_at("histflow_stage_events_out_total", "kafka_batch.consumer"), EVENTS);
    assert_eq!(job_at("histflow_stage_events_in_total", "persist"), EVENTS);
    for (metrics, stages) in
        [(&service_metrics, &["ingest", "realtime", "aggregate", "kafka_batch"][..]), (&job_metrics, &["kafka_batch.consumer", "persist"])]
    {
        for stage in stages {
            assert_eq!(value(metrics, "histflow_stage_errors_total", &[("stage", stage)]), 0.0, "{stage} errors");
            assert_eq!(value(metrics, "histflow_stage_backpressure_wait_microseconds_total", &[("stage", stage)]), 0.0, "{stage} waited");
            // Persist paces its writes by its write limit (a few µs here).
            if *stage != "persist" {
                assert_eq!(
                    value(metrics, "histflow_stage_rate_limit_wait_microseconds_total", &[("stage", stage)]),
                    0.0,
                    "{stage} limited"
                );
            }
        }
    }

    // Edges, by value: drained, at their capacity, nothing refused.
    for (metrics, edges) in [
        (&service_metrics, &[("ingest", "realtime"), ("realtime", "aggregate"), ("aggregate", "kafka_batch")][..]),
        (&job_metrics, &[("kafka_batch.consumer", "persist")]),
    ] {
        for (from, to) in edges {
            let labels = [("from", *from), ("to", *to)];
            assert_eq!(value(metrics, "histflow_edge_capacity_events", &labels), DEFAULT_CAPACITY, "{from}->{to} capacity");
            assert_eq!(value(metrics, "histflow_edge_queue_events", &labels), 0.0, "{from}->{to} queued");
            assert_eq!(value(metrics, "histflow_edge_waiting_senders", &labels), 0.0, "{from}->{to} waiting");
            assert_eq!(value(metrics, "histflow_edge_rejected_total", &labels), 0.0, "{from}->{to} refused");
            assert_eq!(value(metrics, "histflow_edge_blocked_microseconds_total", &labels), 0.0, "{from}->{to} blocked");
        }
    }

    // Each kind's own figures.
    let service_total = |name: &str| value(&service_metrics, name, &[]);
    assert_eq!(service_total("histflow_realtime_commit_events_total"), EVENTS);
    let commits = service_total("histflow_realtime_commits_total");
    assert!((1.0..=USERS as f64).contains(&commits), "{commits} commits for {USERS} requests");
    assert_eq!(
        value(&service_metrics, "histflow_http_requests_total", &[("route", "/v1/events"), ("method", "POST"), ("status", "200")]),
        USERS as f64
    );
    assert_eq!(
        value(&service_metrics, "histflow_http_request_duration_seconds_count", &[("route", "/v1/events"), ("method", "POST")]),
        USERS as f64
    );
    assert_eq!(service_total("histflow_read_pages_total"), 1.0);
    assert_eq!(service_total("histflow_read_undecodable_records_total"), 0.0);
    assert_eq!(service_total("histflow_first_watch_broadcasts_total"), 0.0, "no broadcast topic configured");
    for name in [
        "histflow_redrive_users_total",
        "histflow_redrive_items_total",
        "histflow_redrive_missing_total",
        "histflow_kafka_delivery_retries_total",
    ] {
        assert_eq!(service_total(name), 0.0, "{name}: nothing was lost or retried");
    }
    assert_eq!(service_total("histflow_kafka_message_events_total"), EVENTS);
    let messages = service_total("histflow_kafka_messages_total");
    assert!((1.0..=EVENTS).contains(&messages), "{messages} messages");
    assert!(service_total("histflow_kafka_message_bytes_total") > 0.0);
    assert_eq!(service_total("histflow_aggregate_pending_items"), 0.0);

    let job_total = |name: &str| value(&job_metrics, name, &[]);
    assert_eq!(job_total("histflow_persist_events_total"), EVENTS);
    let rows = job_total("histflow_persist_rows_total");
    assert!((USERS as f64..=EVENTS).contains(&rows), "{rows} rows for {USERS} users");
    assert!(job_total("histflow_persist_cells_total") >= EVENTS, "a cell per record at least");
    assert!(job_total("histflow_persist_batches_total") >= 1.0);
    assert_eq!(job_total("histflow_persist_durable_lag_seconds_count"), EVENTS, "one lag per record written");
    let lag_p99 = value(&job_metrics, "histflow_persist_durable_lag_seconds", &[("quantile", "0.99")]);
    assert!(lag_p99 >= 5.0, "the records were five seconds old when posted: {lag_p99}");
    for name in [
        "histflow_persist_retries_total",
        "histflow_persist_missing_records_total",
        "histflow_persist_undecodable_records_total",
        "histflow_persist_rejected_rows_total",
        "histflow_kafka_dead_letters_total",
        "histflow_kafka_consumer_lag_messages",
    ] {
        assert_eq!(job_total(name), 0.0, "{name}");
    }

    // The job's page shows the job's part: its nodes here, the service's not.
    let stats: Value = client.get(format!("{}/admin/stats", job.base)).send().await.unwrap().json().await.unwrap();
    let nodes: BTreeMap<&str, &Value> =
        stats["topology"]["stages"].as_array().unwrap().iter().map(|stage| (stage["name"].as_str().unwrap(), &stage["nodes"])).collect();
    assert_eq!(nodes["realtime"], &json!([]));
    assert_eq!(nodes["kafka_batch"], &json!(["kafka_batch.consumer"]));
    assert_eq!(nodes["persist"], &json!(["persist"]));
    let here: Vec<bool> = stats["edges"].as_array().unwrap().iter().map(|edge| edge["here"].as_bool().unwrap()).collect();
    assert_eq!(here, [false, false, false, true], "only the edge into persist runs in the job");
    let backends: BTreeMap<&str, &str> = stats["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|backend| (backend["name"].as_str().unwrap(), backend["state"].as_str().unwrap()))
        .collect();
    assert_eq!((backends.get("broker"), backends.get("hbase")), (Some(&"up"), Some(&"up")), "{backends:?}");
}
