//! `bench load`: drives a running histflow's `POST /v1/events` closed-loop
//! from `--connections` concurrent clients for `--duration`, each request
//! carrying `--batch` heartbeat-like events (random user, one of its items,
//! progress rising). Reports events/s, requests/s, latency percentiles
//! (hdrhistogram, microseconds) and answers by HTTP status.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::json;

/// Options of `bench load`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Base URL of a running histflow, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    target: String,
    /// Events per request.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Concurrent clients (each waits for its answer before the next).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// How long to run (humantime: 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Distinct users.
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    /// Items per user.
    #[arg(long, default_value_t = 20)]
    items_per_user: u64,
    /// Bearer token, if the endpoint wants one.
    #[arg(long)]
    token: Option<String>,
}

/// What one client saw.
struct ClientFigures {
    latency_us: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
}

/// A small, fast, seedable generator (xorshift64*); the load need not be
/// cryptographic, only varied and reproducible.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Runs the load and prints its table.
pub fn run(options: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(
        options.batch >= 1 && options.connections >= 1 && options.users >= 1 && options.items_per_user >= 1,
        "--batch, --connections, --users and --items-per-user must be at least 1"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(drive(options))
}

async fn drive(options: &Options) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(options.connections).build()?;
    let url = format!("{}/v1/events", options.target.trim_end_matches('/'));
    let progress = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + options.duration;
    let mut clients = Vec::with_capacity(options.connections);
    for index in 0..options.connections {
        let (client, url, progress) = (client.clone(), url.clone(), progress.clone());
        let (batch, users, items, token) = (options.batch, options.users, options.items_per_user, options.token.clone());
        clients.push(tokio::spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (index as u64 + 1));
            let mut figures =
                ClientFigures { latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)?, statuses: BTreeMap::new(), transport_errors: 0 };
            while Instant::now() < deadline {
                let events: Vec<_> = (0..batch)
                    .map(|_| {
                        let uid = rng.next() % users + 1;
                        let oid = rng.next() % items;
                        json!({"uid": uid, "business": "archive", "oid": oid, "progress": (rng.next() % 3600) as i64, "device": "bench"})
                    })
                    .collect();
                let body = if batch == 1 { events.into_iter().next().unwrap_or_default() } else { json!({ "events": events }) };
                let mut request = client.post(&url).json(&body);
                if let Some(token) = &token {
                    request = request.bearer_auth(token);
                }
                let sent = Instant::now();
                match request.send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let _ = response.bytes().await;
                        figures.latency_us.saturating_record(sent.elapsed().as_micros().max(1) as u64);
                        *figures.statuses.entry(status).or_default() += 1;
                        if status == 200 {
                            progress.fetch_add(batch as u64, Ordering::Relaxed);
                        }
                    }
                    Err(_) => figures.transport_errors += 1,
                }
            }
            anyhow::Ok(figures)
        }));
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut transport_errors = 0;
    for client in clients {
        let figures = client.await.context("a load client panicked")??;
        latency.add(&figures.latency_us)?;
        for (status, count) in figures.statuses {
            *statuses.entry(status).or_default() += count;
        }
        transport_errors += figures.transport_errors;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ok_requests = statuses.get(&200).copied().unwrap_or(0);
    println!(
        "load: {} connections, batch {}, {:?}, {} users x {} items, target {}",
        options.connections, options.batch, options.duration, options.users, options.items_per_user, options.target
    );
    println!("  accepted events/s   {:>12.0}", (ok_requests * options.batch as u64) as f64 / elapsed);
    println!("  accepted requests/s {:>12.0}", ok_requests as f64 / elapsed);
    println!("  latency ms          {}", latency_line(&latency));
    println!("  answers by status   {statuses:?}, transport errors {transport_errors}");
    Ok(())
}

/// `p50 .. p90 .. p99 .. p99.9 .. max ..` in milliseconds, from a
/// histogram of microseconds.
pub(crate) fn latency_line(latency: &Histogram<u64>) -> String {
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    format!("p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}", ms(0.5), ms(0.9), ms(0.99), ms(0.999), latency.max() as f64 / 1000.0)
}
