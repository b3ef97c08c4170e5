//! `bench faults`: the fault scenario on the real stack. Redis (append-only
//! file, fsync every second), tansu (SQLite storage), the HBase-compatible
//! server, one service and two job instances run under a fixed-rate
//! open-loop load while the bench injects, one every `--every`:
//!
//! 1. the service SIGKILLed and started again at once;
//! 2. one job instance SIGKILLed and started again at once (same static
//!    member id);
//! 3. the broker SIGKILLed and started again on the same SQLite file;
//! 4. Redis stopped (SIGTERM) and started again on its append-only file;
//! 5. the HBase-compatible server SIGKILLed, left down for `--outage`,
//!    started again.
//!
//! Every report is of a new item (the worst case: no later report of the
//! item repairs a loss), so each acknowledged report is one cell.
//! Reported per fault, over the requests intended from its injection to
//! the next one's: reports acknowledged and how many of them became
//! durable (lost must be 0); cells the jobs wrote more than once (cells
//! written, from the jobs' `histflow_persist_cells_total` — a killed job's
//! count as last scraped, just before the kill — less new distinct cells
//! in the table); the time from the component being back
//! until everything acknowledged by then was durable; the load's p99 and
//! its failed requests (refused while down, 503s).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tokio::sync::mpsc;

use crate::stack::open_load::{is_durable, quantile_ms, LoadShape, OpenLoad, Settled};
use crate::stack::processes::{free_port, histflow_binary, histflow_run, run_until_interrupted, start, wait_ready, Owned, Ports};
use crate::stack::report::{count_hbase_items, history_cells};
use crate::stack::scrape::Scrape;

/// Options of the fault scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The topology the service and both jobs run.
    #[arg(long, default_value = "bench/topologies/faults.toml")]
    pub topology: PathBuf,
    /// Users reporting.
    #[arg(long, default_value_t = 2_000)]
    pub users: u64,
    /// Events a second, open loop.
    #[arg(long, default_value_t = 1_000.0)]
    pub rate: f64,
    /// Events per request.
    #[arg(long, default_value_t = 20)]
    pub batch: usize,
    /// Time before the first fault, between faults, and after the last
    /// (humantime). The load lasts six of these.
    #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
    pub every: Duration,
    /// How long the HBase-compatible server stays down.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub outage: Duration,
    /// After the load: the table counts as settled once it has not changed
    /// for this long.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// Longest wait, after the load, for everything to be durable.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Write the figures as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The histflow binary (default: built beside this bench).
    #[arg(long)]
    pub histflow: Option<PathBuf>,
}

/// The faults, in the order they are injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    ServiceKilled,
    JobKilled,
    BrokerRestarted,
    RedisRestarted,
    TableOutage,
}

const FAULTS: [Fault; 5] = [Fault::ServiceKilled, Fault::JobKilled, Fault::BrokerRestarted, Fault::RedisRestarted, Fault::TableOutage];

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::ServiceKilled => "service SIGKILL",
            Fault::JobKilled => "job instance SIGKILL",
            Fault::BrokerRestarted => "broker restart (sqlite)",
            Fault::RedisRestarted => "Redis restart (AOF)",
            Fault::TableOutage => "HBase-compatible server outage",
        }
    }
}

/// Runs the scenario and prints its figures.
pub fn run(options: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(options.users >= 1 && options.batch >= 1 && options.rate > 0.0, "--users, --batch and --rate must be positive");
    anyhow::ensure!(!options.every.is_zero(), "--every must be longer than 0 s");
    run_until_interrupted(scenario(options))
}

/// The processes of the run, each restartable.
struct Stack {
    histflow: PathBuf,
    topology: PathBuf,
    dir: tempfile::TempDir,
    ports: Ports,
    job_ports: [u16; 2],
    redis: Option<Owned>,
    tansu: Option<Owned>,
    compat: Option<Owned>,
    service: Option<Owned>,
    jobs: [Option<Owned>; 2],
    /// Processes started so far (log names).
    started: usize,
    /// Cells written by job processes since killed (their last scrape).
    retired_cells: f64,
}

impl Stack {
    fn new(options: &Options) -> anyhow::Result<Self> {
        let histflow = histflow_binary(options.histflow.as_deref())?;
        let topology = options.topology.canonicalize().with_context(|| format!("cannot read {}", options.topology.display()))?;
        let dir = tempfile::Builder::new().prefix("histflow-faults-").tempdir()?;
        for sub in ["redis", "tansu", "hbase"] {
            std::fs::create_dir_all(dir.path().join(sub))?;
        }
        Ok(Stack {
            histflow,
            topology,
            dir,
            ports: Ports::free()?,
            job_ports: [free_port()?, free_port()?],
            redis: None,
            tansu: None,
            compat: None,
            service: None,
            jobs: [None, None],
            started: 0,
            retired_cells: 0.0,
        })
    }

    /// Starts `command` as `name`, logging beside the others, and waits
    /// until `port` listens (off the runtime's threads).
    async fn start(&mut self, name: &str, command: Command, port: u16) -> anyhow::Result<Owned> {
        self.started += 1;
        let log = self.dir.path().join(format!("{:02}-{}.log", self.started, name.replace(' ', "-")));
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || start(&name, command, port, &log)).await?
    }

    async fn start_redis(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port", &self.ports.redis.to_string(), "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "everysec", "--dir"])
            .arg(self.dir.path().join("redis"));
        self.redis = Some(self.start("redis-server", command, self.ports.redis).await?);
        Ok(())
    }

    async fn start_tansu(&mut self) -> anyhow::Result<()> {
        let url = format!("tcp://127.0.0.1:{}", self.ports.kafka);
        let mut command = Command::new("tansu");
        // tansu opens a sqlite:// path relative to its directory.
        command
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", "sqlite://tansu.db"])
            .current_dir(self.dir.path().join("tansu"));
        self.tansu = Some(self.start("tansu", command, self.ports.kafka).await?);
        Ok(())
    }

    async fn start_compat(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(&self.histflow);
        command
            .args(["hbase-compat-server", "--listen", &format!("127.0.0.1:{}", self.ports.hbase), "--data"])
            .arg(self.dir.path().join("hbase"));
        self.compat = Some(self.start("hbase-compat-server", command, self.ports.hbase).await?);
        Ok(())
    }

    async fn start_service(&mut self) -> anyhow::Result<()> {
        let command = histflow_run(&self.histflow, &self.topology, "service", self.ports, free_port()?, self.dir.path());
        self.service = Some(self.start("service", command, self.ports.http).await?);
        wait_ready(&reqwest::Client::new(), &format!("http://127.0.0.1:{}", self.ports.http)).await
    }

    async fn start_job(&mut self, index: usize) -> anyhow::Result<()> {
        let mut command = histflow_run(&self.histflow, &self.topology, "job", self.ports, self.job_ports[index], self.dir.path());
        command.env("JOB_INSTANCE", format!("job-{index}"));
        self.jobs[index] = Some(self.start(&format!("job-{index}"), command, self.job_ports[index]).await?);
        Ok(())
    }

    /// Cells the job instances have written, the killed ones included.
    async fn cells_written(&self) -> f64 {
        let http = reqwest::Client::new();
        let mut total = self.retired_cells;
        for (index, job) in self.jobs.iter().enumerate() {
            if job.is_some() {
                total += Scrape::of(&http, &format!("http://127.0.0.1:{}", self.job_ports[index]))
                    .await
                    .sum("histflow_persist_cells_total", &[]);
            }
        }
        total
    }

    /// Injects `fault`; answers when the component was back.
    async fn inject(&mut self, fault: Fault, outage: Duration) -> anyhow::Result<Instant> {
        match fault {
            Fault::ServiceKilled => {
                // Dropping an owned process SIGKILLs it.
                drop(self.service.take());
                self.start_service().await?;
            }
            Fault::JobKilled => {
                let http = reqwest::Client::new();
                self.retired_cells +=
                    Scrape::of(&http, &format!("http://127.0.0.1:{}", self.job_ports[0])).await.sum("histflow_persist_cells_total", &[]);
                drop(self.jobs[0].take());
                self.start_job(0).await?;
            }
            Fault::BrokerRestarted => {
                drop(self.tansu.take());
                self.start_tansu().await?;
            }
            Fault::RedisRestarted => {
                if let Some(mut redis) = self.redis.take() {
                    tokio::task::spawn_blocking(move || redis.stop(Duration::from_secs(30))).await?;
                }
                self.start_redis().await?;
            }
            Fault::TableOutage => {
                drop(self.compat.take());
                tokio::time::sleep(outage).await;
                self.start_compat().await?;
            }
        }
        Ok(Instant::now())
    }
}

/// What was measured at one fault's injection.
struct Mark {
    cells_written: f64,
    distinct_cells: usize,
}

/// Everything acknowledged when a component came back, to be durable.
struct RecoveryTarget {
    fault: usize,
    back_at: Instant,
    wanted: Vec<(u64, String, i64)>,
}

/// Checks every 3 s which targets are wholly durable; answers, per fault,
/// the seconds from its component being back until then (`None`: never
/// within `timeout`).
async fn watch_recoveries(hbase_port: u16, mut targets: mpsc::Receiver<RecoveryTarget>, timeout: Duration) -> Vec<Option<f64>> {
    let mut recovered = vec![None; FAULTS.len()];
    let mut pending: Vec<RecoveryTarget> = Vec::new();
    let mut open = true;
    let deadline = Instant::now() + timeout;
    while (open || !pending.is_empty()) && Instant::now() < deadline {
        tokio::select! {
            target = targets.recv(), if open => match target {
                Some(target) => pending.push(target),
                None => open = false,
            },
            _ = tokio::time::sleep(Duration::from_secs(3)) => {
                let Ok(cells) = history_cells(hbase_port).await else { continue };
                pending.retain(|target| {
                    let done = target.wanted.iter().all(|(uid, item, view_at)| is_durable(&cells, *uid, item, *view_at));
                    if done {
                        recovered[target.fault] = Some(target.back_at.elapsed().as_secs_f64());
                    }
                    !done
                });
            }
        }
    }
    recovered
}

async fn scenario(options: &Options) -> anyhow::Result<()> {
    let mut stack = Stack::new(options)?;
    stack.start_redis().await?;
    stack.start_tansu().await?;
    stack.start_compat().await?;
    stack.start_service().await?;
    stack.start_job(0).await?;
    stack.start_job(1).await?;
    let shape = LoadShape {
        users: options.users,
        rate: options.rate,
        batch: options.batch,
        reports_per_item: 1,
        duration: options.every * (FAULTS.len() as u32 + 1),
    };
    println!(
        "fault scenario: {} events/s in requests of {}, {} users, every report a new item, {:?}; a fault every {:?} (table outage {:?})",
        shape.rate, shape.batch, shape.users, shape.duration, options.every, options.outage
    );
    // Phase 0: before the first fault; phase k: from fault k's injection.
    let load = OpenLoad::new(FAULTS.len() + 1)?;
    let base = format!("http://127.0.0.1:{}", stack.ports.http);
    let driver = {
        let (load, base) = (load.clone(), base.clone());
        tokio::spawn(async move { load.drive(shape, &reqwest::Client::new(), &base).await })
    };
    let (targets, receiver) = mpsc::channel(FAULTS.len());
    let watcher = tokio::spawn(watch_recoveries(stack.ports.hbase, receiver, shape.duration + options.drain_timeout));
    let mut marks = Vec::with_capacity(FAULTS.len() + 1);
    let started = Instant::now();
    for (index, fault) in FAULTS.into_iter().enumerate() {
        tokio::time::sleep(options.every).await;
        marks.push(Mark { cells_written: stack.cells_written().await, distinct_cells: count_hbase_items(stack.ports.hbase).await? });
        load.enter(index + 1);
        println!("{:>6.1} s  {}", started.elapsed().as_secs_f64(), fault.name());
        let back_at = stack.inject(fault, options.outage).await?;
        let wanted = load.acknowledged().into_iter().map(|((uid, item), acknowledged)| (uid, item, acknowledged.view_at)).collect();
        targets.send(RecoveryTarget { fault: index, back_at, wanted }).await?;
    }
    drop(targets);
    driver.await?;

    let acknowledged = load.acknowledged();
    let cells = Settled::wait(stack.ports.hbase, &acknowledged, options.settle, options.drain_timeout).await?.cells;
    marks.push(Mark { cells_written: stack.cells_written().await, distinct_cells: cells.len() });
    let recovered = watcher.await?;

    let phases = FAULTS.len() + 1;
    let mut rows = Vec::with_capacity(phases);
    for phase in 0..phases {
        let of_phase: Vec<_> = acknowledged.iter().filter(|(_, acknowledged)| acknowledged.phase == phase).collect();
        let durable = of_phase.iter().filter(|((uid, item), acknowledged)| is_durable(&cells, *uid, item, acknowledged.view_at)).count();
        // Marks: [0] at fault 1's injection ... [phases - 1] at the end.
        let duplicates = (phase > 0).then(|| {
            let (from, to) = (&marks[phase - 1], &marks[phase]);
            ((to.cells_written - from.cells_written) - (to.distinct_cells as f64 - from.distinct_cells as f64)).max(0.0) as u64
        });
        rows.push(json!({
            "fault": if phase == 0 { "none (before the first fault)" } else { FAULTS[phase - 1].name() },
            "acknowledged": of_phase.len(),
            "durable": durable,
            "lost": of_phase.len() - durable,
            "duplicates_written": duplicates,
            "recovered_s": if phase == 0 { None } else { recovered[phase - 1] },
            "p99_ms": quantile_ms(&load.latency(phase), 0.99),
            "failed_requests": load.failed(phase),
        }));
    }
    print_table(&rows);
    let lost: u64 = rows.iter().filter_map(|row| row["lost"].as_u64()).sum();
    let figures = json!({
        "topology": options.topology.display().to_string(),
        "rate_events_per_s": options.rate,
        "users": options.users,
        "every_s": options.every.as_secs_f64(),
        "outage_s": options.outage.as_secs_f64(),
        "acknowledged": acknowledged.len(),
        "lost": lost,
        "cells_written": marks.last().map(|mark| mark.cells_written),
        "distinct_cells": cells.len(),
        "phases": rows,
    });
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_string_pretty(&figures)?).with_context(|| format!("cannot write {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    println!("logs: {} (removed at exit)", stack.dir.path().display());
    Ok(())
}

fn print_table(rows: &[serde_json::Value]) {
    println!();
    println!("| fault | acknowledged | durable | lost | duplicates written | recovered (s) | p99 (ms) | failed requests |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let number = |value: &serde_json::Value, digits: usize| value.as_f64().map_or("—".to_owned(), |n| format!("{n:.digits$}"));
    for row in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            row["fault"].as_str().unwrap_or_default(),
            row["acknowledged"],
            row["durable"],
            row["lost"],
            number(&row["duplicates_written"], 0),
            number(&row["recovered_s"], 1),
            number(&row["p99_ms"], 1),
            row["failed_requests"],
        );
    }
}
