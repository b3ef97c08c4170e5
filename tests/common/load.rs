//! Closed-loop clients posting new items to `POST /v1/events` until
//! stopped: every item answered `recorded: true` is kept as acknowledged,
//! and every request is counted by how it ended, so a test can ask for
//! "no connection error" or "a refusal happened" alike.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

/// What clients were told was recorded: (uid, item) -> view_at.
pub type Acknowledged = BTreeMap<(u64, String), i64>;

/// How requests ended.
#[derive(Default)]
pub struct Outcomes {
    /// Answered 200.
    pub ok: AtomicU64,
    /// Answered 503 (a full edge, a backend away, a timeout).
    pub unavailable: AtomicU64,
    /// Answered anything else.
    pub other_statuses: AtomicU64,
    /// No answer: refused, reset or timed out on the connection.
    pub connection_errors: AtomicU64,
}

impl Outcomes {
    /// Requests that did not get a 200.
    pub fn refused(&self) -> u64 {
        [&self.unavailable, &self.other_statuses, &self.connection_errors].iter().map(|count| count.load(Ordering::Relaxed)).sum()
    }
}

/// The load's shape.
pub struct Shape {
    /// Concurrent clients.
    pub clients: u64,
    /// New items in each request (one per user).
    pub events_per_request: u64,
    /// Users the items cycle over.
    pub users: u64,
    /// Wait after each answered request.
    pub pace: Duration,
}

/// A running load.
pub struct Load {
    acknowledged: Arc<Mutex<Acknowledged>>,
    /// How its requests ended so far.
    pub outcomes: Arc<Outcomes>,
    stop: Arc<AtomicBool>,
}

impl Load {
    /// Starts `shape.clients` clients against `base`. A failed request is
    /// counted and, after 50 ms, followed by the next one.
    pub fn start(base: &str, shape: Shape) -> Self {
        let load = Load { acknowledged: Arc::default(), outcomes: Arc::default(), stop: Arc::default() };
        let uid_base = super::unique_uid_base();
        for client_index in 0..shape.clients {
            let (base, acknowledged, outcomes, stop) =
                (base.to_owned(), load.acknowledged.clone(), load.outcomes.clone(), load.stop.clone());
            let Shape { events_per_request, users, pace, .. } = shape;
            tokio::spawn(async move {
                let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("HTTP client");
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let view_at = model::now_ms() - 1000;
                    let oid = client_index * 1_000_000 + round;
                    let uids: Vec<u64> = (0..events_per_request).map(|i| uid_base + (round * events_per_request + i) % users).collect();
                    let events: Vec<Value> = uids
                        .iter()
                        .map(|uid| json!({"uid": uid, "business": "archive", "oid": oid, "progress": 1, "view_at": view_at}))
                        .collect();
                    round += 1;
                    let failed = match client.post(format!("{base}/v1/events")).json(&json!({ "events": events })).send().await {
                        Err(error) => {
                            eprintln!("request failed: {error}");
                            Some(&outcomes.connection_errors)
                        }
                        Ok(answer) if answer.status() == 503 => Some(&outcomes.unavailable),
                        Ok(answer) if answer.status() != 200 => {
                            eprintln!("answered {}: {}", answer.status(), answer.text().await.unwrap_or_default());
                            Some(&outcomes.other_statuses)
                        }
                        Ok(answer) => {
                            let answer: Value = answer.json().await.expect("a JSON answer");
                            outcomes.ok.fetch_add(1, Ordering::Relaxed);
                            let results = answer["results"].as_array().expect("results");
                            let mut acknowledged = acknowledged.lock().expect("acknowledged lock");
                            for (uid, result) in uids.iter().zip(results) {
                                if result["recorded"] == true {
                                    acknowledged.insert((*uid, format!("archive:{oid}")), view_at);
                                }
                            }
                            None
                        }
                    };
                    match failed {
                        Some(count) => {
                            count.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        None if !pace.is_zero() => tokio::time::sleep(pace).await,
                        None => {}
                    }
                }
            });
        }
        load
    }

    /// Items acknowledged so far.
    pub fn count(&self) -> usize {
        self.acknowledged.lock().expect("acknowledged lock").len()
    }

    /// Everything acknowledged so far.
    pub fn acknowledged(&self) -> Acknowledged {
        self.acknowledged.lock().expect("acknowledged lock").clone()
    }

    /// Stops every client after its request in flight.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
