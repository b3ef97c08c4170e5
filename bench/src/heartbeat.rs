//! `bench heartbeat`: the workload the write-back design exists for. Each
//! of `--users` users watches one item and reports its progress every
//! `--heartbeat-s` seconds (phases spread evenly over the period), moving
//! to another item now and then (`--switch-every` heartbeats on average).
//! Reports are batched into requests of up to `--batch` events, sent by
//! `--connections` concurrent clients. Prints what was accepted, so the
//! convergence ratios can be read against histflow's own `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Semaphore;

/// Options of `bench heartbeat`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Base URL of a running histflow.
    #[arg(long)]
    target: String,
    /// Users watching at once.
    #[arg(long, default_value_t = 5_000)]
    users: u64,
    /// Seconds between two reports of one user.
    #[arg(long, default_value_t = 5)]
    heartbeat_s: u64,
    /// A user moves to another item every this many heartbeats on average.
    #[arg(long, default_value_t = 60)]
    switch_every: u64,
    /// Most events per request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// How long to run (humantime).
    #[arg(long, default_value = "130s", value_parser = humantime::parse_duration)]
    duration: Duration,
}

/// Runs the workload and prints what was sent and accepted.
pub fn run(options: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(
        options.users >= 1 && options.heartbeat_s >= 1 && options.batch >= 1 && options.connections >= 1,
        "every count must be at least 1"
    );
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(drive(options))
}

async fn drive(options: &Options) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let url = format!("{}/v1/events", options.target.trim_end_matches('/'));
    let period_ms = options.heartbeat_s * 1000;
    let tick = Duration::from_millis(50);
    let slots = period_ms / 50;
    // Per user: current item and progress.
    let mut items: Vec<(u64, i64)> = (0..options.users).map(|user| (user * 7, 0)).collect();
    let (accepted, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let in_flight = Arc::new(Semaphore::new(options.connections));
    let started = Instant::now();
    let mut sent = 0u64;
    let mut slot = 0u64;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut requests = Vec::new();
    while started.elapsed() < options.duration {
        // The users whose phase falls in this 50 ms slot of the period.
        let due: Vec<u64> = (0..options.users).filter(|user| user * slots / options.users == slot % slots).collect();
        for chunk in due.chunks(options.batch) {
            let events: Vec<_> = chunk
                .iter()
                .map(|&user| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let (item, progress) = &mut items[user as usize];
                    if rng.is_multiple_of(options.switch_every) {
                        *item += 1;
                        *progress = 0;
                    }
                    *progress += options.heartbeat_s as i64;
                    json!({"uid": user + 1, "business": "archive", "oid": *item, "progress": *progress, "device": "bench"})
                })
                .collect();
            sent += events.len() as u64;
            let count = events.len() as u64;
            let permit = in_flight.clone().acquire_owned().await?;
            let (client, url, accepted, refused) = (client.clone(), url.clone(), accepted.clone(), refused.clone());
            requests.push(tokio::spawn(async move {
                let ok =
                    matches!(client.post(&url).json(&json!({ "events": events })).send().await, Ok(response) if response.status() == 200);
                if ok {
                    accepted.fetch_add(count, Ordering::Relaxed)
                } else {
                    refused.fetch_add(count, Ordering::Relaxed)
                };
                drop(permit);
            }));
        }
        slot += 1;
        let next = started + tick * slot as u32;
        tokio::time::sleep_until(next.into()).await;
    }
    for request in requests {
        request.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "heartbeat: {} users every {} s for {:.0} s (items switch every ~{} heartbeats), batch {}",
        options.users, options.heartbeat_s, elapsed, options.switch_every, options.batch
    );
    println!("  events sent {sent}, accepted {}, refused {}", accepted.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
    println!("  accepted events/s {:.0}", accepted.load(Ordering::Relaxed) as f64 / elapsed);
    Ok(())
}
