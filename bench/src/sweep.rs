//! `bench sweep`: the HBase retention sweep's rate, and what it costs an
//! ingest load running beside it. Redis, tansu and the HBase-compatible
//! server run on free ports; the bench fills the history table through
//! Thrift with `--rows` users of two cells each (a `live` view two days
//! old, past live's one-day retention, and a fresh `archive` view), then
//! starts the service and the job of `bench/topologies/sweep.toml` with the
//! sweep held back (its place in Redis says a pass just finished) and an
//! open-loop ingest load, in three phases:
//!
//! 0. `--phase` of load, no sweep;
//! 1. the bench clears the "just finished" mark: the job sweeps the whole
//!    table while the load goes on, until the pass is done;
//! 2. `--phase` more of load, no sweep.
//!
//! Reported: the pass's seconds, rows examined and cells deleted per
//! second (from the job's counters), the job's and compat server's CPU
//! over it, ingest p50 and p99 per phase and the ratio of the sweep's p99
//! to the others', and the table afterwards (no expired cell left, every
//! fresh one kept).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use backends::history_table::{RowMutation, ThriftTable};
use model::{codec, keys, Record};
use serde_json::json;

use crate::stack::open_load::{quantile_ms, LoadShape, OpenLoad};
use crate::stack::processes::{free_port, run_until_interrupted, start, usage, wait_ready, BenchStack};
use crate::stack::report::history_cells;
use crate::stack::scrape::Scrape;

/// The table the topology's persist stage writes.
const TABLE: &str = "history";
/// The table's users start here (the load's users are 1..=`--users`).
const FIRST_UID: u64 = 100_000_000;
const DAY_MS: i64 = 86_400_000;

/// Options of the sweep bench.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The topology the service and the job run.
    #[arg(long, default_value = "bench/topologies/sweep.toml")]
    pub topology: PathBuf,
    /// Users (rows) in the table, each with one expired and one fresh cell.
    #[arg(long, default_value_t = 200_000)]
    pub rows: u64,
    /// The sweep's rows per second at most (`rows_per_second`).
    #[arg(long, default_value_t = 1_000_000)]
    pub sweep_rate: u32,
    /// Rows per sweep step (`step_rows`).
    #[arg(long, default_value_t = 1_000)]
    pub sweep_step: usize,
    /// Ingest events a second, open loop.
    #[arg(long, default_value_t = 2_000.0)]
    pub rate: f64,
    /// Events per request.
    #[arg(long, default_value_t = 20)]
    pub batch: usize,
    /// Users reporting.
    #[arg(long, default_value_t = 2_000)]
    pub users: u64,
    /// Length of the phases before and after the sweep (humantime).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub phase: Duration,
    /// Longest the sweep may take.
    #[arg(long, default_value = "600s", value_parser = humantime::parse_duration)]
    pub sweep_timeout: Duration,
    /// Write the figures as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The histflow binary (default: built beside this bench).
    #[arg(long)]
    pub histflow: Option<PathBuf>,
}

/// Runs the sweep bench and prints its figures.
pub fn run(options: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(
        options.rows >= 1 && options.users >= 1 && options.batch >= 1 && options.rate > 0.0,
        "counts and rates must be positive"
    );
    run_until_interrupted(scenario(options))
}

/// Fills the table: `rows` users, each with an expired `live` view and a
/// fresh `archive` view (two timestamps in all: few Thrift calls).
async fn fill(hbase_port: u16, rows: u64) -> anyhow::Result<()> {
    let table = ThriftTable::new(&format!("127.0.0.1:{hbase_port}"), TABLE);
    let creator = table.clone();
    tokio::task::spawn_blocking(move || creator.ensure_table()).await??;
    let now = model::now_ms();
    let put = |row: &mut RowMutation, uid: u64, business: &str, view_at: i64| {
        let record = Record { uid, business: business.into(), oid: 1, sub_id: None, progress: 1, duration: None, device: None, view_at };
        row.put_record(&format!("{business}:1"), view_at, codec::encode_record(&record));
    };
    let started = Instant::now();
    let uids: Vec<u64> = (FIRST_UID..FIRST_UID + rows).collect();
    for chunk in uids.chunks(2_000) {
        let mutations = chunk
            .iter()
            .map(|&uid| {
                let mut row = RowMutation::of_user(uid);
                put(&mut row, uid, "live", now - 2 * DAY_MS);
                put(&mut row, uid, "archive", now - 3_600_000);
                row
            })
            .collect();
        table.mutate_rows(mutations).await.context("cannot fill the history table")?;
    }
    println!("sweep: {rows} rows (an expired live view and a fresh archive view each) written in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The sweep's place in Redis: `pass_done` now (held back) or absent (due).
async fn hold_back(redis_port: u16, held: bool) -> anyhow::Result<()> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{redis_port}"))?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let key = keys::sweep_progress(TABLE);
    if held {
        let () = redis::cmd("HSET").arg(&key).arg("pass_done").arg(model::now_ms()).query_async(&mut connection).await?;
    } else {
        let () = redis::cmd("DEL").arg(&key).query_async(&mut connection).await?;
    }
    Ok(())
}

/// (rows examined, cells deleted, passes) of the job so far.
async fn sweep_counters(http: &reqwest::Client, base: &str) -> (f64, f64, f64) {
    let scrape = Scrape::of(http, base).await;
    (
        scrape.sum("histflow_sweep_rows_examined_total", &[]),
        scrape.sum("histflow_sweep_cells_deleted_total", &[]),
        scrape.sum("histflow_sweep_passes_total", &[]),
    )
}

async fn scenario(options: &Options) -> anyhow::Result<()> {
    let stack = BenchStack::start(options.histflow.as_deref(), &options.topology, "sweep")?;
    fill(stack.ports.hbase, options.rows).await?;
    hold_back(stack.ports.redis, true).await?;

    let log = |name: &str| stack.dir.path().join(format!("{name}.log"));
    // The topology reads `${SWEEP_RATE}` and `${SWEEP_STEP}`.
    let mut service = stack.histflow_run("service", free_port()?);
    service.env("SWEEP_RATE", options.sweep_rate.to_string()).env("SWEEP_STEP", options.sweep_step.to_string());
    let _service = start("histflow --role service", service, stack.ports.http, &log("service"))?;
    let admin = free_port()?;
    let mut job = stack.histflow_run("job", admin);
    job.env("SWEEP_RATE", options.sweep_rate.to_string()).env("SWEEP_STEP", options.sweep_step.to_string());
    let job = start("histflow --role job", job, admin, &log("job"))?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let (base, job_base) = (format!("http://127.0.0.1:{}", stack.ports.http), format!("http://127.0.0.1:{admin}"));
    wait_ready(&http, &base).await?;

    let shape = LoadShape {
        users: options.users,
        rate: options.rate,
        batch: options.batch,
        reports_per_item: 10,
        duration: options.phase * 2 + options.sweep_timeout,
    };
    println!(
        "sweep: ingest {} events/s in requests of {}, {} users; phases of {:?} before and after the sweep; sweep {} rows/s at most, {} rows a step",
        shape.rate, shape.batch, shape.users, options.phase, options.sweep_rate, options.sweep_step
    );
    let load = OpenLoad::new(3)?;
    let driver = {
        let (load, base) = (load.clone(), base.clone());
        tokio::spawn(async move { load.drive(shape, &reqwest::Client::new(), &base).await })
    };
    tokio::time::sleep(options.phase).await;

    // Phase 1: the sweep, until its pass is done.
    let compat_pid = stack.backends.get(2).map(|compat| compat.pid());
    let cpu = |pid: Option<u32>| pid.and_then(usage).map_or(0.0, |(_, seconds)| seconds);
    let (job_cpu_before, compat_cpu_before) = (cpu(Some(job.pid())), cpu(compat_pid));
    let before = sweep_counters(&http, &job_base).await;
    load.enter(1);
    hold_back(stack.ports.redis, false).await?;
    let deadline = Instant::now() + options.sweep_timeout;
    let mut first_step: Option<Instant> = None;
    let (finished, after) = loop {
        let now = Instant::now();
        let counters = sweep_counters(&http, &job_base).await;
        if counters.0 > before.0 && first_step.is_none() {
            first_step = Some(now);
        }
        if counters.2 > before.2 {
            break (now, counters);
        }
        anyhow::ensure!(
            now < deadline,
            "the sweep examined {} rows and did not finish within {:?}",
            counters.0 - before.0,
            options.sweep_timeout
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let seconds = finished.duration_since(first_step.unwrap_or(finished)).as_secs_f64().max(0.001);
    let (job_cpu, compat_cpu) = (cpu(Some(job.pid())) - job_cpu_before, cpu(compat_pid) - compat_cpu_before);
    let (examined, deleted) = (after.0 - before.0, after.1 - before.1);

    // Phase 2: as phase 0, the sweep done.
    load.enter(2);
    tokio::time::sleep(options.phase).await;
    load.stop();
    driver.await?;

    let cells = history_cells(stack.ports.hbase).await?;
    // Only the filled users' cells (the load writes archive items too).
    let filled = |row: &[u8]| keys::uid_of_hbase_row(&String::from_utf8_lossy(row)).is_some_and(|uid| uid >= FIRST_UID);
    let count = |column: &str| cells.keys().filter(|(row, c)| c.as_slice() == column.as_bytes() && filled(row)).count();
    let (expired_left, fresh_kept) = (count("r:live:1"), count("r:archive:1"));
    let phase = |index: usize| {
        let latency = load.latency(index);
        json!({
            "p50_ms": quantile_ms(&latency, 0.5),
            "p99_ms": quantile_ms(&latency, 0.99),
            "requests": latency.len(),
            "failed_requests": load.failed(index),
        })
    };
    let phases = [phase(0), phase(1), phase(2)];
    let p99 = |index: usize| phases[index]["p99_ms"].as_f64().unwrap_or(0.0);
    let ratio = p99(1) / ((p99(0) + p99(2)) / 2.0).max(1e-9);
    println!();
    println!("| phase | requests | failed | p50 (ms) | p99 (ms) |");
    println!("|---|---:|---:|---:|---:|");
    for (name, figures) in ["before the sweep", "while sweeping", "after the sweep"].iter().zip(&phases) {
        let ms = |key: &str| figures[key].as_f64().map_or("—".to_owned(), |n| format!("{n:.1}"));
        println!("| {name} | {} | {} | {} | {} |", figures["requests"], figures["failed_requests"], ms("p50_ms"), ms("p99_ms"));
    }
    println!();
    println!(
        "sweep pass: {seconds:.1} s, {examined:.0} rows examined ({:.0} rows/s), {deleted:.0} cells deleted ({:.0} cells/s); \
         job CPU {job_cpu:.1} s, compat server CPU {compat_cpu:.1} s; ingest p99 while sweeping / outside it: {ratio:.2}",
        examined / seconds,
        deleted / seconds
    );
    println!("table afterwards: {expired_left} expired live views left (of {}), {fresh_kept} fresh archive views kept", options.rows);
    if let Some(path) = &options.json {
        let figures = json!({
            "rows": options.rows,
            "sweep_rate_limit": options.sweep_rate,
            "sweep_step_rows": options.sweep_step,
            "ingest_rate_events_per_s": options.rate,
            "pass_seconds": seconds,
            "rows_examined": examined,
            "cells_deleted": deleted,
            "rows_examined_per_s": examined / seconds,
            "cells_deleted_per_s": deleted / seconds,
            "job_cpu_s": job_cpu,
            "compat_cpu_s": compat_cpu,
            "phases": { "before": phases[0], "sweeping": phases[1], "after": phases[2] },
            "p99_ratio_sweeping_to_outside": ratio,
            "expired_left": expired_left,
            "fresh_kept": fresh_kept,
        });
        std::fs::write(path, serde_json::to_string_pretty(&figures)?).with_context(|| format!("cannot write {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    Ok(())
}
