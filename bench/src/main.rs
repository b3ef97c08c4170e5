//! histflow's benchmarks.
//!
//! # Layout
//! - `runtime_dag`: events/s through a 4-stage no-op DAG, so the runtime
//!   can be shown never to be what limits the pipeline.
//! - `load`: closed-loop HTTP load against a running histflow.
//! - `heartbeat`: users reporting progress every few seconds (convergence).
//! - `reads`: history-page reads from Redis or through cache-aside to HBase.

mod heartbeat;
mod load;
mod reads;
mod runtime_dag;

use clap::{Parser, Subcommand};

/// histflow benchmarks; each prints a table and the command to repeat it.
#[derive(Debug, Parser)]
#[command(name = "bench", about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Runtime(options) => runtime_dag::run(&options),
        Command::Load(options) => load::run(&options),
        Command::Heartbeat(options) => heartbeat::run(&options),
        Command::Reads(options) => reads::run(&options),
    }
}
