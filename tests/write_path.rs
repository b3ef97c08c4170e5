//! The service role end to end: `histflow run --role service` as a real
//! process, real Redis and a real Kafka-protocol broker (tansu).

// Tests may unwrap: a failure is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{Histflow, TestRedis, TestTansu};
use model::{codec, keys, Op, Record};
use rdkafka::Message as _;
use redis::AsyncCommands;
use serde_json::{json, Value};

/// Knobs of the test topology.
struct Knobs {
    payload: &'static str,
    shards: u32,
    flush_max_entries: usize,
    flush_interval_ms: u64,
    ingest_capacity: usize,
    edge_capacity: usize,
    request_timeout_ms: u64,
    max_body_bytes: usize,
    broadcast: Option<String>,
    auth_token_env: Option<&'static str>,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            payload: "ids",
            shards: 8,
            flush_max_entries: 1000,
            flush_interval_ms: 200,
            ingest_capacity: 4096,
            edge_capacity: 4096,
            request_timeout_ms: 5000,
            max_body_bytes: 1 << 20,
            broadcast: None,
            auth_token_env: None,
        }
    }
}

fn topology(http: u16, redis_url: &str, brokers: &str, topic: &str, knobs: &Knobs) -> String {
    let Knobs {
        payload,
        shards,
        flush_max_entries,
        flush_interval_ms,
        ingest_capacity,
        edge_capacity,
        request_timeout_ms,
        max_body_bytes,
        ..
    } = knobs;
    let broadcast = knobs
        .broadcast
        .as_ref()
        .map(|topic| format!("broadcast_brokers = \"{brokers}\"\nbroadcast_topic = \"{topic}\""))
        .unwrap_or_default();
    let auth = knobs.auth_token_env.map(|var| format!("[[auth.clients]]\nname = \"tests\"\ntoken = \"${{{var}}}\"\n")).unwrap_or_default();
    format!(
        r#"
[pipeline]
shutdown_timeout_ms = 20000
admin_listen = "127.0.0.1:{admin}"

[businesses]
archive = {{ id = 1, retention_days = 1 }}
pgc = {{ id = 2, retention_days = 1 }}

{auth}

[[stages]]
name = "ingest"
type = "http_ingest"
listen = "127.0.0.1:{http}"
request_timeout_ms = {request_timeout_ms}
max_body_bytes = {max_body_bytes}

[[stages]]
name = "realtime"
type = "realtime"
inputs = [{{ from = "ingest", capacity = {ingest_capacity}, when_full = "reject" }}]
redis_url = "{redis_url}"
{broadcast}

[[stages]]
name = "aggregate"
type = "aggregate"
inputs = [{{ from = "realtime", capacity = {edge_capacity} }}]
shards = {shards}
flush_max_entries = {flush_max_entries}
flush_interval_ms = {flush_interval_ms}
max_pending_entries = 100000

[[stages]]
name = "kafka_batch"
type = "kafka_batch"
inputs = [{{ from = "aggregate", capacity = {edge_capacity} }}]
brokers = "{brokers}"
topic = "{topic}"
payload = "{payload}"
partitions = 4
"#,
        admin = common::free_port()
    )
}

async fn redis(url: &str) -> backends::user_state::Link {
    common::redis_connection(url).await
}

fn event(uid: u64, business: &str, oid: u64, progress: i64, view_at: i64) -> Value {
    json!({"uid": uid, "business": business, "oid": oid, "progress": progress, "view_at": view_at, "device": "test"})
}

async fn post(client: &reqwest::Client, base: &str, body: &Value) -> (u16, Value) {
    let response = client.post(format!("{base}/v1/events")).json(body).send().await.expect("POST /v1/events");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

use model::now_ms;

async fn start_service(redis_url: &str, brokers: &str, topic: &str, knobs: &Knobs) -> Histflow {
    let http = common::free_port();
    let env: Vec<(&str, &str)> = knobs.auth_token_env.map(|var| (var, TEST_TOKEN)).into_iter().collect();
    Histflow::start_with_env(&topology(http, redis_url, brokers, topic, knobs), http, &["--role", "service"], &env).await
}

/// The bearer token of the auth test, handed to histflow in its environment.
const TEST_TOKEN: &str = "write-path-test-token-42";

#[tokio::test]
async fn a_report_is_in_redis_when_its_200_arrives() {
    let (url, brokers) = (common::redis_url(), common::kafka_brokers());
    let service = start_service(&url, &brokers, &common::unique("merge"), &Knobs::default()).await;
    let client = reqwest::Client::new();
    let mut redis = redis(&url).await;
    let uid = common::unique_uid_base();
    let view_at = now_ms() - 1000;

    let (status, answer) = post(&client, &service.base, &event(uid, "archive", 77, 120, view_at)).await;
    assert_eq!((status, &answer), (200, &json!({"results":[{"recorded":true,"first_today":true}]})));
    // Read at once: the answer was only sent after the write.
    let score: Option<f64> = redis.zscore(keys::timeline(uid), "archive:77").await.unwrap();
    assert_eq!(score, Some(view_at as f64));
    let stored: Vec<u8> = redis.hget(keys::records(uid), "archive:77").await.unwrap();
    let expected = Record {
        uid,
        business: "archive".into(),
        oid: 77,
        sub_id: None,
        progress: 120,
        duration: None,
        device: Some("test".into()),
        view_at,
    };
    assert_eq!(codec::decode_record(&stored).unwrap(), expected);
    let ttl: i64 = redis.ttl(keys::timeline(uid)).await.unwrap();
    assert!(ttl > 0 && ttl <= 86_400, "keys expire after the longest retention (1 day here), got {ttl}");
}

#[tokio::test]
async fn newer_view_wins_and_older_reports_are_ignored() {
    let (url, brokers) = (common::redis_url(), common::kafka_brokers());
    let service = start_service(&url, &brokers, &common::unique("merge"), &Knobs::default()).await;
    let client = reqwest::Client::new();
    let mut redis = redis(&url).await;
    let uid = common::unique_uid_base();
    let base = now_ms() - 60_000;

    let mut recorded = Vec::new();
    for (progress, view_at) in [(20, base + 2000), (10, base + 1000), (30, base + 3000), (25, base + 3000)] {
        let (status, answer) = post(&client, &service.base, &event(uid, "pgc", 5, progress, view_at)).await;
        assert_eq!(status, 200, "{answer}");
        recorded.push(answer["results"][0]["recorded"].as_bool().unwrap());
    }
    assert_eq!(recorded, vec![true, false, true, false], "older and equal view_at must not win");
    let stored: Vec<u8> = redis.hget(keys::records(uid), "pgc:5").await.unwrap();
    let record = codec::decode_record(&stored).unwrap();
    assert_eq!((record.progress, record.view_at), (30, base + 3000));
}

#[tokio::test]
async fn a_paused_user_records_nothing() {
    let (url, brokers) = (common::redis_url(), common::kafka_brokers());
    let service = start_service(&url, &brokers, &common::unique("merge"), &Knobs::default()).await;
    let client = reqwest::Client::new();
    let mut redis = redis(&url).await;
    let uid = common::unique_uid_base();
    let _: () = redis.hset(keys::meta(uid), "paused", "1").await.unwrap();
    let _: () = redis.expire(keys::meta(uid), 600).await.unwrap();

    let (status, answer) =
        post(&client, &service.base, &json!({"events":[event(uid, "archive", 1, 5, now_ms()), event(uid, "pgc", 2, 5, now_ms())]})).await;
    assert_eq!((status, answer), (200, json!({"results":[{"recorded":false,"first_today":false},{"recorded":false,"first_today":false}]})));
    let items: i64 = redis.zcard(keys::timeline(uid)).await.unwrap();
    let records: i64 = redis.hlen(keys::records(uid)).await.unwrap();
    assert_eq!((items, records), (0, 0));
}

#[tokio::test]
async fn fifty_concurrent_requests_give_one_first_watch_and_one_broadcast() {
    let (url, brokers) = (common::redis_url(), common::kafka_brokers());
    let broadcast_topic = common::unique("first-watch");
    // One partition: the broadcasts arrive in the order they were sent.
    common::create_topic(&brokers, &broadcast_topic, 1).await;
    let knobs = Knobs { broadcast: Some(broadcast_topic.clone()), ..Knobs::default() };
    let service = start_service(&url, &brokers, &common::unique("merge"), &knobs).await;
    let client = reqwest::Client::new();
    let uid = common::unique_uid_base();

    let requests = (0..50).map(|i| {
        let (client, base) = (client.clone(), service.base.clone());
        tokio::spawn(async move { post(&client, &base, &event(uid, "archive", i, 10, now_ms())).await })
    });
    let mut first_today = 0;
    for request in requests {
        let (status, answer) = request.await.unwrap();
        assert_eq!(status, 200, "{answer}");
        if answer["results"][0]["first_today"] == json!(true) {
            first_today += 1;
        }
    }
    assert_eq!(first_today, 1, "exactly one request is the first watch of the day");

    // A sentinel user's first watch is sent after all of the above.
    let sentinel = uid + 1;
    let (status, _) = post(&client, &service.base, &event(sentinel, "archive", 1, 1, now_ms())).await;
    assert_eq!(status, 200);
    let consumer = common::consumer(&brokers, &broadcast_topic);
    let mut for_uid = 0;
    let today = keys::utc_day(now_ms());
    common::read_until(&consumer, "the sentinel's first-watch broadcast", Duration::from_secs(30), |message| {
        let watch = codec::decode_first_watch(common::payload(message)).unwrap();
        let idempotency = message.headers().and_then(|h| {
            rdkafka::message::Headers::iter(h).find(|h| h.key == "idempotency-key").and_then(|h| h.value.map(<[u8]>::to_vec))
        });
        if watch.uid == uid {
            for_uid += 1;
            assert_eq!(message.key(), Some(uid.to_string().as_bytes()));
            assert!(watch.day == today || watch.day == today - 1);
            assert_eq!(idempotency, Some(format!("{uid}:{}", watch.day).into_bytes()));
        }
        watch.uid == sentinel
    })
    .await;
    assert_eq!(for_uid, 1, "one broadcast per user per day");
}

/// Posts several reports per (user, item), stops the service (its drain
/// flushes every shard), and checks the merge topic.
async fn merge_topic_carries_latest_view_per_item(payload: &'static str) {
    let (url, brokers) = (common::redis_url(), common::kafka_brokers());
    let topic = common::unique("merge");
    // A long interval: the only flush is the drain's, so "once per flush"
    // means exactly once.
    let knobs = Knobs { payload, flush_interval_ms: 600_000, ..Knobs::default() };
    let mut service = start_service(&url, &brokers, &topic, &knobs).await;
    let client = reqwest::Client::new();
    let uid_base = common::unique_uid_base();
    let start = now_ms() - 100_000;

    let mut latest: HashMap<(u64, String), Record> = HashMap::new();
    for report in 0..4i64 {
        let mut events = Vec::new();
        for user in 0..20u64 {
            for oid in 0..3u64 {
                let (uid, view_at, progress) = (uid_base + user, start + report * 1000 + oid as i64, report * 10);
                events.push(event(uid, "archive", oid, progress, view_at));
                let record = Record {
                    uid,
                    business: "archive".into(),
                    oid,
                    sub_id: None,
                    progress,
                    duration: None,
                    device: Some("test".into()),
                    view_at,
                };
                latest.insert((uid, record.item_key()), record);
            }
        }
        let (status, answer) = post(&client, &service.base, &json!({ "events": events })).await;
        assert_eq!(status, 200, "{answer}");
    }
    assert_eq!(service.stop(Duration::from_secs(30)), Some(0), "a clean drain exits 0");

    let consumer = common::consumer(&brokers, &topic);
    let mut seen: HashMap<(u64, String), usize> = HashMap::new();
    common::read_until(&consumer, "every (uid, item) on the merge topic", Duration::from_secs(30), |message| {
        let (shard, ops) = codec::decode_merge_batch(common::payload(message)).unwrap();
        assert_eq!(message.key(), Some(shard.to_string().as_bytes()), "the key is the shard");
        for op in ops {
            let (uid, item, view_at) = match &op {
                Op::UpsertRef { uid, item, view_at } if payload == "ids" => (*uid, item.clone(), *view_at),
                Op::Upsert(record) if payload == "full" || payload == "fetched" => (record.uid, record.item_key(), record.view_at),
                other => panic!("unexpected op in {payload} mode: {other:?}"),
            };
            assert_eq!(keys::shard_of(uid, 8), shard, "user {uid} is in the wrong shard's message");
            let expected = &latest[&(uid, item.clone())];
            assert_eq!(view_at, expected.view_at, "not the latest view of {uid}/{item}");
            if let Op::Upsert(record) = &op {
                assert_eq!(record, expected);
            }
            *seen.entry((uid, item)).or_default() += 1;
        }
        seen.len() == latest.len()
    })
    .await;
    assert!(seen.values().all(|&count| count == 1), "an item appeared twice in one flush: {seen:?}");
    // Delivered, every mark is settled. A reference shipped by `ids`
    // stays named in the user's marks hash until the job has written its
    // record (no job runs here); what travels whole leaves nothing.
    let mut redis = redis(&url).await;
    for user in 0..20u64 {
        let uid = uid_base + user;
        let mut fields: Vec<String> = redis::cmd("HKEYS").arg(keys::pending(uid)).query_async(&mut redis).await.unwrap();
        // The keeper keeps the hash in being; it is no mark.
        fields.retain(|field| field != keys::PENDING_KEEPER);
        fields.sort();
        let expected: Vec<String> = if payload == "ids" { (0..3).map(|oid| format!(":archive:{oid}")).collect() } else { Vec::new() };
        assert_eq!(fields, expected, "{payload}: the marks hash of user {uid} after the delivery");
    }
}

#[tokio::test]
async fn merge_topic_in_ids_mode() {
    merge_topic_carries_latest_view_per_item("ids").await;
}

#[tokio::test]
async fn merge_topic_in_full_mode() {
    merge_topic_carries_latest_view_per_item("full").await;
}

/// `fetched`: the aggregate holds references, the producer ships the
/// records it reads from Redis.
#[tokio::test]
async fn merge_topic_in_fetched_mode() {
    merge_topic_carries_latest_view_per_item("fetched").await;
}

#[tokio::test]
async fn bad_input_is_refused_with_its_status_and_redis_stays_untouched() {
    let (url, brokers) = (common::redis_url(), common::kafka_brokers());
    // The token reaches histflow through its environment.
    let knobs = Knobs { max_body_bytes: 128 * 1024, auth_token_env: Some("HISTFLOW_WRITE_PATH_TEST_TOKEN"), ..Knobs::default() };
    let service = start_service(&url, &brokers, &common::unique("merge"), &knobs).await;
    let client = reqwest::Client::new();
    let mut redis = redis(&url).await;
    let uid = common::unique_uid_base();
    let good = event(uid, "archive", 1, 1, now_ms());
    let authorized = |builder: reqwest::RequestBuilder| builder.bearer_auth(TEST_TOKEN);
    let url_events = format!("{}/v1/events", service.base);

    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        ("no token", client.post(&url_events).json(&good), 401, "unauthorized"),
        ("wrong token", client.post(&url_events).bearer_auth("nope-nope-nope-nope").json(&good), 401, "unauthorized"),
        (
            "malformed JSON",
            authorized(client.post(&url_events)).header("content-type", "application/json").body("{\"uid\":"),
            400,
            "malformed_json",
        ),
        (
            "wrong type",
            authorized(client.post(&url_events)).json(&json!({"events":[good, {"uid":"x","business":"archive","oid":1,"progress":1}]})),
            400,
            "invalid_event",
        ),
        (
            "missing field",
            authorized(client.post(&url_events)).json(&json!({"uid":uid,"business":"archive","progress":1})),
            400,
            "invalid_event",
        ),
        (
            "unknown field",
            authorized(client.post(&url_events)).json(&json!({"uid":uid,"business":"archive","oid":1,"progress":1,"colour":1})),
            400,
            "invalid_event",
        ),
        (
            "unknown business",
            authorized(client.post(&url_events)).json(&json!({"events":[good, event(uid, "comic", 1, 1, now_ms())]})),
            400,
            "unknown_business",
        ),
        (
            "too many events",
            authorized(client.post(&url_events))
                .json(&json!({"events": vec![json!({"uid":uid,"business":"archive","oid":1,"progress":1}); 1001]})),
            400,
            "too_many_events",
        ),
        (
            "too large",
            authorized(client.post(&url_events))
                .header("content-type", "application/json")
                .body(format!("{{\"events\":[{}]}}", vec![good.to_string(); 3000].join(","))),
            413,
            "too_large",
        ),
        (
            "wrong content type",
            authorized(client.post(&url_events)).header("content-type", "text/plain").body(good.to_string()),
            415,
            "unsupported_media_type",
        ),
    ];
    for (case, request, status, code) in cases {
        let response = request.send().await.unwrap();
        let got_status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!((got_status, body["error"]["code"].as_str()), (status, Some(code)), "case {case}: {body}");
    }
    let exists: bool = redis.exists(keys::timeline(uid)).await.unwrap();
    assert!(!exists, "a refused request wrote to Redis");

    let (status, _) = {
        let response = authorized(client.post(&url_events)).json(&good).send().await.unwrap();
        (response.status().as_u16(), ())
    };
    assert_eq!(status, 200, "the same event with a token is accepted");
}

#[tokio::test]
async fn redis_outage_answers_503_and_recovers_without_restart() {
    let brokers = common::kafka_brokers();
    let mut own_redis = TestRedis::start();
    let knobs = Knobs { request_timeout_ms: 3000, ..Knobs::default() };
    let service = start_service(&own_redis.url(), &brokers, &common::unique("merge"), &knobs).await;
    let client = reqwest::Client::new();
    let uid = common::unique_uid_base();
    let mut answered_200 = Vec::new();

    let (status, _) = post(&client, &service.base, &event(uid, "archive", 0, 1, now_ms())).await;
    assert_eq!(status, 200);
    answered_200.push(0);

    own_redis.stop();
    for oid in 1..=5 {
        let (status, answer) = post(&client, &service.base, &event(uid, "archive", oid, 1, now_ms())).await;
        assert_eq!(status, 503, "Redis is down: {answer}");
        assert!(["write_failed", "timeout"].contains(&answer["error"]["code"].as_str().unwrap_or_default()), "{answer}");
    }

    own_redis.restart();
    let recovered = common::eventually("a 200 after Redis came back", Duration::from_secs(30), async || {
        let oid = 100;
        let (status, _) = post(&client, &service.base, &event(uid, "archive", oid, 1, now_ms())).await;
        (status == 200).then_some(oid)
    })
    .await;
    answered_200.push(recovered);

    let mut redis = redis(&own_redis.url()).await;
    for oid in answered_200 {
        let score: Option<f64> = redis.zscore(keys::timeline(uid), format!("archive:{oid}")).await.unwrap();
        assert!(score.is_some(), "archive:{oid} was answered 200 but is not in Redis");
    }
    for oid in 1..=5 {
        let score: Option<f64> = redis.zscore(keys::timeline(uid), format!("archive:{oid}")).await.unwrap();
        assert!(score.is_none(), "archive:{oid} was answered 503 during the outage and must not appear from nowhere");
    }
}

#[tokio::test]
async fn kafka_outage_backpressures_to_ingest_and_loses_nothing() {
    let url = common::redis_url();
    let broker = TestTansu::start();
    let topic = common::unique("merge");
    // Every event its own flush, and small edges: a frozen broker stalls the
    // producer, the edges fill, and ingest refuses at once.
    let knobs = Knobs { flush_max_entries: 1, ingest_capacity: 4, edge_capacity: 4, request_timeout_ms: 1000, ..Knobs::default() };
    let mut service = start_service(&url, &broker.brokers(), &topic, &knobs).await;
    let client = reqwest::Client::new();
    let uid = common::unique_uid_base();

    // The merge topic exists once the producer has created it.
    let (status, _) = post(&client, &service.base, &event(uid, "archive", 0, 1, now_ms())).await;
    assert_eq!(status, 200);
    let mut accepted: HashSet<u64> = HashSet::from([0]);

    broker.pause();
    let mut refused_overloaded = false;
    for oid in 1..=2000u64 {
        let (status, answer) = post(&client, &service.base, &event(uid, "archive", oid, 1, now_ms())).await;
        match (status, answer["error"]["code"].as_str()) {
            (200, _) => {
                accepted.insert(oid);
            }
            (503, Some("overloaded")) => {
                refused_overloaded = true;
                break;
            }
            (503, Some("timeout")) => {}
            other => panic!("unexpected answer while Kafka is frozen: {other:?} {answer}"),
        }
    }
    assert!(refused_overloaded, "backpressure never reached ingest while the broker was frozen");
    broker.resume();

    assert_eq!(service.stop(Duration::from_secs(60)), Some(0), "the drain delivers everything and exits 0:\n{}", service.log_text());
    let consumer = common::consumer(&broker.brokers(), &topic);
    let mut seen: HashMap<u64, usize> = HashMap::new();
    common::read_until(&consumer, "every accepted event on the merge topic", Duration::from_secs(60), |message| {
        let (_, ops) = codec::decode_merge_batch(common::payload(message)).unwrap();
        for op in ops {
            if let Op::UpsertRef { uid: op_uid, item, .. } = op {
                if op_uid == uid {
                    let oid: u64 = item.trim_start_matches("archive:").parse().unwrap();
                    *seen.entry(oid).or_default() += 1;
                }
            }
        }
        accepted.iter().all(|oid| seen.contains_key(oid))
    })
    .await;
    let duplicated: Vec<(&u64, &usize)> = seen.iter().filter(|(_, &count)| count > 1).collect();
    assert!(duplicated.is_empty(), "delivered more than once: {duplicated:?}");
}
