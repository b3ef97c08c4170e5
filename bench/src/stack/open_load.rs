//! The open-loop load of the fault benches (`crash`, `faults`): a request
//! of `batch` events every `batch / rate` seconds, users in turn, each
//! user moving to its next item every `reports_per_item` reports; what was
//! acknowledged, and latency and failures per phase of the run (a phase is
//! whatever the bench says is going on: normal, or a fault in progress).
//! Then, against the history table: which acknowledged reports are
//! durable.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Requests in flight at most; more wait (and count from their intended
/// send time).
const MAX_IN_FLIGHT: usize = 256;

/// The load's shape.
#[derive(Debug, Clone, Copy)]
pub struct LoadShape {
    /// Users reporting.
    pub users: u64,
    /// Events a second.
    pub rate: f64,
    /// Events per request.
    pub batch: usize,
    /// Reports of one item before its user moves to the next.
    pub reports_per_item: u64,
    /// How long to load.
    pub duration: Duration,
}

/// One acknowledged report: the newest view_at a 200 acknowledged as
/// recorded, and the phase in which that was.
#[derive(Debug, Clone, Copy)]
pub struct Acknowledged {
    /// The view_at.
    pub view_at: i64,
    /// The phase it was acknowledged in.
    pub phase: usize,
}

/// What the load saw, per phase.
pub struct OpenLoad {
    /// (uid, item) -> newest acknowledged view.
    pub acknowledged: Mutex<BTreeMap<(u64, String), Acknowledged>>,
    /// Latency of answered requests (µs from the intended send time), per
    /// phase the request was intended in.
    pub latency: Vec<Mutex<Histogram<u64>>>,
    /// Requests not answered 200 (refused connections, 503s), per phase.
    pub failed: Vec<AtomicU64>,
    /// The phase now.
    pub phase: AtomicUsize,
    /// Set to end the load before its duration.
    pub stopped: std::sync::atomic::AtomicBool,
}

impl OpenLoad {
    /// A load whose runs have `phases` phases (0 first).
    pub fn new(phases: usize) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(OpenLoad {
            acknowledged: Mutex::new(BTreeMap::new()),
            latency: (0..phases).map(|_| Histogram::new(3).map(Mutex::new)).collect::<Result<_, _>>()?,
            failed: (0..phases).map(|_| AtomicU64::new(0)).collect(),
            phase: AtomicUsize::new(0),
            stopped: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// Enters `phase`.
    pub fn enter(&self, phase: usize) {
        self.phase.store(phase.min(self.failed.len() - 1), Ordering::Relaxed);
    }

    /// Ends the load at its next request (before its duration).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    /// A copy of what was acknowledged so far.
    pub fn acknowledged(&self) -> BTreeMap<(u64, String), Acknowledged> {
        self.acknowledged.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The latency histogram of `phase`.
    pub fn latency(&self, phase: usize) -> Histogram<u64> {
        self.latency[phase].lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Failed requests of `phase`.
    pub fn failed(&self, phase: usize) -> u64 {
        self.failed[phase].load(Ordering::Relaxed)
    }

    /// Drives `base`'s `POST /v1/events` at the shape's rate for its
    /// duration (or until [`OpenLoad::stop`]), then waits for the requests
    /// in flight.
    pub async fn drive(self: &Arc<Self>, shape: LoadShape, http: &reqwest::Client, base: &str) {
        let url = format!("{base}/v1/events");
        let mut tick = tokio::time::interval(Duration::from_secs_f64(shape.batch as f64 / shape.rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
        let started = Instant::now();
        let mut sent: u64 = 0;
        while started.elapsed() < shape.duration && !self.stopped.load(Ordering::Relaxed) {
            tick.tick().await;
            let intended = Instant::now();
            let view_at = model::now_ms();
            // (uid, oid) of each event.
            let events: Vec<(u64, u64)> = (sent..sent + shape.batch as u64)
                .map(|report| (1 + report % shape.users, report / shape.users / shape.reports_per_item))
                .collect();
            sent += shape.batch as u64;
            let body: Vec<Value> = events
                .iter()
                .map(|(uid, oid)| json!({"uid": uid, "business": "archive", "oid": oid, "progress": 1, "view_at": view_at}))
                .collect();
            let Ok(slot) = slots.clone().acquire_owned().await else { break };
            let (http, url, load) = (http.clone(), url.clone(), self.clone());
            let phase = self.phase.load(Ordering::Relaxed);
            tokio::spawn(async move {
                let _slot = slot;
                let answer = http.post(&url).json(&json!({ "events": body })).send().await;
                let results = match answer {
                    Ok(answer) if answer.status() == 200 => answer.json::<Value>().await.ok(),
                    _ => None,
                };
                let Some(results) = results else {
                    load.failed[phase].fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let micros = intended.elapsed().as_micros() as u64;
                let _ = load.latency[phase].lock().unwrap_or_else(PoisonError::into_inner).record(micros.max(1));
                let answered_in = load.phase.load(Ordering::Relaxed);
                let recorded = results["results"].as_array().cloned().unwrap_or_default();
                let mut acknowledged = load.acknowledged.lock().unwrap_or_else(PoisonError::into_inner);
                for ((uid, oid), result) in events.into_iter().zip(recorded) {
                    if result["recorded"] == true {
                        let newest =
                            acknowledged.entry((uid, format!("archive:{oid}"))).or_insert(Acknowledged { view_at, phase: answered_in });
                        if view_at > newest.view_at {
                            *newest = Acknowledged { view_at, phase: answered_in };
                        }
                    }
                }
            });
        }
        let _ = slots.acquire_many(MAX_IN_FLIGHT as u32).await;
    }
}

/// The history table's record cells: (row, column) -> value.
pub type Cells = BTreeMap<(Vec<u8>, Vec<u8>), Vec<u8>>;

/// What the table held when the wait for it ended.
pub struct Settled {
    /// The table's record cells then.
    pub cells: Cells,
    /// Acknowledged reports durable then.
    pub durable: usize,
}

impl Settled {
    /// Scans the table on the HBase-compatible server at `hbase_port`
    /// every 2 s until every report of `acknowledged` is durable, or the
    /// durable count has not changed for `quiet`, or `timeout` passed.
    pub async fn wait(
        hbase_port: u16,
        acknowledged: &BTreeMap<(u64, String), Acknowledged>,
        quiet: Duration,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let deadline = Instant::now() + timeout;
        let (mut previous, mut unchanged_since) = (usize::MAX, Instant::now());
        loop {
            let cells = super::report::history_cells(hbase_port).await?;
            let durable =
                acknowledged.iter().filter(|((uid, item), acknowledged)| is_durable(&cells, *uid, item, acknowledged.view_at)).count();
            if durable != previous {
                (previous, unchanged_since) = (durable, Instant::now());
            }
            if durable == acknowledged.len() || unchanged_since.elapsed() >= quiet || Instant::now() >= deadline {
                return Ok(Settled { cells, durable });
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

/// The acknowledged reports the history table holds at their view_at or a
/// newer one, of `cells` (from [`super::report::history_cells`]).
pub fn is_durable(cells: &Cells, uid: u64, item: &str, view_at: i64) -> bool {
    cells
        .get(&(model::keys::hbase_row(uid).into_bytes(), format!("r:{item}").into_bytes()))
        .and_then(|value| model::codec::decode_record(value).ok())
        .is_some_and(|record| record.view_at >= view_at)
}

/// Milliseconds of `quantile` of `histogram`, `None` when it is empty.
pub fn quantile_ms(histogram: &Histogram<u64>, quantile: f64) -> Option<f64> {
    (!histogram.is_empty()).then(|| histogram.value_at_quantile(quantile) as f64 / 1000.0)
}
