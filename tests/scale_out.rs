//! Scale-out on a real Redis Cluster: several service and job instances
//! side by side against one cluster, one topic and the HBase-compatible
//! server, and a cluster master killed under load. Each test owns its
//! cluster (`common::cluster::TestCluster`).

// Tests may unwrap: a failure is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cluster::TestCluster;
use common::{Histflow, TestCompat};
use serde_json::{json, Value};

/// (uid, item) -> view_at.
type Views = BTreeMap<(u64, String), i64>;

/// Both roles' topology on `redis` (the cluster's seeds).
fn topology(http: u16, compat: &TestCompat, redis: &str, topic: &str, payload: &str) -> String {
    common::StackTopology {
        http,
        compat,
        realtime_redis: redis.to_owned(),
        job_redis: Some(redis.to_owned()),
        brokers: common::kafka_brokers(),
        topic,
        payload,
        shutdown_timeout_ms: 15000,
        request_timeout_ms: 8000,
        aggregate_flush_ms: 500,
        realtime_extra: "redrive_after_ms = 5000\nredrive_every_ms = 200".to_owned(),
        ingest_extra: String::new(),
    }
    .render()
}

/// Posts `events` to `service`; answers each event's `recorded`.
async fn post(client: &reqwest::Client, service: &Histflow, events: &[(u64, String, i64)]) -> Result<Vec<bool>, u16> {
    let body: Vec<Value> = events
        .iter()
        .map(|(uid, item, view_at)| {
            let (business, oid) = item.split_once(':').unwrap();
            json!({"uid": uid, "business": business, "oid": oid.parse::<u64>().unwrap(), "progress": 1, "view_at": view_at})
        })
        .collect();
    let response = client.post(format!("{}/v1/events", service.base)).json(&json!({ "events": body })).send().await.map_err(|_| 0u16)?;
    if response.status() != 200 {
        return Err(response.status().as_u16());
    }
    let answer: Value = response.json().await.unwrap();
    Ok(answer["results"].as_array().unwrap().iter().map(|result| result["recorded"] == true).collect())
}

/// The record cells of `uids`' rows in the history table: (uid, item) ->
/// view_at.
fn table_views(compat: &TestCompat, uids: &[u64]) -> Views {
    let rows: BTreeMap<String, u64> = uids.iter().map(|uid| (model::keys::hbase_row(*uid), *uid)).collect();
    compat
        .snapshot("history")
        .into_iter()
        .filter_map(|((row, column), (timestamp, _))| {
            let uid = rows.get(&row)?;
            Some(((*uid, column.strip_prefix("r:")?.to_owned()), timestamp))
        })
        .collect()
}

#[tokio::test]
async fn two_services_and_two_jobs_on_a_cluster_keep_the_newest_acknowledged_view_and_never_resurrect() {
    let cluster = TestCluster::start(3, 0);
    let compat = TestCompat::start();
    let topic = common::unique("scale");
    let (http_a, http_b) = (common::free_port(), common::free_port());
    let topology_a = topology(http_a, &compat, &cluster.url(), &topic, "ids");
    let topology_b = topology(http_b, &compat, &cluster.url(), &topic, "ids");
    let services =
        [common::start_role(&topology_a, "service", Some(http_a)).await, common::start_role(&topology_b, "service", Some(http_b)).await];
    let _jobs = [
        common::start_role(&topology_a, "job", None).await,
        common::start_role(&topology_a.replace("-job-1\"", "-job-2\""), "job", None).await,
    ];
    let client = reqwest::Client::new();
    let uid_base = common::unique_uid_base();
    let uids: Vec<u64> = (uid_base..uid_base + 300).collect();
    let base = model::now_ms() - 60_000;
    let mut expected = Views::new();

    // Four rounds of reports of five items per user, each round through the
    // other service than the last, views moving forward (and an older one
    // thrown in, which must not win).
    for round in 0..4i64 {
        for (chunk_index, chunk) in uids.chunks(50).enumerate() {
            let mut events = Vec::new();
            for uid in chunk {
                for oid in 0..5 {
                    let view_at = base + round * 1_000 + oid;
                    events.push((*uid, format!("archive:{oid}"), view_at));
                }
                events.push((*uid, "archive:0".to_owned(), base - 5_000));
            }
            let service = &services[(round as usize + chunk_index) % 2];
            let recorded = post(&client, service, &events).await.unwrap();
            for ((uid, item, view_at), recorded) in events.into_iter().zip(recorded) {
                if recorded {
                    let newest = expected.entry((uid, item)).or_insert(view_at);
                    *newest = (*newest).max(view_at);
                }
            }
        }
    }
    assert!(expected.values().all(|view_at| *view_at >= base), "an older report won");

    // Deletes and clears through either service; late older reports of
    // what they removed stay hidden, a newer report comes back.
    for (index, uid) in uids.iter().enumerate() {
        let service = &services[index % 2];
        let path = match index % 4 {
            0 => format!("/v1/users/{uid}/history/archive/1"),
            1 => format!("/v1/users/{uid}/history?all=true"),
            _ => continue,
        };
        let status = client.delete(format!("{}{path}", service.base)).send().await.unwrap().status();
        assert_eq!(status, 204, "{path}");
        match index % 4 {
            0 => {
                expected.remove(&(*uid, "archive:1".to_owned()));
            }
            _ => expected.retain(|(owner, _), _| owner != uid),
        }
    }
    let now = model::now_ms();
    for (index, uid) in uids.iter().enumerate().filter(|(index, _)| index % 4 < 2) {
        let other = &services[(index + 1) % 2];
        let late = post(&client, other, &[(*uid, "archive:1".to_owned(), base + 3_001)]).await.unwrap();
        assert_eq!(late, vec![false], "user {uid}: a late older report of what was removed was recorded");
        let newer = post(&client, other, &[(*uid, "archive:9".to_owned(), now + 1_000)]).await.unwrap();
        assert_eq!(newer, vec![true]);
        expected.insert((*uid, "archive:9".to_owned()), now + 1_000);
    }

    common::eventually("the history table to hold exactly the newest acknowledged views", Duration::from_secs(90), async || {
        (table_views(&compat, &uids) == expected).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_cluster_master_killed_under_load_fails_over_and_loses_nothing_acknowledged() {
    let mut cluster = TestCluster::start(3, 1);
    let compat = TestCompat::start();
    let topic = common::unique("failover");
    let http = common::free_port();
    // `full`: the job never reads Redis, whose replica may lack the last
    // writes its master acknowledged (Redis replicates asynchronously).
    let topology = topology(http, &compat, &cluster.url(), &topic, "full");
    let service = common::start_role(&topology, "service", Some(http)).await;
    let _job = common::start_role(&topology, "job", None).await;

    let acknowledged = Arc::new(Mutex::new(Views::new()));
    let refused: Arc<Mutex<BTreeMap<u16, u64>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let uid_base = common::unique_uid_base();
    let clients: Vec<_> = (0..3u64)
        .map(|client_index| {
            let (acknowledged, refused, stop, base) = (acknowledged.clone(), refused.clone(), stop.clone(), service.base.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let service_base = base;
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let view_at = model::now_ms() - 1_000;
                    let oid = client_index * 1_000_000 + round;
                    let events: Vec<(u64, String, i64)> =
                        (0..50).map(|i| (uid_base + (round * 50 + i) % 3_000, format!("archive:{oid}"), view_at)).collect();
                    let body: Vec<Value> = events
                        .iter()
                        .map(|(uid, _, _)| json!({"uid": uid, "business": "archive", "oid": oid, "progress": 1, "view_at": view_at}))
                        .collect();
                    let answer = client.post(format!("{service_base}/v1/events")).json(&json!({ "events": body })).send().await;
                    match answer {
                        Ok(response) if response.status() == 200 => {
                            let answer: Value = response.json().await.unwrap();
                            let results = answer["results"].as_array().unwrap().clone();
                            let mut acknowledged = acknowledged.lock().unwrap();
                            for ((uid, item, view_at), result) in events.into_iter().zip(results) {
                                if result["recorded"] == true {
                                    acknowledged.insert((uid, item), view_at);
                                }
                            }
                        }
                        Ok(response) => {
                            *refused.lock().unwrap().entry(response.status().as_u16()).or_default() += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(_) => *refused.lock().unwrap().entry(0).or_default() += 1,
                    }
                    round += 1;
                }
            })
        })
        .collect();
    let acknowledged_count = || acknowledged.lock().unwrap().len();
    common::eventually("load before the failover", Duration::from_secs(60), async || (acknowledged_count() >= 3_000).then_some(())).await;
    let victim = cluster.master_of(model::keys::cluster_slot(uid_base));
    cluster.kill(victim);
    // The replica takes over after the node timeout.
    let waiter = tokio::task::spawn_blocking(move || {
        cluster.wait_failed(victim, Duration::from_secs(30));
        cluster.wait_healthy(2, Duration::from_secs(60));
        cluster
    });
    let _cluster = waiter.await.unwrap();
    let at_failover = acknowledged_count();
    common::eventually("load after the failover", Duration::from_secs(60), async || {
        (acknowledged_count() >= at_failover + 3_000).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let refused = refused.lock().unwrap().clone();
    assert!(refused.keys().all(|status| *status == 503), "only 503 may answer while the slot moves: {refused:?}");
    let acknowledged = acknowledged.lock().unwrap().clone();
    common::all_durable(&compat, &acknowledged).await;
}
