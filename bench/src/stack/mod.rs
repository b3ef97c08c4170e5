//! `bench --stack`: the whole real stack on this machine, started by the
//! bench on free loopback ports — Redis, the tansu broker, the
//! HBase-compatible server, histflow `--role service` and `--role job` as
//! separate processes — driven by the workload, measured, and torn down
//! (also on failure or Ctrl-C). `--compare` runs the naive write-through
//! baseline and the ingest-only HTTP ceiling the same way;
//! `--redis-ceiling` measures histflow's realtime write pipelined straight
//! at Redis. `--redis-cluster N`, `--services S` and `--jobs J` run Redis
//! as a cluster of N masters and S service and J job instances, the
//! clients spread over the services. `--target URL` drives an already
//! running histflow instead.
//!
//! - `processes`: the child processes and their resource use.
//! - `open_load`: the fixed-rate load of the fault benches, per phase.
//! - `workload`: the reports and the closed- or open-loop clients.
//! - `scrape`: reading `/metrics`.
//! - `ceiling`: the Redis ceiling.
//! - `minimal_write`: the minimal scripted write the production regime's
//!   Redis cost is compared with.
//! - `report`: the figures, the table, JSON and the latency plot.

mod ceiling;
mod minimal_write;
pub(crate) mod open_load;
mod options;
pub(crate) mod processes;
mod redis_cost;
pub(crate) mod report;
pub(crate) mod scrape;
mod workload;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

pub use options::Options;
use processes::{free_port, histflow_run, start, start_backends, usage, Owned, Ports};
use report::Figures;
use scrape::Scrape;
use workload::{Limit, Live, Pace, Shape};

/// Users of the production regime, at least.
const AT_SCALE_USERS: u64 = 200_000;

impl Options {
    /// The options in force: `--heartbeat-at-scale` raises the users and
    /// sets the item switches.
    fn effective(&self) -> Options {
        let mut options = self.clone();
        if options.heartbeat_at_scale {
            options.users = options.users.max(AT_SCALE_USERS);
            options.switch_every = 40;
        }
        options
    }

    fn shape(&self) -> Shape {
        Shape {
            users: self.users,
            items_per_user: self.items_per_user,
            businesses: self.businesses,
            heartbeat_s: self.heartbeat_s.map_or(5, |seconds| seconds.round().max(1.0) as i64),
            switch_every: self.switch_every,
            first_uid: 1,
        }
    }

    fn pace(&self) -> Pace {
        match (self.rate, self.heartbeat_s) {
            (Some(rate), _) => Pace::Open { events_per_s: rate },
            (None, Some(heartbeat)) => Pace::Open { events_per_s: self.users as f64 / heartbeat.max(0.001) },
            (None, None) => Pace::Closed,
        }
    }
}

/// Runs what the options ask for and prints the table.
pub fn run(options: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(options.stack || options.target.is_some(), "say --stack (start the whole stack) or --target URL");
    anyhow::ensure!(
        options.users >= 1 && options.items_per_user >= 1 && options.batch >= 1 && options.connections >= 1,
        "--users, --items-per-user, --batch and --connections must be at least 1"
    );
    anyhow::ensure!((1..=4).contains(&options.businesses), "--businesses must be 1 to 4");
    anyhow::ensure!(
        options.redis_cluster == 0 || options.redis_cluster >= 3,
        "--redis-cluster must be 0 (one Redis) or at least 3 masters"
    );
    anyhow::ensure!(options.services >= 1 && options.jobs >= 1, "--services and --jobs must be at least 1");
    processes::run_until_interrupted(all_runs(&options.effective()))
}

async fn all_runs(options: &Options) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    if let Some(target) = &options.target {
        runs.push(drive_target(options, target).await?);
    } else {
        let histflow = processes::histflow_binary(options.histflow.as_deref())?;
        let mut topologies = if options.ceiling_only { Vec::new() } else { vec![options.topology.clone()] };
        if options.compare && !options.ceiling_only {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies");
            topologies.push(dir.join("naive.toml"));
            topologies.push(dir.join("ingest-only.toml"));
        }
        for topology in topologies {
            runs.push(run_stack(options, &histflow, &topology).await?);
        }
        if options.redis_ceiling {
            // With the marks (what the service writes), and without them:
            // what the guarantee costs Redis.
            runs.push(redis_ceiling(options, true).await?);
            runs.push(redis_ceiling(options, false).await?);
        }
        if options.heartbeat_at_scale {
            runs.push(minimal_scripted_write().await?);
        }
    }
    report::print(&runs, options);
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_string_pretty(&runs)?).with_context(|| format!("cannot write {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    if let Some(path) = &options.plot {
        report::plot(&runs, path)?;
        println!("latency chart written to {}", path.display());
    }
    Ok(())
}

/// What a topology file contains, for choosing the processes to start.
struct Needs {
    kafka: bool,
    hbase: bool,
    redis: bool,
}

fn needs(topology: &Path) -> anyhow::Result<Needs> {
    let text = std::fs::read_to_string(topology).with_context(|| format!("cannot read {}", topology.display()))?;
    Ok(Needs {
        kafka: text.contains("type = \"kafka_batch\""),
        hbase: text.contains("type = \"persist\""),
        redis: text.contains("type = \"realtime\""),
    })
}

/// One run on a fresh stack.
async fn run_stack(options: &Options, histflow: &Path, topology: &Path) -> anyhow::Result<Figures> {
    let stem = topology.file_stem().map_or_else(|| "topology".to_owned(), |stem| stem.to_string_lossy().into_owned());
    let needs = needs(topology)?;
    let cluster = needs.redis && options.redis_cluster > 0;
    let name = match (cluster, options.services, options.jobs) {
        (false, 1, 1) => stem,
        _ => format!(
            "{stem} ({}, {} service{}, {} job{})",
            if cluster { format!("{}-master cluster", options.redis_cluster) } else { "1 Redis".to_owned() },
            options.services,
            if options.services == 1 { "" } else { "s" },
            options.jobs,
            if options.jobs == 1 { "" } else { "s" },
        ),
    };
    // histflow runs in a scratch directory (its data goes there).
    let topology = &topology.canonicalize()?;
    let dir = tempfile::Builder::new().prefix("histflow-bench-").tempdir()?;
    let log = |what: &str| dir.path().join(format!("{what}.log"));
    let ports = Ports::free()?;
    let mut owned: Vec<Owned> = start_backends(histflow, ports, dir.path(), needs.redis && !cluster, needs.kafka, needs.hbase)?;
    let redis_url = if cluster {
        let (nodes, url) = processes::start_redis_cluster(options.redis_cluster, dir.path())?;
        owned.extend(nodes);
        Some(url)
    } else {
        None
    };
    let histflow_command = |role: &str, admin_port: u16| {
        let mut command = histflow_run(histflow, topology, role, ports, admin_port, dir.path());
        if let Some(url) = &redis_url {
            command.env("REDIS_URL", url);
        }
        command
    };
    let service_role = if needs.kafka { "service" } else { "all" };
    let mut services: Vec<(usize, String)> = Vec::new();
    for index in 0..options.services {
        let http_port = if index == 0 { ports.http } else { free_port()? };
        let mut command = histflow_command(service_role, free_port()?);
        command.env("HTTP_ADDR", format!("127.0.0.1:{http_port}")).env("GRPC_ADDR", format!("127.0.0.1:{}", free_port()?));
        owned.push(start(&format!("histflow --role {service_role} #{index}"), command, http_port, &log(&format!("service-{index}")))?);
        services.push((owned.len() - 1, format!("http://127.0.0.1:{http_port}")));
    }
    let mut jobs: Vec<(usize, String)> = Vec::new();
    if needs.kafka {
        for index in 0..options.jobs {
            let job_port = free_port()?;
            let mut command = histflow_command("job", job_port);
            command.env("JOB_INSTANCE", format!("job-{index}"));
            owned.push(start(&format!("histflow --role job #{index}"), command, job_port, &log(&format!("job-{index}")))?);
            jobs.push((owned.len() - 1, format!("http://127.0.0.1:{job_port}")));
        }
    }
    let http = reqwest::Client::new();
    for (_, base) in services.iter().chain(&jobs) {
        processes::wait_ready(&http, base).await?;
    }
    let service_bases: Vec<String> = services.iter().map(|(_, base)| base.clone()).collect();
    let job_bases: Vec<String> = jobs.iter().map(|(_, base)| base.clone()).collect();

    // Kafka messages and HBase cells the warm pass made, not counted in
    // the measured run's ratios.
    let mut warm_counts = None;
    // Items the warm pass acknowledged: the table holds them too.
    let mut warm_items = std::collections::HashSet::new();
    if options.heartbeat_at_scale {
        // Every user's first write of the day, durable, before measuring.
        let warm = Options { events: Some(options.users), duration: Duration::from_secs(3600), ..options.clone() };
        let (warmed, _) = load(&warm, &http, &service_bases, &format!("{name} warm")).await?;
        anyhow::ensure!(warmed.events_acked > 0, "the warm pass recorded nothing");
        warm_items = warmed.items_acked;
        if needs.hbase {
            wait_durable(options, &http, &service_bases, &job_bases, &format!("{name} warm")).await?;
        }
        let (service, job) = (scrape_all(&http, &service_bases).await, scrape_all(&http, &job_bases).await);
        warm_counts = Some((service.sum("histflow_kafka_messages_total", &[]), job.sum("histflow_persist_cells_total", &[])));
    }
    // What Redis does for the run, from the first report to durable: on a
    // cluster, all its masters together.
    let redis_urls: Vec<String> = match &redis_url {
        Some(seeds) => seeds.split(',').map(str::to_owned).collect(),
        None => vec![format!("redis://127.0.0.1:{}", ports.redis)],
    };
    let redis_before = if needs.redis { Some(redis_cost::Sample::of_all(&redis_urls).await?) } else { None };
    let (outcome, peak_bytes_per_item) = load(options, &http, &service_bases, &name).await?;
    // Fail loudly if a process died under load.
    for (index, (owner, _)) in services.iter().enumerate() {
        owned[*owner].check_alive(&log(&format!("service-{index}")))?;
    }

    let hbase_items = if needs.hbase {
        wait_durable(options, &http, &service_bases, &job_bases, &name).await?;
        Some(report::count_hbase_items(ports.hbase).await?)
    } else {
        None
    };
    let redis_cost = match &redis_before {
        Some(before) => before.cost_until(&redis_cost::Sample::of_all(&redis_urls).await?, outcome.events_acked),
        None => None,
    };
    let service_metrics = scrape_all(&http, &service_bases).await;
    let job_metrics = if job_bases.is_empty() { service_metrics.clone() } else { scrape_all(&http, &job_bases).await };
    let usages: Vec<(u64, f64)> = services.iter().chain(&jobs).map(|(index, _)| owned[*index].pid()).filter_map(usage).collect();
    for process in owned.iter_mut().rev() {
        process.stop(Duration::from_secs(10));
    }
    let mut figures = Figures::of_run(&name, options, &outcome, &service_metrics, &job_metrics, &usages, peak_bytes_per_item, hbase_items);
    figures.redis_cost = redis_cost;
    if let Some((warm_messages, warm_cells)) = warm_counts {
        // Every item either phase acknowledged must be in the table.
        figures.posted_items = outcome.items_acked.union(&warm_items).count();
        let per = |total: f64, warm: f64| (total - warm > 0.0).then(|| outcome.events_acked as f64 / (total - warm));
        figures.events_per_kafka_message = per(service_metrics.sum("histflow_kafka_messages_total", &[]), warm_messages);
        figures.events_per_hbase_cell = per(job_metrics.sum("histflow_persist_cells_total", &[]), warm_cells);
    }
    Ok(figures)
}

/// The `/metrics` of several processes as one (sums over them).
async fn scrape_all(http: &reqwest::Client, bases: &[String]) -> Scrape {
    let mut scrapes = Vec::with_capacity(bases.len());
    for base in bases {
        scrapes.push(Scrape::of(http, base).await);
    }
    Scrape::merged(scrapes)
}

/// The load against a running histflow (no processes of ours).
async fn drive_target(options: &Options, target: &str) -> anyhow::Result<Figures> {
    let http = reqwest::Client::new();
    let base = target.trim_end_matches('/');
    let (outcome, bytes) = load(options, &http, &[base.to_owned()], "target").await?;
    let metrics = Scrape::of(&http, base).await;
    Ok(Figures::of_run("target", options, &outcome, &metrics, &metrics, &[], bytes, None))
}

/// Runs the workload with a progress bar; also samples the aggregate's
/// bytes per pending item (the largest seen while it held many).
async fn load(options: &Options, http: &reqwest::Client, bases: &[String], name: &str) -> anyhow::Result<(workload::Outcome, Option<f64>)> {
    let base = bases.first().map_or("", String::as_str);
    let live = Arc::new(Live::default());
    let bar = ProgressBar::new(options.duration.as_secs().max(1));
    bar.set_style(ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} s  {msg}")?.progress_chars("=> "));
    bar.set_prefix(name.to_owned());
    let urls: Vec<String> = bases.iter().map(|base| format!("{base}/v1/events")).collect();
    let limit = Limit { duration: options.duration, events: options.events };
    let shape = options.shape();
    let driving = workload::drive(&urls, &shape, options.batch, options.connections, options.pace(), limit, live.clone());
    tokio::pin!(driving);
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut bytes_per_item: Option<f64> = None;
    let outcome = loop {
        tokio::select! {
            outcome = &mut driving => break outcome?,
            _ = tick.tick() => {
                let elapsed = started.elapsed().as_secs_f64().max(0.001);
                let acked = live.acked.load(Ordering::Relaxed);
                bar.set_position(started.elapsed().as_secs().min(options.duration.as_secs()));
                bar.set_message(format!("{:.0} events/s, {} errors", acked as f64 / elapsed, live.errors.load(Ordering::Relaxed)));
                let metrics = Scrape::of(http, base).await;
                let pending = metrics.sum("histflow_aggregate_pending_items", &[]);
                if pending >= 1000.0 {
                    let bytes = metrics.sum("histflow_aggregate_table_bytes", &[]) / pending;
                    bytes_per_item = Some(bytes_per_item.map_or(bytes, |seen: f64| seen.max(bytes)));
                }
            }
        }
    };
    bar.finish_and_clear();
    Ok((outcome, bytes_per_item))
}

/// Waits until every acknowledged event is durable in HBase: for the
/// default topology, the jobs have persisted every op the services
/// shipped; for write-through, persist has written every op it was given.
async fn wait_durable(options: &Options, http: &reqwest::Client, services: &[String], jobs: &[String], name: &str) -> anyhow::Result<()> {
    let bar = ProgressBar::new_spinner();
    bar.set_prefix(name.to_owned());
    bar.set_style(ProgressStyle::with_template("{prefix:>12} {spinner} {msg}")?);
    let deadline = Instant::now() + options.drain_timeout;
    let mut previous = -1.0;
    loop {
        let service_metrics = scrape_all(http, services).await;
        let (shipped, persisted) = if jobs.is_empty() {
            (
                service_metrics.sum("histflow_stage_events_in_total", &["stage=\"persist\""]),
                service_metrics.sum("histflow_persist_events_total", &[]),
            )
        } else {
            let job_metrics = scrape_all(http, jobs).await;
            (service_metrics.sum("histflow_kafka_message_events_total", &[]), job_metrics.sum("histflow_persist_events_total", &[]))
        };
        let pending = service_metrics.sum("histflow_aggregate_pending_items", &[]);
        bar.set_message(format!("waiting until durable: {persisted:.0} of {shipped:.0} ops written"));
        bar.tick();
        if pending == 0.0 && shipped == previous && persisted >= shipped {
            bar.finish_and_clear();
            return Ok(());
        }
        previous = shipped;
        anyhow::ensure!(
            Instant::now() < deadline,
            "not durable within {:?}: {persisted} of {shipped} ops written (is the job's window longer than --drain-timeout?)",
            options.drain_timeout
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A Redis of its own for one measurement, without persistence: its
/// directory, the process (stopped when dropped) and its URL.
fn fresh_redis() -> anyhow::Result<(tempfile::TempDir, Owned, String)> {
    let dir = tempfile::Builder::new().prefix("histflow-bench-").tempdir()?;
    let port = free_port()?;
    let mut redis = Command::new("redis-server");
    redis.args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"]);
    let process = start("redis-server", redis, port, &dir.path().join("redis.log"))?;
    Ok((dir, process, format!("redis://127.0.0.1:{port}")))
}

/// The minimal scripted write on a fresh Redis (its CPU per event).
async fn minimal_scripted_write() -> anyhow::Result<Figures> {
    let (_dir, _redis, url) = fresh_redis()?;
    let bar = ProgressBar::new_spinner();
    bar.set_message("minimal scripted write: EVALSHA of HSET + ZADD, pipelined 16 deep");
    bar.enable_steady_tick(Duration::from_millis(200));
    let (_, events_per_sec, cost) = minimal_write::measure(&url, Duration::from_secs(10)).await?;
    bar.finish_and_clear();
    Ok(Figures::ceiling(report::MINIMAL_WRITE, events_per_sec, cost))
}

/// The Redis ceiling on a fresh Redis, with or without the marks.
async fn redis_ceiling(options: &Options, marks: bool) -> anyhow::Result<Figures> {
    let (_dir, _redis, url) = fresh_redis()?;
    let bar = ProgressBar::new_spinner();
    bar.set_message("redis ceiling: the realtime write pipelined straight at Redis");
    bar.enable_steady_tick(Duration::from_millis(200));
    let before = redis_cost::Sample::of(&url).await?;
    let (events, events_per_sec) = ceiling::measure(&url, &options.shape(), options.duration, marks).await?;
    let cost = before.cost_until(&redis_cost::Sample::of(&url).await?, events);
    bar.finish_and_clear();
    Ok(Figures::ceiling(if marks { "redis-ceiling" } else { "redis-ceiling-no-marks" }, events_per_sec, cost))
}
