//! The HBase-Thrift-compatible server as a process, through Thrift clients
//! over TCP (binary protocol, buffered transport): HBase's timestamp and
//! delete semantics, scanners, errors, durability across SIGKILL, and an
//! ordinary third-party client (happybase).

// Tests may unwrap: a failure is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use hbase_thrift::hbase::{BatchMutation, ColumnDescriptor, Mutation, THbaseSyncClient, TRowResult};

use common::{HbaseClient as Client, TestCompat as Server};

fn no_attributes() -> BTreeMap<Vec<u8>, Vec<u8>> {
    BTreeMap::new()
}

fn family(name: &str, max_versions: i32) -> ColumnDescriptor {
    ColumnDescriptor { name: Some(name.as_bytes().to_vec()), max_versions: Some(max_versions), ..ColumnDescriptor::default() }
}

fn put(row: &str, column: &str, value: &str) -> BatchMutation {
    BatchMutation::new(row.as_bytes().to_vec(), vec![Mutation::new(false, column.as_bytes().to_vec(), value.as_bytes().to_vec(), true)])
}

/// (column, timestamp, value) of a row result, as text.
fn cells(results: Vec<TRowResult>) -> Vec<(String, i64, String)> {
    results
        .into_iter()
        .flat_map(|result| result.columns.unwrap_or_default())
        .map(|(column, cell)| {
            (String::from_utf8(column).unwrap(), cell.timestamp.unwrap(), String::from_utf8(cell.value.unwrap()).unwrap())
        })
        .collect()
}

fn rows_of(results: &[TRowResult]) -> Vec<String> {
    results.iter().map(|result| String::from_utf8(result.row.clone().unwrap()).unwrap()).collect()
}

#[test]
fn timestamps_and_delete_markers_follow_hbase() {
    let server = Server::start();
    let mut client = server.client();
    client.create_table(b"history".to_vec(), vec![family("r:", 3), family("m:", 1)]).unwrap();
    assert_eq!(client.get_table_names().unwrap(), vec![b"history".to_vec()]);
    let again = client.create_table(b"history".to_vec(), vec![family("r:", 3)]).unwrap_err();
    assert!(format!("{again:?}").contains("already exists"), "{again:?}");

    let t = b"history".to_vec();
    let get = |client: &mut Client, ts: Option<i64>| -> Vec<(String, i64, String)> {
        cells(match ts {
            None => client.get_row(t.clone(), b"u1".to_vec(), no_attributes()).unwrap(),
            Some(ts) => client.get_row_ts(t.clone(), b"u1".to_vec(), ts, no_attributes()).unwrap(),
        })
    };
    client.mutate_rows_ts(t.clone(), vec![put("u1", "r:a", "new")], 20, no_attributes()).unwrap();
    client.mutate_rows_ts(t.clone(), vec![put("u1", "r:a", "old")], 10, no_attributes()).unwrap();
    assert_eq!(get(&mut client, None), vec![("r:a".into(), 20, "new".into())], "the highest timestamp wins whatever the order");
    assert_eq!(get(&mut client, Some(20)), vec![("r:a".into(), 10, "old".into())], "a timestamp bound is exclusive");
    let versions: Vec<i64> = client
        .get_ver(t.clone(), b"u1".to_vec(), b"r:a".to_vec(), 5, no_attributes())
        .unwrap()
        .iter()
        .map(|c| c.timestamp.unwrap())
        .collect();
    assert_eq!(versions, vec![20, 10], "getVer answers the versions kept, newest first");
    client.mutate_rows_ts(t.clone(), vec![put("u1", "r:a", "replay")], 20, no_attributes()).unwrap();
    assert_eq!(get(&mut client, None), vec![("r:a".into(), 20, "replay".into())], "an equal timestamp replaces: replays are idempotent");

    client.delete_all_ts(t.clone(), b"u1".to_vec(), b"r:a".to_vec(), 25, no_attributes()).unwrap();
    client.mutate_rows_ts(t.clone(), vec![put("u1", "r:a", "late")], 22, no_attributes()).unwrap();
    assert_eq!(get(&mut client, None), vec![], "a delete at 25 hides cells at or before 25, even ones written after it");
    client
        .mutate_rows_ts(t.clone(), vec![put("u1", "r:a", "newer"), put("u1", "r:b", "b"), put("u1", "m:paused", "1")], 30, no_attributes())
        .unwrap();
    assert_eq!(get(&mut client, None).len(), 3);
    let only_r = cells(client.get_row_with_columns(t.clone(), b"u1".to_vec(), vec![b"r".to_vec()], no_attributes()).unwrap());
    assert_eq!(only_r.iter().map(|(c, _, _)| c.as_str()).collect::<Vec<_>>(), vec!["r:a", "r:b"], "a family name selects its columns");

    client.delete_all_row_ts(t.clone(), b"u1".to_vec(), 100, no_attributes()).unwrap();
    client.mutate_rows_ts(t.clone(), vec![put("u1", "r:c", "before clear")], 99, no_attributes()).unwrap();
    assert_eq!(get(&mut client, None), vec![], "a row delete hides the whole row at or before its time");
    client.mutate_rows_ts(t.clone(), vec![put("u1", "r:c", "after clear")], 101, no_attributes()).unwrap();
    assert_eq!(get(&mut client, None), vec![("r:c".into(), 101, "after clear".into())]);
}

#[test]
fn scanners_page_through_rows_in_order_exactly_once() {
    let server = Server::start();
    let mut client = server.client();
    let t = b"history".to_vec();
    client.create_table(t.clone(), vec![family("r:", 1)]).unwrap();
    let rows: Vec<String> = (0..10).map(|i| format!("row{i:02}")).collect();
    client.mutate_rows(t.clone(), rows.iter().map(|row| put(row, "r:x", row)).collect(), no_attributes()).unwrap();
    client.mutate_rows(t.clone(), vec![put("other", "r:x", "o")], no_attributes()).unwrap();

    let scanner = client.scanner_open_with_stop(t.clone(), b"row02".to_vec(), b"row08".to_vec(), vec![], no_attributes()).unwrap();
    let mut seen = Vec::new();
    loop {
        let page = client.scanner_get_list(scanner, 4).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4);
        seen.extend(rows_of(&page));
    }
    client.scanner_close(scanner).unwrap();
    assert_eq!(seen, rows[2..8].to_vec());

    let prefixed = client.scanner_open_with_prefix(t.clone(), b"row0".to_vec(), vec![b"r:x".to_vec()], no_attributes()).unwrap();
    assert_eq!(rows_of(&client.scanner_get_list(prefixed, 100).unwrap()), rows);
    assert!(client.scanner_get(prefixed).unwrap().is_empty());
    client.scanner_close(prefixed).unwrap();
    assert!(client.scanner_get(prefixed).is_err(), "a closed scanner is gone");
}

#[test]
fn bad_calls_get_errors_that_say_what_is_wrong() {
    let server = Server::start();
    let mut client = server.client();
    let missing = client.get_row(b"nope".to_vec(), b"r".to_vec(), no_attributes()).unwrap_err();
    assert!(format!("{missing:?}").contains("does not exist"), "{missing:?}");
    client.create_table(b"t".to_vec(), vec![family("r:", 1)]).unwrap();
    let family = client.mutate_rows(b"t".to_vec(), vec![put("row", "x:y", "v")], no_attributes()).unwrap_err();
    assert!(format!("{family:?}").contains("has no family"), "{family:?}");
    let unsupported = client.atomic_increment(b"t".to_vec(), b"row".to_vec(), b"r:n".to_vec(), 1).unwrap_err();
    assert!(format!("{unsupported:?}").contains("atomic_increment is not supported"), "{unsupported:?}");
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let mut server = Server::start();
    let mut client = server.client();
    client.create_table(b"history".to_vec(), vec![family("r:", 1)]).unwrap();
    client.mutate_rows_ts(b"history".to_vec(), vec![put("u7", "r:a", "kept")], 5, no_attributes()).unwrap();
    drop(client);
    server.kill();
    server.restart();
    let mut client = server.client();
    assert_eq!(
        cells(client.get_row(b"history".to_vec(), b"u7".to_vec(), no_attributes()).unwrap()),
        vec![("r:a".into(), 5, "kept".into())]
    );
}

#[test]
fn happybase_can_put_get_delete_and_scan() {
    let python = common::repo_root().join("target/test-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run the tests through scripts/test.sh, which creates it with happybase installed",
        python.display()
    );
    let server = Server::start();
    let output = Command::new(python)
        .arg(common::repo_root().join("tests/interop/happybase_check.py"))
        .arg(server.port.to_string())
        .output()
        .unwrap();
    let (stdout, stderr) = common::texts(&output);
    assert!(output.status.success(), "happybase check failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("happybase: all checks passed"), "{stdout}");
}

/// Opens a connection to `compat`, sends `bytes`, and waits (at most 10 s)
/// for the server to close it.
fn send_and_wait_for_close(compat: &Server, bytes: &[u8]) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(compat.address()).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    stream.write_all(bytes).unwrap();
    let mut rest = Vec::new();
    let closed = stream.read_to_end(&mut rest);
    assert!(closed.is_ok() || closed.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset), "not closed: {closed:?}");
}

#[test]
fn malformed_frames_neither_crash_the_server_nor_leak_its_connection_slots() {
    let compat = Server::start();
    // A call whose name claims -1, then 2^31-1 bytes; then a list claiming
    // a negative size. More connections than the server has slots.
    let call_named = |length: i32| {
        let mut frame = 0x8001_0001u32.to_be_bytes().to_vec();
        frame.extend(length.to_be_bytes());
        frame
    };
    let mut negative_list = 0x8001_0001u32.to_be_bytes().to_vec();
    negative_list.extend(13i32.to_be_bytes());
    negative_list.extend(b"getTableNames");
    negative_list.extend(1i32.to_be_bytes());
    negative_list.extend([15u8, 0, 1, 11]);
    negative_list.extend((-7i32).to_be_bytes());
    for round in 0..300 {
        let frame = match round % 3 {
            0 => call_named(-1),
            1 => call_named(i32::MAX),
            _ => negative_list.clone(),
        };
        send_and_wait_for_close(&compat, &frame);
    }
    let mut client = compat.client();
    assert!(client.get_table_names().is_ok(), "the server stopped serving after malformed frames");
}

#[test]
fn idle_connections_are_closed_so_they_cannot_lock_everyone_out() {
    let compat = Server::start_with(&["--idle-timeout-s", "1"]);
    // Every slot taken by a connection that says nothing.
    let idle: Vec<std::net::TcpStream> = (0..256).map(|_| std::net::TcpStream::connect(compat.address()).unwrap()).collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| compat.client().get_table_names().is_ok())).unwrap_or(false);
        if served {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "idle connections kept everyone out for 15 s");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    drop(idle);
}

/// With every slot held by idle connections and the default 60 s idle
/// timeout, a new client is served at once: the connection idle longest
/// is closed to make room. (Before, every real client was refused until
/// the idle ones timed out, a minute later.)
#[test]
fn a_new_client_takes_the_slot_of_the_connection_idle_longest() {
    use std::io::Read;
    let compat = Server::start();
    let mut idle: Vec<std::net::TcpStream> = (0..256).map(|_| std::net::TcpStream::connect(compat.address()).unwrap()).collect();
    // Idle long enough to be evicted (1 s), far short of the idle timeout.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    for attempt in 0..3 {
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| compat.client().get_table_names().is_ok())).unwrap_or(false);
        assert!(served, "new client {attempt} was refused while every slot was held by an idle connection");
    }
    // Idle connections were closed for them, one per new client at most
    // (a client that has hung up gives its own slot back).
    let mut closed = 0;
    for stream in &mut idle {
        stream.set_read_timeout(Some(std::time::Duration::from_millis(10))).unwrap();
        let mut byte = [0u8; 1];
        let ended = match stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(error) => !matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        };
        closed += usize::from(ended);
    }
    assert!((1..=3).contains(&closed), "{closed} idle connections were closed for 3 new clients");
}

/// The pipeline's own Thrift client (persist and the read side's
/// cache-aside) keeps connections between calls. One the gateway closed
/// while it sat in the pool (here: the gateway restarted; likewise its idle
/// timeout, or the compat server handing its slot to a new client) is
/// noticed before a call goes out on it, so the next read is served. (Before,
/// that read failed, and a history page answered 503 `read_failed`.)
#[tokio::test]
async fn the_pipelines_client_replaces_a_pooled_connection_the_gateway_closed() {
    use backends::history_table::{HistoryTable, RowMutation, ThriftTable};
    let mut compat = Server::start();
    let table = HistoryTable::Thrift(ThriftTable::new(&compat.address(), "history"));
    table.ensure_table().await.unwrap();
    let uid = 42;
    let put = RowMutation {
        row: model::keys::hbase_row(uid),
        puts: vec![("r:archive:1".into(), 1_000, b"kept".to_vec())],
        column_deletes: vec![],
    };
    table.mutate_rows(vec![put]).await.unwrap();
    assert_eq!(table.read_row(uid, vec!["r".into()]).await.unwrap().len(), 1);
    compat.kill();
    compat.restart();
    for read in 0..3 {
        let cells = table.read_row(uid, vec!["r".into()]).await;
        assert!(cells.as_ref().is_ok_and(|cells| cells.len() == 1), "read {read} after the gateway restarted: {cells:?}");
    }
}
