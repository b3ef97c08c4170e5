//! The `histflow` command: validate, draw and run a topology.
//!
//! # Layout
//! - `main`: the command line and dispatch.
//! - `topology_file`: reading a topology file and printing its problems.
//! - `run`: `histflow run`, from building the role's nodes to a drained exit.
//! - `reload`: reloading the topology in a running process (every trigger).
//! - `admin_listener`: the admin endpoints' own server, movable by a reload.
//! - `remote`: `histflow reload` and `histflow graph --url`, which ask a
//!   running process.
//! - `operate`: `histflow inspect`, `replay` and `audit`, the operator's
//!   look at (and repair of) one user's history.

mod admin_listener;
mod operate;
mod reload;
mod remote;
mod run;
mod topology_file;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use pipeline::graph::{render, GraphFormat};
use pipeline::plan::RoleSelection;

/// mimalloc instead of glibc's malloc: under batch-1 load the service spent
/// about 13 % of its CPU in glibc's malloc and free, part of it waiting on
/// arena locks between the runtime's threads (README, Benchmarks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Watch-history and playback-progress pipeline.
#[derive(Debug, Parser)]
#[command(name = "histflow", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a topology and print every problem found (exit 2 if any).
    Validate {
        /// Path of the topology file.
        topology: PathBuf,
    },
    /// Print the topology as a graph: stages, edges, capacities, limits.
    /// With `--url`, the topology a running process runs.
    Graph {
        /// Path of the topology file.
        #[arg(required_unless_present = "url")]
        topology: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Dot)]
        format: Format,
        /// Base URL of a running process's API or admin listener, e.g.
        /// http://127.0.0.1:8080.
        #[arg(long, conflicts_with = "topology")]
        url: Option<String>,
        /// A client's token, when the process has `[[auth.clients]]`.
        #[arg(long, env = "HISTFLOW_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Ask a running process to reload its topology file (as SIGHUP does)
    /// and print the answer; exit 0 when it is running the file, 2 when it
    /// refused it, 1 when it could not be asked or failed.
    Reload {
        /// Base URL of the process's API or admin listener.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// A client's token, when the process has `[[auth.clients]]`.
        #[arg(long, env = "HISTFLOW_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Serve HBase's Thrift1 protocol over an embedded on-disk store: a
    /// stand-in for HBase in tests and benchmarks, not a replacement.
    HbaseCompatServer {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: String,
        /// Directory of the store (created if missing; kept across restarts).
        #[arg(long)]
        data: PathBuf,
        /// Close a connection silent (or not taking its answer) this many
        /// seconds.
        #[arg(long, default_value_t = hbase_compat::DEFAULT_IDLE_TIMEOUT.as_secs())]
        idle_timeout_s: u64,
    },
    /// Where one user's items live (Redis, its marks, the history table),
    /// with a verdict per item: durable, pending, only in HBase, deleted,
    /// missing. Reads only.
    Inspect {
        /// Path of the topology file (its Redis, table and merge topic).
        topology: PathBuf,
        /// The user.
        #[arg(long)]
        uid: u64,
        /// Only this item (`business:oid`); repeat for more.
        #[arg(long = "item")]
        items: Vec<String>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Re-read a range of the merge topic (a consumer of its own) and write
    /// what it carries to the history table, as persist writes it; skips
    /// what the table already holds at that view or newer.
    Replay {
        /// Path of the topology file.
        topology: PathBuf,
        /// First message: an offset (every partition) or an RFC 3339 time.
        #[arg(long)]
        from: operate::replay::Position,
        /// End (exclusive), as --from; default: each partition's end now.
        #[arg(long)]
        to: Option<operate::replay::Position>,
        /// Only these users (repeat, or comma-separated).
        #[arg(long = "uid", value_delimiter = ',')]
        uids: Vec<u64>,
        /// Print what would be written; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check users end to end and count their items by verdict; exit 3
    /// when any acknowledged item is missing. Reads only.
    Audit {
        /// Path of the topology file.
        topology: PathBuf,
        /// A random sample of this many users...
        #[arg(long, required_unless_present = "uids", conflicts_with = "uids")]
        sample: Option<usize>,
        /// ...or these users (repeat, or comma-separated).
        #[arg(long = "uid", value_delimiter = ',')]
        uids: Vec<u64>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run the topology's stages for a role until SIGINT or SIGTERM.
    Run {
        /// Path of the topology file.
        topology: PathBuf,
        /// Which stages this process runs.
        #[arg(long, value_enum, default_value_t = RoleArg::All)]
        role: RoleArg,
        /// Use in-process stand-ins for Redis, Kafka and HBase.
        #[arg(long)]
        embedded: bool,
        /// Reload the topology when the file changes.
        #[arg(long)]
        watch: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// Graphviz DOT.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RoleArg {
    /// HTTP ingest, realtime, aggregate, the Kafka producer.
    Service,
    /// The Kafka consumer group and persist.
    Job,
    /// Both in one process.
    All,
}

impl From<RoleArg> for RoleSelection {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Service => RoleSelection::Service,
            RoleArg::Job => RoleSelection::Job,
            RoleArg::All => RoleSelection::All,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { topology } => match topology_file::load(&topology) {
            Ok(loaded) => {
                println!("{}: valid ({} stages, {} businesses)", topology.display(), loaded.stages.len(), loaded.businesses.len());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Graph { topology: _, format, url: Some(url), token } => {
            let format = match format {
                Format::Dot => "dot",
                Format::Mermaid => "mermaid",
            };
            remote::graph(&url, token.as_deref(), format)
        }
        Command::Graph { topology, format, .. } => match topology.map(|topology| topology_file::load(&topology)) {
            Some(Ok(loaded)) => {
                let format = match format {
                    Format::Dot => GraphFormat::Dot,
                    Format::Mermaid => GraphFormat::Mermaid,
                };
                print!("{}", render(&loaded, format));
                ExitCode::SUCCESS
            }
            Some(Err(code)) => code,
            None => ExitCode::from(topology_file::EXIT_BAD_TOPOLOGY),
        },
        Command::Reload { url, token } => remote::reload(&url, token.as_deref()),
        Command::HbaseCompatServer { listen, data, idle_timeout_s } => {
            init_logging();
            let idle_timeout = std::time::Duration::from_secs(idle_timeout_s.max(1));
            match hbase_compat::Store::open(&data) {
                Ok(store) => match hbase_compat::serve_with_idle_timeout(&listen, std::sync::Arc::new(store), idle_timeout) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(error) => {
                        eprintln!("hbase-compat-server on {listen}: {error}");
                        ExitCode::FAILURE
                    }
                },
                Err(error) => {
                    eprintln!("hbase-compat-server: cannot open {}: {error}", data.display());
                    ExitCode::FAILURE
                }
            }
        }
        Command::Inspect { topology, uid, items, json } => operate::run(&topology, operate::Asked::Inspect { uid, items, json }),
        Command::Replay { topology, from, to, uids, dry_run } => {
            let request = operate::replay::Request { from, to, uids: uids.into_iter().collect(), dry_run };
            operate::run(&topology, operate::Asked::Replay(request))
        }
        Command::Audit { topology, sample, uids, json } => operate::run(&topology, operate::Asked::Audit { uids, sample, json }),
        Command::Run { topology, role, embedded, watch } => {
            init_logging();
            run::run(&topology, role.into(), embedded, watch)
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}
