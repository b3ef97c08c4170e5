//! Signals and shutdown on real processes: `histflow run` as a service and
//! a job, real Redis, a real Kafka-protocol broker (tansu) and the
//! HBase-compatible server. What a client was acknowledged must reach the
//! history table whatever signal the service gets.

// Tests may unwrap: a failure is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::{Duration, Instant};

use common::{Histflow, TestCompat};
use serde_json::{json, Value};

/// Both roles' topology. The aggregate flushes only on size (never within
/// a test), so what the service acknowledged reaches Kafka only through a
/// drained shutdown's final flush.
fn topology(http: u16, compat: &TestCompat, topic: &str, aggregate_flush_ms: u64) -> String {
    common::StackTopology {
        http,
        compat,
        realtime_redis: common::redis_url(),
        job_redis: None,
        brokers: common::kafka_brokers(),
        topic,
        payload: "full",
        shutdown_timeout_ms: 15000,
        request_timeout_ms: 2000,
        aggregate_flush_ms,
        realtime_extra: String::new(),
        ingest_extra: String::new(),
    }
    .render()
}

/// Posts one event per user in `users`, all at `view_at`; returns the
/// (uid, item) pairs a 200 acknowledged as recorded.
async fn post_batch(client: &reqwest::Client, base: &str, users: std::ops::Range<u64>, oid: u64, view_at: i64) -> Vec<(u64, String)> {
    let events: Vec<Value> =
        users.clone().map(|uid| json!({"uid": uid, "business": "archive", "oid": oid, "progress": 1, "view_at": view_at})).collect();
    let response = client.post(format!("{base}/v1/events")).json(&json!({ "events": events })).send().await.unwrap();
    assert_eq!(response.status(), 200, "a request was refused");
    let answer: Value = response.json().await.unwrap();
    let results = answer["results"].as_array().unwrap();
    users.zip(results).filter(|(_, result)| result["recorded"] == true).map(|(uid, _)| (uid, format!("archive:{oid}"))).collect()
}

/// The compat server, then the service and the job as processes on
/// `topology`, with a fresh topic named after `test`.
struct Stack {
    compat: TestCompat,
    service: Histflow,
    _job: Histflow,
    /// The service's HTTP port.
    http: u16,
}

impl Stack {
    async fn start(test: &str, aggregate_flush_ms: u64) -> Self {
        let compat = TestCompat::start();
        let http = common::free_port();
        let topo = topology(http, &compat, &common::unique(test), aggregate_flush_ms);
        let service = common::start_role(&topo, "service", Some(http)).await;
        let job = common::start_role(&topo, "job", None).await;
        Stack { compat, service, _job: job, http }
    }
}

#[tokio::test]
async fn sighup_reloads_without_stopping_a_loaded_service_and_nothing_is_lost() {
    let Stack { compat, mut service, _job, .. } = Stack::start("hup", 200).await;
    let client = reqwest::Client::new();
    let uid_base = common::unique_uid_base();
    let view_at = model::now_ms() - 10_000;
    let mut acknowledged = BTreeMap::new();
    for round in 0..20u64 {
        if round % 5 == 2 {
            common::signal(service.pid().unwrap(), "HUP");
        }
        let users = uid_base + round * 50..uid_base + round * 50 + 50;
        for key in post_batch(&client, &service.base, users, round, view_at).await {
            acknowledged.insert(key, view_at);
        }
    }
    assert_eq!(acknowledged.len(), 1000, "every report was new, so every one is recorded");
    assert!(service.is_running(), "SIGHUP ended the service:\n{}", service.log_text());
    // The file did not change: each SIGHUP reloads it and finds nothing to do.
    let log = service.log_text();
    assert_eq!(log.matches("topology file unchanged; nothing to reload trigger=\"SIGHUP\"").count(), 4, "{log}");
    common::all_durable(&compat, &acknowledged).await;
    assert_eq!(service.stop(Duration::from_secs(20)), Some(0), "{}", service.log_text());
}

#[tokio::test]
async fn a_stalled_client_cannot_hold_the_drain_hostage() {
    // The aggregate holds everything until the final flush of a drain.
    let Stack { compat, mut service, _job, http } = Stack::start("stall", 3_600_000).await;
    let client = reqwest::Client::new();
    let uid_base = common::unique_uid_base();
    let view_at = model::now_ms() - 10_000;
    let acknowledged: BTreeMap<(u64, String), i64> =
        post_batch(&client, &service.base, uid_base..uid_base + 200, 7, view_at).await.into_iter().map(|key| (key, view_at)).collect();
    assert_eq!(acknowledged.len(), 200);

    // A client that sends half a body and then nothing, and keeps its
    // connection open.
    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", http)).unwrap();
    write!(stalled, "POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"events\":[")
        .unwrap();
    stalled.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let stopping = Instant::now();
    let code = service.stop(Duration::from_secs(30));
    assert_eq!(code, Some(0), "the drain did not finish in time:\n{}", service.log_text());
    assert!(stopping.elapsed() < Duration::from_secs(15), "the stop took {:?}", stopping.elapsed());
    // The final flush ran: what was acknowledged reaches HBase through the
    // job.
    common::all_durable(&compat, &acknowledged).await;
    drop(stalled);
}
