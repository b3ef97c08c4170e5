//! `bench crash`: the crash scenario on the real stack. Redis, tansu, the
//! HBase-compatible server and histflow's job run throughout; histflow's
//! service takes an open-loop load at a fixed rate and is SIGKILLed every
//! `--kill-every`, then started again at once. After the load the bench
//! waits for the history table to settle and checks every acknowledged
//! report against it: durable means the item's cell holds the newest
//! view_at a 200 `recorded: true` acknowledged (or a newer one).
//!
//! Reported: reports acknowledged, durable and lost; what the services'
//! re-drives shipped again (summed from their logs: a killed process takes
//! its counters with it); the service's
//! restarts and how long each took until `/readyz`; the time from the last
//! restart until everything acknowledged was durable (or until the table
//! stopped changing); the load's latency p99 overall and for requests
//! intended while the service was down or starting (failed requests are
//! counted, not timed).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::stack::open_load::{quantile_ms, LoadShape, OpenLoad, Settled};
use crate::stack::processes::{free_port, histflow_run, run_until_interrupted, start, wait_ready, BenchStack, Owned, Ports};

/// Options of the crash scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The topology both roles run.
    #[arg(long, default_value = "topology.toml")]
    pub topology: PathBuf,
    /// Users reporting.
    #[arg(long, default_value_t = 2_000)]
    pub users: u64,
    /// Events a second, open loop.
    #[arg(long, default_value_t = 2_000.0)]
    pub rate: f64,
    /// Events per request.
    #[arg(long, default_value_t = 20)]
    pub batch: usize,
    /// Reports of one item before its user moves to the next. 1 (every
    /// report a new item) is the worst case for a crash: no later report
    /// of the item repairs what was lost, and in `ids` mode no earlier
    /// shipped reference lets the job pick the newest view up from Redis.
    #[arg(long, default_value_t = 1)]
    pub reports_per_item: u64,
    /// How long to load (humantime: 60s, 2m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// SIGKILL the service this often during the load, and start it again.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub kill_every: Duration,
    /// After the load: the table counts as settled once it has not changed
    /// for this long. Keep it longer than the job's window
    /// (`flush_interval_ms` of persist: 60 s in topology.toml), or a quiet
    /// stretch between two job writes looks settled.
    #[arg(long, default_value = "75s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// Longest wait, after the load, for the table to settle.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Write the figures as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The histflow binary (default: built beside this bench).
    #[arg(long)]
    pub histflow: Option<PathBuf>,
}

impl Options {
    fn shape(&self) -> LoadShape {
        LoadShape {
            users: self.users,
            rate: self.rate,
            batch: self.batch,
            reports_per_item: self.reports_per_item,
            duration: self.duration,
        }
    }
}

/// Runs the scenario and prints its figures.
pub fn run(options: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(
        options.users >= 1 && options.batch >= 1 && options.reports_per_item >= 1 && options.rate > 0.0,
        "--users, --batch, --reports-per-item and --rate must be positive"
    );
    anyhow::ensure!(!options.kill_every.is_zero(), "--kill-every must be longer than 0 s");
    run_until_interrupted(scenario(options))
}

async fn scenario(options: &Options) -> anyhow::Result<()> {
    let stack = BenchStack::start(options.histflow.as_deref(), &options.topology, "crash")?;
    let (histflow, topology, ports, dir) = (stack.histflow.clone(), stack.topology.clone(), stack.ports, &stack.dir);
    let job_port = free_port()?;
    let _job = start(
        "histflow --role job",
        histflow_run(&histflow, &topology, "job", ports, job_port, dir.path()),
        job_port,
        &dir.path().join("job.log"),
    )?;
    let launcher = Arc::new(Launcher { histflow: histflow.clone(), topology: topology.clone(), ports, dir: dir.path().to_owned() });
    let service = Arc::new(Mutex::new(Some(launcher.start(0).await?)));
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}", ports.http);

    // Phase 0: the service up; phase 1: down or starting.
    let load = OpenLoad::new(2)?;
    println!(
        "crash scenario: {} events/s in requests of {}, {} users, {} report(s) per item, {:?}, the service SIGKILLed every {:?}",
        options.rate, options.batch, options.users, options.reports_per_item, options.duration, options.kill_every
    );
    let started = Instant::now();
    let killer = {
        let (service, load, launcher, every, until) =
            (service.clone(), load.clone(), launcher.clone(), options.kill_every, options.duration);
        tokio::spawn(async move { kill_and_restart(service, load, &launcher, every, until).await })
    };
    load.drive(options.shape(), &http, &base).await;
    let restarts = killer.await??;
    let last_restart = restarts.last().map_or(started, |restart| restart.ready_at);

    // Everything durable, or the table quiet for `--settle`.
    let acknowledged = load.acknowledged();
    let durable = Settled::wait(ports.hbase, &acknowledged, options.settle, options.drain_timeout).await?.durable;
    let settled_after = (durable == acknowledged.len()).then(|| last_restart.elapsed());
    let acknowledged = load.acknowledged().len();
    let lost = acknowledged - durable;
    let (latency, recovery) = (load.latency(0), load.latency(1));
    let failed = load.failed(0) + load.failed(1);
    let restart_ms: Vec<u64> = restarts.iter().map(|restart| restart.took.as_millis() as u64).collect();
    let redriven = redriven_from_logs(dir.path());
    let figures = json!({
        "topology": options.topology.display().to_string(),
        "rate_events_per_s": options.rate,
        "duration_s": options.duration.as_secs_f64(),
        "kill_every_s": options.kill_every.as_secs_f64(),
        "users": options.users,
        "reports_per_item": options.reports_per_item,
        "restarts": restarts.len(),
        "restart_to_ready_ms": restart_ms,
        "acknowledged": acknowledged,
        "durable": durable,
        "lost": lost,
        "redriven_users": redriven.users,
        "redriven_items": redriven.items,
        "failed_requests": failed,
        "settled_after_last_restart_s": settled_after.map(|after| after.as_secs_f64()),
        "p99_ms": quantile_ms(&latency, 0.99),
        "p99_during_recovery_ms": quantile_ms(&recovery, 0.99),
    });
    println!("restarts:            {} (to /readyz: {restart_ms:?} ms)", restarts.len());
    println!("acknowledged:        {acknowledged} (user, item) reports, newest view each");
    println!("durable:             {durable}");
    println!("lost:                {lost}");
    println!("re-driven:           {} marks of {} users (claimed by the services' re-drives)", redriven.items, redriven.users);
    println!("failed requests:     {failed} (not acknowledged; a client would retry)");
    match settled_after {
        Some(after) => println!("all durable:         {:.1} s after the last restart was ready", after.as_secs_f64()),
        None => println!("all durable:         never (the table stopped changing with {lost} missing)"),
    }
    let shown = |p99: Option<f64>| p99.map_or("no answers".to_owned(), |ms| format!("{ms:.1} ms"));
    println!(
        "p99:                 {} up, {} while down or starting",
        shown(quantile_ms(&latency, 0.99)),
        shown(quantile_ms(&recovery, 0.99))
    );
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_string_pretty(&figures)?).with_context(|| format!("cannot write {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    if let Some(service) = service.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
        service.stop(Duration::from_secs(10));
    }
    Ok(())
}

/// How to start the service.
struct Launcher {
    histflow: PathBuf,
    topology: PathBuf,
    ports: Ports,
    /// Where it runs and logs.
    dir: PathBuf,
}

impl Launcher {
    /// Starts the service (the `generation`-th time) and waits for
    /// `/readyz`.
    async fn start(&self, generation: usize) -> anyhow::Result<Owned> {
        let command = histflow_run(&self.histflow, &self.topology, "service", self.ports, free_port()?, &self.dir);
        let (log, port) = (self.dir.join(format!("service-{generation}.log")), self.ports.http);
        let service = tokio::task::spawn_blocking(move || start("histflow --role service", command, port, &log)).await??;
        wait_ready(&reqwest::Client::new(), &format!("http://127.0.0.1:{port}")).await?;
        Ok(service)
    }
}

/// One SIGKILL and restart.
struct Restart {
    /// From the kill until the new service was ready.
    took: Duration,
    /// When it was ready.
    ready_at: Instant,
}

/// Every `every` until `until` has passed: SIGKILL the service, start it
/// again, and wait until it is ready.
async fn kill_and_restart(
    service: Arc<Mutex<Option<Owned>>>,
    load: Arc<OpenLoad>,
    launcher: &Launcher,
    every: Duration,
    until: Duration,
) -> anyhow::Result<Vec<Restart>> {
    let started = Instant::now();
    let mut restarts = Vec::new();
    while started.elapsed() + every < until {
        tokio::time::sleep(every).await;
        load.enter(1);
        let killed_at = Instant::now();
        // Dropping an owned process SIGKILLs it.
        drop(service.lock().unwrap_or_else(PoisonError::into_inner).take());
        let restarted = launcher.start(restarts.len() + 1).await?;
        *service.lock().unwrap_or_else(PoisonError::into_inner) = Some(restarted);
        load.enter(0);
        restarts.push(Restart { took: killed_at.elapsed(), ready_at: Instant::now() });
    }
    Ok(restarts)
}

/// What the services' re-drives claimed, over all their lives.
#[derive(Debug, Default)]
struct RedrivenTotal {
    users: u64,
    items: u64,
}

/// Sums the `users=` and `items=` of every re-drive line in the services'
/// logs (`service-*.log` in `dir`).
fn redriven_from_logs(dir: &std::path::Path) -> RedrivenTotal {
    let mut total = RedrivenTotal::default();
    let Ok(entries) = std::fs::read_dir(dir) else { return total };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("service-") && name.ends_with(".log")) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines().filter(|line| line.contains("re-driving marks")) {
            total.users += field_of(line, "users=");
            total.items += field_of(line, "items=");
        }
    }
    total
}

/// The number after `key` in a log line (0 if absent).
fn field_of(line: &str, key: &str) -> u64 {
    line.split_whitespace().find_map(|word| word.strip_prefix(key)).and_then(|value| value.parse().ok()).unwrap_or(0)
}
