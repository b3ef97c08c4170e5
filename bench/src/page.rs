//! `bench page`: what the live page costs the service it watches. Redis,
//! tansu and the HBase-compatible server run beside histflow's service
//! role. Under a closed-loop load, segments without and with a watcher
//! reading `/admin/stats` once a second (what an open `/ui` does on the
//! server) alternate, so both see the same machine; then, with no load,
//! `--stats-calls` back-to-back reads measure the service's CPU time per
//! read.
//!
//! Reported: events/s per segment and the medians with and without the
//! watcher, their ratio, CPU per `/admin/stats` read (and so the share of
//! one core at one read a second), the read's latency and size.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::soak::body;
use crate::stack::processes::{free_port, run_until_interrupted, start, usage, wait_ready, BenchStack};

/// Options of the page bench.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The topology the service runs.
    #[arg(long, default_value = "topology.toml")]
    pub topology: PathBuf,
    /// Events per request.
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
    /// Closed-loop clients.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Length of each segment.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub segment: Duration,
    /// Pairs of segments (without, then with the watcher).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Back-to-back `/admin/stats` reads for the CPU measurement.
    #[arg(long, default_value_t = 2000)]
    pub stats_calls: usize,
    /// Users reporting.
    #[arg(long, default_value_t = 100_000)]
    pub users: u64,
    /// Write the figures as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The histflow binary (default: built beside this bench).
    #[arg(long)]
    pub histflow: Option<PathBuf>,
}

/// Runs the page bench and prints its figures.
pub fn run(options: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(
        options.batch >= 1 && options.connections >= 1 && options.rounds >= 1 && options.stats_calls >= 1,
        "--batch, --connections, --rounds and --stats-calls must be at least 1"
    );
    run_until_interrupted(scenario(options))
}

/// Closed-loop load for `length`; events answered 200 per second.
async fn segment(http: &reqwest::Client, url: &str, options: &Options, next: &Arc<AtomicU64>, length: Duration) -> anyhow::Result<f64> {
    let answered = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..options.connections {
        let (http, url, next, answered, batch, users) =
            (http.clone(), url.to_owned(), next.clone(), answered.clone(), options.batch, options.users);
        clients.push(tokio::spawn(async move {
            while started.elapsed() < length {
                let sent = http.post(&url).json(&body(batch, users, &next)).send().await;
                if sent.is_ok_and(|answer| answer.status() == 200) {
                    answered.fetch_add(batch as u64, Ordering::Relaxed);
                }
            }
        }));
    }
    for client in clients {
        client.await?;
    }
    Ok(answered.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

async fn scenario(options: &Options) -> anyhow::Result<()> {
    let stack = BenchStack::start(options.histflow.as_deref(), &options.topology, "page")?;
    let ports = stack.ports;
    let service =
        start("histflow --role service", stack.histflow_run("service", free_port()?), ports.http, &stack.dir.path().join("service.log"))?;
    let base = format!("http://127.0.0.1:{}", ports.http);
    let (url, stats_url) = (format!("{base}/v1/events"), format!("{base}/admin/stats"));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).pool_max_idle_per_host(options.connections + 1).build()?;
    wait_ready(&http, &base).await?;
    let next = Arc::new(AtomicU64::new(0));
    segment(&http, &url, options, &next, Duration::from_secs(3)).await?;

    let (mut without, mut with) = (Vec::new(), Vec::new());
    for round in 0..options.rounds {
        let alone = segment(&http, &url, options, &next, options.segment).await?;
        let watching = Arc::new(AtomicBool::new(true));
        let watcher = {
            let (http, stats_url, watching) = (http.clone(), stats_url.clone(), watching.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                while watching.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let _ = http.get(&stats_url).send().await.map(|answer| answer.bytes());
                }
            })
        };
        let watched = segment(&http, &url, options, &next, options.segment).await?;
        watching.store(false, Ordering::Relaxed);
        watcher.abort();
        println!("page: round {}: {alone:.0} events/s without the watcher, {watched:.0} with it", round + 1);
        without.push(alone);
        with.push(watched);
    }

    // The read's own cost, on an idle service.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, cpu_before) = usage(service.pid()).ok_or_else(|| anyhow::anyhow!("cannot read the service's CPU time"))?;
    let started = Instant::now();
    let mut bytes = 0;
    let mut latencies = Vec::with_capacity(options.stats_calls);
    for _ in 0..options.stats_calls {
        let call = Instant::now();
        let answer = http.get(&stats_url).send().await?;
        anyhow::ensure!(answer.status() == 200, "/admin/stats answered {}", answer.status());
        bytes = answer.bytes().await?.len();
        latencies.push(call.elapsed().as_secs_f64() * 1000.0);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (_, cpu_after) = usage(service.pid()).ok_or_else(|| anyhow::anyhow!("cannot read the service's CPU time"))?;
    let cpu_us_per_read = (cpu_after - cpu_before) / options.stats_calls as f64 * 1e6;
    let (median_without, median_with) = (median(&without), median(&with));
    let figures = json!({
        "batch": options.batch,
        "connections": options.connections,
        "segment_s": options.segment.as_secs_f64(),
        "events_per_s_without_watcher": without,
        "events_per_s_with_watcher": with,
        "median_without": median_without,
        "median_with": median_with,
        "ratio_with_to_without": median_with / median_without,
        "stats_calls": options.stats_calls,
        "stats_cpu_us_per_read": cpu_us_per_read,
        "stats_core_share_at_1_per_s": cpu_us_per_read / 1e6,
        "stats_latency_ms_median": median(&latencies),
        "stats_reads_per_s_back_to_back": options.stats_calls as f64 / elapsed,
        "stats_bytes": bytes,
    });
    println!(
        "page: median {median_without:.0} events/s without the watcher, {median_with:.0} with it ({:.3}x); \
         /admin/stats: {cpu_us_per_read:.0} µs of service CPU per read ({:.4} % of a core at one read a second), \
         median {:.2} ms, {bytes} bytes",
        median_with / median_without,
        cpu_us_per_read / 1e4,
        median(&latencies)
    );
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_string_pretty(&figures)?)?;
    }
    Ok(())
}
