//! The runtime micro-benchmark: a source emits `events` numbers in batches
//! through two relays to a sink, over bounded `block` edges, on a
//! multi-threaded runtime; no stage does any work besides moving batches.
//! Reports events/s (median over runs) and each batch's transit time from
//! the source's send to the sink's receipt (hdrhistogram).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use pipeline::runtime::start;
use pipeline::{stage_fn, InputSpec, Message, NodeSpec, Stage, StageContext, WhenFull};
use tokio_util::sync::CancellationToken;

/// Options of `bench runtime`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Events per run.
    #[arg(long, default_value_t = 20_000_000)]
    events: u64,
    /// Events per batch.
    #[arg(long, default_value_t = 256)]
    batch: u64,
    /// Capacity of every edge, in events.
    #[arg(long, default_value_t = 8192)]
    capacity: usize,
    /// Runs; the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Worker threads of the tokio runtime.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

/// A batch stamped with its send time.
#[derive(Clone)]
struct Stamped {
    sent_at: Instant,
    events: Vec<u64>,
}

impl Message for Stamped {
    fn event_count(&self) -> usize {
        self.events.len()
    }
}

struct RunFigures {
    events_per_sec: f64,
    transit: Histogram<u64>,
}

/// Runs the benchmark and prints its table.
pub fn run(options: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(options.batch > 0 && options.events >= options.batch, "--events must be at least --batch, and --batch at least 1");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(options.threads).enable_all().build()?;
    let mut runs = Vec::with_capacity(options.runs);
    for index in 0..options.runs.max(1) {
        let figures = runtime.block_on(one_run(options))?;
        println!("run {}: {:>12.0} events/s", index + 1, figures.events_per_sec);
        runs.push(figures);
    }
    runs.sort_by(|a, b| a.events_per_sec.total_cmp(&b.events_per_sec));
    let median = &runs[runs.len() / 2];
    let micros = |q: f64| median.transit.value_at_quantile(q) as f64 / 1000.0;
    println!();
    println!("runtime micro-benchmark: source -> relay -> relay -> sink, no-op stages");
    println!(
        "  batch {} events, edge capacity {} events, {} worker threads, {} events per run",
        options.batch, options.capacity, options.threads, options.events
    );
    println!(
        "  median of {} runs: {:.0} events/s ({:.0} batches/s)",
        runs.len(),
        median.events_per_sec,
        median.events_per_sec / options.batch as f64
    );
    println!(
        "  batch transit (median run): p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        micros(0.5),
        micros(0.99),
        median.transit.max() as f64 / 1000.0
    );
    Ok(())
}

fn edge(from: &str, capacity: usize) -> Vec<InputSpec> {
    vec![InputSpec { from: from.to_owned(), capacity, when_full: WhenFull::Block }]
}

fn relay() -> Box<dyn Stage<Stamped>> {
    stage_fn(|mut cx: StageContext<Stamped>| async move {
        while let Some(batch) = cx.input.recv().await {
            cx.output.send(batch).await?;
        }
        Ok(())
    })
}

async fn one_run(options: &Options) -> anyhow::Result<RunFigures> {
    let (total, batch) = (options.events / options.batch * options.batch, options.batch);
    let source = stage_fn(move |cx: StageContext<Stamped>| async move {
        let mut next = 0;
        while next < total {
            let events: Vec<u64> = (next..next + batch).collect();
            next += batch;
            cx.output.send(Stamped { sent_at: Instant::now(), events }).await?;
        }
        Ok(())
    });
    let received = Arc::new(Mutex::new((0u64, Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?)));
    let in_sink = received.clone();
    let sink = stage_fn(move |mut cx: StageContext<Stamped>| async move {
        let mut transit = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
        let mut count = 0u64;
        while let Some(batch) = cx.input.recv().await {
            count += batch.events.len() as u64;
            transit.saturating_record(batch.sent_at.elapsed().as_nanos().max(1) as u64);
        }
        if let Ok(mut shared) = in_sink.lock() {
            *shared = (count, transit);
        }
        Ok(())
    });
    let nodes = vec![
        (NodeSpec { name: "source".into(), inputs: vec![], rate_limit: None, source: true }, source),
        (NodeSpec { name: "relay1".into(), inputs: edge("source", options.capacity), rate_limit: None, source: false }, relay()),
        (NodeSpec { name: "relay2".into(), inputs: edge("relay1", options.capacity), rate_limit: None, source: false }, relay()),
        (NodeSpec { name: "sink".into(), inputs: edge("relay2", options.capacity), rate_limit: None, source: false }, sink),
    ];
    let started = Instant::now();
    start(nodes, CancellationToken::new())?.wait(Duration::from_secs(600)).await.context("the benchmark DAG failed")?;
    let elapsed = started.elapsed();
    let (count, transit) = std::mem::replace(&mut *received.lock().map_err(|_| anyhow::anyhow!("sink panicked"))?, (0, Histogram::new(1)?));
    anyhow::ensure!(count == total, "the sink received {count} events of {total}");
    Ok(RunFigures { events_per_sec: count as f64 / elapsed.as_secs_f64(), transit })
}
