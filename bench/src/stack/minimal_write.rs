//! The yardstick of the production regime: a minimal scripted write, one
//! `EVALSHA` doing `HSET` + `ZADD` on random keys, pipelined 16 deep on a
//! few connections at a fresh Redis (what `redis-benchmark -P 16` does with
//! the same script). Its Redis CPU per event, measured in the same run as
//! histflow, is what histflow's per-event Redis cost is compared with.

use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};

use super::redis_cost::{Cost, Sample};

/// The script: one record and one timeline entry.
const SCRIPT: &str = "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]); return redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])";
/// Calls in one pipeline, as `redis-benchmark -P 16`.
const PIPELINE: usize = 16;
/// Connections writing at once.
const CONNECTIONS: usize = 4;

/// Writes for `duration` at `redis_url` (a fresh Redis: its keys are
/// random); answers the events written, events/s and the cost per event.
pub async fn measure(redis_url: &str, duration: Duration) -> anyhow::Result<(u64, f64, Option<Cost>)> {
    let client = redis::Client::open(redis_url)?;
    let script = redis::Script::new(SCRIPT);
    let mut load = client.get_multiplexed_async_connection().await?;
    let _: String = script.prepare_invoke().load_async(&mut load).await?;
    let before = Sample::of(redis_url).await?;
    let started = Instant::now();
    let mut writers = FuturesUnordered::new();
    for writer in 0..CONNECTIONS as u64 {
        let client = client.clone();
        let hash = script.get_hash().to_owned();
        writers.push(async move {
            let mut connection = client.get_multiplexed_async_connection().await?;
            let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ (writer + 1);
            let mut written = 0u64;
            while started.elapsed() < duration {
                let mut pipeline = redis::pipe();
                for _ in 0..PIPELINE {
                    // xorshift: a random user and item for each write.
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let (user, item) = (state % 10_000_000, (state >> 32) % 1000);
                    pipeline
                        .cmd("EVALSHA")
                        .arg(&hash)
                        .arg(2)
                        .arg(format!("h:{{{user}}}:r"))
                        .arg(format!("h:{{{user}}}:t"))
                        .arg(format!("archive:{item}"))
                        .arg("a record of about forty bytes, as histflow's")
                        .arg(model::now_ms())
                        .ignore();
                }
                let () = pipeline.query_async(&mut connection).await?;
                written += PIPELINE as u64;
            }
            Ok::<u64, anyhow::Error>(written)
        });
    }
    let mut events = 0;
    while let Some(written) = writers.next().await {
        events += written?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cost = before.cost_until(&Sample::of(redis_url).await?, events);
    Ok((events, events as f64 / elapsed, cost))
}
