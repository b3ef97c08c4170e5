//! `histflow run`: build the role's nodes, serve the admin endpoints when no
//! ingest stage does, run until SIGINT/SIGTERM (or a stage failure),
//! reloading the topology on SIGHUP, `--watch` or `POST /admin/reload`,
//! drain within the deadline, and turn the outcome into an exit code.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use std::sync::Arc;

use ingest_http::{install_prometheus, AdminState, StatsBoard};
use pipeline::health::Health;
use pipeline::plan::{plan, RoleSelection};
use pipeline::view::TopologyView;
use pipeline::Topology;
use stages::{BuildOptions, StageConfig};
use tokio_util::sync::CancellationToken;

use crate::admin_listener::AdminListener;
use crate::reload::{self, LateReloader, Reloader};
use crate::topology_file::{self, EXIT_BAD_TOPOLOGY};

/// Exit code when the pipeline failed or did not drain in time.
const EXIT_RUN_FAILED: u8 = 1;
/// Exit code when a second stop signal cut the drain short.
const EXIT_FORCED: i32 = 130;

/// Runs the topology at `path` for `role`; blocks until the process should
/// exit. `watch` reloads the file when it changes.
pub fn run(path: &Path, role: RoleSelection, embedded: bool, watch: bool) -> ExitCode {
    let first = topology_file::load_text(path);
    if let Err(code) = first {
        if !watch {
            return code;
        }
    }
    raise_open_file_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the tokio runtime: {error}");
            return ExitCode::from(EXIT_RUN_FAILED);
        }
    };
    runtime.block_on(async {
        let (text, topology) = match first {
            Ok(loaded) => loaded,
            // With --watch a bad first file is not the end: the next good
            // version of it starts the pipeline.
            Err(_) => {
                let hangups = ignore_hangups();
                let loaded = wait_for_valid(path).await;
                if let Some(hangups) = hangups {
                    hangups.abort();
                }
                loaded
            }
        };
        run_topology(Loaded { path, text, topology }, role, embedded, watch).await
    })
}

/// Raises the open-file limit to its hard limit: every connection, open
/// until its deadline, holds a file descriptor, and a low soft limit made
/// ordinary requests fail while silent ones held the rest.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit; connections beyond it are refused by the system"),
    }
}

/// Looks at `path` every half second until a changed text of it
/// validates (each refused version's problems are printed once).
async fn wait_for_valid(path: &Path) -> (String, Topology<StageConfig>) {
    eprintln!("{}: --watch: waiting for a valid version of the file; SIGINT stops", path.display());
    let mut seen = std::fs::read_to_string(path).ok();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let text = std::fs::read_to_string(path).ok();
        if text == seen {
            continue;
        }
        seen = text;
        if let Ok(loaded) = topology_file::load_text(path) {
            eprintln!("{}: valid; starting", path.display());
            return loaded;
        }
    }
}

/// The topology file as started.
struct Loaded<'a> {
    path: &'a Path,
    text: String,
    topology: Topology<StageConfig>,
}

async fn run_topology(loaded: Loaded<'_>, role: RoleSelection, embedded: bool, watch: bool) -> ExitCode {
    let Loaded { path, text, topology } = loaded;
    // Before anything else: a SIGHUP from here on must not kill the process
    // (it reloads once the pipeline runs).
    let early_hangups = ignore_hangups();
    let metrics =
        install_prometheus().map_err(|error| tracing::warn!(%error, "metrics recorder not installed; /metrics will answer 503")).ok();
    let health = Health::default();
    let board = metrics.clone().map(|metrics| Arc::new(StatsBoard::new(TopologyView::new(&topology, role), metrics, health.clone())));
    let late_reloader = Arc::new(LateReloader::new(&topology.auth));
    let admin_state = AdminState { health: health.clone(), metrics, board: board.clone(), topology: Some(late_reloader.clone()) };
    let options = BuildOptions { role, embedded, admin: Some(admin_state.clone()), ..BuildOptions::default() };
    let nodes = match stages::build(&topology, options.clone()) {
        Ok(nodes) => nodes,
        Err(problems) => {
            eprintln!("cannot run the {role} role{}:", if embedded { " with --embedded" } else { "" });
            for problem in problems {
                eprintln!("  - {problem}");
            }
            return ExitCode::from(EXIT_BAD_TOPOLOGY);
        }
    };
    let shutdown = CancellationToken::new();

    // The ingest server carries /metrics and the health endpoints; without
    // one in this role they get an address of their own.
    let ingest_runs = plan(&topology, role).iter().any(|node| matches!(node.stage.config, StageConfig::HttpIngest(_)));
    let admin_listener = if ingest_runs {
        None
    } else {
        match AdminListener::start(&topology.settings.admin_listen, admin_state).await {
            Ok(admin) => Some(admin),
            Err(problem) => {
                eprintln!("{problem}");
                return ExitCode::from(EXIT_RUN_FAILED);
            }
        }
    };

    let stage_count = nodes.len();
    let running = match pipeline::runtime::start(nodes, shutdown.clone()) {
        Ok(running) => running,
        Err(error) => {
            eprintln!("cannot wire the pipeline: {error}");
            return ExitCode::from(EXIT_BAD_TOPOLOGY);
        }
    };
    health.set_started();
    let drain_timeout = Duration::from_millis(topology.settings.shutdown_timeout_ms);
    let reloader = Arc::new(Reloader::new(path, &text, topology, options, running.control(), board, admin_listener));
    late_reloader.set(reloader.clone());
    if let Some(early_hangups) = early_hangups {
        early_hangups.abort();
    }
    let hangups = reload::on_hangup(reloader.clone());
    let watcher = watch.then(|| reload::watch(reloader.clone()));
    tracing::info!(%role, embedded, stages = stage_count, watch, "histflow running; SIGHUP reloads the topology, SIGINT or SIGTERM drains and stops it");
    let signals = tokio::spawn(watch_signals(shutdown.clone(), health.clone()));

    let outcome = running.wait(drain_timeout).await;
    health.start_draining();
    signals.abort();
    for task in [hangups, watcher].into_iter().flatten() {
        task.abort();
    }
    reloader.stop_admin().await;
    match outcome {
        Ok(()) => {
            tracing::info!("every stage drained; exiting");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "pipeline stopped with errors");
            ExitCode::from(EXIT_RUN_FAILED)
        }
    }
}

/// First SIGINT/SIGTERM (or a stage failure raising `shutdown`): refuse new
/// work and drain. A second signal exits at once.
async fn watch_signals(shutdown: CancellationToken, health: Health) {
    tokio::select! {
        signal = stop_signal() => tracing::info!(signal, "stop signal received; refusing new work and draining every stage"),
        () = shutdown.cancelled() => {}
    }
    health.start_draining();
    shutdown.cancel();
    let signal = stop_signal().await;
    tracing::warn!(signal, "second stop signal; exiting without waiting for the drain");
    std::process::exit(EXIT_FORCED);
}

/// SIGHUP's default action kills the process without draining. Until the
/// pipeline runs (and SIGHUP reloads it), a SIGHUP is logged and changes
/// nothing. `None` if it cannot be watched.
fn ignore_hangups() -> Option<tokio::task::JoinHandle<()>> {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hangups) => Some(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::warn!("SIGHUP received while starting; ignored (send it again once histflow runs to reload)");
            }
        })),
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGHUP; a SIGHUP will end the process without draining");
            None
        }
    }
}

/// Resolves with the name of the first SIGINT or SIGTERM.
async fn stop_signal() -> &'static str {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(terminate) => terminate,
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM; only SIGINT stops the process");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}
