//! What a page past Redis costs: the caller is asked before the user's
//! HBase row is read, its refusal answers instead of the read, and a page
//! Redis can fill never asks. On the embedded store and table (the same
//! rules as Redis and the compat server).

// Tests may unwrap: a failure is the point.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use backends::history_table::{EmbeddedTable, HistoryTable, RowMutation, RECORDS_FAMILY};
use backends::user_state::{EmbeddedStore, EventWrite, UserStore, UserWrite, WriteParams};
use history_read::{HistoryReader, PageError, PageQuery};
use model::{codec, keys, Record};

fn record(uid: u64, oid: u64, view_at: i64) -> Record {
    Record { uid, business: "archive".into(), oid, sub_id: None, progress: 1, duration: None, device: None, view_at }
}

async fn reader(dir: &std::path::Path) -> (HistoryReader, HistoryTable) {
    let table = HistoryTable::Embedded(EmbeddedTable::new(Arc::new(hbase_compat::Store::open(dir).unwrap()), "history"));
    table.ensure_table().await.unwrap();
    let store = UserStore::Embedded(Arc::new(EmbeddedStore::default()));
    (
        HistoryReader { store, table: Some(table.clone()), progress_fallback: false, note_checks: false, retention_ms: Default::default() },
        table,
    )
}

fn first_page() -> PageQuery {
    PageQuery { businesses: None, limit: 2, cursor: None }
}

#[tokio::test]
async fn a_page_past_redis_asks_before_it_reads_hbase_and_a_refusal_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, table) = reader(dir.path()).await;
    // A user only HBase knows (Redis lost or expired its keys).
    let uid = 42;
    let cell =
        |oid: u64| (format!("{RECORDS_FAMILY}:archive:{oid}"), 100 + oid as i64, codec::encode_record(&record(uid, oid, 100 + oid as i64)));
    table
        .mutate_rows(vec![RowMutation { row: keys::hbase_row(uid), puts: vec![cell(1), cell(2)], column_deletes: Vec::new() }])
        .await
        .unwrap();

    let refused = reader.page_with(uid, first_page(), || Err::<(), &str>("over the limit")).await;
    assert!(matches!(refused, Err(PageError::Refused("over the limit"))), "{refused:?}");

    let mut asked = 0;
    let page = reader
        .page_with(uid, first_page(), || {
            asked += 1;
            Ok::<(), &str>(())
        })
        .await
        .unwrap();
    assert_eq!(asked, 1);
    assert_eq!(page.items.iter().map(|r| r.oid).collect::<Vec<_>>(), vec![2, 1]);
}

#[tokio::test]
async fn a_page_redis_fills_never_asks() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, _table) = reader(dir.path()).await;
    let uid = 7;
    let events = (1..=3)
        .map(|oid| EventWrite {
            item: format!("archive:{oid}"),
            view_at: oid as i64,
            record: codec::encode_record(&record(uid, oid, oid as i64)),
        })
        .collect();
    let params = WriteParams { max_items: 10, ttl_s: 3600, today: 1, now_ms: 1, shards: 1, marks: false };
    reader.store.write(&[UserWrite { uid, events }], params).await.unwrap();
    let page = reader.page_with(uid, first_page(), || Err::<(), &str>("must not be asked")).await.unwrap();
    assert_eq!(page.items.len(), 2);
}
