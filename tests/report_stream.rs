//! `ReportStream`, the long-lived gRPC report stream, on real processes:
//! `histflow run` as a service (and a job) against real Redis, a real
//! Kafka-protocol broker (tansu) and the HBase-compatible server; the
//! token, scope, per-client and idle checks under `--embedded`.

// Tests may unwrap: a failure is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Histflow, TestCompat};
use futures::StreamExt;
use ingest_http::grpc::proto::history_client::HistoryClient;
use ingest_http::grpc::proto::{self as grpc};
use tonic::transport::Channel;

const TOKEN: &str = "report-stream-test-token-0123";

/// The whole stack's topology with gRPC on `grpc` (`ingest_extra`: more
/// ingest lines; `realtime_extra`: more realtime lines).
fn stack_topology(http: u16, grpc: u16, compat: &TestCompat, topic: &str, ingest_extra: &str, realtime_extra: &str) -> String {
    common::StackTopology {
        http,
        compat,
        realtime_redis: common::redis_url(),
        job_redis: None,
        brokers: common::kafka_brokers(),
        topic,
        payload: "full",
        shutdown_timeout_ms: 20000,
        request_timeout_ms: 60000,
        aggregate_flush_ms: 200,
        realtime_extra: realtime_extra.to_owned(),
        ingest_extra: format!("grpc_listen = \"127.0.0.1:{grpc}\"\n{ingest_extra}"),
    }
    .render()
}

async fn client(grpc: u16) -> HistoryClient<Channel> {
    HistoryClient::connect(format!("http://127.0.0.1:{grpc}")).await.unwrap()
}

/// An event of `uid` for item `archive:oid`.
fn event(uid: u64, oid: u64, progress: i64, view_at: i64) -> grpc::Event {
    grpc::Event { uid, business: "archive".into(), oid, progress, view_at: Some(view_at), ..Default::default() }
}

/// Opens a stream fed by the returned sender (its capacity: 1); counts in
/// `pulled` the requests the client library took from it.
async fn open(
    client: &mut HistoryClient<Channel>,
    token: Option<&str>,
    pulled: Arc<AtomicU64>,
) -> Result<(tokio::sync::mpsc::Sender<grpc::ReportStreamRequest>, tonic::Streaming<grpc::ReportStreamReply>), tonic::Status> {
    let (requests, outgoing) = tokio::sync::mpsc::channel(1);
    let outgoing = tokio_stream::wrappers::ReceiverStream::new(outgoing).inspect(move |_| {
        pulled.fetch_add(1, Ordering::Relaxed);
    });
    let mut request = tonic::Request::new(outgoing);
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let replies = client.report_stream(request).await?.into_inner();
    Ok((requests, replies))
}

/// Sends requests `0..count` on `requests`, message `seq` carrying
/// `events(seq)`, keeping at most as many unanswered as `window` has
/// permits (the reader adds one per reply), as a stream client should
/// (README). Returns how many it sent before the stream went away.
fn send_windowed(
    requests: tokio::sync::mpsc::Sender<grpc::ReportStreamRequest>,
    window: Arc<tokio::sync::Semaphore>,
    count: u64,
    events: impl Fn(u64) -> Vec<grpc::Event> + Send + 'static,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        for seq in 0..count {
            window.acquire().await.unwrap().forget();
            if requests.send(grpc::ReportStreamRequest { seq, events: events(seq) }).await.is_err() {
                return seq;
            }
        }
        count
    })
}

/// 10,000 messages on one stream: every one answered once, in order; a
/// bad event gets its own error and its neighbours are written; what was
/// answered recorded is readable at once.
#[tokio::test]
async fn ten_thousand_messages_on_one_stream_are_answered_in_order_with_their_own_errors() {
    let compat = TestCompat::start();
    let (http, grpc) = (common::free_port(), common::free_port());
    let topology = stack_topology(http, grpc, &compat, &common::unique("stream-order"), "", "");
    let service = common::start_role(&topology, "service", Some(http)).await;
    let mut client = client(grpc).await;
    let (requests, mut replies) = open(&mut client, None, Arc::default()).await.unwrap();
    let base = common::unique_uid_base();
    let view_at = model::now_ms() - 1000;
    const MESSAGES: u64 = 10_000;
    // Message n: one event of user base+n, except every 100th names an
    // unknown business and every 250th carries three events, the middle
    // one with a negative progress.
    let window = Arc::new(tokio::sync::Semaphore::new(32));
    let sender = send_windowed(requests, window.clone(), MESSAGES, move |seq| {
        let mut events = vec![event(base + seq, 1, seq as i64, view_at)];
        if seq % 100 == 7 {
            events[0].business = "nope".into();
        }
        if seq % 250 == 11 {
            events.push(event(base + seq, 2, -5, view_at));
            events.push(event(base + seq, 3, 3, view_at));
        }
        events
    });
    let mut next = 0u64;
    while let Some(reply) = tokio::time::timeout(Duration::from_secs(60), replies.message())
        .await
        .expect("a reply within 60 s")
        .unwrap_or_else(|status| panic!("after {next} replies: {status:?}\n{}", service.log_text()))
    {
        assert_eq!(reply.seq, next, "answered out of order");
        assert!(reply.error.is_none(), "message {next} refused as a whole: {:?}", reply.error);
        let codes: Vec<Option<String>> = reply.results.iter().map(|result| result.error.as_ref().map(|error| error.code.clone())).collect();
        let expected: Vec<Option<&str>> = match (next % 100 == 7, next % 250 == 11) {
            (true, _) => vec![Some("unknown_business")],
            (false, true) => vec![None, Some("invalid_progress"), None],
            (false, false) => vec![None],
        };
        assert_eq!(codes.iter().map(Option::as_deref).collect::<Vec<_>>(), expected, "message {next}");
        for (result, code) in reply.results.iter().zip(&expected) {
            assert_eq!(result.recorded, code.is_none(), "message {next}: {result:?}");
        }
        next += 1;
        window.add_permits(1);
    }
    sender.await.unwrap();
    assert_eq!(next, MESSAGES, "the stream ended after {next} replies");

    // What was answered recorded is readable; what was refused is not.
    for seq in (0..MESSAGES).step_by(97).chain([7, 11, 261]) {
        let items = vec!["archive:1".to_owned(), "archive:2".to_owned(), "archive:3".to_owned()];
        let answer = client.progress(grpc::ProgressRequest { uid: base + seq, items }).await.unwrap().into_inner();
        let found: Vec<Option<i64>> = answer.items.iter().map(|entry| entry.record.as_ref().map(|record| record.progress)).collect();
        let expected = match (seq % 100 == 7, seq % 250 == 11) {
            (true, _) => vec![None, None, None],
            (false, true) => vec![Some(seq as i64), None, Some(3)],
            (false, false) => vec![Some(seq as i64), None, None],
        };
        assert_eq!(found, expected, "user {}", base + seq);
    }
}

/// The stream's token is checked once, when it opens: without a valid one
/// the call is refused at once, before any message; a read-only client may
/// not open one; a client holds at most `grpc_max_streams_per_client`; a
/// stream in use outlives a unary call's deadline; an idle stream ends
/// DEADLINE_EXCEEDED.
#[tokio::test]
async fn a_stream_is_authenticated_when_it_opens_and_bounded_per_client_and_in_idleness() {
    let data = tempfile::tempdir().unwrap();
    let (http, grpc) = (common::free_port(), common::free_port());
    let auth = format!(
        r#"
[[auth.clients]]
name = "app"
token = "{TOKEN}"

[[auth.clients]]
name = "admin"
token = "{TOKEN}-admin"
scopes = ["admin"]

[[auth.clients]]
name = "reader"
token = "{TOKEN}-reader"
scopes = ["read"]
"#
    );
    // A unary call's deadline is request_timeout_ms plus a second.
    let ingest = format!(
        "grpc_listen = \"127.0.0.1:{grpc}\"\ngrpc_max_streams_per_client = 2\ngrpc_stream_idle_timeout_ms = 1500\nrequest_timeout_ms = 1000"
    );
    let topology = common::embedded_topology(http, data.path(), &auth, &ingest);
    let histflow = Histflow::start(&topology, http, &["--embedded"]).await;
    let mut client = client(grpc).await;

    // No message is ever sent on these: the answer comes from the headers.
    for token in [None, Some("wrong-token-0123456789")] {
        let started = Instant::now();
        let refused = open(&mut client, token, Arc::default()).await.expect_err("a stream without a valid token opened");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{token:?}: {refused:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "refused only after {:?}", started.elapsed());
    }
    let refused = open(&mut client, Some(&format!("{TOKEN}-reader")), Arc::default()).await.expect_err("a read-only client streamed");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    // Two streams of one client work; a third is refused; one closed makes room.
    let (first, mut first_replies) = open(&mut client, Some(TOKEN), Arc::default()).await.unwrap();
    let (second, mut second_replies) = open(&mut client, Some(TOKEN), Arc::default()).await.unwrap();
    for (requests, replies) in [(&first, &mut first_replies), (&second, &mut second_replies)] {
        requests.send(grpc::ReportStreamRequest { seq: 1, events: vec![event(9, 1, 5, model::now_ms())] }).await.unwrap();
        let reply = replies.message().await.unwrap().unwrap();
        assert!(reply.error.is_none() && reply.results[0].recorded, "{reply:?}");
    }
    // The live page shows the open streams.
    let stats = reqwest::Client::new().get(format!("{}/admin/stats", histflow.base)).bearer_auth(format!("{TOKEN}-admin")).send();
    let stats: serde_json::Value = stats.await.unwrap().json().await.unwrap();
    let ingest = stats["stages"].as_array().unwrap().iter().find(|stage| stage["name"] == "ingest").unwrap();
    let open_streams = ingest["figures"].as_array().unwrap().iter().find(|figure| figure["label"] == "report streams open").unwrap();
    assert_eq!(open_streams["value"], 2.0, "{ingest}");
    let third = open(&mut client, Some(TOKEN), Arc::default()).await.expect_err("a third stream opened");
    assert_eq!(third.code(), tonic::Code::ResourceExhausted, "{third:?}");
    assert!(third.message().contains("grpc_max_streams_per_client"), "{third:?}");
    drop(first);
    assert!(first_replies.message().await.unwrap().is_none(), "a stream the client closed ends OK");
    let (third, mut third_replies) = open(&mut client, Some(TOKEN), Arc::default()).await.unwrap();

    // A stream outlives a unary call's deadline (2 s here) while it is used.
    let opened = Instant::now();
    for seq in 0.. {
        third.send(grpc::ReportStreamRequest { seq, events: vec![] }).await.unwrap();
        assert_eq!(third_replies.message().await.unwrap().unwrap().seq, seq, "ping {seq}");
        if opened.elapsed() > Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Idle streams end, with a status that says why.
    for replies in [&mut second_replies, &mut third_replies] {
        let idle =
            tokio::time::timeout(Duration::from_secs(10), replies.message()).await.expect("ended within 10 s").expect_err("a status");
        assert_eq!(idle.code(), tonic::Code::DeadlineExceeded, "{idle:?}");
        assert!(idle.message().contains("grpc_stream_idle_timeout_ms"), "{idle:?}");
    }
}

/// SIGTERM mid-stream: the stream stops taking requests, answers every one
/// it took, and ends UNAVAILABLE telling the client to reconnect; every
/// event answered recorded reaches the history table through the job.
#[tokio::test]
async fn a_draining_service_answers_what_it_took_and_every_ok_answer_is_durable() {
    let compat = TestCompat::start();
    let (http, grpc) = (common::free_port(), common::free_port());
    let topology = stack_topology(http, grpc, &compat, &common::unique("stream-drain"), "", "");
    let mut service = common::start_role(&topology, "service", Some(http)).await;
    let _job = common::start_role(&topology, "job", None).await;
    let mut client = client(grpc).await;
    let (requests, mut replies) = open(&mut client, None, Arc::default()).await.unwrap();
    let base = common::unique_uid_base();
    let view_at = model::now_ms() - 1000;
    let window = Arc::new(tokio::sync::Semaphore::new(32));
    let sender =
        send_windowed(requests, window.clone(), u64::MAX, move |seq| (0..10).map(|n| event(base + seq * 10 + n, 1, 1, view_at)).collect());
    let mut acknowledged = BTreeMap::new();
    let mut next = 0u64;
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(30), replies.message()).await.expect("a reply within 30 s") {
            Ok(Some(reply)) => {
                assert_eq!(reply.seq, next, "answered out of order");
                assert!(reply.error.is_none(), "message {next} refused: {:?}", reply.error);
                for (n, result) in reply.results.iter().enumerate() {
                    assert!(result.recorded, "{result:?}");
                    acknowledged.insert((base + next * 10 + n as u64, "archive:1".to_owned()), view_at);
                }
                next += 1;
                window.add_permits(1);
                if next == 500 {
                    common::signal(service.pid().unwrap(), "TERM");
                }
            }
            Ok(None) => panic!("the stream ended OK after {next} replies; a drain ends it UNAVAILABLE"),
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), tonic::Code::Unavailable, "{end:?}");
    assert!(end.message().contains("reconnect"), "{end:?}");
    assert!(next > 500, "the stream ended before the drain");
    // Waited for off the runtime: the client's connection must go on
    // running (it answers the service's GOAWAY) while the test waits.
    let (code, log) = tokio::task::spawn_blocking(move || (service.wait_exit(Duration::from_secs(30)), service.log_text())).await.unwrap();
    assert_eq!(code, Some(0), "{log}");
    sender.abort();
    if let Err(not_durable) = common::until_durable(&compat, &acknowledged).await {
        panic!("{not_durable}");
    }
}

/// A full ingest edge holds the stream through HTTP/2 flow control: the
/// realtime stage is slowed to 100 events/s behind an edge of 1,000
/// events, and of 2,000 messages of 100 events the client library can
/// hand over only what the service's window and its own send buffer hold,
/// and the service takes no more than the edge and the stream's bound of
/// unanswered requests. Once a reload lifts the limit, every message is
/// answered recorded, in order: nothing dropped.
#[tokio::test]
async fn a_full_edge_holds_the_stream_by_flow_control_and_nothing_is_dropped() {
    let compat = TestCompat::start();
    let (http, grpc) = (common::free_port(), common::free_port());
    let slowed = "rate_limit = { per_second = 100, burst = 100 }";
    let topology = stack_topology(http, grpc, &compat, &common::unique("stream-full"), "grpc_stream_max_unanswered = 16", slowed)
        .replace("inputs = [\"ingest\"]", "inputs = [{ from = \"ingest\", capacity = 1000 }]");
    let service = common::start_role(&topology, "service", Some(http)).await;
    let mut client = client(grpc).await;
    let pulled = Arc::new(AtomicU64::new(0));
    let (requests, mut replies) = open(&mut client, None, pulled.clone()).await.unwrap();
    let base = common::unique_uid_base();
    let view_at = model::now_ms() - 1000;
    const MESSAGES: u64 = 2000;
    const USERS: u64 = 1000;
    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let sent = sent.clone();
        tokio::spawn(async move {
            for seq in 0..MESSAGES {
                let events = (0..100).map(|n| event(base + (seq * 100 + n) % USERS, seq * 100 + n, 7, view_at)).collect();
                requests.send(grpc::ReportStreamRequest { seq, events }).await.unwrap();
                sent.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Held: after three seconds the client has handed over what the
    // windows hold, and the service took what the edge and the bound hold.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (held_pulled, held_sent) = (pulled.load(Ordering::Relaxed), sent.load(Ordering::Relaxed));
    let taken = common::metric(&service, "histflow_grpc_report_stream_requests_total").await.unwrap();
    assert!(held_pulled < MESSAGES / 2, "the client handed over {held_pulled} of {MESSAGES} messages behind a full edge");
    assert!(held_sent <= held_pulled + 2, "{held_sent} sent, {held_pulled} taken by the client library");
    // The edge's 10 messages, the stream's 16 unanswered, the ~5 the
    // limit let through, and one the stream waits to send.
    assert!(taken <= 40.0, "the service took {taken} requests behind a full edge");

    // Lift the limit: everything is answered, recorded, in order.
    std::fs::write(service.topology_path(), topology.replace(slowed, "")).unwrap();
    let reload = reqwest::Client::new().post(format!("{}/admin/reload", service.base)).send().await.unwrap();
    assert_eq!(reload.status(), 200, "{}", reload.text().await.unwrap());
    for seq in 0..MESSAGES {
        let reply = tokio::time::timeout(Duration::from_secs(60), replies.message()).await.expect("a reply within 60 s").unwrap().unwrap();
        assert_eq!(reply.seq, seq, "answered out of order");
        assert!(reply.error.is_none(), "message {seq} refused: {:?}", reply.error);
        assert!(reply.results.len() == 100 && reply.results.iter().all(|result| result.recorded), "message {seq}: {reply:?}");
    }
    sender.await.unwrap();
}
