//! The stack benchmark's flags (top-level flags of `bench`).

use std::path::PathBuf;
use std::time::Duration;

/// Options of the stack benchmark (top-level flags of `bench`).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Start the whole stack on free loopback ports and measure it.
    #[arg(long)]
    pub stack: bool,
    /// Drive an already running histflow (base URL) instead.
    #[arg(long, conflicts_with = "stack")]
    pub target: Option<String>,
    /// The topology histflow runs under --stack.
    #[arg(long, default_value = "topology.toml")]
    pub topology: PathBuf,
    /// Also run bench/topologies/naive.toml and ingest-only.toml, side by side.
    #[arg(long, requires = "stack")]
    pub compare: bool,
    /// Also measure the realtime write pipelined straight at Redis.
    #[arg(long, requires = "stack")]
    pub redis_ceiling: bool,
    /// Measure only the Redis ceiling (with --redis-ceiling): no stack.
    #[arg(long, requires = "redis_ceiling")]
    pub ceiling_only: bool,
    /// Run Redis as a cluster of this many masters (at least 3; 0: one
    /// Redis).
    #[arg(long, default_value_t = 0, requires = "stack")]
    pub redis_cluster: usize,
    /// Service instances, the clients spread over them.
    #[arg(long, default_value_t = 1, requires = "stack")]
    pub services: usize,
    /// Job instances sharing the merge topic.
    #[arg(long, default_value_t = 1, requires = "stack")]
    pub jobs: usize,
    /// Users reporting.
    #[arg(long, default_value_t = 5_000)]
    pub users: u64,
    /// Items each user moves through.
    #[arg(long, default_value_t = 20)]
    pub items_per_user: u64,
    /// Businesses the items are spread over (1 to 4).
    #[arg(long, default_value_t = 2)]
    pub businesses: usize,
    /// Each user reports every this many seconds: open loop at users /
    /// heartbeat events a second (unless --rate says otherwise).
    #[arg(long)]
    pub heartbeat_s: Option<f64>,
    /// A user moves to another item every this many reports on average.
    #[arg(long, default_value_t = 60)]
    pub switch_every: u64,
    /// Events per request.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// How long to send (humantime: 15s, 2m).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Stop after this many events instead (or earlier).
    #[arg(long)]
    pub events: Option<u64>,
    /// Open loop at this many events a second (latency from the intended
    /// send time).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Longest wait, after the load, for everything to be durable.
    #[arg(long, default_value = "180s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Write the figures of every run as a JSON array.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a latency-distribution chart (SVG) comparing the runs.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// The histflow binary (default: built beside this bench).
    #[arg(long)]
    pub histflow: Option<PathBuf>,
    /// The production regime: at least 200,000 users (--users below it is
    /// raised), each reporting in turn (so at most once per aggregate
    /// window at any rate below users per window), moving to another item
    /// every 40 reports; a warm pass first (every user's first write of
    /// the day, made durable), then the measured load; and a minimal
    /// scripted write (EVALSHA of HSET + ZADD) measured on a fresh Redis,
    /// the yardstick of histflow's Redis CPU per event.
    #[arg(long, requires = "stack")]
    pub heartbeat_at_scale: bool,
}
