//! The read-and-mutation API end to end, over HTTP and gRPC: `histflow run
//! --role all` as a process against real Redis, a real Kafka-protocol
//! broker (tansu) and the HBase-compatible server over Thrift, so pages
//! that run past Redis are served from what the job persisted.

// Tests may unwrap: a failure is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Histflow, TestCompat, TestRedis};
use ingest_http::grpc::proto::history_client::HistoryClient;
use ingest_http::grpc::proto::{self as grpc};
use serde_json::{json, Value};
use tonic::transport::Channel;

/// Knobs of one test's topology.
struct Setup<'a> {
    redis: &'a str,
    compat: &'a TestCompat,
    payload: &'a str,
    max_items: usize,
    progress_fallback: &'a str,
    /// `flush_interval_ms` of the persist stage.
    persist_flush_ms: u64,
}

impl<'a> Setup<'a> {
    fn new(redis: &'a str, compat: &'a TestCompat, payload: &'a str) -> Self {
        Setup { redis, compat, payload, max_items: 1000, progress_fallback: "redis", persist_flush_ms: 200 }
    }
}

/// The whole pipeline in one process, with gRPC, flushing fast.
fn topology(http: u16, grpc: u16, setup: &Setup<'_>) -> String {
    let Setup { redis, compat, payload, max_items, progress_fallback, persist_flush_ms } = setup;
    let brokers = common::kafka_brokers();
    let topic = common::unique("reads");
    format!(
        r#"
[pipeline]
shutdown_timeout_ms = 20000

[businesses]
archive = {{ id = 1, retention_days = 30 }}
pgc = {{ id = 2, retention_days = 30 }}
live = {{ id = 3, retention_days = 1 }}

[[stages]]
name = "ingest"
type = "http_ingest"
listen = "127.0.0.1:{http}"
grpc_listen = "127.0.0.1:{grpc}"
progress_fallback = "{progress_fallback}"

[[stages]]
name = "realtime"
type = "realtime"
inputs = ["ingest"]
redis_url = "{redis}"
max_items_per_user = {max_items}

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
consumer_group = "{topic}-job"
payload = "{payload}"
partitions = 2

[[stages]]
name = "persist"
type = "persist"
inputs = ["kafka_batch"]
hbase_thrift = "{compat}"
redis_url = "{redis}"
flush_interval_ms = {persist_flush_ms}
write_rate_limit = {{ per_second = 1000000, burst = 100000 }}
"#,
        compat = compat.address()
    )
}

/// A running pipeline and clients for both transports.
struct Api {
    histflow: Histflow,
    http: reqwest::Client,
    grpc: HistoryClient<Channel>,
}

impl Api {
    async fn start(setup: &Setup<'_>) -> Self {
        let (http, grpc) = (common::free_port(), common::free_port());
        let histflow = Histflow::start(&topology(http, grpc, setup), http, &["--role", "all"]).await;
        let grpc = HistoryClient::connect(format!("http://127.0.0.1:{grpc}")).await.unwrap();
        Api { histflow, http: reqwest::Client::new(), grpc }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.histflow.base)
    }

    async fn post(&self, events: Vec<Value>) -> Value {
        let mut results = Vec::new();
        for chunk in events.chunks(1000) {
            let response = self.http.post(self.url("/v1/events")).json(&json!({ "events": chunk })).send().await.unwrap();
            let status = response.status();
            let answer: Value = response.json().await.unwrap();
            assert_eq!(status, 200, "POST /v1/events: {answer}\nthe service's log:\n{}", self.histflow.log_text());
            results.extend(answer["results"].as_array().unwrap().iter().cloned());
        }
        Value::Array(results)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// A page that must be served: anything but 200 fails the test with
    /// the answer and the service's log (which names the failed call).
    async fn page(&self, path: &str) -> Value {
        let (status, page) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {page}\nthe service's log:\n{}", self.histflow.log_text());
        page
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> u16 {
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap().status().as_u16()
    }

    /// Every page of `uid`'s history over HTTP: (view_at, item) in order.
    async fn all_pages_http(&self, uid: u64, limit: usize, business: &str) -> Vec<(i64, String)> {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/users/{uid}/history?limit={limit}");
            if !business.is_empty() {
                path.push_str(&format!("&business={business}"));
            }
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let page = self.page(&path).await;
            let items = page["items"].as_array().unwrap();
            assert!(items.len() <= limit);
            for item in items {
                seen.push((item["view_at"].as_i64().unwrap(), format!("{}:{}", item["business"].as_str().unwrap(), item["oid"])));
            }
            match page["next_cursor"].as_str() {
                Some(next) => {
                    assert_eq!(items.len(), limit, "a page before the last is full");
                    cursor = Some(next.to_owned());
                }
                None => return seen,
            }
        }
    }

    /// Every page of `uid`'s history over gRPC.
    async fn all_pages_grpc(&mut self, uid: u64, limit: u32, business: &str) -> Vec<(i64, String)> {
        let mut seen = Vec::new();
        let mut cursor = String::new();
        loop {
            let request = grpc::UserHistoriesRequest { uid, business: business.to_owned(), limit, cursor: cursor.clone() };
            let page = self.grpc.user_histories(request).await.unwrap().into_inner();
            seen.extend(page.items.iter().map(|item| (item.view_at, format!("{}:{}", item.business, item.oid))));
            if page.next_cursor.is_empty() {
                return seen;
            }
            cursor = page.next_cursor;
        }
    }

    /// The value of a counter on `/metrics` (summed over its labels that
    /// contain `labels`).
    async fn counter(&self, name: &str, labels: &str) -> f64 {
        let text = self.http.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|line| line.starts_with(name) && line.contains(labels))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

fn event(uid: u64, business: &str, oid: u64, progress: i64, view_at: i64) -> Value {
    json!({"uid": uid, "business": business, "oid": oid, "progress": progress, "view_at": view_at})
}

/// Waits until `uid`'s HBase row holds `count` visible records.
async fn until_persisted(compat: &TestCompat, uid: u64, count: usize) {
    let row = model::keys::hbase_row(uid);
    common::eventually(&format!("{count} records of user {uid} in HBase"), Duration::from_secs(60), async || {
        let cells = compat.snapshot("history").keys().filter(|(r, column)| *r == row && column.starts_with("r:")).count();
        (cells == count).then_some(())
    })
    .await;
}

/// Asserts `seen` is strictly newest first by (view_at, item) and holds
/// exactly `expected` items, each once.
fn assert_exact_order(seen: &[(i64, String)], expected: usize) {
    let unique: HashSet<&(i64, String)> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "an item came twice");
    assert_eq!(seen.len(), expected, "items missing or extra");
    for pair in seen.windows(2) {
        assert!(pair[0] > pair[1], "out of order: {:?} before {:?}", pair[0], pair[1]);
    }
}

#[tokio::test]
async fn pages_of_2500_items_sharing_view_ats_give_each_item_once_newest_first_over_http_and_grpc() {
    let compat = TestCompat::start();
    let redis = common::redis_url();
    let mut api = Api::start(&Setup::new(&redis, &compat, "full")).await;
    let uid = common::unique_uid_base();
    let base = model::now_ms() - 3_600_000;
    // 25 distinct view_ats, 100 items on each; two businesses interleaved.
    let events: Vec<Value> =
        (0..2500u64).map(|i| event(uid, if i % 2 == 0 { "archive" } else { "pgc" }, i, i as i64, base + (i / 100) as i64)).collect();
    api.post(events).await;
    // Redis keeps the newest 1000; the job persists all 2500 (full payload).
    until_persisted(&compat, uid, 2500).await;

    let over_http = api.all_pages_http(uid, 37, "").await;
    assert_exact_order(&over_http, 2500);
    assert_eq!(over_http[0].0, base + 24, "the newest first");
    let over_grpc = api.all_pages_grpc(uid, 37, "").await;
    assert_eq!(over_grpc, over_http, "gRPC pages differ from HTTP pages");

    // A business filter pages exactly too.
    let mut pgc = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = api.get(&format!("/v1/users/{uid}/history?business=pgc&limit=100&cursor={cursor}")).await;
        assert_eq!(status, 200, "{page}");
        pgc.extend(page["items"].as_array().unwrap().iter().map(|item| (item["view_at"].as_i64().unwrap(), item["oid"].as_u64().unwrap())));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(pgc.len(), 1250);
    assert!(pgc.iter().all(|(_, oid)| oid % 2 == 1));
}

#[tokio::test]
async fn pages_beyond_what_redis_keeps_come_from_hbase_in_order() {
    let compat = TestCompat::start();
    let redis = common::redis_url();
    // ids payload: the job reads records from Redis, so each chunk is
    // persisted before the next pushes it out of Redis (as a user's
    // history grows over time).
    let api = Api::start(&Setup::new(&redis, &compat, "ids")).await;
    let uid = common::unique_uid_base();
    let base = model::now_ms() - 3_600_000;
    for chunk in 0..3u64 {
        let events = (chunk * 500..(chunk + 1) * 500).map(|i| event(uid, "archive", i, 1, base + i as i64)).collect();
        api.post(events).await;
        until_persisted(&compat, uid, ((chunk + 1) * 500) as usize).await;
    }

    // The first 1000 come from Redis alone.
    let before = api.counter("histflow_read_pages_total", "source=\"hbase\"").await;
    let mut cursor = String::new();
    let mut seen = Vec::new();
    for _ in 0..10 {
        let page = api.page(&format!("/v1/users/{uid}/history?limit=100&cursor={cursor}")).await;
        seen.extend(page["items"].as_array().unwrap().iter().map(|item| item["oid"].as_u64().unwrap()));
        cursor = page["next_cursor"].as_str().unwrap().to_owned();
    }
    assert_eq!(api.counter("histflow_read_pages_total", "source=\"hbase\"").await, before, "the first 1000 needed HBase");
    // The rest from HBase, in order.
    loop {
        let (status, page) = api.get(&format!("/v1/users/{uid}/history?limit=100&cursor={cursor}")).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(page["items"].as_array().unwrap().iter().map(|item| item["oid"].as_u64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, (0..1500u64).rev().collect::<Vec<_>>());
    assert!(api.counter("histflow_read_pages_total", "source=\"hbase\"").await >= before + 5.0, "pages past Redis came from HBase");

    // A user whose HBase row holds nothing Redis lacks stops costing HBase
    // calls: a read notes it (the user was never trimmed).
    let small = uid + 1;
    api.post(vec![event(small, "archive", 1, 1, base)]).await;
    until_persisted(&compat, small, 1).await;
    common::eventually("a short page that needs no HBase call", Duration::from_secs(30), async || {
        let calls = api.counter("histflow_read_hbase_calls_total", "").await;
        let page = api.page(&format!("/v1/users/{small}/history")).await;
        assert_eq!(page["items"].as_array().unwrap().len(), 1);
        (api.counter("histflow_read_hbase_calls_total", "").await == calls).then_some(())
    })
    .await;
    let calls = api.counter("histflow_read_hbase_calls_total", "").await;
    for _ in 0..5 {
        let page = api.page(&format!("/v1/users/{small}/history")).await;
        assert_eq!(page["items"].as_array().unwrap().len(), 1);
    }
    assert_eq!(api.counter("histflow_read_hbase_calls_total", "").await, calls, "short pages still read HBase");
}

#[tokio::test]
async fn items_pushed_out_of_redis_show_once_the_job_writes_them_even_if_a_read_came_first() {
    items_pushed_out_of_redis_show_once_written("full").await;
}

/// In `ids` mode the five older items, trimmed by the very write that
/// recorded them, have nothing left in Redis for the job to re-read: their
/// records must travel whole.
#[tokio::test]
async fn items_trimmed_by_their_own_write_reach_hbase_in_ids_mode() {
    items_pushed_out_of_redis_show_once_written("ids").await;
}

async fn items_pushed_out_of_redis_show_once_written(payload: &str) {
    let compat = TestCompat::start();
    let redis = common::redis_url();
    // Redis keeps 5; the job writes every 3 s, so the first look past
    // Redis (right after the post) usually finds HBase without them yet.
    let setup = Setup { max_items: 5, persist_flush_ms: 3_000, ..Setup::new(&redis, &compat, payload) };
    let api = Api::start(&setup).await;
    let uid = common::unique_uid_base();
    let base = model::now_ms() - 60_000;
    api.post((0..10u64).map(|oid| event(uid, "archive", oid, 1, base + oid as i64)).collect()).await;
    let first = api.page(&format!("/v1/users/{uid}/history?limit=5")).await;
    let cursor = first["next_cursor"].as_str().expect("a full page at the end of Redis has a cursor").to_owned();
    let early = api.page(&format!("/v1/users/{uid}/history?limit=5&cursor={cursor}")).await;
    assert!(early["items"].as_array().unwrap().len() <= 5, "{early}");
    // That early look found HBase without them, but the user was trimmed:
    // no "HBase holds nothing more" note is made, so they show once the
    // job wrote them.
    let oids = common::eventually("the five older items from HBase", Duration::from_secs(30), async || {
        let page = api.page(&format!("/v1/users/{uid}/history?limit=5&cursor={cursor}")).await;
        let oids: Vec<u64> = page["items"].as_array().unwrap().iter().map(|item| item["oid"].as_u64().unwrap()).collect();
        (oids.len() == 5).then_some(oids)
    })
    .await;
    assert_eq!(oids, vec![4, 3, 2, 1, 0]);
}

#[tokio::test]
async fn after_a_redis_loss_history_progress_and_pause_come_from_hbase_and_deletes_stay() {
    let compat = TestCompat::start();
    let redis = TestRedis::start();
    let url = redis.url();
    let api = Api::start(&Setup { progress_fallback: "hbase", ..Setup::new(&url, &compat, "ids") }).await;
    let uid = common::unique_uid_base();
    let base = model::now_ms() - 60_000;
    api.post((1..=5u64).map(|oid| event(uid, "archive", oid, oid as i64 * 10, base + oid as i64)).collect()).await;
    until_persisted(&compat, uid, 5).await;
    assert_eq!(api.send(reqwest::Method::DELETE, &format!("/v1/users/{uid}/history/archive/3"), None).await, 204);
    assert_eq!(api.send(reqwest::Method::PUT, &format!("/v1/users/{uid}/recording"), Some(json!({"paused": true}))).await, 200);
    until_persisted(&compat, uid, 4).await;
    let row = model::keys::hbase_row(uid);
    common::eventually("the pause flag in HBase", Duration::from_secs(30), async || {
        compat.snapshot("history").get(&(row.clone(), "m:paused".to_owned())).filter(|(_, value)| value == b"1").map(drop)
    })
    .await;

    let mut connection = common::redis_connection(&url).await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut connection).await.unwrap();

    let (status, page) = api.get(&format!("/v1/users/{uid}/history")).await;
    assert_eq!(status, 200, "{page}");
    let oids: Vec<u64> = page["items"].as_array().unwrap().iter().map(|item| item["oid"].as_u64().unwrap()).collect();
    assert_eq!(oids, vec![5, 4, 2, 1], "the deleted item stays hidden");
    assert_eq!(page["items"][0]["progress"], 50);
    let (_, progress) = api.get(&format!("/v1/users/{uid}/progress?items=archive:1,archive:3,archive:9")).await;
    assert_eq!(progress["items"]["archive:1"]["progress"], 10, "{progress}");
    assert_eq!(progress["items"]["archive:3"], Value::Null);
    assert_eq!(progress["items"]["archive:9"], Value::Null);
    let (_, recording) = api.get(&format!("/v1/users/{uid}/recording")).await;
    assert_eq!(recording, json!({"paused": true}), "the pause survives the Redis loss");
    // Reads create no state: neither of this user, whom only HBase knows,
    // nor of users nobody knows.
    for stranger in uid + 1..uid + 20 {
        assert_eq!(api.get(&format!("/v1/users/{stranger}/history")).await.0, 200);
    }
    assert_eq!(self::oids(&api, uid).await, vec![5, 4, 2, 1]);
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut connection).await.unwrap();
    assert!(keys.is_empty(), "reads created Redis keys: {keys:?}");
    // What the README says of a pause whose Redis meta is gone: writes read
    // the pause from Redis only, so a report is recorded again, and from
    // then on the switch answers from Redis: not paused.
    let recorded = api.post(vec![event(uid, "archive", 8, 1, model::now_ms())]).await;
    assert_eq!(recorded[0]["recorded"], true, "{recorded}");
    assert_eq!(api.get(&format!("/v1/users/{uid}/recording")).await.1, json!({"paused": false}));
}

/// The oids of `uid`'s first history page.
async fn oids(api: &Api, uid: u64) -> Vec<u64> {
    let (status, page) = api.get(&format!("/v1/users/{uid}/history")).await;
    assert_eq!(status, 200, "{page}\nthe service's log:\n{}", api.histflow.log_text());
    page["items"].as_array().unwrap().iter().map(|item| item["oid"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn deletes_clears_and_pauses_take_effect_at_once_and_after_the_job() {
    let compat = TestCompat::start();
    let redis = common::redis_url();
    let api = Api::start(&Setup::new(&redis, &compat, "ids")).await;
    let uid = common::unique_uid_base();
    let base = model::now_ms() - 60_000;
    api.post(vec![event(uid, "archive", 1, 10, base), event(uid, "archive", 2, 20, base + 1)]).await;
    assert_eq!(oids(&api, uid).await, vec![2, 1]);

    // Delete: gone at once; a late older report stays deleted; a newer one
    // is a new view and comes back.
    assert_eq!(api.send(reqwest::Method::DELETE, &format!("/v1/users/{uid}/history/archive/2"), None).await, 204);
    assert_eq!(oids(&api, uid).await, vec![1]);
    let late = api.post(vec![event(uid, "archive", 2, 15, base + 1)]).await;
    assert_eq!(late[0]["recorded"], false);
    assert_eq!(oids(&api, uid).await, vec![1]);
    let newer = model::now_ms() + 1_000;
    let again = api.post(vec![event(uid, "archive", 2, 30, newer)]).await;
    assert_eq!(again[0]["recorded"], true);
    assert_eq!(oids(&api, uid).await, vec![2, 1]);

    // Clear: empty at once, and still empty once the job wrote it to HBase
    // (the page then reads HBase, whose family delete hides everything).
    until_persisted(&compat, uid, 2).await;
    assert_eq!(api.send(reqwest::Method::DELETE, &format!("/v1/users/{uid}/history?all=true"), None).await, 204);
    assert_eq!(oids(&api, uid).await, Vec::<u64>::new());
    until_persisted(&compat, uid, 0).await;
    assert_eq!(oids(&api, uid).await, Vec::<u64>::new());

    // Pause: reports are not recorded, and the pause never expires (a
    // paused user writes nothing that would refresh its meta's expiry);
    // resume: recorded again, and the meta expires as usual again.
    let mut connection = common::redis_connection(&redis).await;
    let meta = model::keys::meta(uid);
    assert_eq!(api.send(reqwest::Method::PUT, &format!("/v1/users/{uid}/recording"), Some(json!({"paused": true}))).await, 200);
    assert_eq!(api.get(&format!("/v1/users/{uid}/recording")).await.1, json!({"paused": true}));
    let ttl: i64 = redis::cmd("TTL").arg(&meta).query_async(&mut connection).await.unwrap();
    assert_eq!(ttl, -1, "a paused user's meta must not expire");
    let paused = api.post(vec![event(uid, "archive", 7, 1, model::now_ms() + 2_000)]).await;
    assert_eq!(paused[0], json!({"recorded": false, "first_today": false}));
    assert_eq!(oids(&api, uid).await, Vec::<u64>::new());
    assert_eq!(api.send(reqwest::Method::PUT, &format!("/v1/users/{uid}/recording"), Some(json!({"paused": false}))).await, 200);
    let resumed = api.post(vec![event(uid, "archive", 7, 1, model::now_ms() + 3_000)]).await;
    assert_eq!(resumed[0]["recorded"], true);
    let ttl: i64 = redis::cmd("TTL").arg(&meta).query_async(&mut connection).await.unwrap();
    assert!(ttl > 0, "a resumed user's meta expires again, got TTL {ttl}");
    assert_eq!(oids(&api, uid).await, vec![7]);

    // Bad parameters are named.
    for (path, code) in [
        ("/v1/users/abc/history".to_owned(), "invalid_uid"),
        (format!("/v1/users/{uid}/history?limit=101"), "invalid_limit"),
        (format!("/v1/users/{uid}/history?cursor=bogus"), "invalid_cursor"),
        (format!("/v1/users/{uid}/history?business=comic"), "unknown_business"),
        (format!("/v1/users/{uid}/progress?items=archive"), "invalid_item"),
    ] {
        let (status, body) = api.get(&path).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some(code)), "{path}: {body}");
    }
}

/// The (business:oid) columns visible in `uid`'s HBase row.
fn hbase_items(compat: &TestCompat, uid: u64) -> Vec<String> {
    let row = model::keys::hbase_row(uid);
    compat
        .snapshot("history")
        .into_keys()
        .filter(|(r, _)| *r == row)
        .filter_map(|(_, column)| column.strip_prefix("r:").map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn clearing_two_of_three_businesses_keeps_the_third_in_redis_and_hbase_and_older_reports_stay_hidden() {
    let compat = TestCompat::start();
    let redis = common::redis_url();
    let mut api = Api::start(&Setup::new(&redis, &compat, "ids")).await;
    let (http_uid, grpc_uid) = (common::unique_uid_base(), common::unique_uid_base() + 1);
    let base = model::now_ms() - 60_000;
    let views = [("archive", 1, base), ("archive", 2, base + 1), ("pgc", 3, base + 2), ("pgc", 4, base + 3), ("live", 5, base + 4)];
    for uid in [http_uid, grpc_uid] {
        api.post(views.iter().map(|(business, oid, at)| event(uid, business, *oid, 1, *at)).collect()).await;
        until_persisted(&compat, uid, 5).await;
    }
    // Naming no business, or an unregistered one, clears nothing.
    for (query, code) in [("?business=", "invalid_business"), ("?business=pgc,comic", "unknown_business")] {
        let response = api.http.delete(api.url(&format!("/v1/users/{http_uid}/history{query}"))).send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some(code)), "{query}: {body}");
    }
    assert_eq!(oids(&api, http_uid).await, vec![5, 4, 3, 2, 1]);

    assert_eq!(api.send(reqwest::Method::DELETE, &format!("/v1/users/{http_uid}/history?business=pgc,live"), None).await, 204);
    api.grpc.clear_history(grpc::ClearHistoryRequest { uid: grpc_uid, business: "live,pgc".into(), all: false }).await.unwrap();
    for uid in [http_uid, grpc_uid] {
        assert_eq!(oids(&api, uid).await, vec![2, 1], "user {uid}: only archive is left, at once");
        // Late older reports of cleared items stay hidden; a newer one of a
        // cleared business comes back.
        let late = api.post(vec![event(uid, "pgc", 3, 9, base + 2), event(uid, "live", 5, 9, base + 1)]).await;
        assert_eq!(late, json!([{"recorded": false, "first_today": false}, {"recorded": false, "first_today": false}]));
        let newer = api.post(vec![event(uid, "pgc", 4, 9, model::now_ms() + 1_000)]).await;
        assert_eq!(newer[0]["recorded"], true, "{newer}");
    }
    // After the job: HBase holds archive and the newer pgc view only, and
    // pages (which look in HBase again after the job wrote the user) agree.
    for uid in [http_uid, grpc_uid] {
        common::eventually(&format!("user {uid}'s clears in HBase"), Duration::from_secs(60), async || {
            (hbase_items(&compat, uid) == ["archive:1", "archive:2", "pgc:4"]).then_some(())
        })
        .await;
        assert_eq!(oids(&api, uid).await, vec![4, 2, 1]);
    }
    assert_eq!(api.all_pages_grpc(grpc_uid, 2, "").await, api.all_pages_http(grpc_uid, 2, "").await);
}

#[tokio::test]
async fn http_and_grpc_answer_a_shared_scenario_alike() {
    let compat = TestCompat::start();
    let redis = common::redis_url();
    let mut api = Api::start(&Setup::new(&redis, &compat, "ids")).await;
    let (http_uid, grpc_uid) = (common::unique_uid_base(), common::unique_uid_base() + 1);
    let base = model::now_ms() - 60_000;
    // Six items, two on each of three view_ats.
    let events: Vec<(u64, i64, i64)> = (1..=6u64).map(|oid| (oid, oid as i64 * 7, base + (oid as i64 % 3))).collect();

    let http_results = api.post(events.iter().map(|(oid, progress, at)| event(http_uid, "archive", *oid, *progress, *at)).collect()).await;
    let grpc_events: Vec<grpc::Event> = events
        .iter()
        .map(|(oid, progress, at)| grpc::Event {
            uid: grpc_uid,
            business: "archive".into(),
            oid: *oid,
            progress: *progress,
            view_at: Some(*at),
            ..Default::default()
        })
        .collect();
    let grpc_results = api.grpc.add_histories(grpc::AddHistoriesRequest { events: grpc_events }).await.unwrap().into_inner().results;
    let grpc_results: Vec<Value> = grpc_results.iter().map(|r| json!({"recorded": r.recorded, "first_today": r.first_today})).collect();
    assert_eq!(Value::Array(grpc_results), http_results);

    api.send(reqwest::Method::DELETE, &format!("/v1/users/{http_uid}/history/archive/4"), None).await;
    api.grpc
        .delete_histories(grpc::DeleteHistoriesRequest { uid: grpc_uid, items: vec![grpc::ItemKey { business: "archive".into(), oid: 4 }] })
        .await
        .unwrap();
    assert_eq!(api.all_pages_http(http_uid, 2, "").await, api.all_pages_grpc(grpc_uid, 2, "").await);

    let (_, progress) = api.get(&format!("/v1/users/{http_uid}/progress?items=archive:2,archive:4")).await;
    let reply =
        api.grpc.progress(grpc::ProgressRequest { uid: grpc_uid, items: vec!["archive:2".into(), "archive:4".into()] }).await.unwrap();
    let entries = reply.into_inner().items;
    assert_eq!(entries[0].item, "archive:2");
    assert_eq!(entries[0].record.as_ref().map(|r| r.progress), progress["items"]["archive:2"]["progress"].as_i64());
    assert!(entries[1].record.is_none() && progress["items"]["archive:4"].is_null());

    api.grpc.set_recording(grpc::SetRecordingRequest { uid: grpc_uid, paused: true }).await.unwrap();
    api.send(reqwest::Method::PUT, &format!("/v1/users/{http_uid}/recording"), Some(json!({"paused": true}))).await;
    let grpc_paused = api.grpc.get_recording(grpc::GetRecordingRequest { uid: grpc_uid }).await.unwrap().into_inner().paused;
    assert_eq!(json!({"paused": grpc_paused}), api.get(&format!("/v1/users/{http_uid}/recording")).await.1);

    // The same refusals: a bad limit, an unknown business, uid 0.
    let status = api.grpc.user_histories(grpc::UserHistoriesRequest { uid: grpc_uid, limit: 101, ..Default::default() }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("invalid_limit"), "{}", status.message());
    let bad_event = grpc::Event { uid: 0, business: "comic".into(), oid: 1, progress: 1, ..Default::default() };
    let status = api.grpc.add_history(grpc::AddHistoryRequest { event: Some(bad_event) }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("invalid_uid") && status.message().contains("unknown_business"), "{}", status.message());
    api.grpc.clear_history(grpc::ClearHistoryRequest { uid: grpc_uid, business: String::new(), all: true }).await.unwrap();
    assert!(api.all_pages_grpc(grpc_uid, 10, "").await.is_empty());
}

#[tokio::test]
async fn grpc_refuses_a_message_over_max_body_bytes_before_decoding_it() {
    let compat = TestCompat::start();
    let redis = common::redis_url();
    let mut api = Api::start(&Setup::new(&redis, &compat, "full")).await;
    // 600 events with a 2,000-byte business: about 1.2 MB, over the default
    // max_body_bytes (1 MiB) and under tonic's own 4 MiB.
    let events: Vec<grpc::Event> =
        (0..600).map(|oid| grpc::Event { uid: 1, business: "x".repeat(2000), oid, progress: 1, ..Default::default() }).collect();
    let status = api.grpc.add_histories(grpc::AddHistoriesRequest { events }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
}

#[tokio::test]
async fn pages_over_two_of_three_businesses_show_each_item_once_newest_first_on_http_and_grpc() {
    let compat = TestCompat::start();
    let redis = common::redis_url();
    // Redis keeps 100 items a user: the pages run on into HBase.
    let mut api = Api::start(&Setup { max_items: 100, ..Setup::new(&redis, &compat, "ids") }).await;
    let (http_uid, grpc_uid) = (common::unique_uid_base(), common::unique_uid_base() + 1);
    let base = model::now_ms() - 600_000;
    let businesses = ["archive", "pgc", "live"];
    // 500 items over three businesses, seven to a view_at.
    let items: Vec<(&str, u64, i64)> = (0..500u64).map(|i| (businesses[(i % 3) as usize], i, base + (i / 7) as i64)).collect();
    for uid in [http_uid, grpc_uid] {
        api.post(items.iter().map(|(business, oid, at)| event(uid, business, *oid, 1, *at)).collect()).await;
    }
    until_persisted(&compat, http_uid, 500).await;
    until_persisted(&compat, grpc_uid, 500).await;
    let mut expected: Vec<(i64, String)> =
        items.iter().filter(|(business, _, _)| *business != "live").map(|(business, oid, at)| (*at, format!("{business}:{oid}"))).collect();
    expected.sort_by(|a, b| b.cmp(a));

    let http = api.all_pages_http(http_uid, 37, "archive,pgc").await;
    assert_exact_order(&http, expected.len());
    assert_eq!(http, expected, "HTTP: each archive and pgc item once, newest first");
    let grpc = api.all_pages_grpc(grpc_uid, 37, "pgc, archive").await;
    assert_eq!(grpc, expected, "gRPC: the same pages");

    // A filter naming an unregistered business says which.
    let (status, body) = api.get(&format!("/v1/users/{http_uid}/history?business=archive,comic,radio")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("unknown_business")), "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("comic") && message.contains("radio") && !message.contains("archive"), "{message}");
}

#[tokio::test]
async fn a_view_past_its_business_retention_disappears_from_reads_while_still_stored() {
    let compat = TestCompat::start();
    let redis = common::redis_url();
    let api = Api::start(&Setup::new(&redis, &compat, "ids")).await;
    let uid = common::unique_uid_base();
    let (day, now) = (86_400_000, model::now_ms());
    // `live` keeps a day, `archive` thirty: a live view 4 s short of its
    // retention, a fresh live view, and a two-day-old archive view.
    let results = api
        .post(vec![
            event(uid, "live", 1, 10, now - day + 4_000),
            event(uid, "live", 2, 20, now),
            event(uid, "archive", 3, 30, now - 2 * day),
        ])
        .await;
    assert!(results.as_array().unwrap().iter().all(|result| result["recorded"] == true), "{results}");
    let progress_of_live_1 = async || api.get(&format!("/v1/users/{uid}/progress?items=live:1,archive:3")).await.1;
    common::eventually("the expired live view gone from pages and progress", Duration::from_secs(30), async || {
        let progress = progress_of_live_1().await;
        (oids(&api, uid).await == vec![2, 3] && progress["items"]["live:1"].is_null()).then_some(())
    })
    .await;
    assert_eq!(progress_of_live_1().await["items"]["archive:3"]["progress"], 30, "a view within its own retention stays");
    // Hidden by the reads, not yet removed: Redis still holds it.
    let mut connection = common::redis_connection(&redis).await;
    let stored: bool = redis::cmd("HEXISTS").arg(model::keys::records(uid)).arg("live:1").query_async(&mut connection).await.unwrap();
    assert!(stored);
}

/// A misspelt parameter or a blank filter never clears anything, over
/// HTTP or gRPC: each is refused, the history stays whole in Redis and in
/// HBase, and only an explicit clear of everything empties it. (On the
/// code before strict mutations, `?businesses=pgc` and a gRPC `business`
/// of `","` answered 204/OK and cleared every business.)
#[tokio::test]
async fn misspelt_and_blank_clears_leave_the_history_intact_over_http_and_grpc() {
    let compat = TestCompat::start();
    let redis = common::redis_url();
    let mut api = Api::start(&Setup::new(&redis, &compat, "ids")).await;
    let uid = common::unique_uid_base();
    let base = model::now_ms() - 60_000;
    api.post(vec![event(uid, "archive", 1, 10, base), event(uid, "pgc", 2, 20, base + 1)]).await;
    until_persisted(&compat, uid, 2).await;
    for query in [
        "?businesses=pgc",
        "?Business=archive",
        "?biz=pgc",
        "?business=",
        "?business=%20",
        "?business=,",
        "?business=,,,",
        "?business=%20,%20",
        "",
    ] {
        let status = api.send(reqwest::Method::DELETE, &format!("/v1/users/{uid}/history{query}"), None).await;
        assert_eq!(status, 400, "DELETE /history{query}");
    }
    for business in [",", " ", ",,,", " , ", "pgc,"] {
        let refused = api.grpc.clear_history(grpc::ClearHistoryRequest { uid, business: business.into(), all: false }).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "business {business:?}: {refused:?}");
        assert!(refused.message().contains("invalid_business"), "{}", refused.message());
    }
    let refused = api.grpc.clear_history(grpc::ClearHistoryRequest { uid, business: String::new(), all: false }).await.unwrap_err();
    assert!(refused.message().contains("clear_scope_missing"), "{}", refused.message());
    // Whole in Redis (pages read Redis first), and in HBase once a later
    // report of the same user (which travels behind any clear, in order)
    // is there.
    assert_eq!(oids(&api, uid).await, vec![2, 1], "a refused clear removed items");
    api.post(vec![event(uid, "archive", 3, 30, base + 2)]).await;
    let row = model::keys::hbase_row(uid);
    let visible = common::eventually("the later report in HBase", Duration::from_secs(60), async || {
        let snapshot = compat.snapshot("history");
        snapshot.contains_key(&(row.clone(), "r:archive:3".to_owned())).then(|| {
            snapshot
                .keys()
                .filter(|(r, column)| *r == row && column.starts_with("r:"))
                .map(|(_, column)| column.clone())
                .collect::<Vec<_>>()
        })
    })
    .await;
    assert_eq!(visible, vec!["r:archive:1", "r:archive:3", "r:pgc:2"], "a refused clear reached HBase");
    // The explicit form does clear, so this test can tell.
    api.grpc.clear_history(grpc::ClearHistoryRequest { uid, business: String::new(), all: true }).await.unwrap();
    assert_eq!(oids(&api, uid).await, Vec::<u64>::new());
}
