//! `bench fuzz`: hostile and malformed input against the real service.
//! Redis, tansu and the HBase-compatible server run beside histflow's
//! service role; generated and mutated requests go to its HTTP API (bodies,
//! headers, methods, paths, query strings, cursors) and raw gRPC frames to
//! its gRPC API, from many connections at once; then malformed Thrift
//! frames go to the compat server. Then the abuse cases ([`crate::abuse`]):
//! slow connections, empty gRPC streams, mistaken mutations.
//!
//! Reported: requests sent, answers by status (gRPC by its status code:
//! INTERNAL is what the gRPC spec has a server answer to a request that is
//! not protobuf), every HTTP 5xx other than 503 (there must be none),
//! whether each process is still alive (crashes must be 0), and the
//! service's resident memory and `/metrics` size before, halfway and after
//! (what the first half grows the second must not: no request may leave
//! state behind).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::stack::processes::{free_port, resident_bytes, run_until_interrupted, start, wait_ready, BenchStack};

/// Options of the fuzz scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The topology the service runs.
    #[arg(long, default_value = "topology.toml")]
    pub topology: PathBuf,
    /// HTTP and gRPC requests in all.
    #[arg(long, default_value_t = 1_000_000)]
    pub requests: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    pub connections: u64,
    /// Malformed Thrift frames sent to the compat server.
    #[arg(long, default_value_t = 20_000)]
    pub thrift_frames: u64,
    /// Slow connections opened after the requests (half silent, half with
    /// half a request head).
    #[arg(long, default_value_t = 500)]
    pub slow_connections: usize,
    /// gRPC streams that send headers and never a message.
    #[arg(long, default_value_t = 5000)]
    pub empty_streams: usize,
    /// Users whose history is written, then sent a misspelt or blank clear.
    #[arg(long, default_value_t = 1000)]
    pub mistaken_users: u64,
    /// Seed of the generator (the same seed sends the same requests).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the figures as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The histflow binary (default: built beside this bench).
    #[arg(long)]
    pub histflow: Option<PathBuf>,
}

/// The table the shipped topology's persist stage writes.
const HISTORY_TABLE: &str = "history";
/// Longest the slow connections are held open by the client.
const SLOW_WAIT: Duration = Duration::from_secs(60);
/// Connections the empty gRPC streams are spread over.
const EMPTY_STREAM_CONNECTIONS: usize = 40;

/// What the requests got back.
#[derive(Default)]
struct Answers {
    /// "http 200", "grpc 3", "error: ..." -> count.
    by_status: BTreeMap<String, u64>,
    /// 5xx other than 503: (status, what was sent), the first few.
    server_errors: Vec<(u16, String)>,
    server_error_count: u64,
}

/// Runs the scenario and prints its figures.
pub fn run(options: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(options.connections >= 1, "--connections must be at least 1");
    run_until_interrupted(scenario(options))
}

async fn scenario(options: &Options) -> anyhow::Result<()> {
    let mut stack = BenchStack::start(options.histflow.as_deref(), &options.topology, "fuzz")?;
    let ports = stack.ports;
    // The job creates the history table; with the service alone, a page
    // that reads HBase would find none and answer 503.
    let table = backends::history_table::ThriftTable::new(&format!("127.0.0.1:{}", ports.hbase), HISTORY_TABLE);
    tokio::task::spawn_blocking(move || table.ensure_table()).await??;
    let mut service =
        start("histflow --role service", stack.histflow_run("service", free_port()?), ports.http, &stack.dir.path().join("service.log"))?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let base = format!("http://127.0.0.1:{}", ports.http);
    wait_ready(&http, &base).await?;
    // With an ingest stage in the process, the API listener serves /metrics.
    let metrics_url = format!("{base}/metrics");
    let before = (resident_bytes(service.pid()), metrics_size(&http, &metrics_url).await?);
    println!(
        "fuzz: {} requests from {} clients (seed {}), then {} malformed Thrift frames",
        options.requests, options.connections, options.seed, options.thrift_frames
    );

    let answers = Arc::new(Mutex::new(Answers::default()));
    let started = Instant::now();
    // Two halves, measured after each: what grows with the first half and
    // not with the second is bounded.
    let mut halfway = None;
    for half in 0..2u64 {
        let requests = if half == 0 { options.requests / 2 } else { options.requests - options.requests / 2 };
        let per_client = requests.div_ceil(options.connections);
        let mut clients = Vec::new();
        for client in 0..options.connections {
            let (answers, base, grpc) = (answers.clone(), base.clone(), format!("http://127.0.0.1:{}", ports.grpc));
            let count = per_client.min(requests.saturating_sub(client * per_client));
            let seed = options.seed.wrapping_mul(1_000_003).wrapping_add(half * options.connections + client);
            clients.push(tokio::spawn(async move { fuzz_client(seed, count, &base, &grpc, &answers).await }));
        }
        for client in clients {
            client.await??;
        }
        if half == 0 {
            halfway = Some((resident_bytes(service.pid()), metrics_size(&http, &metrics_url).await.unwrap_or_default()));
        }
    }
    let http_seconds = started.elapsed().as_secs_f64();
    let halfway = halfway.unwrap_or_default();

    // The abuse cases, on the same service.
    let slow = crate::abuse::slow_connections(ports.http, &base, options.slow_connections, SLOW_WAIT).await;
    let empty = crate::abuse::empty_streams(ports.grpc, EMPTY_STREAM_CONNECTIONS, options.empty_streams, service.pid()).await;
    let mistaken = crate::abuse::mistaken_mutations(&base, ports.grpc, options.mistaken_users).await?;

    let hbase = ports.hbase;
    let (frames, seed) = (options.thrift_frames, options.seed);
    let thrift_outcomes = tokio::task::spawn_blocking(move || thrift_frames(hbase, frames, seed)).await?;

    // Let anything the requests left behind settle, then measure again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let logs = stack.dir.path().to_owned();
    let service_alive = service.check_alive(&logs.join("service.log")).is_ok();
    let compat_alive = stack.backends.last_mut().is_some_and(|compat| compat.check_alive(&logs.join("hbase.log")).is_ok());
    let after = (resident_bytes(service.pid()), metrics_size(&http, &metrics_url).await.unwrap_or_default());
    let answers = std::mem::take(&mut *answers.lock().unwrap_or_else(PoisonError::into_inner));
    let sent: u64 = answers.by_status.values().sum();

    println!("requests:            {sent} in {http_seconds:.1} s ({:.0}/s)", sent as f64 / http_seconds.max(1e-9));
    for (status, count) in &answers.by_status {
        println!("  {status:<28} {count}");
    }
    println!("5xx other than 503:  {}", answers.server_error_count);
    for (status, request) in &answers.server_errors {
        println!("  {status} for {request}");
    }
    println!(
        "slow connections:    {} opened: {} closed without an answer (the last after {:.1} s), {} refused 503, {} still open after {} s; {} of {} probes answered meanwhile",
        slow.opened,
        slow.closed,
        slow.longest.as_secs_f64(),
        slow.refused,
        slow.open_at_end,
        SLOW_WAIT.as_secs(),
        slow.requests.1,
        slow.requests.0
    );
    let rss_grown = |rss: (Option<u64>, Option<u64>)| match rss {
        (Some(before), Some(after)) => format!("{:+.1} MiB", (after as f64 - before as f64) / 1_048_576.0),
        _ => "-".to_owned(),
    };
    println!(
        "empty gRPC streams:  {} over {EMPTY_STREAM_CONNECTIONS} connections ended in {:.1} s: answered {:?}, reset {}; service RSS {}",
        empty.streams,
        empty.seconds,
        empty.answered,
        empty.reset,
        rss_grown(empty.rss)
    );
    println!(
        "mistaken mutations:  {} users, answers {:?}; histories intact {} of {}",
        mistaken.users, mistaken.answers, mistaken.intact, mistaken.users
    );
    println!("thrift frames:       {frames} ({thrift_outcomes:?})");
    println!(
        "crashes:             {} (service {}, compat server {})",
        u8::from(!service_alive) + u8::from(!compat_alive),
        alive(service_alive),
        alive(compat_alive)
    );
    let mib = |bytes: Option<u64>| bytes.map_or("-".to_owned(), |bytes| format!("{:.1} MiB", bytes as f64 / 1_048_576.0));
    println!("service RSS:         {} before, {} halfway, {} after", mib(before.0), mib(halfway.0), mib(after.0));
    println!(
        "/metrics:            {} lines before, {} halfway, {} after ({} / {} / {} bytes)",
        before.1 .1, halfway.1 .1, after.1 .1, before.1 .0, halfway.1 .0, after.1 .0
    );

    if let Some(path) = &options.json {
        let figures = json!({
            "requests": sent,
            "seconds": http_seconds,
            "by_status": answers.by_status,
            "server_errors_other_than_503": answers.server_error_count,
            "slow_connections": {
                "opened": slow.opened, "closed": slow.closed, "refused": slow.refused, "open_at_end": slow.open_at_end,
                "longest_seconds": slow.longest.as_secs_f64(), "probes_sent": slow.requests.0, "probes_answered": slow.requests.1,
            },
            "empty_streams": {
                "streams": empty.streams, "connections": EMPTY_STREAM_CONNECTIONS, "answered": empty.answered, "reset": empty.reset,
                "seconds": empty.seconds, "rss_before_bytes": empty.rss.0, "rss_after_bytes": empty.rss.1,
            },
            "mistaken_mutations": { "users": mistaken.users, "answers": mistaken.answers, "intact": mistaken.intact },
            "thrift_frames": frames,
            "thrift_outcomes": format!("{thrift_outcomes:?}"),
            "service_alive": service_alive,
            "compat_alive": compat_alive,
            "rss_before_bytes": before.0,
            "rss_halfway_bytes": halfway.0,
            "rss_after_bytes": after.0,
            "metrics_bytes_before": before.1 .0,
            "metrics_bytes_halfway": halfway.1 .0,
            "metrics_bytes_after": after.1 .0,
            "metrics_lines_before": before.1 .1,
            "metrics_lines_halfway": halfway.1 .1,
            "metrics_lines_after": after.1 .1,
        });
        std::fs::write(path, serde_json::to_string_pretty(&figures)?).with_context(|| format!("cannot write {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    service.stop(Duration::from_secs(20));
    let mut failures = Vec::new();
    if !(service_alive && compat_alive) {
        failures.push("a process crashed under fuzzing".to_owned());
    }
    if answers.server_error_count > 0 {
        failures.push(format!("{} 5xx answers other than 503", answers.server_error_count));
    }
    if slow.open_at_end > 0 {
        failures.push(format!("{} slow connections were still open after {} s", slow.open_at_end, SLOW_WAIT.as_secs()));
    }
    if mistaken.intact < mistaken.users {
        failures.push(format!(
            "{} histories were not whole after the mistaken mutations; the first read back: {:.500}",
            mistaken.users - mistaken.intact,
            mistaken.example.unwrap_or_default()
        ));
    }
    if !failures.is_empty() {
        anyhow::bail!("{}; logs in {}", failures.join("; "), stack.dir.keep().display());
    }
    Ok(())
}

fn alive(is: bool) -> &'static str {
    if is {
        "alive"
    } else {
        "DEAD"
    }
}

/// Bytes and lines of `/metrics`.
async fn metrics_size(http: &reqwest::Client, url: &str) -> anyhow::Result<(usize, usize)> {
    let text = http.get(url).send().await?.text().await?;
    Ok((text.len(), text.lines().count()))
}

/// One client: `count` requests, each HTTP or gRPC, generated from `seed`.
async fn fuzz_client(seed: u64, count: u64, base: &str, grpc: &str, answers: &Mutex<Answers>) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let grpc_client = reqwest::Client::builder().http2_prior_knowledge().timeout(Duration::from_secs(30)).build()?;
    for _ in 0..count {
        let (label, outcome) = if rng.random_bool(0.2) {
            let (method, body) = grpc_call(&mut rng);
            let sent = grpc_client
                .post(format!("{grpc}/histflow.api.v1.History/{method}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(body)
                .send()
                .await;
            let outcome = sent.map(|answer| {
                let grpc_status = answer.headers().get("grpc-status").and_then(|value| value.to_str().ok()).map(str::to_owned);
                (answer.status().as_u16(), grpc_status)
            });
            (format!("gRPC {method}"), outcome)
        } else {
            let request = http_request(&mut rng);
            let label = format!("{} {}", request.method, request.path);
            let mut builder = http.request(request.method.clone(), format!("{base}{}", request.path));
            for (name, value) in &request.headers {
                builder = builder.header(name.as_str(), value.as_str());
            }
            let outcome = builder.body(request.body).send().await.map(|answer| (answer.status().as_u16(), None));
            (label, outcome)
        };
        let mut answers = answers.lock().unwrap_or_else(PoisonError::into_inner);
        let key = match &outcome {
            Ok((status, Some(grpc_status))) => format!("grpc {grpc_status} (http {status})"),
            Ok((status, None)) => format!("http {status}"),
            Err(error) if error.is_timeout() => "error: timeout".to_owned(),
            Err(error) if error.is_connect() => "error: connect".to_owned(),
            Err(_) => "error: other".to_owned(),
        };
        *answers.by_status.entry(key).or_default() += 1;
        if let Ok((status, _)) = outcome {
            if status >= 500 && status != 503 {
                answers.server_error_count += 1;
                if answers.server_errors.len() < 10 {
                    answers.server_errors.push((status, label));
                }
            }
        }
    }
    Ok(())
}

/// One generated HTTP request.
struct HttpRequest {
    method: reqwest::Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn pick<'a, T>(rng: &mut StdRng, from: &'a [T]) -> &'a T {
    &from[rng.random_range(0..from.len())]
}

/// A path segment: valid, edge-case or hostile.
fn segment(rng: &mut StdRng) -> String {
    match rng.random_range(0..10) {
        0..=3 => rng.random_range(1..100_000u64).to_string(),
        4 => pick(rng, &["0", "-1", "18446744073709551616", "99999999999999999999999", "1e3", "0x10", " 7", ""]).to_string(),
        5 => "%F0%9F%98%80%00%FF".to_owned(),
        6 => "a".repeat(rng.random_range(100..3000)),
        7 => pick(rng, &["archive", "pgc", "comic", "ARCHIVE", "archive:1", "..", "%2e%2e"]).to_string(),
        _ => random_text(rng, 1..12),
    }
}

/// Printable text, percent-encoded where a URL needs it.
fn random_text(rng: &mut StdRng, length: std::ops::Range<usize>) -> String {
    let length = rng.random_range(length);
    (0..length)
        .map(|_| {
            let byte: u8 = rng.random();
            if byte.is_ascii_alphanumeric() {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

/// A cursor-like value: base64 alphabet, sometimes long.
fn cursor(rng: &mut StdRng) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let length = if rng.random_bool(0.1) { rng.random_range(200..5000) } else { rng.random_range(0..40) };
    (0..length).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

fn query(rng: &mut StdRng) -> String {
    match rng.random_range(0..8) {
        0 => String::new(),
        1 => format!("?limit={}", segment(rng)),
        2 => format!("?cursor={}", cursor(rng)),
        3 => format!("?business={}&limit={}&cursor={}", segment(rng), segment(rng), cursor(rng)),
        4 => {
            let count = if rng.random_bool(0.2) { rng.random_range(100..2000) } else { rng.random_range(0..10) };
            let items: Vec<String> = (0..count).map(|_| format!("{}:{}", pick(rng, &["archive", "pgc", "x", ""]), segment(rng))).collect();
            format!("?items={}", items.join(","))
        }
        5 => format!("?{}={}", random_text(rng, 0..20), random_text(rng, 0..200)),
        6 => "?limit=1&limit=2&cursor=&cursor=x".to_owned(),
        _ => format!("?{}", random_text(rng, 0..60)),
    }
}

fn http_request(rng: &mut StdRng) -> HttpRequest {
    let method = match rng.random_range(0..20) {
        0..=6 => reqwest::Method::POST,
        7..=12 => reqwest::Method::GET,
        13..=14 => reqwest::Method::DELETE,
        15..=16 => reqwest::Method::PUT,
        17 => pick(rng, &[reqwest::Method::PATCH, reqwest::Method::HEAD, reqwest::Method::OPTIONS]).clone(),
        _ => {
            let name: String = (0..rng.random_range(1..16)).map(|_| rng.random_range(b'A'..=b'Z') as char).collect();
            reqwest::Method::from_bytes(name.as_bytes()).unwrap_or(reqwest::Method::GET)
        }
    };
    let path = match rng.random_range(0..12) {
        0..=4 => "/v1/events".to_owned(),
        5 => format!("/v1/users/{}/history{}", segment(rng), query(rng)),
        6 => format!("/v1/users/{}/history/{}/{}", segment(rng), segment(rng), segment(rng)),
        7 => format!("/v1/users/{}/progress{}", segment(rng), query(rng)),
        8 => format!("/v1/users/{}/recording", segment(rng)),
        9 => pick(rng, &["/metrics", "/readyz", "/healthz", "/", "/v1", "/v1/users", "/v1/events/", "//v1/events"]).to_string(),
        _ => format!("/{}/{}{}", segment(rng), segment(rng), query(rng)),
    };
    let mut headers = Vec::new();
    match rng.random_range(0..10) {
        0..=6 => headers.push(("content-type".to_owned(), "application/json".to_owned())),
        7 => headers.push((
            "content-type".to_owned(),
            pick(rng, &["text/plain", "application/json; charset=latin1", "x/y", "application/jso"]).to_string(),
        )),
        8 => {}
        _ => headers.push(("content-type".to_owned(), random_text(rng, 0..40).replace('%', "/"))),
    }
    if rng.random_bool(0.2) {
        let token = pick(rng, &["Bearer ", "Bearer x", "bearer", "Basic Zm9vOmJhcg==", ""]).to_string();
        headers.push(("authorization".to_owned(), format!("{token}{}", cursor(rng))));
    }
    if rng.random_bool(0.1) {
        headers.push((format!("x-{}", random_text(rng, 1..10).replace('%', "")).to_lowercase(), cursor(rng)));
    }
    HttpRequest { method, path, headers, body: body(rng) }
}

/// A valid events body.
fn valid_events(rng: &mut StdRng, count: usize) -> Value {
    let events: Vec<Value> = (0..count)
        .map(|_| {
            json!({
                "uid": rng.random_range(1..1_000_000u64),
                "business": pick(rng, &["archive", "pgc"]),
                "oid": rng.random_range(1..1000u64),
                "progress": rng.random_range(-1..10_000i64),
                "view_at": model::now_ms() - rng.random_range(0..86_400_000i64),
            })
        })
        .collect();
    json!({ "events": events })
}

/// JSON shaped like a body, with wrong types, sizes and nesting mixed in.
fn random_json(rng: &mut StdRng, depth: u32) -> Value {
    let leaf = |rng: &mut StdRng| match rng.random_range(0..8) {
        0 => Value::Null,
        1 => Value::from(rng.random::<bool>()),
        2 => Value::from(rng.random::<i64>()),
        3 => Value::from(rng.random::<u64>()),
        4 => Value::from(rng.random::<f64>() * 1e300),
        5 => Value::from(random_text(rng, 0..30)),
        6 => Value::from("a".repeat(rng.random_range(0..10_000))),
        _ => Value::from(pick(rng, &["archive", "pgc", "uid", "events"]).to_string()),
    };
    if depth == 0 || rng.random_bool(0.4) {
        return leaf(rng);
    }
    if rng.random_bool(0.5) {
        Value::Array((0..rng.random_range(0..6)).map(|_| random_json(rng, depth - 1)).collect())
    } else {
        let keys = ["uid", "business", "oid", "progress", "view_at", "events", "sub_id", "duration", "device"];
        Value::Object((0..rng.random_range(0..7)).map(|_| (pick(rng, &keys).to_string(), random_json(rng, depth - 1))).collect())
    }
}

/// `bytes` with a few bytes changed, cut or repeated.
fn mutate(rng: &mut StdRng, mut bytes: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.random_range(1..6) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.random_range(0..bytes.len());
        match rng.random_range(0..4) {
            0 => bytes[at] = rng.random(),
            1 => bytes.truncate(at),
            2 => bytes.insert(at, *pick(rng, b"{}[]\",:0-e.\\")),
            _ => {
                let copy = bytes[at..].to_vec();
                bytes.extend(copy);
            }
        }
    }
    bytes
}

fn body(rng: &mut StdRng) -> Vec<u8> {
    match rng.random_range(0..10) {
        0..=2 => {
            let count = rng.random_range(1..50);
            serde_json::to_vec(&valid_events(rng, count)).unwrap_or_default()
        }
        3..=4 => {
            let count = rng.random_range(1..20);
            let valid = serde_json::to_vec(&valid_events(rng, count)).unwrap_or_default();
            mutate(rng, valid)
        }
        5..=6 => serde_json::to_vec(&json!({ "events": random_json(rng, 4) })).unwrap_or_default(),
        7 => {
            let count = rng.random_range(1000..3000);
            serde_json::to_vec(&valid_events(rng, count)).unwrap_or_default()
        }
        8 => (0..rng.random_range(0..2000)).map(|_| rng.random()).collect(),
        _ => pick(rng, &[&b""[..], b"{", b"null", b"[]", b"{\"events\":null}", b"{\"events\":[{}]}", b"\xff\xfe"]).to_vec(),
    }
}

/// A gRPC method and a request body: one frame whose header may lie, and
/// whose message is random bytes or protobuf-shaped bytes.
fn grpc_call(rng: &mut StdRng) -> (&'static str, Vec<u8>) {
    let methods = [
        "AddHistory",
        "AddHistories",
        "UserHistories",
        "Progress",
        "DeleteHistories",
        "ClearHistory",
        "SetRecording",
        "GetRecording",
        "Nope",
    ];
    let method = *pick(rng, &methods);
    let message: Vec<u8> = match rng.random_range(0..3) {
        0 => (0..rng.random_range(0..200)).map(|_| rng.random()).collect(),
        1 => {
            // Tags and varints of small field numbers.
            let mut bytes = Vec::new();
            for _ in 0..rng.random_range(0..20) {
                bytes.push(*pick(rng, &[0x08, 0x10, 0x12, 0x18, 0x1a, 0x20, 0x2a, 0x0a, 0x28, 0x30, 0x38, 0x3a]));
                match rng.random_range(0..3) {
                    0 => bytes.extend([rng.random::<u8>() & 0x7f]),
                    1 => bytes.extend([0xff; 10]),
                    _ => {
                        let length = rng.random_range(0..40u8);
                        bytes.push(length);
                        bytes.extend((0..rng.random_range(0..60)).map(|_| rng.random::<u8>()));
                    }
                }
            }
            bytes
        }
        _ => Vec::new(),
    };
    let mut frame = vec![u8::from(rng.random_bool(0.05))];
    let claimed = if rng.random_bool(0.1) { rng.random::<u32>() } else { message.len() as u32 };
    frame.extend(claimed.to_be_bytes());
    frame.extend(message);
    (method, frame)
}

/// Sends `count` malformed Thrift frames to the compat server, one a
/// connection; answers how each ended.
fn thrift_frames(port: u16, count: u64, seed: u64) -> BTreeMap<&'static str, u64> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x7417_7417);
    let mut outcomes = BTreeMap::new();
    let names = ["getTableNames", "get", "getRowWithColumns", "mutateRowsTs", "scannerOpenWithScan", "scannerGetList", "createTable", "x"];
    for _ in 0..count {
        let mut frame = match rng.random_range(0..3) {
            0 => (0..rng.random_range(0..64)).map(|_| rng.random()).collect::<Vec<u8>>(),
            _ => {
                let name = pick(&mut rng, &names);
                let mut frame = 0x8001_0001u32.to_be_bytes().to_vec();
                let claimed = if rng.random_bool(0.2) { rng.random::<i32>() } else { name.len() as i32 };
                frame.extend(claimed.to_be_bytes());
                frame.extend(name.as_bytes());
                frame.extend(1i32.to_be_bytes());
                for _ in 0..rng.random_range(0..12) {
                    frame.push(*pick(&mut rng, &[2, 8, 10, 11, 12, 13, 15, 0]));
                    frame.extend(rng.random_range(-2i16..8).to_be_bytes());
                    let any: i32 = rng.random();
                    frame.extend(pick(&mut rng, &[-1i32, 0, 3, i32::MAX, i32::MIN, any]).to_be_bytes());
                }
                frame
            }
        };
        if rng.random_bool(0.1) {
            frame.truncate(rng.random_range(0..frame.len().max(1)));
        }
        let outcome = match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Err(_) => "refused",
            Ok(mut stream) => {
                let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                let _ = stream.write_all(&frame);
                let _ = stream.shutdown(std::net::Shutdown::Write);
                let mut answer = Vec::new();
                match stream.read_to_end(&mut answer) {
                    Ok(_) if answer.is_empty() => "closed without an answer",
                    Ok(_) => "answered, then closed",
                    Err(_) => "still open after 500 ms",
                }
            }
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    outcomes
}
