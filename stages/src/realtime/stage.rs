//! The realtime stage's loop: group commit.
//!
//! Batches from many concurrent requests are gathered into one commit (up
//! to `group_commit_max_events`; whatever is already queued, plus an
//! optional linger) and written in one Redis pipeline. Up to
//! `max_in_flight_commits` commits overlap on the multiplexed connection,
//! so while Redis is busy the next commit grows instead of waiting. Commits
//! finish in order: each request's ack gets its own events' results, the
//! recorded events go downstream, first watches are broadcast. A failed
//! commit answers its requests with an error (503), forwards nothing, and
//! the connection manager reconnects behind it. (What such a commit did
//! apply is marked all the same, and the re-drive ships it.)

use std::time::Duration;

use backends::user_state::{result_of, trimmed_at_once, Status, StoreError, UserStore, WriteParams, NOT_RECORDED};
use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, StreamExt};
use futures::FutureExt;
use model::{keys, Batch, EventResult, Op};
use pipeline::health::Dependency;
use pipeline::{Input, Stage, StageContext, StageFuture};
use tokio_util::task::AbortOnDropHandle;

use super::broadcast::Broadcast;
use super::events::{CommitFailed, CommitSucceeded};
use super::group::{group_by_user, Placement};
use super::redrive::Redrive;

/// A built realtime stage.
pub struct RealtimeStage {
    /// Redis or the embedded store.
    pub store: UserStore,
    /// Where first watches are announced.
    pub broadcast: Broadcast,
    /// Timeline length kept per user.
    pub max_items: usize,
    /// The business registry: key expiry after inactivity (the longest
    /// retention), read at each commit.
    pub registry: crate::registry::LiveRegistry,
    /// Shards of the downstream aggregate (re-drive index).
    pub shards: u32,
    /// Most events per commit.
    pub max_events: usize,
    /// Commits in flight at once.
    pub max_in_flight: usize,
    /// Extra wait for more events when a commit is not full.
    pub linger: Duration,
    /// Readiness: whether the store answers (probed every second).
    pub readiness: Option<Dependency>,
    /// Keep marks (a Kafka producer downstream settles them).
    pub marks: bool,
    /// The re-drive of stale marks; `None`: off.
    pub redrive: Option<Redrive>,
}

/// A commit that has finished (or failed).
struct Committed {
    batches: Vec<Batch>,
    placement: Placement,
    /// The upserts' statuses, per user.
    outcome: Result<Vec<Vec<Status>>, StoreError>,
    /// The effective times of the deletes, clears and switches, in order.
    mutated: Result<Vec<i64>, StoreError>,
    today: i64,
}

fn is_mutation(op: &Op) -> bool {
    !matches!(op, Op::Upsert(_) | Op::UpsertRef { .. })
}

impl RealtimeStage {
    /// Takes what is already queued (and, with a linger, what arrives
    /// soon) until the commit holds `max_events`.
    async fn gather(&self, first: Batch, input: &mut Input<Batch>, open: &mut bool) -> Vec<Batch> {
        let mut events = first.ops.len();
        let mut batches = vec![first];
        let deadline = tokio::time::Instant::now() + self.linger;
        while events < self.max_events {
            let next = match input.recv().now_or_never() {
                Some(next) => next,
                None if self.linger.is_zero() => break,
                None => match tokio::time::timeout_at(deadline, input.recv()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
            };
            match next {
                Some(batch) => {
                    events += batch.ops.len();
                    batches.push(batch);
                }
                None => {
                    *open = false;
                    break;
                }
            }
        }
        batches
    }

    fn commit(&self, batches: Vec<Batch>) -> BoxFuture<'static, Committed> {
        let store = self.store.clone();
        let now = model::now_ms();
        let params = WriteParams {
            max_items: self.max_items,
            ttl_s: self.registry.key_ttl_s(),
            today: keys::utc_day(now),
            now_ms: now,
            shards: self.shards,
            marks: self.marks,
        };
        async move {
            let (users, placement) = group_by_user(batches.iter().map(|batch| batch.ops.as_slice()));
            let outcome = match store.write(&users, params).await {
                Ok(statuses) if statuses.len() == users.len() && statuses.iter().zip(&users).all(|(s, u)| s.len() == u.events.len()) => {
                    Ok(statuses)
                }
                Ok(_) => Err(StoreError("the store answered with the wrong number of results".to_owned())),
                Err(error) => Err(error),
            };
            // Deletes, clears and switches (from the read-and-mutation
            // API), after the upserts, in arrival order.
            let mutations: Vec<&Op> = batches.iter().flat_map(|batch| batch.ops.iter()).filter(|op| is_mutation(op)).collect();
            let mutated = if mutations.is_empty() { Ok(Vec::new()) } else { store.mutate(&mutations, params).await };
            Committed { batches, placement, outcome, mutated, today: params.today }
        }
        .boxed()
    }

    /// Answers the requests of a finished commit and forwards what it
    /// recorded.
    async fn finish(&self, committed: Committed, cx: &StageContext<Batch>) -> Result<(), pipeline::StageError> {
        let Committed { batches, placement, outcome, mutated, today } = committed;
        for error in [outcome.as_ref().err(), mutated.as_ref().err()].into_iter().flatten() {
            CommitFailed { stage: &cx.name, error }.emit(&cx.metrics);
        }
        if outcome.is_ok() && mutated.is_ok() {
            CommitSucceeded { events: batches.iter().map(|batch| batch.ops.len()).sum() }.emit();
        }
        let mut effective_times = mutated.as_ref().map(|times| times.iter().copied()).ok();
        let mut forward = Vec::new();
        // Recorded, but trimmed by their own write: only HBase will hold
        // them, so their records travel whole even in `ids` mode.
        let mut forward_whole = Vec::new();
        for (batch, places) in batches.into_iter().zip(placement) {
            // A batch fails as a whole when a write it needs failed.
            let failed = batch.ops.iter().find_map(|op| match (is_mutation(op), &outcome, &mutated) {
                (false, Err(error), _) | (true, _, Err(error)) => Some(error.to_string()),
                _ => None,
            });
            if let Some(error) = failed {
                // Keep the effective times in step with the ops.
                let skipped = batch.ops.iter().filter(|op| is_mutation(op)).count();
                if let Some(times) = effective_times.as_mut() {
                    times.by_ref().take(skipped).for_each(drop);
                }
                if let Some(ack) = &batch.ack {
                    ack.complete(Err(error));
                }
                continue;
            }
            let mut results = Vec::with_capacity(batch.ops.len());
            for (mut op, (user, event)) in batch.ops.into_iter().zip(places) {
                if is_mutation(&op) {
                    // Forward it with the time the store applied, so HBase
                    // hides exactly what Redis removed.
                    let effective = effective_times.as_mut().and_then(Iterator::next);
                    if let (Some(effective), Op::Delete { at, .. } | Op::Clear { at, .. } | Op::SetRecording { at, .. }) =
                        (effective, &mut op)
                    {
                        *at = effective;
                    }
                    forward.push(op);
                    results.push(EventResult { recorded: true, first_today: false });
                    continue;
                }
                let status = outcome.as_ref().ok().and_then(|statuses| statuses.get(user)).and_then(|events| events.get(event)).copied();
                let result: EventResult = result_of(status.unwrap_or(NOT_RECORDED));
                if result.first_today {
                    if let Op::Upsert(record) = &op {
                        self.broadcast.first_watch(record, today);
                    }
                }
                if status.is_some_and(trimmed_at_once) {
                    forward_whole.push(op);
                } else if result.recorded {
                    forward.push(op);
                }
                results.push(result);
            }
            if let Some(ack) = &batch.ack {
                ack.complete(Ok(results));
            }
        }
        if !forward.is_empty() && cx.output.is_connected() {
            cx.output.send(Batch::of(forward)).await?;
        }
        if !forward_whole.is_empty() && cx.output.is_connected() {
            cx.output.send(Batch { keep_records: true, ..Batch::of(forward_whole) }).await?;
        }
        Ok(())
    }
}

impl Stage<Batch> for RealtimeStage {
    fn run(self: Box<Self>, mut cx: StageContext<Batch>) -> StageFuture {
        async move {
            // Probe the store for /readyz while the stage runs.
            let _probe = self.readiness.clone().map(|readiness| {
                let store = self.store.clone();
                AbortOnDropHandle::new(tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    loop {
                        tick.tick().await;
                        readiness.set_up(store.ping().await);
                    }
                }))
            });
            let _redrive =
                self.redrive.clone().map(|redrive| AbortOnDropHandle::new(tokio::spawn(redrive.run(cx.name.clone(), cx.output.clone()))));
            let mut in_flight: FuturesOrdered<BoxFuture<'static, Committed>> = FuturesOrdered::new();
            let mut open = true;
            loop {
                tokio::select! {
                    biased;
                    Some(committed) = in_flight.next(), if !in_flight.is_empty() => self.finish(committed, &cx).await?,
                    received = cx.input.recv(), if open && in_flight.len() < self.max_in_flight => match received {
                        Some(first) => {
                            let batches = self.gather(first, &mut cx.input, &mut open).await;
                            in_flight.push_back(self.commit(batches));
                        }
                        None => open = false,
                    },
                    else => break,
                }
            }
            Ok(())
        }
        .boxed()
    }
}
