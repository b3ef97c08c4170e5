//! `bench streams`: reports at batch 1 (one event a message) three ways
//! against one service — `POST /v1/events`, unary gRPC `AddHistory`, and
//! `ReportStream` — in one run, on one machine. Redis, tansu and the
//! HBase-compatible server run beside histflow's service role; segments of
//! the three transports alternate for `--rounds`, so each sees the same
//! machine.
//!
//! Every transport keeps `--in-flight` messages unanswered: HTTP as that
//! many closed-loop connections, unary gRPC as that many concurrent calls
//! over `--connections` HTTP/2 connections, streams as `--connections`
//! streams (one a connection) each keeping `in-flight / connections`
//! messages unanswered. Events go to `--users` users in turn (each user
//! reports once per pass: the production heartbeat regime when users are
//! many), moving to another item every `--switch-every` reports.
//!
//! Reported per transport: events/s (answered recorded) per segment and
//! the median, p50 and p99 per message over the segments, the CPU the
//! service and Redis spent per event, and the ratios of streams to unary
//! gRPC and to HTTP.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ingest_http::grpc::proto::{self, history_client::HistoryClient};
use serde_json::json;
use tonic::transport::Channel;

use crate::stack::processes::{free_port, run_until_interrupted, start, usage, wait_ready, BenchStack};

/// Options of the streams bench.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The topology the service runs (it must set `grpc_listen`).
    #[arg(long, default_value = "topology.toml")]
    pub topology: PathBuf,
    /// Messages unanswered at once, per transport.
    #[arg(long, default_value_t = 64)]
    pub in_flight: usize,
    /// HTTP/2 connections of unary gRPC, and streams (one a connection).
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Users reporting, in turn.
    #[arg(long, default_value_t = 200_000)]
    pub users: u64,
    /// A user moves to another item every this many reports.
    #[arg(long, default_value_t = 40)]
    pub switch_every: u64,
    /// Length of each segment.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub segment: Duration,
    /// Rounds of the three segments.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Write the figures as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The histflow binary (default: built beside this bench).
    #[arg(long)]
    pub histflow: Option<PathBuf>,
}

/// Runs the streams bench and prints its figures.
pub fn run(options: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(
        options.in_flight >= 1 && options.connections >= 1 && options.rounds >= 1 && options.users >= 1,
        "--in-flight, --connections, --rounds and --users must be at least 1"
    );
    anyhow::ensure!(options.in_flight >= options.connections, "--in-flight must be at least --connections");
    run_until_interrupted(scenario(options))
}

/// The three ways a message is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Http,
    Unary,
    Stream,
}

impl Transport {
    const ALL: [Transport; 3] = [Transport::Http, Transport::Unary, Transport::Stream];

    fn name(self) -> &'static str {
        match self {
            Transport::Http => "HTTP POST /v1/events",
            Transport::Unary => "gRPC AddHistory",
            Transport::Stream => "gRPC ReportStream",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Unary => "unary",
            Transport::Stream => "stream",
        }
    }
}

/// The reports: user after user, each on its item of the moment.
struct Reports {
    next: AtomicU64,
    users: u64,
    switch_every: u64,
}

impl Reports {
    fn next(&self) -> proto::Event {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let pass = n / self.users;
        proto::Event {
            uid: 1 + n % self.users,
            business: "archive".into(),
            oid: 1 + pass / self.switch_every.max(1),
            progress: (pass % 3600) as i64,
            ..Default::default()
        }
    }
}

/// What one segment measured.
struct Segment {
    events_per_s: f64,
    latency_us: Histogram<u64>,
    refused: u64,
    /// Events answered recorded.
    recorded: u64,
}

/// CPU seconds so far of the service and of Redis.
fn cpu(service: u32, redis: u32) -> anyhow::Result<(f64, f64)> {
    let seconds = |pid| usage(pid).map(|(_, cpu)| cpu).ok_or_else(|| anyhow::anyhow!("cannot read the CPU time of process {pid}"));
    Ok((seconds(service)?, seconds(redis)?))
}

/// Counts shared by a segment's clients.
struct Tally {
    recorded: AtomicU64,
    refused: AtomicU64,
    latency_us: Mutex<Histogram<u64>>,
}

impl Tally {
    fn new() -> Arc<Self> {
        let histogram = Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| Histogram::new(3).expect("a histogram"));
        Arc::new(Tally { recorded: AtomicU64::new(0), refused: AtomicU64::new(0), latency_us: Mutex::new(histogram) })
    }

    fn answered(&self, recorded: bool, took: Duration) {
        if recorded {
            self.recorded.fetch_add(1, Ordering::Relaxed);
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let _ = self.latency_us.lock().unwrap_or_else(std::sync::PoisonError::into_inner).record(micros);
    }
}

async fn http_segment(base: &str, options: &Options, reports: &Arc<Reports>, length: Duration) -> anyhow::Result<Segment> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).pool_max_idle_per_host(options.in_flight).build()?;
    let url = format!("{base}/v1/events");
    let tally = Tally::new();
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..options.in_flight {
        let (http, url, reports, tally) = (http.clone(), url.clone(), reports.clone(), tally.clone());
        clients.push(tokio::spawn(async move {
            while started.elapsed() < length {
                let event = reports.next();
                let body = json!({"uid": event.uid, "business": event.business, "oid": event.oid, "progress": event.progress});
                let sent = Instant::now();
                let answer = http.post(&url).json(&body).send().await;
                tally.answered(answer.is_ok_and(|answer| answer.status() == 200), sent.elapsed());
            }
        }));
    }
    for client in clients {
        client.await?;
    }
    Ok(finish(&tally, started))
}

async fn channels(grpc: &str, count: usize) -> anyhow::Result<Vec<HistoryClient<Channel>>> {
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        // One HTTP/2 connection each.
        clients.push(HistoryClient::new(Channel::from_shared(grpc.to_owned())?.connect().await?));
    }
    Ok(clients)
}

async fn unary_segment(grpc: &str, options: &Options, reports: &Arc<Reports>, length: Duration) -> anyhow::Result<Segment> {
    let connections = channels(grpc, options.connections).await?;
    let tally = Tally::new();
    let started = Instant::now();
    let mut clients = Vec::new();
    for index in 0..options.in_flight {
        let (mut client, reports, tally) = (connections[index % connections.len()].clone(), reports.clone(), tally.clone());
        clients.push(tokio::spawn(async move {
            while started.elapsed() < length {
                let sent = Instant::now();
                let answer = client.add_history(proto::AddHistoryRequest { event: Some(reports.next()) }).await;
                let recorded = answer.is_ok_and(|answer| answer.into_inner().result.is_some_and(|result| result.recorded));
                tally.answered(recorded, sent.elapsed());
            }
        }));
    }
    for client in clients {
        client.await?;
    }
    Ok(finish(&tally, started))
}

async fn stream_segment(grpc: &str, options: &Options, reports: &Arc<Reports>, length: Duration) -> anyhow::Result<Segment> {
    let connections = channels(grpc, options.connections).await?;
    let window = options.in_flight / options.connections;
    let tally = Tally::new();
    let started = Instant::now();
    let mut streams = Vec::new();
    for mut client in connections {
        let (reports, tally) = (reports.clone(), tally.clone());
        streams.push(tokio::spawn(async move {
            let (requests, outgoing) = tokio::sync::mpsc::channel::<proto::ReportStreamRequest>(window);
            let mut replies = client.report_stream(tokio_stream::wrappers::ReceiverStream::new(outgoing)).await?.into_inner();
            // Send times, oldest first: replies come in order.
            let sent_at = Arc::new(Mutex::new(VecDeque::with_capacity(window)));
            let permits = Arc::new(tokio::sync::Semaphore::new(window));
            let sending = Arc::new(AtomicBool::new(true));
            let sender = {
                let (sent_at, permits, sending) = (sent_at.clone(), permits.clone(), sending.clone());
                tokio::spawn(async move {
                    for seq in 0.. {
                        let Ok(permit) = permits.acquire().await else { break };
                        permit.forget();
                        if started.elapsed() >= length {
                            break;
                        }
                        sent_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push_back(Instant::now());
                        if requests.send(proto::ReportStreamRequest { seq, events: vec![reports.next()] }).await.is_err() {
                            break;
                        }
                    }
                    sending.store(false, Ordering::Relaxed);
                    // Dropping `requests` closes the stream's sending side.
                })
            };
            while let Some(reply) = replies.message().await? {
                let sent = sent_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop_front();
                let recorded = reply.error.is_none() && reply.results.first().is_some_and(|result| result.recorded);
                tally.answered(recorded, sent.map_or(Duration::ZERO, |sent| sent.elapsed()));
                permits.add_permits(1);
            }
            sender.await?;
            anyhow::ensure!(!sending.load(Ordering::Relaxed), "the stream ended while the client was sending");
            Ok::<(), anyhow::Error>(())
        }));
    }
    for stream in streams {
        stream.await??;
    }
    Ok(finish(&tally, started))
}

fn finish(tally: &Tally, started: Instant) -> Segment {
    let elapsed = started.elapsed().as_secs_f64();
    let latency_us = tally.latency_us.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let recorded = tally.recorded.load(Ordering::Relaxed);
    Segment { events_per_s: recorded as f64 / elapsed, latency_us, refused: tally.refused.load(Ordering::Relaxed), recorded }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

async fn scenario(options: &Options) -> anyhow::Result<()> {
    let stack = BenchStack::start(options.histflow.as_deref(), &options.topology, "streams")?;
    let ports = stack.ports;
    let service =
        start("histflow --role service", stack.histflow_run("service", free_port()?), ports.http, &stack.dir.path().join("service.log"))?;
    let base = format!("http://127.0.0.1:{}", ports.http);
    let grpc = format!("http://127.0.0.1:{}", ports.grpc);
    wait_ready(&reqwest::Client::new(), &base).await?;
    let reports = Arc::new(Reports { next: AtomicU64::new(0), users: options.users, switch_every: options.switch_every });

    // Warm: every user's first write of the day, and the connections.
    let warm = reports.users.min(2_000_000);
    println!("streams: warming {warm} users over gRPC streams");
    while reports.next.load(Ordering::Relaxed) < warm {
        stream_segment(&grpc, options, &reports, Duration::from_secs(5)).await?;
    }

    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); Transport::ALL.len()];
    let mut latencies: Vec<Histogram<u64>> = Transport::ALL.iter().map(|_| Histogram::new(3).expect("a histogram")).collect();
    let mut refused = [0u64; 3];
    // CPU seconds of the service and Redis, and events, per transport.
    let mut spent = [(0.0f64, 0.0f64, 0u64); 3];
    let redis = stack.backends.first().ok_or_else(|| anyhow::anyhow!("no Redis in the stack"))?.pid();
    for round in 0..options.rounds {
        for (index, transport) in Transport::ALL.into_iter().enumerate() {
            let before = cpu(service.pid(), redis)?;
            let segment = match transport {
                Transport::Http => http_segment(&base, options, &reports, options.segment).await?,
                Transport::Unary => unary_segment(&grpc, options, &reports, options.segment).await?,
                Transport::Stream => stream_segment(&grpc, options, &reports, options.segment).await?,
            };
            println!(
                "streams: round {}: {:<22} {:>9.0} events/s, p99 {:.2} ms",
                round + 1,
                transport.name(),
                segment.events_per_s,
                segment.latency_us.value_at_quantile(0.99) as f64 / 1000.0
            );
            let after = cpu(service.pid(), redis)?;
            spent[index].0 += after.0 - before.0;
            spent[index].1 += after.1 - before.1;
            spent[index].2 += segment.recorded;
            rates[index].push(segment.events_per_s);
            latencies[index].add(&segment.latency_us)?;
            refused[index] += segment.refused;
        }
    }

    let medians: Vec<f64> = rates.iter().map(|rates| median(rates)).collect();
    let per_event_us = |seconds: f64, events: u64| seconds / events.max(1) as f64 * 1e6;
    let service_us: Vec<f64> = spent.iter().map(|(service, _, events)| per_event_us(*service, *events)).collect();
    let redis_us: Vec<f64> = spent.iter().map(|(_, redis, events)| per_event_us(*redis, *events)).collect();
    println!();
    println!(
        "streams: batch 1, {} unanswered per transport, {} users (each reports once per {:.1} s at the stream rate), {} rounds of {:?}",
        options.in_flight,
        options.users,
        options.users as f64 / medians[2].max(1.0),
        options.rounds,
        options.segment
    );
    println!("| transport | events/s (median) | p50 ms | p99 ms | service CPU µs/event | Redis CPU µs/event | refused |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (index, transport) in Transport::ALL.into_iter().enumerate() {
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.1} | {:.1} | {} |",
            transport.name(),
            medians[index],
            latencies[index].value_at_quantile(0.5) as f64 / 1000.0,
            latencies[index].value_at_quantile(0.99) as f64 / 1000.0,
            service_us[index],
            redis_us[index],
            refused[index]
        );
    }
    let (over_unary, over_http) = (medians[2] / medians[1].max(1.0), medians[2] / medians[0].max(1.0));
    println!("streams: ReportStream is {over_unary:.2}x unary gRPC and {over_http:.2}x HTTP at batch 1");

    if let Some(path) = &options.json {
        let per_transport: serde_json::Map<String, serde_json::Value> = Transport::ALL
            .into_iter()
            .enumerate()
            .map(|(index, transport)| {
                let figures = json!({
                    "events_per_s": rates[index],
                    "median_events_per_s": medians[index],
                    "p50_ms": latencies[index].value_at_quantile(0.5) as f64 / 1000.0,
                    "p99_ms": latencies[index].value_at_quantile(0.99) as f64 / 1000.0,
                    "refused": refused[index],
                    "service_cpu_us_per_event": service_us[index],
                    "redis_cpu_us_per_event": redis_us[index],
                });
                (transport.key().to_owned(), figures)
            })
            .collect();
        let figures = json!({
            "in_flight": options.in_flight,
            "connections": options.connections,
            "users": options.users,
            "segment_s": options.segment.as_secs_f64(),
            "rounds": options.rounds,
            "transports": per_transport,
            "stream_over_unary": over_unary,
            "stream_over_http": over_http,
        });
        std::fs::write(path, serde_json::to_string_pretty(&figures)?)?;
    }
    Ok(())
}
