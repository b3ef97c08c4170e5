//! The figures of a run, the table, the JSON and the latency chart.

use std::collections::BTreeMap;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::options::Options;
use super::redis_cost::Cost;
use super::scrape::Scrape;
use super::workload::Outcome;
use super::workload::Pace;

/// Everything one run measured. Absent figures are `null` in JSON (a
/// topology without Kafka has no events per message, say).
#[derive(Debug, Serialize)]
pub struct Figures {
    /// The topology's file stem (`topology`, `naive`, `ingest-only`), or
    /// `redis-ceiling` (or `redis-ceiling-no-marks`).
    pub topology: String,
    /// Events per request.
    pub batch: usize,
    /// `closed` or `open` (fixed rate).
    pub mode: &'static str,
    /// Intended events/s of an open-loop run.
    pub rate: Option<f64>,
    /// Seconds from the first send to the last answer.
    pub duration_s: f64,
    /// Events sent.
    pub events_sent: u64,
    /// Events answered 200.
    pub events_acked: u64,
    /// Acknowledged events per second.
    pub events_per_sec: f64,
    /// Answered-200 requests per second.
    pub requests_per_sec: f64,
    /// Latency percentiles, ms.
    pub p50_ms: f64,
    /// p90, ms.
    pub p90_ms: f64,
    /// p99, ms.
    pub p99_ms: f64,
    /// p99.9, ms.
    pub p999_ms: f64,
    /// Slowest answer, ms.
    pub max_ms: f64,
    /// Answers other than 200, by status (`0`: no answer).
    pub errors: BTreeMap<String, u64>,
    /// Acknowledged events per merge-topic message (the fold's
    /// convergence before Kafka).
    pub events_per_kafka_message: Option<f64>,
    /// Acknowledged events per HBase cell written.
    pub events_per_hbase_cell: Option<f64>,
    /// Ingest-to-durable lag (now - view_at when written), ms: p50.
    pub durable_lag_p50_ms: Option<f64>,
    /// p99.
    pub durable_lag_p99_ms: Option<f64>,
    /// Peak resident memory of histflow (summed over its processes).
    pub rss_peak_bytes: Option<u64>,
    /// CPU seconds histflow used (summed over its processes).
    pub cpu_seconds: Option<f64>,
    /// Aggregate memory per pending item (the most seen while it held at
    /// least 1,000).
    pub bytes_per_pending_item: Option<f64>,
    /// Distinct (user, item) pairs acknowledged.
    pub posted_items: usize,
    /// Distinct (user, item) cells in HBase after the run.
    pub hbase_items: Option<usize>,
    /// What the run cost the Redis the bench started, per acknowledged
    /// event (through the drain: settling the marks included).
    pub redis_cost: Option<Cost>,
    #[serde(skip)]
    latency_us: Option<Histogram<u64>>,
}

fn ms(latency: &Histogram<u64>, quantile: f64) -> f64 {
    latency.value_at_quantile(quantile) as f64 / 1000.0
}

impl Figures {
    /// The figures of a load run.
    #[allow(clippy::too_many_arguments)]
    pub fn of_run(
        topology: &str,
        options: &Options,
        outcome: &Outcome,
        service: &Scrape,
        job: &Scrape,
        usages: &[(u64, f64)],
        bytes_per_pending_item: Option<f64>,
        hbase_items: Option<usize>,
    ) -> Self {
        let seconds = outcome.elapsed.as_secs_f64().max(0.001);
        let ok_requests = outcome.statuses.get(&200).copied().unwrap_or(0);
        let messages = service.sum("histflow_kafka_messages_total", &[]);
        let cells = job.sum("histflow_persist_cells_total", &[]);
        let lag = |quantile: &str| job.quantile("histflow_persist_durable_lag_seconds", quantile).map(|seconds| seconds * 1000.0);
        let latency = &outcome.latency_us;
        let (mode, rate) = match options.pace() {
            Pace::Closed => ("closed", None),
            Pace::Open { events_per_s } => ("open", Some(events_per_s)),
        };
        Figures {
            topology: topology.to_owned(),
            batch: options.batch,
            mode,
            rate,
            duration_s: seconds,
            events_sent: outcome.events_sent,
            events_acked: outcome.events_acked,
            events_per_sec: outcome.events_acked as f64 / seconds,
            requests_per_sec: ok_requests as f64 / seconds,
            p50_ms: ms(latency, 0.5),
            p90_ms: ms(latency, 0.9),
            p99_ms: ms(latency, 0.99),
            p999_ms: ms(latency, 0.999),
            max_ms: latency.max() as f64 / 1000.0,
            errors: outcome
                .statuses
                .iter()
                .filter(|(status, _)| **status != 200)
                .map(|(status, count)| (status.to_string(), *count))
                .collect(),
            events_per_kafka_message: (messages > 0.0).then(|| outcome.events_acked as f64 / messages),
            events_per_hbase_cell: (cells > 0.0).then(|| outcome.events_acked as f64 / cells),
            durable_lag_p50_ms: lag("0.5"),
            durable_lag_p99_ms: lag("0.99"),
            rss_peak_bytes: (!usages.is_empty()).then(|| usages.iter().map(|(rss, _)| rss).sum()),
            cpu_seconds: (!usages.is_empty()).then(|| usages.iter().map(|(_, cpu)| cpu).sum()),
            bytes_per_pending_item,
            posted_items: outcome.items_acked.len(),
            hbase_items,
            redis_cost: None,
            latency_us: Some(latency.clone()),
        }
    }

    /// The Redis ceiling's figures (events/s only).
    pub fn ceiling(name: &str, events_per_sec: f64, redis_cost: Option<Cost>) -> Self {
        Figures {
            topology: name.to_owned(),
            batch: 0,
            mode: "closed",
            rate: None,
            duration_s: 0.0,
            events_sent: 0,
            events_acked: 0,
            events_per_sec,
            requests_per_sec: 0.0,
            p50_ms: 0.0,
            p90_ms: 0.0,
            p99_ms: 0.0,
            p999_ms: 0.0,
            max_ms: 0.0,
            errors: BTreeMap::new(),
            events_per_kafka_message: None,
            events_per_hbase_cell: None,
            durable_lag_p50_ms: None,
            durable_lag_p99_ms: None,
            rss_peak_bytes: None,
            cpu_seconds: None,
            bytes_per_pending_item: None,
            posted_items: 0,
            hbase_items: None,
            redis_cost,
            latency_us: None,
        }
    }
}

fn or_dash(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{value:.digits$}"))
}

/// The name of the minimal scripted write's figures.
pub const MINIMAL_WRITE: &str = "minimal-scripted-write";

/// Prints the table and the ratios.
pub fn print(runs: &[Figures], options: &Options) {
    println!(
        "workload: {} users x {} items, {} businesses, batch {}, {} connections, {}, {:?}",
        options.users,
        options.items_per_user,
        options.businesses,
        options.batch,
        options.connections,
        match options.pace() {
            Pace::Closed => "closed loop".to_owned(),
            Pace::Open { events_per_s } => format!("open loop at {events_per_s:.0} events/s"),
        },
        options.duration
    );
    println!(
        "{:<22} {:>11} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8} {:>8} {:>9} {:>8} {:>7} {:>10}",
        "topology",
        "events/s",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p99.9",
        "max ms",
        "errors",
        "ev/msg",
        "ev/cell",
        "lag p99 s",
        "RSS MiB",
        "CPU s",
        "HBase ok"
    );
    for run in runs {
        let errors: u64 = run.errors.values().sum();
        let durable = match run.hbase_items {
            Some(found) if found == run.posted_items => "yes".to_owned(),
            Some(found) => format!("{found}/{}", run.posted_items),
            None => "-".to_owned(),
        };
        println!(
            "{:<22} {:>11.0} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>8} {:>8} {:>9} {:>8} {:>7} {:>10}",
            run.topology,
            run.events_per_sec,
            run.requests_per_sec,
            run.p50_ms,
            run.p99_ms,
            run.p999_ms,
            run.max_ms,
            errors,
            or_dash(run.events_per_kafka_message, 1),
            or_dash(run.events_per_hbase_cell, 2),
            or_dash(run.durable_lag_p99_ms.map(|ms| ms / 1000.0), 1),
            or_dash(run.rss_peak_bytes.map(|bytes| bytes as f64 / 1_048_576.0), 0),
            or_dash(run.cpu_seconds, 1),
            durable
        );
    }
    for run in runs {
        if let Some(cost) = &run.redis_cost {
            println!("{}: {}", run.topology, cost.describe());
        }
    }
    if let Some(bytes) = runs.iter().find_map(|run| run.bytes_per_pending_item) {
        println!("aggregate memory per pending item: {bytes:.1} bytes");
    }
    let find = |name: &str| runs.iter().find(|run| run.topology == name);
    if let Some(histflow) = runs.first().filter(|run| run.latency_us.is_some()) {
        if let Some(naive) = find("naive") {
            println!("histflow / naive (events/s):           {:.2}", histflow.events_per_sec / naive.events_per_sec.max(1e-9));
        }
        if let Some(ingest) = find("ingest-only") {
            println!("histflow / ingest-only (requests/s):   {:.2}", histflow.requests_per_sec / ingest.requests_per_sec.max(1e-9));
        }
        if let Some(ceiling) = find("redis-ceiling") {
            println!("histflow / Redis ceiling (events/s):   {:.2}", histflow.events_per_sec / ceiling.events_per_sec.max(1e-9));
        }
    }
    if let (Some(histflow), Some(minimal)) = (runs.first().filter(|run| run.latency_us.is_some()), find(MINIMAL_WRITE)) {
        if let (Some(cost), Some(yardstick)) = (&histflow.redis_cost, &minimal.redis_cost) {
            println!(
                "Redis CPU per event, service and job: {:.1} us; the minimal scripted write: {:.1} us; ratio {:.2}",
                cost.cpu_us_per_event,
                yardstick.cpu_us_per_event,
                cost.cpu_us_per_event / yardstick.cpu_us_per_event.max(1e-9)
            );
        }
        if histflow.events_per_sec > 0.0 {
            println!(
                "each user reported once every {:.1} s (the production regime: at most once per aggregate window)",
                options.users as f64 / histflow.events_per_sec
            );
        }
    }
    if let (Some(marked), Some(unmarked)) = (find("redis-ceiling"), find("redis-ceiling-no-marks")) {
        println!("Redis ceiling with / without marks:    {:.2}", marked.events_per_sec / unmarked.events_per_sec.max(1e-9));
    }
}

/// Counts the (user, item) cells of the history table, through Thrift.
pub async fn count_hbase_items(port: u16) -> anyhow::Result<usize> {
    Ok(history_cells(port).await?.len())
}

/// Every record cell of the history table on the HBase-compatible server
/// at `port`: (row, column) -> value.
pub async fn history_cells(port: u16) -> anyhow::Result<BTreeMap<(Vec<u8>, Vec<u8>), Vec<u8>>> {
    tokio::task::spawn_blocking(move || {
        use hbase_thrift::hbase::{HbaseSyncClient, THbaseSyncClient};
        use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
        use thrift::transport::{TBufferedReadTransport, TBufferedWriteTransport, TIoChannel, TTcpChannel};
        let mut channel = TTcpChannel::new();
        channel.open(format!("127.0.0.1:{port}"))?;
        let (read, write) = channel.split()?;
        let mut client = HbaseSyncClient::new(
            TBinaryInputProtocol::new(TBufferedReadTransport::new(read), true),
            TBinaryOutputProtocol::new(TBufferedWriteTransport::new(write), true),
        );
        let mut cells = BTreeMap::new();
        if !client.get_table_names()?.contains(&b"history".to_vec()) {
            return anyhow::Ok(cells);
        }
        let scanner = client.scanner_open(b"history".to_vec(), Vec::new(), vec![b"r".to_vec()], BTreeMap::new())?;
        loop {
            let rows = client.scanner_get_list(scanner, 1000)?;
            if rows.is_empty() {
                break;
            }
            for row in rows {
                let key = row.row.unwrap_or_default();
                for (column, cell) in row.columns.unwrap_or_default() {
                    cells.insert((key.clone(), column), cell.value.unwrap_or_default());
                }
            }
        }
        client.scanner_close(scanner)?;
        anyhow::Ok(cells)
    })
    .await?
}

/// Writes an SVG chart of each run's latency against percentile.
pub fn plot(runs: &[Figures], path: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let quantiles = [0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999];
    let nines = |quantile: f64| -(1.0 - quantile).max(1e-4).log10();
    let series: Vec<(&str, Vec<(f64, f64)>)> = runs
        .iter()
        .filter_map(|run| {
            let latency = run.latency_us.as_ref()?;
            Some((run.topology.as_str(), quantiles.iter().map(|&q| (nines(q), ms(latency, q).max(0.01))).collect()))
        })
        .collect();
    anyhow::ensure!(!series.is_empty(), "no run has latencies to plot");
    let top = series.iter().flat_map(|(_, points)| points.iter().map(|(_, y)| *y)).fold(1.0f64, f64::max) * 1.5;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("histflow: latency by percentile", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0f64..4.0f64, (0.01f64..top).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| format!("{:.4}%", (1.0 - 10f64.powf(-x)) * 100.0))
        .draw()?;
    for (index, (name, points)) in series.into_iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
    root.present()?;
    Ok(())
}
