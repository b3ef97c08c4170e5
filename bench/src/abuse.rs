//! The abuse cases of `bench fuzz`, run after its generated requests: slow
//! connections (silent, or a request head sent half), gRPC streams that
//! send headers and never a message, and mutations with a misspelt
//! parameter or a blank filter. Each measures what the listeners' limits
//! and the strict mutations promise: connections closed at the head
//! deadline while real requests are served, streams answered or refused
//! with bounded memory, and no history cleared by a mistake.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::stack::processes::resident_bytes;

/// How the slow connections ended.
pub struct SlowConnections {
    /// Connections opened (half silent, half with half a request head).
    pub opened: usize,
    /// Closed by the server without an answer.
    pub closed: usize,
    /// Answered 503 (over the connection cap) and closed.
    pub refused: usize,
    /// Still open when the wait ended.
    pub open_at_end: usize,
    /// The longest a connection stayed open.
    pub longest: Duration,
    /// Ordinary requests sent while they were held, and those answered 2xx.
    pub requests: (usize, usize),
}

/// Opens `count` slow connections to `http_port`, holds them until the
/// server closes them (at most `wait`), and meanwhile sends ordinary
/// requests to `base`.
pub async fn slow_connections(http_port: u16, base: &str, count: usize, wait: Duration) -> SlowConnections {
    let opened_at = Instant::now();
    let mut held = Vec::new();
    for index in 0..count {
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", http_port)).await else { continue };
        if index % 2 == 1 {
            let _ = stream.write_all(b"POST /v1/events HTTP/1.1\r\nHost: histflow\r\nContent-Le").await;
        }
        held.push(tokio::spawn(async move {
            let mut answer = Vec::new();
            let ended = tokio::time::timeout(wait, stream.read_to_end(&mut answer)).await;
            (ended.is_ok(), answer, opened_at.elapsed())
        }));
    }
    let client = reqwest::Client::new();
    let (mut sent, mut served) = (0, 0);
    while held.iter().any(|task| !task.is_finished()) && opened_at.elapsed() < wait {
        sent += 1;
        if client.get(format!("{base}/healthz")).send().await.is_ok_and(|answer| answer.status().is_success()) {
            served += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut outcome =
        SlowConnections { opened: held.len(), closed: 0, refused: 0, open_at_end: 0, longest: Duration::ZERO, requests: (sent, served) };
    for task in held {
        let Ok((ended, answer, after)) = task.await else { continue };
        if !ended {
            outcome.open_at_end += 1;
        } else if answer.starts_with(b"HTTP/1.1 503") {
            outcome.refused += 1;
        } else {
            outcome.closed += 1;
            outcome.longest = outcome.longest.max(after);
        }
    }
    outcome
}

/// How the empty gRPC streams ended.
pub struct EmptyStreams {
    /// Streams opened.
    pub streams: usize,
    /// gRPC status code -> streams that ended with it.
    pub answered: BTreeMap<String, usize>,
    /// Streams reset by the server (past its stream limit) or cut with
    /// their connection.
    pub reset: usize,
    /// How long until every stream had ended.
    pub seconds: f64,
    /// The service's RSS before and at the end.
    pub rss: (Option<u64>, Option<u64>),
}

/// Opens `streams` gRPC calls over `connections` HTTP/2 connections to
/// `grpc_port`, each sending its headers and never a message, and waits
/// for each to end.
pub async fn empty_streams(grpc_port: u16, connections: usize, streams: usize, service_pid: u32) -> EmptyStreams {
    let started = Instant::now();
    let before = resident_bytes(service_pid);
    let mut tasks = Vec::new();
    for connection in 0..connections {
        // The streams spread evenly; the first connections take the rest.
        let per_connection = streams / connections + usize::from(connection < streams % connections);
        tasks.push(tokio::spawn(async move {
            let mut outcome = (BTreeMap::<String, usize>::new(), 0usize);
            let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", grpc_port)).await else {
                outcome.1 += per_connection;
                return outcome;
            };
            let Ok((client, connection)) = h2::client::handshake(tcp).await else {
                outcome.1 += per_connection;
                return outcome;
            };
            tokio::spawn(connection);
            let mut calls = Vec::new();
            for _ in 0..per_connection {
                let Ok(mut sender) = client.clone().ready().await else {
                    outcome.1 += 1;
                    continue;
                };
                let request = http::Request::post(format!("http://127.0.0.1:{grpc_port}/histflow.api.v1.History/AddHistory"))
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(())
                    .unwrap_or_default();
                match sender.send_request(request, false) {
                    Ok((response, body)) => calls.push(tokio::spawn(async move {
                        let code = grpc_code(response).await;
                        drop(body);
                        code
                    })),
                    Err(_) => outcome.1 += 1,
                }
            }
            for call in calls {
                match call.await.ok().flatten() {
                    Some(code) => *outcome.0.entry(code).or_default() += 1,
                    None => outcome.1 += 1,
                }
            }
            outcome
        }));
    }
    let mut result = EmptyStreams { streams, answered: BTreeMap::new(), reset: 0, seconds: 0.0, rss: (before, None) };
    for task in tasks {
        if let Ok((answered, reset)) = task.await {
            for (code, count) in answered {
                *result.answered.entry(code).or_default() += count;
            }
            result.reset += reset;
        }
    }
    result.seconds = started.elapsed().as_secs_f64();
    result.rss.1 = resident_bytes(service_pid);
    result
}

/// A call's gRPC status code, from its headers or trailers; `None` when it
/// was reset.
async fn grpc_code(response: h2::client::ResponseFuture) -> Option<String> {
    let code = |headers: &http::HeaderMap| headers.get("grpc-status").and_then(|code| code.to_str().ok()).map(str::to_owned);
    let mut response = response.await.ok()?;
    if let Some(code) = code(response.headers()) {
        return Some(code);
    }
    let trailers = response.body_mut().trailers().await.ok()??;
    code(&trailers)
}

/// What the misspelt and blank mutations did.
pub struct MistakenMutations {
    /// Users written before the mistakes.
    pub users: usize,
    /// Mistaken mutations sent, by the status they got.
    pub answers: BTreeMap<String, usize>,
    /// Users whose history was still whole afterwards.
    pub intact: usize,
    /// The first page read back that was not whole.
    pub example: Option<Value>,
}

/// Writes one item for each of `users` users, sends each a mutation with a
/// misspelt parameter or a blank filter over HTTP and gRPC, and reads back
/// every user's history.
pub async fn mistaken_mutations(base: &str, grpc_port: u16, users: u64) -> anyhow::Result<MistakenMutations> {
    let http = reqwest::Client::new();
    let uid_base = 7_000_000_000 + u64::from(std::process::id()) * 1_000_000;
    let now = model::now_ms();
    let events: Vec<Value> =
        (0..users).map(|user| json!({"uid": uid_base + user, "business": "archive", "oid": 1, "progress": 1, "view_at": now})).collect();
    for chunk in events.chunks(1000) {
        let answer = http.post(format!("{base}/v1/events")).json(&json!({ "events": chunk })).send().await?;
        anyhow::ensure!(answer.status().is_success(), "writing the users' items: {}", answer.text().await?);
        let answer: Value = answer.json().await?;
        let results = answer["results"].as_array().cloned().unwrap_or_default();
        let unrecorded = results.iter().find(|result| result["recorded"] != true);
        anyhow::ensure!(results.len() == chunk.len() && unrecorded.is_none(), "writing the users' items: {answer:.300}");
    }
    let queries = ["?businesses=archive", "?Business=archive", "?biz=archive", "?business=", "?business=,", "?business=%20", ""];
    let blanks = [",", " ", ",,,", " , "];
    let mut grpc = ingest_http::grpc::proto::history_client::HistoryClient::connect(format!("http://127.0.0.1:{grpc_port}")).await?;
    let mut answers = BTreeMap::new();
    for user in 0..users {
        let uid = uid_base + user;
        let query = queries[(user as usize) % queries.len()];
        let status = http.delete(format!("{base}/v1/users/{uid}/history{query}")).send().await?.status().as_u16();
        *answers.entry(format!("http {status}")).or_insert(0) += 1;
        let blank = blanks[(user as usize) % blanks.len()];
        let request = ingest_http::grpc::proto::ClearHistoryRequest { uid, business: blank.to_owned(), all: false };
        let code = match grpc.clear_history(request).await {
            Ok(_) => "OK".to_owned(),
            Err(status) => format!("{:?}", status.code()),
        };
        *answers.entry(format!("grpc {code}")).or_insert(0) += 1;
    }
    let (mut intact, mut example) = (0, None);
    for user in 0..users {
        let page: Value = http.get(format!("{base}/v1/users/{}/history", uid_base + user)).send().await?.json().await?;
        if page["items"].as_array().is_some_and(|items| items.len() == 1) {
            intact += 1;
        } else {
            example.get_or_insert(page);
        }
    }
    Ok(MistakenMutations { users: users as usize, answers, intact, example })
}
