//! The re-drive: every service instance looks, every `redrive_every_ms`,
//! for marks older than the grace (`redrive_after_ms`) — what some instance
//! acknowledged and no delivery ever settled: it was killed, its drain was
//! cut short, or Redis applied a write whose answer was lost — claims them
//! and sends their records (and clears, deletes, switches) whole into the
//! stage's output, the normal aggregate -> Kafka path. A claim stamps the
//! marks, so no instance claims them again within the grace; a delivery
//! settles them as it settles any other.
//!
//! Cost: a pass reads only the index entries that are due (at most
//! `MAX_USERS` a shard a round, up to `MAX_ROUNDS` rounds a pass), and
//! claims at most what those users have pending, many users a script
//! call. A settle leaves its users indexed, so a user that keeps
//! reporting comes due once a grace and costs one look then, instead of
//! an index add and removal with every report. On a Redis Cluster each hash slot has
//! its own index, and a pass also looks once at each index of an eighth
//! of the slots (`backends::user_state`'s slot scan).

use std::sync::Arc;
use std::time::Duration;

use backends::user_state::UserStore;
use model::Batch;
use pipeline::Output;

use super::events::{MarksMeasured, MarksRedriven, RedriveFailed, RedriveUndecodable};

/// Users examined per shard in one round.
const MAX_USERS: usize = 256;
/// Rounds per shard in one pass (the rest waits for the next pass). Every
/// user that keeps reporting comes due once a grace (`settle.lua` leaves
/// it indexed), mostly with nothing to claim: 64 rounds of 256 users a
/// shard let a pass a second over 16 shards look at 262,144 users a
/// second, about 9 million users marking within a 36 s grace.
const MAX_ROUNDS: usize = 64;

/// The re-drive of one realtime stage.
#[derive(Clone)]
pub struct Redrive {
    /// The store holding the marks.
    pub store: UserStore,
    /// Shards of the index (the downstream aggregate's).
    pub shards: u32,
    /// Marks older than this are claimed.
    pub grace: Duration,
    /// How often a pass runs.
    pub every: Duration,
}

impl Redrive {
    /// Runs passes until the task is aborted or `output` is closed.
    pub async fn run(self, stage: Arc<str>, output: Output<Batch>) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for shard in 0..self.shards {
                if !self.pass(shard, &stage, &output).await {
                    return;
                }
            }
            self.measure().await;
        }
    }

    /// Claims and ships the due marks of `shard`; false once the output is
    /// closed.
    async fn pass(&self, shard: u32, stage: &str, output: &Output<Batch>) -> bool {
        let grace_ms = self.grace.as_millis() as i64;
        for _ in 0..MAX_ROUNDS {
            let redriven = match self.store.redrive(shard, self.shards, grace_ms, MAX_USERS).await {
                Ok(redriven) => redriven,
                Err(error) => {
                    RedriveFailed { stage, shard, error: &error }.emit();
                    return true;
                }
            };
            for (uid, item, error) in &redriven.undecodable {
                RedriveUndecodable { stage, uid: *uid, item, error }.emit();
            }
            if redriven.items > 0 {
                MarksRedriven { stage, shard, users: redriven.users, items: redriven.items, missing: redriven.missing }.emit();
            }
            if !redriven.ops.is_empty() && output.send(Batch { keep_records: true, ..Batch::of(redriven.ops) }).await.is_err() {
                return false;
            }
            if redriven.examined < MAX_USERS {
                break;
            }
        }
        true
    }

    async fn measure(&self) {
        if let Ok(stats) = self.store.pending_stats(self.shards).await {
            let oldest_age_s = stats.oldest_ms.map_or(0.0, |oldest| (model::now_ms() - oldest).max(0) as f64 / 1000.0);
            MarksMeasured { users: stats.users, oldest_age_s }.emit();
        }
    }
}
