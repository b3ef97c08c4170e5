//! `bench reload`: topology reloads under load. Redis, tansu and the
//! HBase-compatible server run on free ports; the service and the job run
//! a copy of `bench/topologies/reload.toml` under an open-loop ingest load
//! in four phases of `--phase` each:
//!
//! 0. no reload;
//! 1. a tunable edit every `--every` (the realtime edge's capacity, 16384
//!    and 8192 in turn), reloaded through the service's `POST
//!    /admin/reload`;
//! 2. a structural edit every `--every` (the aggregate's shards, 16 and 8:
//!    the service hands over its realtime and aggregate stages), and the
//!    job's persist window (2 s and 1 s: the job hands over persist)
//!    through the job's admin listener;
//! 3. no reload.
//!
//! Reported: each kind's time from the trigger to the new topology running
//! (the reload answer's round trip; the answer comes once handed-over
//! stages run) as median and maximum, ingest p50/p99 and failed requests
//! per phase, the ratio of the reload phases' p99 to the quiet phases',
//! and whether every acknowledged report reached HBase.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

use crate::stack::open_load::{quantile_ms, LoadShape, OpenLoad, Settled};
use crate::stack::processes::{free_port, run_until_interrupted, start, wait_ready, BenchStack};

/// Options of the reload bench.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The topology the service and the job run (a copy is edited).
    #[arg(long, default_value = "bench/topologies/reload.toml")]
    pub topology: PathBuf,
    /// Ingest events a second, open loop.
    #[arg(long, default_value_t = 5_000.0)]
    pub rate: f64,
    /// Events per request.
    #[arg(long, default_value_t = 20)]
    pub batch: usize,
    /// Users reporting.
    #[arg(long, default_value_t = 5_000)]
    pub users: u64,
    /// Length of each phase (humantime).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub phase: Duration,
    /// Time between reloads in the reload phases (humantime).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub every: Duration,
    /// Write the figures as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The histflow binary (default: built beside this bench).
    #[arg(long)]
    pub histflow: Option<PathBuf>,
}

/// Runs the reload bench and prints its figures.
pub fn run(options: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(options.users >= 1 && options.batch >= 1 && options.rate > 0.0, "counts and rates must be positive");
    anyhow::ensure!(options.every < options.phase, "--every must be shorter than --phase");
    run_until_interrupted(scenario(options))
}

/// Rewrites `find` to `replace` in the topology at `path` (in one step).
fn edit(path: &Path, find: &str, replace: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    anyhow::ensure!(text.contains(find), "{} has no {find:?}", path.display());
    let staged = path.with_extension("new");
    std::fs::write(&staged, text.replacen(find, replace, 1))?;
    std::fs::rename(&staged, path)?;
    Ok(())
}

/// Reloads `base`'s topology: the round trip in ms and the answer.
async fn reload(http: &reqwest::Client, base: &str) -> anyhow::Result<(f64, Value)> {
    let started = Instant::now();
    let answer: Value = http.post(format!("{base}/admin/reload")).send().await?.json().await?;
    let took = started.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(answer["result"] == "applied", "reload of {base} not applied: {answer}");
    Ok((took, answer))
}

/// Median and maximum of `samples`.
fn summary(mut samples: Vec<f64>) -> Value {
    samples.sort_by(f64::total_cmp);
    let median = samples.get(samples.len() / 2).copied();
    json!({ "reloads": samples.len(), "median_ms": median, "max_ms": samples.last() })
}

async fn scenario(options: &Options) -> anyhow::Result<()> {
    let mut stack = BenchStack::start(options.histflow.as_deref(), &options.topology, "reload")?;
    let topology = stack.dir.path().join("topology.toml");
    std::fs::copy(&options.topology, &topology).with_context(|| format!("cannot copy {}", options.topology.display()))?;
    stack.topology = topology.clone();

    let log = |name: &str| stack.dir.path().join(format!("{name}.log"));
    let _service = start("histflow --role service", stack.histflow_run("service", free_port()?), stack.ports.http, &log("service"))?;
    let admin = free_port()?;
    let _job = start("histflow --role job", stack.histflow_run("job", admin), admin, &log("job"))?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let (base, job_base) = (format!("http://127.0.0.1:{}", stack.ports.http), format!("http://127.0.0.1:{admin}"));
    wait_ready(&http, &base).await?;

    let shape =
        LoadShape { users: options.users, rate: options.rate, batch: options.batch, reports_per_item: 10, duration: options.phase * 4 };
    println!(
        "reload: ingest {} events/s in requests of {}, {} users; four phases of {:?}; a reload every {:?} in phases 1 and 2",
        shape.rate, shape.batch, shape.users, options.phase, options.every
    );
    let load = OpenLoad::new(4)?;
    let driver = {
        let (load, base) = (load.clone(), base.clone());
        tokio::spawn(async move { load.drive(shape, &reqwest::Client::new(), &base).await })
    };
    tokio::time::sleep(options.phase).await;

    // Phase 1: tunable edits.
    load.enter(1);
    let mut tunable = Vec::new();
    let phase_end = Instant::now() + options.phase;
    let mut capacity = 16_384;
    while Instant::now() + options.every < phase_end {
        let next = if capacity == 16_384 { 8_192 } else { 16_384 };
        edit(&topology, &format!("capacity = {capacity}, when_full = \"reject\""), &format!("capacity = {next}, when_full = \"reject\""))?;
        capacity = next;
        let (took, answer) = reload(&http, &base).await?;
        anyhow::ensure!(answer["changes"]["retuned"] == json!(["realtime"]), "a capacity edit changed more: {answer}");
        tunable.push(took);
        tokio::time::sleep(options.every).await;
    }
    tokio::time::sleep(phase_end.saturating_duration_since(Instant::now())).await;

    // Phase 2: structural edits, the service's and the job's in turn.
    load.enter(2);
    let (mut service_structural, mut job_structural) = (Vec::new(), Vec::new());
    let phase_end = Instant::now() + options.phase;
    let (mut shards, mut window) = (16, 2000);
    let mut service_turn = true;
    while Instant::now() + options.every < phase_end {
        if service_turn {
            let next = if shards == 16 { 8 } else { 16 };
            edit(&topology, &format!("shards = {shards}"), &format!("shards = {next}"))?;
            shards = next;
            // The job's file changed too; it has nothing of its own to do.
            let (took, _) = reload(&http, &base).await?;
            service_structural.push(took);
            reload(&http, &job_base).await?;
        } else {
            let next = if window == 2000 { 1000 } else { 2000 };
            edit(
                &topology,
                &format!("flush_interval_ms = {window}\nwrite_rate_limit"),
                &format!("flush_interval_ms = {next}\nwrite_rate_limit"),
            )?;
            window = next;
            let (took, _) = reload(&http, &job_base).await?;
            job_structural.push(took);
            reload(&http, &base).await?;
        }
        service_turn = !service_turn;
        tokio::time::sleep(options.every).await;
    }
    tokio::time::sleep(phase_end.saturating_duration_since(Instant::now())).await;

    // Phase 3: quiet again.
    load.enter(3);
    tokio::time::sleep(options.phase).await;
    load.stop();
    driver.await?;
    let acknowledged = load.acknowledged();
    let durable = Settled::wait(stack.ports.hbase, &acknowledged, Duration::from_secs(45), Duration::from_secs(180)).await?.durable;
    let missing = acknowledged.len() - durable;

    let phase = |index: usize| {
        let latency = load.latency(index);
        json!({
            "p50_ms": quantile_ms(&latency, 0.5),
            "p99_ms": quantile_ms(&latency, 0.99),
            "requests": latency.len(),
            "failed_requests": load.failed(index),
        })
    };
    let phases = [phase(0), phase(1), phase(2), phase(3)];
    let p99 = |index: usize| phases[index]["p99_ms"].as_f64().unwrap_or(0.0);
    let quiet = ((p99(0) + p99(3)) / 2.0).max(1e-9);
    let reloads = json!({
        "tunable_service": summary(tunable),
        "structural_service": summary(service_structural),
        "structural_job": summary(job_structural),
    });
    println!();
    println!("| phase | requests | failed | p50 (ms) | p99 (ms) |");
    println!("|---|---:|---:|---:|---:|");
    for (name, figures) in ["no reload", "tunable reloads", "structural reloads", "no reload"].iter().zip(&phases) {
        let ms = |key: &str| figures[key].as_f64().map_or("—".to_owned(), |n| format!("{n:.1}"));
        println!("| {name} | {} | {} | {} | {} |", figures["requests"], figures["failed_requests"], ms("p50_ms"), ms("p99_ms"));
    }
    println!();
    println!("| reload | count | trigger to running, median (ms) | max (ms) |");
    println!("|---|---:|---:|---:|");
    for (name, key) in
        [("tunable (service)", "tunable_service"), ("structural (service)", "structural_service"), ("structural (job)", "structural_job")]
    {
        let figures = &reloads[key];
        let ms = |key: &str| figures[key].as_f64().map_or("—".to_owned(), |n| format!("{n:.1}"));
        println!("| {name} | {} | {} | {} |", figures["reloads"], ms("median_ms"), ms("max_ms"));
    }
    println!();
    println!(
        "ingest p99 while reloading / without: tunable {:.2}, structural {:.2}; acknowledged reports missing from HBase: {missing}",
        p99(1) / quiet,
        p99(2) / quiet
    );
    if let Some(path) = &options.json {
        let figures = json!({
            "ingest_rate_events_per_s": options.rate,
            "reload_every_s": options.every.as_secs_f64(),
            "phase_s": options.phase.as_secs_f64(),
            "reloads": reloads,
            "phases": { "quiet_before": phases[0], "tunable": phases[1], "structural": phases[2], "quiet_after": phases[3] },
            "p99_ratio_tunable_to_quiet": p99(1) / quiet,
            "p99_ratio_structural_to_quiet": p99(2) / quiet,
            "acknowledged": acknowledged.len(),
            "acknowledged_missing_from_hbase": missing,
        });
        std::fs::write(path, serde_json::to_string_pretty(&figures)?).with_context(|| format!("cannot write {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    Ok(())
}
