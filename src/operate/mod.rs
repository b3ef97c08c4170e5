//! The operator's commands: `histflow inspect`, `replay` and `audit`, for
//! "where is this user's history?" and its repair. They read the stores a
//! topology names (never write to Redis); only `replay` writes, to the
//! history table, through the persist stage's own window logic.
//!
//! - `endpoints`: the stores and settings a topology names, refused with a
//!   clear message when one a command needs is missing.
//! - `snapshot`: one user as Redis and the history table hold it, read
//!   page by page, and a verdict per item.
//! - `inspect`: prints a snapshot (text or JSON).
//! - `replay`: re-reads a range of the merge topic and writes what it
//!   carries (counted: written, skipped, missing).
//! - `audit`: snapshots of sampled users, counted by verdict.
//! - `shown`: how the commands show a time.

pub mod audit;
pub mod endpoints;
pub mod inspect;
pub mod replay;
pub mod shown;
pub mod snapshot;

use std::path::Path;
use std::process::ExitCode;

/// Exit code of `audit` when an item is missing.
pub const EXIT_MISSING: u8 = 3;

/// What an operator's command was asked.
pub enum Asked {
    /// `inspect`.
    Inspect {
        /// The user.
        uid: u64,
        /// Only these items.
        items: Vec<String>,
        /// JSON instead of text.
        json: bool,
    },
    /// `replay`.
    Replay(replay::Request),
    /// `audit`.
    Audit {
        /// These users...
        uids: Vec<u64>,
        /// ...or a sample of this many.
        sample: Option<usize>,
        /// JSON instead of text.
        json: bool,
    },
}

/// Runs an operator's command on the topology at `path`: exit 0 when it
/// did its work (for `audit`: and found nothing missing), 2 for a topology
/// it cannot use, 1 when a store failed, [`EXIT_MISSING`] when `audit`
/// found missing items.
pub fn run(path: &Path, asked: Asked) -> ExitCode {
    let topology = match crate::topology_file::load(path) {
        Ok(topology) => topology,
        Err(code) => return code,
    };
    let endpoints = endpoints::Endpoints::of(&topology);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        match asked {
            Asked::Inspect { uid, items, json } => inspect::run(&endpoints, uid, &items, json).await.map(|()| ExitCode::SUCCESS),
            Asked::Replay(request) => {
                let dry_run = request.dry_run;
                let replayed = replay::run(&endpoints, request).await?;
                let (what, written, markers) =
                    if dry_run { ("replay (dry run, nothing written)", "would write", "markers to write") } else { ("replay", "written", "markers written") };
                println!(
                    "{what}: {} messages, {} ops; {written} {}, skipped (the table holds that view or newer) {}, missing (ids record gone from Redis) {}, {markers} {}",
                    replayed.messages, replayed.ops, replayed.written, replayed.skipped, replayed.missing, replayed.markers
                );
                Ok(ExitCode::SUCCESS)
            }
            Asked::Audit { uids, sample, json } => {
                let audited = audit::run(&endpoints, &uids, sample).await?;
                if json {
                    println!("{}", serde_json::to_string(&audited)?);
                } else {
                    let counts: Vec<String> = audited.counts.iter().map(|(verdict, count)| format!("{verdict} {count}")).collect();
                    println!("audit: {} users; items: {}", audited.users, if counts.is_empty() { "none".to_owned() } else { counts.join(", ") });
                    for (uid, item) in &audited.missing {
                        println!("missing: user {uid} {item}");
                    }
                }
                Ok(if audited.missing_count() > 0 { ExitCode::from(EXIT_MISSING) } else { ExitCode::SUCCESS })
            }
        }
    });
    outcome.unwrap_or_else(|error: anyhow::Error| {
        eprintln!("{}: {error:#}", path.display());
        ExitCode::FAILURE
    })
}
