//! The user-state rules on a real Redis (`record.lua`) and in the embedded
//! store (`rules.rs`), driven through the same scenario: both must answer
//! the same statuses. Needs the Redis at `REDIS_URL` (scripts/test.sh
//! starts one).

// Tests may unwrap: a failure is the point.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use backends::user_state::{
    CallShape, EmbeddedStore, EventWrite, RedisStore, Status, UserStore, UserWrite, WriteParams, NOT_RECORDED, RECORDED,
    RECORDED_FIRST_TODAY, TRIMMED_AT_ONCE,
};

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A uid no other run has written.
fn fresh_uid() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    nanos % 1_000_000_000_000 + 1
}

fn write(uid: u64, events: &[(&str, i64)]) -> Vec<UserWrite> {
    let events = events.iter().map(|(item, view_at)| EventWrite { item: (*item).to_owned(), view_at: *view_at, record: vec![1] }).collect();
    vec![UserWrite { uid, events }]
}

/// Each step: events, today, and the statuses both stores must answer.
type Step = (&'static [(&'static str, i64)], i64, &'static [Status]);

#[tokio::test]
async fn redis_and_the_embedded_store_agree_on_trims_and_first_watches() {
    // Two items kept per user.
    let steps: [Step; 5] = [
        (&[("a:1", 10), ("a:2", 20)], 1, &[RECORDED_FIRST_TODAY, RECORDED]),
        // Older and equal views never win.
        (&[("a:1", 9), ("a:2", 20)], 1, &[NOT_RECORDED, NOT_RECORDED]),
        // A backdated view of a full timeline is trimmed by its own write:
        // recorded (HBase will hold it), and said to be trimmed at once so
        // its record travels whole.
        (&[("a:0", 5), ("a:3", 30)], 2, &[RECORDED_FIRST_TODAY + TRIMMED_AT_ONCE, RECORDED]),
        (&[("a:9", 1)], 3, &[RECORDED_FIRST_TODAY + TRIMMED_AT_ONCE]),
        (&[("a:4", 40)], 3, &[RECORDED]),
    ];
    let redis = UserStore::Redis(RedisStore::connect_lazy(&redis_url(), CallShape { cluster: false, max_events: 128 }).unwrap());
    let embedded = UserStore::Embedded(Arc::new(EmbeddedStore::default()));
    let uid = fresh_uid();
    for (index, (events, today, expected)) in steps.into_iter().enumerate() {
        let params = WriteParams { max_items: 2, ttl_s: 3600, today, now_ms: 1_000 + index as i64, shards: 4 };
        for (name, store) in [("redis", &redis), ("embedded", &embedded)] {
            let statuses = store.write(&write(uid, events), params).await.unwrap();
            assert_eq!(statuses, vec![expected.to_vec()], "{name}, step {index}");
        }
    }
    let kept = redis.read_records(&[(uid, vec!["a:0".into(), "a:3".into(), "a:4".into(), "a:9".into()])]).await.unwrap();
    assert_eq!(kept, vec![vec![None, Some(vec![1]), Some(vec![1]), None]]);
}
