//! The storage ceiling: histflow's realtime write (the same Lua script,
//! key layout and call shape) pipelined straight at Redis, with no HTTP in
//! between: the most events a second the Redis behind histflow can record.
//! Measured with the pending marks the service writes, and without them (a
//! topology with nothing downstream to settle them), which is what the
//! crash-safety costs Redis. (The marks' settling after delivery and the
//! re-drive are not in it.)

use std::time::{Duration, Instant};

use backends::user_state::{CallShape, RedisStore, UserStore, WriteParams};
use futures::stream::{FuturesUnordered, StreamExt};
use model::{keys, Op, Record};
use stages::realtime::group::group_by_user;

use super::workload::{Reporter, Shape, BUSINESSES};

/// Events a commit carries and commits in flight: the realtime stage's
/// defaults (`group_commit_max_events`, `max_in_flight_commits`).
const COMMIT_EVENTS: usize = 256;
const IN_FLIGHT: usize = 4;
/// The pending index's shards: the shipped topology's aggregate shards.
const SHARDS: u32 = 16;

/// Writes the workload's events to `redis_url` for `duration`, marking
/// them pending if `marks`; returns the events written and events/s.
pub async fn measure(redis_url: &str, shape: &Shape, duration: Duration, marks: bool) -> anyhow::Result<(u64, f64)> {
    let store = UserStore::Redis(RedisStore::connect_lazy(redis_url, CallShape { cluster: false, max_events: 128 })?);
    let mut reporter = Reporter::new(shape, 0, 1);
    let started = Instant::now();
    let mut written = 0u64;
    let mut in_flight = FuturesUnordered::new();
    while started.elapsed() < duration || !in_flight.is_empty() {
        while in_flight.len() < IN_FLIGHT && started.elapsed() < duration {
            let ops: Vec<Op> = (0..COMMIT_EVENTS)
                .filter_map(|_| reporter.next_report())
                .map(|report| {
                    Op::Upsert(Record {
                        uid: report.uid,
                        business: BUSINESSES[report.business].to_owned(),
                        oid: report.oid,
                        sub_id: None,
                        progress: report.progress,
                        duration: None,
                        device: Some("bench".to_owned()),
                        view_at: model::now_ms(),
                    })
                })
                .collect();
            let (users, _) = group_by_user([ops.as_slice()]);
            let now = model::now_ms();
            let params = WriteParams { max_items: 1000, ttl_s: 90 * 86_400, today: keys::utc_day(now), now_ms: now, shards: SHARDS, marks };
            let store = store.clone();
            let events = ops.len() as u64;
            in_flight.push(async move { store.write(&users, params).await.map(|_| events) });
        }
        if let Some(done) = in_flight.next().await {
            written += done?;
        }
    }
    Ok((written, written as f64 / started.elapsed().as_secs_f64()))
}
