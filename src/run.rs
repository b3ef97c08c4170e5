//! `histflow run`: build the role's nodes, serve the admin endpoints when no
//! ingest stage does, run until SIGINT/SIGTERM (or a stage failure), drain
//! within the deadline, and turn the outcome into an exit code.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use std::sync::Arc;

use ingest_http::{install_prometheus, serve_admin, AdminState, StatsBoard};
use pipeline::health::Health;
use pipeline::plan::{plan, RoleSelection};
use pipeline::view::TopologyView;
use pipeline::Topology;
use stages::{BuildOptions, StageConfig};
use tokio_util::sync::CancellationToken;

use crate::topology_file::{self, EXIT_BAD_TOPOLOGY};

/// Exit code when the pipeline failed or did not drain in time.
const EXIT_RUN_FAILED: u8 = 1;
/// Exit code when a second stop signal cut the drain short.
const EXIT_FORCED: i32 = 130;

/// Runs the topology at `path` for `role`; blocks until the process should exit.
pub fn run(path: &Path, role: RoleSelection, embedded: bool) -> ExitCode {
    let topology = match topology_file::load(path) {
        Ok(topology) => topology,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the tokio runtime: {error}");
            return ExitCode::from(EXIT_RUN_FAILED);
        }
    };
    runtime.block_on(run_topology(topology, role, embedded))
}

async fn run_topology(topology: Topology<StageConfig>, role: RoleSelection, embedded: bool) -> ExitCode {
    // Before anything else: a SIGHUP from here on must not kill the process.
    let hangups = ignore_hangups();
    let metrics =
        install_prometheus().map_err(|error| tracing::warn!(%error, "metrics recorder not installed; /metrics will answer 503")).ok();
    let health = Health::default();
    let board = metrics.clone().map(|metrics| Arc::new(StatsBoard::new(TopologyView::new(&topology, role), metrics, health.clone())));
    let admin_state = AdminState { health: health.clone(), metrics, board };
    let nodes = match stages::build(&topology, BuildOptions { role, embedded, admin: Some(admin_state.clone()) }) {
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
    let admin_stop = CancellationToken::new();
    let admin = if ingest_runs {
        None
    } else {
        let listen = &topology.settings.admin_listen;
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("cannot listen on admin_listen {listen}: {error}");
                return ExitCode::from(EXIT_RUN_FAILED);
            }
        };
        Some(tokio::spawn(serve_admin(listener, admin_state, admin_stop.clone())))
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
    tracing::info!(%role, embedded, stages = stage_count, "histflow running; SIGINT or SIGTERM drains and stops it");
    let watcher = tokio::spawn(watch_signals(shutdown.clone(), health.clone()));

    let outcome = running.wait(Duration::from_millis(topology.settings.shutdown_timeout_ms)).await;
    health.start_draining();
    watcher.abort();
    if let Some(hangups) = hangups {
        hangups.abort();
    }
    admin_stop.cancel();
    if let Some(admin) = admin {
        if let Ok(Err(error)) = admin.await {
            tracing::warn!(%error, "admin server ended with an error");
        }
    }
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

/// SIGHUP's default action kills the process without draining, and
/// operators send it by habit (to reload). histflow does not reload yet, so
/// a SIGHUP is logged and changes nothing. `None` if it cannot be watched.
fn ignore_hangups() -> Option<tokio::task::JoinHandle<()>> {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hangups) => Some(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::warn!("SIGHUP received and ignored: the topology is not reloaded; SIGINT or SIGTERM stops histflow");
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
