//! `bench soak`: overload against the real service role. Redis, tansu and
//! the HBase-compatible server run beside histflow's service; the bench
//! first measures what the service sustains (closed loop), then offers
//! `--factor` times that, open loop, for `--duration`, then stops and
//! probes until the service answers normally again.
//!
//! Reported: the capacity measured; during the overload the share of 200,
//! 429 and 503 answers (and anything else), the p99 of the 200s (from the
//! intended send time), requests the bench itself could not send (its
//! in-flight limit was full) and the service's peak RSS; after it, the time
//! until 20 probes in a row were answered 200.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::stack::processes::{free_port, resident_bytes, run_until_interrupted, start, wait_ready, BenchStack};

/// Options of the soak.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The topology the service runs.
    #[arg(long, default_value = "topology.toml")]
    pub topology: PathBuf,
    /// Events per request.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Closed-loop clients of the capacity measurement.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// How long to measure the capacity.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub measure: Duration,
    /// The overload, as a multiple of the capacity measured.
    #[arg(long, default_value_t = 10.0)]
    pub factor: f64,
    /// How long to overload.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Requests the bench keeps in flight at most; beyond it, a request is
    /// counted as not sent.
    #[arg(long, default_value_t = 4096)]
    pub max_in_flight: usize,
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

/// Runs the soak and prints its figures.
pub fn run(options: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(
        options.batch >= 1 && options.connections >= 1 && options.max_in_flight >= 1,
        "--batch, --connections and --max-in-flight must be at least 1"
    );
    anyhow::ensure!(options.factor > 0.0, "--factor must be positive");
    run_until_interrupted(scenario(options))
}

/// A request body of `batch` events, users in turn from `next`.
pub(crate) fn body(batch: usize, users: u64, next: &AtomicU64) -> Value {
    let first = next.fetch_add(batch as u64, Ordering::Relaxed);
    let view_at = model::now_ms();
    let events: Vec<Value> = (first..first + batch as u64)
        .map(|n| json!({"uid": 1 + n % users, "business": "archive", "oid": 1 + n / users % 50, "progress": n % 3600, "view_at": view_at}))
        .collect();
    json!({ "events": events })
}

async fn scenario(options: &Options) -> anyhow::Result<()> {
    let stack = BenchStack::start(options.histflow.as_deref(), &options.topology, "soak")?;
    let ports = stack.ports;
    let mut service =
        start("histflow --role service", stack.histflow_run("service", free_port()?), ports.http, &stack.dir.path().join("service.log"))?;
    let url = format!("http://127.0.0.1:{}/v1/events", ports.http);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).pool_max_idle_per_host(options.max_in_flight).build()?;
    wait_ready(&http, &format!("http://127.0.0.1:{}", ports.http)).await?;
    let next = Arc::new(AtomicU64::new(0));

    // Capacity: closed loop, only 200s counted.
    let answered = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..options.connections {
        let (http, url, next, answered, options) = (http.clone(), url.clone(), next.clone(), answered.clone(), options.clone());
        clients.push(tokio::spawn(async move {
            while started.elapsed() < options.measure {
                let sent = http.post(&url).json(&body(options.batch, options.users, &next)).send().await;
                if sent.is_ok_and(|answer| answer.status() == 200) {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for client in clients {
        client.await?;
    }
    let capacity = answered.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    anyhow::ensure!(capacity > 0.0, "the service answered nothing while the capacity was measured");
    let offered = capacity * options.factor;
    println!(
        "soak: capacity {capacity:.0} requests/s of {} event(s); offering {offered:.0}/s ({}x) open loop for {:?}",
        options.batch, options.factor, options.duration
    );

    // Overload: open loop, each request timed from its intended send.
    let statuses: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let not_sent = Arc::new(AtomicU64::new(0));
    let slots = Arc::new(tokio::sync::Semaphore::new(options.max_in_flight));
    let sampling = Arc::new(AtomicBool::new(true));
    let peak_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (sampling, peak_rss, pid) = (sampling.clone(), peak_rss.clone(), service.pid());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Some(bytes) = resident_bytes(pid) {
                    peak_rss.fetch_max(bytes, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / offered));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut offered_count = 0u64;
    while started.elapsed() < options.duration {
        tick.tick().await;
        offered_count += 1;
        let intended = Instant::now();
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            not_sent.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let (http, url, statuses, latency, body) =
            (http.clone(), url.clone(), statuses.clone(), latency.clone(), body(options.batch, options.users, &next));
        tokio::spawn(async move {
            let _slot = slot;
            let answer = http.post(&url).json(&body).send().await;
            let key = match &answer {
                Ok(answer) => answer.status().as_u16().to_string(),
                Err(error) if error.is_timeout() => "timeout".to_owned(),
                Err(_) => "transport error".to_owned(),
            };
            if answer.is_ok_and(|answer| answer.status() == 200) {
                let micros = intended.elapsed().as_micros() as u64;
                let _ = latency.lock().unwrap_or_else(PoisonError::into_inner).record(micros.max(1));
            }
            *statuses.lock().unwrap_or_else(PoisonError::into_inner).entry(key).or_default() += 1;
        });
    }
    let overload_s = started.elapsed().as_secs_f64();
    let _ = slots.acquire_many(options.max_in_flight as u32).await;
    sampling.store(false, Ordering::Relaxed);
    sampler.await?;

    // Recovery: one request at a time until 20 in a row are answered 200.
    let stopped = Instant::now();
    let mut in_a_row = 0;
    let recovered = loop {
        let ok = http.post(&url).json(&body(options.batch, options.users, &next)).send().await.is_ok_and(|answer| answer.status() == 200);
        in_a_row = if ok { in_a_row + 1 } else { 0 };
        if in_a_row == 20 {
            break Some(stopped.elapsed());
        }
        if stopped.elapsed() > Duration::from_secs(120) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let alive = service.check_alive(&stack.dir.path().join("service.log")).is_ok();

    let statuses = std::mem::take(&mut *statuses.lock().unwrap_or_else(PoisonError::into_inner));
    let answered: u64 = statuses.values().sum();
    let share = |key: &str| statuses.get(key).copied().unwrap_or(0) as f64 * 100.0 / answered.max(1) as f64;
    let latency = latency.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let p99_ms = (!latency.is_empty()).then(|| latency.value_at_quantile(0.99) as f64 / 1000.0);
    let peak_mib = peak_rss.load(Ordering::Relaxed) as f64 / 1_048_576.0;
    println!(
        "offered:             {offered_count} requests in {overload_s:.1} s; {} not sent (the bench's {} in flight were full)",
        not_sent.load(Ordering::Relaxed),
        options.max_in_flight
    );
    println!("answered:            {answered}");
    for (status, count) in &statuses {
        println!("  {status:<18} {count} ({:.1} %)", *count as f64 * 100.0 / answered.max(1) as f64);
    }
    println!("refused (429 + 503): {:.1} %", share("429") + share("503"));
    println!("p99 of the 200s:     {}", p99_ms.map_or("-".to_owned(), |ms| format!("{ms:.1} ms")));
    println!("service peak RSS:    {peak_mib:.1} MiB");
    match recovered {
        Some(after) => println!("recovered:           {:.2} s after the load stopped (20 answers 200 in a row)", after.as_secs_f64()),
        None => println!("recovered:           not within 120 s"),
    }
    println!("service:             {}", if alive { "alive" } else { "DEAD" });
    if let Some(path) = &options.json {
        let figures = json!({
            "capacity_requests_per_s": capacity,
            "offered_requests_per_s": offered,
            "offered": offered_count,
            "not_sent": not_sent.load(Ordering::Relaxed),
            "statuses": statuses,
            "refused_share_percent": share("429") + share("503"),
            "p99_ms_of_200": p99_ms,
            "peak_rss_bytes": peak_rss.load(Ordering::Relaxed),
            "recovered_after_s": recovered.map(|after| after.as_secs_f64()),
            "alive": alive,
        });
        std::fs::write(path, serde_json::to_string_pretty(&figures)?).with_context(|| format!("cannot write {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    service.stop(Duration::from_secs(20));
    anyhow::ensure!(alive, "the service died under overload; logs in {}", stack.dir.keep().display());
    Ok(())
}
