//! Backend faults under load, on real processes: a service and a job
//! (`histflow run`), Redis, the tansu broker and the HBase-compatible
//! server. What the README promises must hold through each fault.

// Tests may unwrap: a failure is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::load::{Acknowledged, Load, Shape};
use common::{Histflow, TestCompat, TestRedis, TestTansu};

/// Clients posting 20 new items a request over 500 users.
fn load(base: &str, clients: u64, pace: Duration) -> Load {
    Load::start(base, Shape { clients, events_per_request: 20, users: 500, pace })
}

/// A service (ingest on `http`) and a job of one `ids` topology whose
/// realtime and job stages use `redis` and `brokers`, writing to `compat`.
async fn start_stack(
    compat: &TestCompat,
    redis: &str,
    brokers: &str,
    http: u16,
    topic: &str,
    request_timeout_ms: u64,
) -> (Histflow, Histflow) {
    let topology = common::StackTopology {
        http,
        compat,
        realtime_redis: redis.to_owned(),
        job_redis: Some(redis.to_owned()),
        brokers: brokers.to_owned(),
        topic,
        payload: "ids",
        shutdown_timeout_ms: 15000,
        request_timeout_ms,
        aggregate_flush_ms: 500,
        realtime_extra: String::new(),
        ingest_extra: String::new(),
    }
    .render();
    (common::start_role(&topology, "service", Some(http)).await, common::start_role(&topology, "job", None).await)
}

/// A backend stopped under load until ingest refuses a report, then
/// started again.
struct Outage {
    /// The backend, for messages.
    what: &'static str,
    /// How long until a refusal shows the outage reached ingest.
    refusal_within: Duration,
}

impl Outage {
    /// Four unpaced clients load `service`; after 2,000 acknowledged
    /// items `stop` takes `backend` away, and once a report is refused
    /// `start` brings it back; 2,000 more, and the load stops. Answers
    /// everything acknowledged.
    async fn under_load<B>(&self, service: &Histflow, backend: &mut B, stop: fn(&mut B), start: fn(&mut B)) -> Acknowledged {
        let load = load(&service.base, 4, Duration::ZERO);
        let count = || load.count();
        common::eventually(&format!("load before {} goes away", self.what), Duration::from_secs(60), async || {
            (count() >= 2000).then_some(())
        })
        .await;
        stop(backend);
        let refused_before = load.outcomes.refused();
        common::eventually(&format!("a refusal while {} is away", self.what), self.refusal_within, async || {
            (load.outcomes.refused() > refused_before).then_some(())
        })
        .await;
        start(backend);
        let before_restart = count();
        common::eventually("load after the restart", Duration::from_secs(60), async || (count() >= before_restart + 2000).then_some(()))
            .await;
        load.stop();
        load.acknowledged()
    }
}

/// Waits until every acknowledged item is in the history table; else
/// panics with where the missing ones are (Redis at `redis`, the topic on
/// `brokers`) and the processes' logs.
async fn assert_durable(
    compat: &TestCompat,
    acknowledged: &Acknowledged,
    redis: &str,
    brokers: &str,
    topic: &str,
    service: &Histflow,
    job: &Histflow,
) {
    if let Err(problem) = common::until_durable(compat, acknowledged).await {
        let trace = common::trace::missing(redis, brokers, topic, &problem.missing).await;
        panic!("{problem}\n{trace}--- service:\n{}\n--- job:\n{}", service.log_text(), job.log_text());
    }
}

#[tokio::test]
async fn a_redis_restarted_mid_load_with_append_only_persistence_loses_nothing_acknowledged() {
    // The README: everything rests on Redis keeping what it acknowledged.
    // A Redis with its append-only file (fsync every second) stopped and
    // started again keeps it, `ids` records included.
    let compat = TestCompat::start();
    let mut redis = TestRedis::start_with_fsync("everysec");
    let (http, topic) = (common::free_port(), common::unique("redis-restart"));
    let (service, job) = start_stack(&compat, &redis.url(), &common::kafka_brokers(), http, &topic, 2000).await;

    let outage = Outage { what: "Redis", refusal_within: Duration::from_secs(30) };
    let acknowledged = outage.under_load(&service, &mut redis, TestRedis::stop, TestRedis::restart).await;
    assert_durable(&compat, &acknowledged, &redis.url(), &common::kafka_brokers(), &topic, &service, &job).await;
}

#[tokio::test]
async fn the_history_table_stopped_for_30_s_mid_load_holds_commits_back_and_then_gets_everything() {
    // The service keeps answering (HBase is not on the write path), the
    // job retries its write, reading nothing new and committing nothing;
    // once the table is back every acknowledged item lands.
    let mut compat = TestCompat::start();
    let redis = format!("{}/15", common::redis_url().trim_end_matches('/'));
    let (http, topic) = (common::free_port(), common::unique("table-outage"));
    let brokers = common::kafka_brokers();
    let (service, job) = start_stack(&compat, &redis, &brokers, http, &topic, 5000).await;

    // About 400 items a second: the backlog of the outage is what a job
    // drains well within the wait below.
    let load = load(&service.base, 2, Duration::from_millis(100));
    let count = || load.count();
    common::eventually("load before the outage", Duration::from_secs(60), async || (count() >= 1000).then_some(())).await;

    compat.kill();
    let retries = || async { common::metric(&job, "histflow_persist_retries_total").await.filter(|n| *n > 0.0) };
    common::eventually("the job to retry its write", Duration::from_secs(30), retries).await;
    // What was committed once the failing write began: nothing moves it
    // while the table is away.
    let partitions = 2;
    let committed_at_failure = common::committed(&brokers, &format!("{topic}-job"), &topic, partitions);
    let during = count();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        common::committed(&brokers, &format!("{topic}-job"), &topic, partitions),
        committed_at_failure,
        "an offset was committed while the history table was away"
    );
    assert!(count() > during, "the service stopped acknowledging while only the history table was away");
    compat.restart();
    load.stop();

    let acknowledged = load.acknowledged();
    assert_durable(&compat, &acknowledged, &redis, &brokers, &topic, &service, &job).await;
}

#[tokio::test]
async fn a_broker_killed_and_restarted_mid_load_on_sqlite_loses_nothing_acknowledged() {
    // The broker keeps its topics and the group's offsets in SQLite. It is
    // SIGKILLed under load: the service's deliveries wait (a flush settles
    // its marks only once delivered) until backpressure refuses new
    // reports, the job's reads fail and nothing new is committed; once it
    // is back, every acknowledged item lands. (On memory:// storage the
    // restarted broker has lost the topic and the group's offsets: this
    // test then fails, the service's deliveries never completing.)
    let compat = TestCompat::start();
    let mut tansu = TestTansu::start_sqlite();
    let redis = format!("{}/8", common::redis_url().trim_end_matches('/'));
    let (http, topic) = (common::free_port(), common::unique("broker-restart"));
    let (service, job) = start_stack(&compat, &redis, &tansu.brokers(), http, &topic, 5000).await;

    // Deliveries stop, the edges fill, and backpressure reaches ingest.
    let outage = Outage { what: "the broker", refusal_within: Duration::from_secs(60) };
    let acknowledged = outage.under_load(&service, &mut tansu, TestTansu::kill, TestTansu::restart).await;
    assert_durable(&compat, &acknowledged, &redis, &tansu.brokers(), &topic, &service, &job).await;
}
