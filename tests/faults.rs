//! Backend faults under load, on real processes: a service and a job
//! (`histflow run`), Redis, the tansu broker and the HBase-compatible
//! server. What the README promises must hold through each fault.

// Tests may unwrap: a failure is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestCompat, TestRedis};
use serde_json::{json, Value};

/// What a client was told was recorded: (uid, item) -> view_at.
type Acknowledged = BTreeMap<(u64, String), i64>;

/// Closed-loop clients posting 20 new items a request, going on through
/// refusals (a 503 while Redis is away) until `stop`; every item answered
/// `recorded: true` goes into `acknowledged`, every failed request counts
/// in `refused`.
fn start_load(base: &str, clients: u64, acknowledged: &Arc<Mutex<Acknowledged>>, refused: &Arc<AtomicU64>, stop: &Arc<AtomicBool>) {
    let uid_base = common::unique_uid_base();
    for client_index in 0..clients {
        let (base, acknowledged, refused, stop) = (base.to_owned(), acknowledged.clone(), refused.clone(), stop.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let view_at = model::now_ms() - 1000;
                let oid = client_index * 1_000_000 + round;
                let uids: Vec<u64> = (0..20).map(|i| uid_base + (round * 20 + i) % 500).collect();
                let events: Vec<Value> = uids
                    .iter()
                    .map(|uid| json!({"uid": uid, "business": "archive", "oid": oid, "progress": 1, "view_at": view_at}))
                    .collect();
                round += 1;
                let answer = client.post(format!("{base}/v1/events")).json(&json!({ "events": events })).send().await;
                let Ok(answer) = answer.map_err(drop).and_then(|answer| if answer.status() == 200 { Ok(answer) } else { Err(()) }) else {
                    refused.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let answer: Value = answer.json().await.unwrap();
                let results = answer["results"].as_array().unwrap();
                let mut acknowledged = acknowledged.lock().unwrap();
                for (uid, result) in uids.iter().zip(results) {
                    if result["recorded"] == true {
                        acknowledged.insert((*uid, format!("archive:{oid}")), view_at);
                    }
                }
            }
        });
    }
}

#[tokio::test]
async fn a_redis_restarted_mid_load_with_append_only_persistence_loses_nothing_acknowledged() {
    // The README: everything rests on Redis keeping what it acknowledged.
    // A Redis with its append-only file (fsync every second) stopped and
    // started again keeps it, `ids` records included.
    let compat = TestCompat::start();
    let mut redis = TestRedis::start_with_fsync("everysec");
    let (http, topic) = (common::free_port(), common::unique("redis-restart"));
    let topology = common::StackTopology {
        http,
        compat: &compat,
        realtime_redis: redis.url(),
        job_redis: Some(redis.url()),
        brokers: common::kafka_brokers(),
        topic: &topic,
        payload: "ids",
        shutdown_timeout_ms: 15000,
        request_timeout_ms: 2000,
        aggregate_flush_ms: 500,
        realtime_extra: String::new(),
    }
    .render();
    let service = common::start_role(&topology, "service", Some(http)).await;
    let job = common::start_role(&topology, "job", None).await;

    let acknowledged = Arc::new(Mutex::new(Acknowledged::new()));
    let (refused, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    start_load(&service.base, 4, &acknowledged, &refused, &stop);
    let count = || acknowledged.lock().unwrap().len();
    common::eventually("load before the restart", Duration::from_secs(60), async || (count() >= 2000).then_some(())).await;

    redis.stop();
    let refused_before = refused.load(Ordering::Relaxed);
    common::eventually("a refusal while Redis is away", Duration::from_secs(30), async || {
        (refused.load(Ordering::Relaxed) > refused_before).then_some(())
    })
    .await;
    redis.restart();
    let before_restart = count();
    common::eventually("load after the restart", Duration::from_secs(60), async || (count() >= before_restart + 2000).then_some(())).await;
    stop.store(true, Ordering::Relaxed);

    let acknowledged = acknowledged.lock().unwrap().clone();
    if let Err(problem) = common::until_durable(&compat, &acknowledged).await {
        panic!("{problem}\n--- service:\n{}\n--- job:\n{}", service.log_text(), job.log_text());
    }
}
