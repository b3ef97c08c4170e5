//! `bench reads`: history-page reads against a running histflow (whole
//! pipeline, so pages past Redis come from the persisted HBase rows).
//!
//! It first gives `--users` users `--items-per-user` items each, then waits
//! until the job has persisted them (a page past Redis comes back full),
//! then reads closed-loop from `--connections` clients for `--duration`:
//! `--source realtime` reads each user's first page (`limit`, served by
//! Redis when the topology keeps at least `limit` items per user);
//! `--source hbase` reads the page after the last one Redis holds, with the
//! cursor the Redis page returned, so every read takes the cache-aside path.
//! Use a topology whose `max_items_per_user` is below `--items-per-user`
//! and whose bridge ships `full` records (`bench/topologies/reads.toml`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::load::{latency_line, Rng};

/// Which page the reads ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// The first page: Redis alone.
    Realtime,
    /// The page after what Redis holds: HBase through cache-aside.
    Hbase,
}

/// Options of `bench reads`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Base URL of a running histflow, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    target: String,
    /// Which page to read.
    #[arg(long, value_enum, default_value = "realtime")]
    source: Source,
    /// Items per page.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Users to read (given items first).
    #[arg(long, default_value_t = 2_000)]
    users: u64,
    /// Items each user gets.
    #[arg(long, default_value_t = 60)]
    items_per_user: u64,
    /// First uid (pick a range no earlier run used).
    #[arg(long, default_value_t = 900_000_000)]
    first_uid: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// How long to read (humantime).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
}

/// Runs the benchmark and prints its table.
pub fn run(options: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(options.users >= 1 && options.connections >= 1 && (1..=100).contains(&options.limit), "bad options");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(drive(options))
}

async fn drive(options: &Options) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(options.connections).build()?;
    let base = options.target.trim_end_matches('/').to_owned();
    let uids: Vec<u64> = (options.first_uid..options.first_uid + options.users).collect();

    // Items, oldest first, one request per user.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    let filled = Instant::now();
    for uid in &uids {
        let events: Vec<Value> = (0..options.items_per_user)
            .map(|oid| json!({"uid": uid, "business": "archive", "oid": oid, "progress": 30, "view_at": now - 3_600_000 + oid as i64}))
            .collect();
        let response = client.post(format!("{base}/v1/events")).json(&json!({ "events": events })).send().await?;
        anyhow::ensure!(response.status() == 200, "filling user {uid}: {}", response.text().await?);
    }
    println!("filled {} users x {} items in {:.1} s", options.users, options.items_per_user, filled.elapsed().as_secs_f64());

    // The page each read asks for: the first, or the one after Redis's.
    let mut paths = Vec::with_capacity(uids.len());
    for uid in &uids {
        let first = format!("{base}/v1/users/{uid}/history?limit={}", options.limit);
        let path = match options.source {
            Source::Realtime => first,
            Source::Hbase => {
                let page: Value = client.get(&first).send().await?.json().await?;
                let cursor = page["next_cursor"]
                    .as_str()
                    .context("the first page has no next_cursor: does Redis keep fewer items than --items-per-user?")?;
                format!("{first}&cursor={cursor}")
            }
        };
        paths.push(path);
    }
    // Wait until the job has persisted the last user (its page is full).
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let page: Value = client.get(paths.last().context("no users")?).send().await?.json().await?;
        if page["items"].as_array().map_or(0, Vec::len) == options.limit.min(options.items_per_user as usize) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the pages did not fill within 180 s: is the job running? {page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let started = Instant::now();
    let end = started + options.duration;
    let paths = std::sync::Arc::new(paths);
    let mut clients = Vec::new();
    for index in 0..options.connections {
        let (client, paths) = (client.clone(), paths.clone());
        clients.push(tokio::spawn(async move {
            let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ (index as u64 + 1));
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            while Instant::now() < end {
                let path = &paths[(rng.next() % paths.len() as u64) as usize];
                let sent = Instant::now();
                let response = client.get(path).send().await?;
                let status = response.status().as_u16();
                let _ = response.bytes().await?;
                latency.saturating_record(sent.elapsed().as_micros().max(1) as u64);
                *statuses.entry(status).or_default() += 1;
            }
            anyhow::Ok((latency, statuses))
        }));
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    for client in clients {
        let (figures, answers) = client.await.context("a read client panicked")??;
        latency.add(&figures)?;
        for (status, count) in answers {
            *statuses.entry(status).or_default() += count;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "reads: source {:?}, limit {}, {} connections, {:?}, {} users x {} items, target {}",
        options.source, options.limit, options.connections, options.duration, options.users, options.items_per_user, options.target
    );
    println!("  pages/s     {:>10.0}", statuses.get(&200).copied().unwrap_or(0) as f64 / elapsed);
    println!("  latency ms  {}", latency_line(&latency));
    println!("  answers by status {statuses:?}");
    Ok(())
}
