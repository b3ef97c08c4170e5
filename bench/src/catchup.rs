//! `bench catchup`: how fast the job drains a backlog into the
//! HBase-compatible server. Redis, tansu and the compat server run on free
//! ports; the bench fills the merge topic with `--rows` full records (one
//! item per user, view_at spread over `--spread`, as a burst of reports
//! would leave them), then starts the job role of
//! `bench/topologies/catchup.toml` (write limit raised to 1,000,000 rows/s)
//! and times it from its first row written to its last, and from its start.
//!
//! Reported: rows, seconds, rows/s both ways, and the job's and compat
//! server's CPU seconds over the drain.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use backends::kafka::{ensure_topic, merge_producer, DeliveryTimeout, Replication};
use model::{codec, Op, Record};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

use crate::stack::processes::{free_port, run_until_interrupted, start, usage, BenchStack};
use crate::stack::scrape::Scrape;

/// The merge topic of the catch-up topology.
const TOPIC: &str = "histflow-catchup";
/// Its partitions.
const PARTITIONS: u32 = 16;

/// Options of the catch-up bench.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The topology the job runs.
    #[arg(long, default_value = "bench/topologies/catchup.toml")]
    pub topology: PathBuf,
    /// Rows in the backlog (one item per user).
    #[arg(long, default_value_t = 200_000)]
    pub rows: u64,
    /// The span the records' view_at covers (each millisecond is one
    /// Thrift1 call's timestamp).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub spread: Duration,
    /// Records per merge message.
    #[arg(long, default_value_t = 1000)]
    pub per_message: usize,
    /// Write the figures as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The histflow binary (default: built beside this bench).
    #[arg(long)]
    pub histflow: Option<PathBuf>,
}

/// Runs the catch-up bench and prints its figures.
pub fn run(options: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(options.rows >= 1 && options.per_message >= 1, "--rows and --per-message must be at least 1");
    anyhow::ensure!(options.spread.as_millis() >= 1, "--spread must be at least 1ms");
    run_until_interrupted(scenario(options))
}

/// Fills the topic: `rows` users, one record each, keyed by shard.
async fn fill(brokers: &str, options: &Options) -> anyhow::Result<()> {
    ensure_topic(brokers, TOPIC, PARTITIONS as i32, Replication { factor: 1, min_insync: None }, "bench").await?;
    let producer: FutureProducer = merge_producer(brokers, DeliveryTimeout::Never).create()?;
    let start = model::now_ms() - options.spread.as_millis() as i64 - 60_000;
    let spread = options.spread.as_millis() as u64;
    let mut shards: Vec<Vec<Op>> = vec![Vec::new(); PARTITIONS as usize];
    let mut sends = Vec::new();
    for n in 0..options.rows {
        let uid = 1 + n;
        let record = Record {
            uid,
            business: "archive".into(),
            oid: 1 + n % 1000,
            sub_id: None,
            progress: (n % 3600) as i64,
            duration: Some(3600),
            device: None,
            view_at: start + (n * 7919 % spread) as i64,
        };
        let shard = (uid % u64::from(PARTITIONS)) as u32;
        let pending = &mut shards[shard as usize];
        pending.push(Op::Upsert(record));
        if pending.len() >= options.per_message {
            sends.extend(codec::encode_merge_batch(shard, &std::mem::take(pending), 900_000).into_iter().map(|payload| (shard, payload)));
        }
    }
    for (shard, ops) in (0..PARTITIONS).zip(shards).filter(|(_, ops)| !ops.is_empty()) {
        sends.extend(codec::encode_merge_batch(shard, &ops, 900_000).into_iter().map(|payload| (shard, payload)));
    }
    let messages = sends.len();
    futures::future::try_join_all(sends.iter().map(|(shard, payload)| {
        let key = shard.to_string();
        let producer = &producer;
        async move {
            producer
                .send(FutureRecord::to(TOPIC).key(&key).partition(*shard as i32).payload(payload), Duration::from_secs(60))
                .await
                .map_err(|(error, _)| anyhow::anyhow!("cannot fill the topic: {error}"))
        }
    }))
    .await?;
    println!("catchup: {} rows in {messages} merge messages on {TOPIC}", options.rows);
    Ok(())
}

async fn scenario(options: &Options) -> anyhow::Result<()> {
    let stack = BenchStack::start(options.histflow.as_deref(), &options.topology, "catchup")?;
    let brokers = format!("127.0.0.1:{}", stack.ports.kafka);
    fill(&brokers, options).await?;
    let admin = free_port()?;
    let started = Instant::now();
    let job = start("histflow --role job", stack.histflow_run("job", admin), admin, &stack.dir.path().join("job.log"))?;
    let base = format!("http://127.0.0.1:{admin}");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let compat_pid = stack.backends.get(2).map(|compat| compat.pid());
    let cpu = |pid: Option<u32>| pid.and_then(usage).map_or(0.0, |(_, seconds)| seconds);
    let (job_cpu_before, compat_cpu_before) = (cpu(Some(job.pid())), cpu(compat_pid));
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first: Option<Instant> = None;
    let finished = loop {
        let rows = Scrape::of(&http, &base).await.sum("histflow_persist_rows_total", &[]);
        let now = Instant::now();
        if rows > 0.0 && first.is_none() {
            first = Some(now);
        }
        if rows >= options.rows as f64 {
            break now;
        }
        anyhow::ensure!(now < deadline, "the job wrote {rows} of {} rows within 600 s", options.rows);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let seconds = finished.duration_since(first.unwrap_or(finished)).as_secs_f64().max(0.001);
    let rows_per_s = options.rows as f64 / seconds;
    // Including the job's start and the reading of its first window.
    let from_start = finished.duration_since(started).as_secs_f64();
    let (job_cpu, compat_cpu) = (cpu(Some(job.pid())) - job_cpu_before, cpu(compat_pid) - compat_cpu_before);
    println!(
        "catchup: {} rows written in {seconds:.1} s from the first to the last: {rows_per_s:.0} rows/s; {from_start:.1} s from the job's start \
         ({:.0} rows/s); job CPU {job_cpu:.1} s, compat server CPU {compat_cpu:.1} s",
        options.rows,
        options.rows as f64 / from_start
    );
    if let Some(path) = &options.json {
        let figures = json!({
            "rows": options.rows,
            "spread_ms": options.spread.as_millis() as u64,
            "seconds": seconds,
            "rows_per_s": rows_per_s,
            "seconds_from_job_start": from_start,
            "job_cpu_s": job_cpu,
            "compat_cpu_s": compat_cpu,
        });
        std::fs::write(path, serde_json::to_string_pretty(&figures)?)?;
    }
    Ok(())
}
