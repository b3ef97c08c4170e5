//! histflow's benchmarks.
//!
//! # Layout
//! - `runtime_dag`: events/s through a 4-stage no-op DAG, so the runtime
//!   can be shown never to be what limits the pipeline.
//! - `load`: closed-loop HTTP load against a running histflow.
//! - `heartbeat`: users reporting progress every few seconds (convergence).
//! - `reads`: history-page reads from Redis or through cache-aside to HBase.
//! - `stack` (`bench --stack`): the whole stack started by the bench,
//!   side by side with the naive baseline and the ceilings.
//! - `crash`: the service SIGKILLed and restarted under load, then every
//!   acknowledged report checked against the history table.
//! - `faults`: service, job, broker, Redis and table faults injected on a
//!   schedule under a fixed-rate load; per fault: lost, duplicates,
//!   recovery time, p99.
//! - `fuzz`: generated and mutated HTTP, gRPC and Thrift input against the
//!   real stack: no crash, no 5xx but 503, no state left behind.
//! - `soak`: 10x the measured capacity against the service role: bounded
//!   memory, fast refusals, recovery once the load stops.
//! - `page`: what the live page costs the service: throughput with and
//!   without a once-a-second `/admin/stats` reader, CPU per read.
//! - `catchup`: the job draining a backlog of the merge topic into the
//!   HBase-compatible server, rows/s.
//! - `sweep`: the HBase retention sweep's rate, and ingest p99 with and
//!   without it.
//! - `streams`: reports at batch 1 over `ReportStream`, unary gRPC and
//!   HTTP against one service, side by side.
//! - `reload`: topology reloads under load: time from the trigger to the
//!   new topology running, ingest p99 while reloading and without.

mod abuse;
mod catchup;
mod crash;
mod faults;
mod fuzz;
mod heartbeat;
mod load;
mod page;
mod reads;
mod reload;
mod runtime_dag;
mod soak;
mod stack;
mod streams;
mod sweep;

use clap::{Parser, Subcommand};

/// histflow benchmarks. `bench --stack [--compare] [--redis-ceiling]`
/// runs the whole stack; the subcommands are narrower benchmarks.
#[derive(Debug, Parser)]
#[command(name = "bench", about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    stack: stack::Options,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Events/s through source -> relay -> relay -> sink doing no work.
    Runtime(runtime_dag::Options),
    /// Closed-loop POST /v1/events load against a running histflow.
    Load(load::Options),
    /// Heartbeat workload: each user reports progress every few seconds.
    Heartbeat(heartbeat::Options),
    /// History-page reads: from Redis, or past Redis through HBase.
    Reads(reads::Options),
    /// The service SIGKILLed and restarted under load: acknowledged vs durable.
    Crash(crash::Options),
    /// Faults injected on a schedule under load: lost, duplicates, recovery.
    Faults(faults::Options),
    /// Hostile and malformed HTTP, gRPC and Thrift input against the stack.
    Fuzz(fuzz::Options),
    /// Overload (10x the measured capacity) against the service role.
    Soak(soak::Options),
    /// The live page's cost: load with and without a /admin/stats reader.
    Page(page::Options),
    /// The job draining a backlog into the HBase-compatible server.
    Catchup(catchup::Options),
    /// The HBase retention sweep's rate and its cost to ingest p99.
    Sweep(sweep::Options),
    /// Batch 1 over gRPC ReportStream vs unary gRPC vs HTTP.
    Streams(streams::Options),
    /// Topology reloads under load: time to running, p99 while reloading.
    Reload(reload::Options),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => stack::run(&cli.stack),
        Some(Command::Runtime(options)) => runtime_dag::run(&options),
        Some(Command::Load(options)) => load::run(&options),
        Some(Command::Heartbeat(options)) => heartbeat::run(&options),
        Some(Command::Reads(options)) => reads::run(&options),
        Some(Command::Crash(options)) => crash::run(&options),
        Some(Command::Faults(options)) => faults::run(&options),
        Some(Command::Fuzz(options)) => fuzz::run(&options),
        Some(Command::Soak(options)) => soak::run(&options),
        Some(Command::Page(options)) => page::run(&options),
        Some(Command::Catchup(options)) => catchup::run(&options),
        Some(Command::Sweep(options)) => sweep::run(&options),
        Some(Command::Streams(options)) => streams::run(&options),
        Some(Command::Reload(options)) => reload::run(&options),
    }
}
