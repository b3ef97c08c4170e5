//! The workload: users reporting playback progress on their current item,
//! moving to another item now and then, sent in requests of `batch`
//! events from `connections` clients, closed-loop (each client sends when
//! its answer came) or open-loop at a fixed rate, where latency counts from
//! the intended send time, so a stalled server is not hidden by clients
//! that stopped sending (no coordinated omission).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::load::Rng;

/// The businesses events are spread over, in order.
pub const BUSINESSES: [&str; 4] = ["archive", "pgc", "article", "comic"];

/// What the events look like.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Users reporting.
    pub users: u64,
    /// Items each user moves through.
    pub items_per_user: u64,
    /// Businesses used (1..=4).
    pub businesses: usize,
    /// Progress seconds between two reports of one user.
    pub heartbeat_s: i64,
    /// A user moves to another item every this many reports on average.
    pub switch_every: u64,
    /// First uid.
    pub first_uid: u64,
}

/// One report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// User.
    pub uid: u64,
    /// Index into [`BUSINESSES`].
    pub business: usize,
    /// Object id.
    pub oid: u64,
    /// Seconds watched.
    pub progress: i64,
}

/// A client's share of the users (every `clients`-th one), each on its
/// current item: reports go round the users, so each user reports evenly
/// spaced, as a heartbeat does.
pub struct Reporter {
    shape: Shape,
    users: Vec<(u64, u64, i64)>,
    next: usize,
    rng: Rng,
    /// Every (uid, business, oid) reported.
    pub seen: HashSet<(u64, usize, u64)>,
}

impl Reporter {
    /// The reporter of client `index` of `clients`.
    pub fn new(shape: &Shape, index: usize, clients: usize) -> Self {
        let users = (0..shape.users)
            .filter(|user| (*user as usize) % clients == index)
            .map(|user| (shape.first_uid + user, (user * 7) % shape.items_per_user.max(1), 0))
            .collect();
        Reporter { shape: shape.clone(), users, next: 0, rng: Rng(0x9e37_79b9_7f4a_7c15 ^ (index as u64 + 1)), seen: HashSet::new() }
    }

    /// The next report, or `None` when this client has no users.
    pub fn next_report(&mut self) -> Option<Report> {
        if self.users.is_empty() {
            return None;
        }
        let slot = self.next % self.users.len();
        self.next += 1;
        let switch = self.shape.switch_every.max(1);
        let (uid, oid, progress) = &mut self.users[slot];
        if self.rng.next().is_multiple_of(switch) {
            *oid = (*oid + 1) % self.shape.items_per_user.max(1);
            *progress = 0;
        }
        *progress += self.shape.heartbeat_s;
        let business = (*oid as usize) % self.shape.businesses.clamp(1, BUSINESSES.len());
        let report = Report { uid: *uid, business, oid: *oid, progress: *progress };
        self.seen.insert((report.uid, report.business, report.oid));
        Some(report)
    }
}

fn event_json(report: &Report) -> Value {
    json!({"uid": report.uid, "business": BUSINESSES[report.business], "oid": report.oid, "progress": report.progress, "device": "bench"})
}

/// How requests are paced.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Each client sends when its answer came.
    Closed,
    /// Requests at fixed intended times, `events_per_s` in all.
    Open {
        /// Events per second.
        events_per_s: f64,
    },
}

/// When to stop.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// Stop sending after this long.
    pub duration: Duration,
    /// Or after this many events (whichever first).
    pub events: Option<u64>,
}

/// What the clients saw.
pub struct Outcome {
    /// Latency of answered requests, microseconds.
    pub latency_us: Histogram<u64>,
    /// Answers by HTTP status (0: transport error).
    pub statuses: BTreeMap<u16, u64>,
    /// Events in 200 answers.
    pub events_acked: u64,
    /// Events sent.
    pub events_sent: u64,
    /// Wall time from the first send to the last answer.
    pub elapsed: Duration,
    /// Distinct (uid, business, oid) acknowledged.
    pub items_acked: HashSet<(u64, usize, u64)>,
}

/// Live counters for the progress bar.
#[derive(Debug, Default)]
pub struct Live {
    /// Events acknowledged so far.
    pub acked: AtomicU64,
    /// Requests that did not get 200.
    pub errors: AtomicU64,
}

/// Drives `urls` (`.../v1/events` of each service instance) with
/// `clients` clients, client i on `urls[i % urls.len()]`.
pub async fn drive(
    urls: &[String],
    shape: &Shape,
    batch: usize,
    clients: usize,
    pace: Pace,
    limit: Limit,
    live: Arc<Live>,
) -> anyhow::Result<Outcome> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(clients).build()?;
    let started = Instant::now();
    let end = started + limit.duration;
    let budget = Arc::new(AtomicU64::new(limit.events.unwrap_or(u64::MAX)));
    let interval = match pace {
        Pace::Closed => None,
        Pace::Open { events_per_s } => Some(Duration::from_secs_f64(batch as f64 / events_per_s.max(0.001))),
    };
    let mut tasks = Vec::new();
    for index in 0..clients {
        let url = urls.get(index % urls.len().max(1)).cloned().unwrap_or_default();
        let (http, live, budget) = (http.clone(), live.clone(), budget.clone());
        let mut reporter = Reporter::new(shape, index, clients);
        tasks.push(tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            let (mut sent, mut acked) = (0u64, 0u64);
            let mut items_acked = HashSet::new();
            let mut slot = index as u32;
            let mut free_since = started;
            loop {
                // Open loop: this client's next slot is every clients-th.
                // Latency counts from the slot's time when the client was
                // still busy with its previous request then (the server
                // held it up: no coordinated omission); otherwise from the
                // actual send, so the timer's own lateness (tokio's
                // millisecond wheel) is not blamed on the server.
                let intended = match interval {
                    Some(interval) => {
                        let at = started + interval * slot;
                        slot += clients as u32;
                        if at >= end {
                            break;
                        }
                        tokio::time::sleep_until(at.into()).await;
                        if free_since <= at {
                            Instant::now()
                        } else {
                            at
                        }
                    }
                    None => Instant::now(),
                };
                if Instant::now() >= end {
                    break;
                }
                let wanted = batch as u64;
                if budget.fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(wanted)).is_err() {
                    break;
                }
                let reports: Vec<Report> = (0..batch).filter_map(|_| reporter.next_report()).collect();
                if reports.is_empty() {
                    break;
                }
                let body = if reports.len() == 1 {
                    event_json(&reports[0])
                } else {
                    json!({ "events": reports.iter().map(event_json).collect::<Vec<_>>() })
                };
                sent += reports.len() as u64;
                let status = match http.post(&url).json(&body).send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let _ = response.bytes().await;
                        status
                    }
                    Err(_) => 0,
                };
                latency.saturating_record(intended.elapsed().as_micros().max(1) as u64);
                free_since = Instant::now();
                *statuses.entry(status).or_default() += 1;
                if status == 200 {
                    acked += reports.len() as u64;
                    live.acked.fetch_add(reports.len() as u64, Ordering::Relaxed);
                    items_acked.extend(reports.iter().map(|r| (r.uid, r.business, r.oid)));
                } else {
                    live.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok((latency, statuses, sent, acked, items_acked))
        }));
    }
    let mut outcome = Outcome {
        latency_us: Histogram::new_with_bounds(1, 120_000_000, 3)?,
        statuses: BTreeMap::new(),
        events_acked: 0,
        events_sent: 0,
        elapsed: Duration::ZERO,
        items_acked: HashSet::new(),
    };
    for task in tasks {
        let (latency, statuses, sent, acked, items) = task.await??;
        outcome.latency_us.add(&latency)?;
        for (status, count) in statuses {
            *outcome.statuses.entry(status).or_default() += count;
        }
        outcome.events_sent += sent;
        outcome.events_acked += acked;
        outcome.items_acked.extend(items);
    }
    outcome.elapsed = started.elapsed();
    Ok(outcome)
}
