//! The whole pipeline under `--embedded` (in-process stand-ins for Redis,
//! Kafka and HBase), as the README's run command starts it: answers, the
//! durable table afterwards, and a SIGTERM in the middle of traffic.

// Tests may unwrap: a failure is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Histflow;
use hbase_compat::store::{ColumnFilter, Store};
use model::{codec, keys};
use serde_json::{json, Value};

fn topology(http: u16, data_dir: &std::path::Path, payload: &str) -> String {
    let shipped = std::fs::read_to_string(common::repo_root().join("topology.toml")).unwrap();
    // The shipped topology, with a port and a data directory of the test's
    // own, and short windows so a test does not wait a minute.
    shipped
        .replace("${HTTP_ADDR:-127.0.0.1:8080}", &format!("127.0.0.1:{http}"))
        .replace("${ADMIN_ADDR:-127.0.0.1:9464}", &format!("127.0.0.1:{}", common::free_port()))
        .replace("payload = \"fetched\"", &format!("payload = \"{payload}\""))
        .replace("flush_interval_ms = 60000", &format!("flush_interval_ms = 200\nembedded_data_dir = \"{}\"", data_dir.display()))
}

fn event(uid: u64, oid: u64, progress: i64, view_at: i64) -> Value {
    json!({"uid": uid, "business": "archive", "oid": oid, "progress": progress, "view_at": view_at})
}

async fn post(client: &reqwest::Client, base: &str, body: &Value) -> Result<(u16, Value), reqwest::Error> {
    let response = client.post(format!("{base}/v1/events")).json(body).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

use model::now_ms;

/// The visible record of `uid`'s `item` in the table at `dir`: (timestamp, progress).
fn stored(dir: &std::path::Path, uid: u64, item: &str) -> Option<(i64, i64)> {
    let store = Store::open(dir).unwrap();
    let cells = store.get_row(b"history", keys::hbase_row(uid).as_bytes(), &ColumnFilter::default(), None).unwrap();
    cells.into_iter().find(|cell| cell.column == format!("r:{item}").into_bytes()).map(|cell| {
        let record = codec::decode_record(&cell.value).unwrap();
        assert_eq!(record.view_at, cell.timestamp, "cell timestamp = view_at");
        (cell.timestamp, record.progress)
    })
}

async fn last_write_wins_end_to_end(payload: &str) {
    let data = tempfile::tempdir().unwrap();
    let http = common::free_port();
    let mut histflow = Histflow::start(&topology(http, data.path(), payload), http, &["--embedded"]).await;
    let client = reqwest::Client::new();
    let (uid, base) = (common::unique_uid_base(), now_ms() - 60_000);

    let mut answers = Vec::new();
    for (progress, view_at) in [(10, base + 1000), (30, base + 3000), (20, base + 2000), (30, base + 3000)] {
        let (status, answer) = post(&client, &histflow.base, &event(uid, 7, progress, view_at)).await.unwrap();
        assert_eq!(status, 200, "{answer}");
        answers.push((answer["results"][0]["recorded"].as_bool().unwrap(), answer["results"][0]["first_today"].as_bool().unwrap()));
    }
    assert_eq!(answers, vec![(true, true), (true, false), (false, false), (false, false)]);
    assert_eq!(histflow.stop(Duration::from_secs(30)), Some(0), "{}", histflow.log_text());
    assert_eq!(stored(data.path(), uid, "archive:7"), Some((base + 3000, 30)), "the newest report is durable, an older one never wins");
}

#[tokio::test]
async fn embedded_pipeline_keeps_the_newest_report_in_ids_mode() {
    last_write_wins_end_to_end("ids").await;
}

#[tokio::test]
async fn embedded_pipeline_keeps_the_newest_report_in_full_mode() {
    last_write_wins_end_to_end("full").await;
}

/// The shipped payload: under `--embedded` the in-process queue hands the
/// references on, and the job reads their records from the embedded store.
#[tokio::test]
async fn embedded_pipeline_keeps_the_newest_report_in_fetched_mode() {
    last_write_wins_end_to_end("fetched").await;
}

#[tokio::test]
async fn sigterm_mid_traffic_loses_no_acknowledged_event() {
    let data = tempfile::tempdir().unwrap();
    let http = common::free_port();
    let mut histflow = Histflow::start(&topology(http, data.path(), "ids"), http, &["--embedded"]).await;
    let client = reqwest::Client::new();
    let uid_base = common::unique_uid_base();
    let accepted: Arc<Mutex<HashMap<(u64, u64), i64>>> = Arc::default();
    let keep_going = Arc::new(AtomicBool::new(true));

    // Eight clients post until the server stops answering.
    let clients: Vec<_> = (0..8u64)
        .map(|client_index| {
            let (client, base, accepted, keep_going) = (client.clone(), histflow.base.clone(), accepted.clone(), keep_going.clone());
            tokio::spawn(async move {
                let mut oid = 0u64;
                while keep_going.load(Ordering::Relaxed) {
                    oid += 1;
                    let (uid, view_at) = (uid_base + client_index, now_ms());
                    match post(&client, &base, &event(uid, oid, 1, view_at)).await {
                        Ok((200, answer)) if answer["results"][0]["recorded"] == json!(true) => {
                            accepted.lock().unwrap().insert((uid, oid), view_at);
                        }
                        Ok((200, _)) => {}
                        Ok((503, _)) | Err(_) => break,
                        Ok((status, answer)) => panic!("unexpected {status}: {answer}"),
                    }
                }
            })
        })
        .collect();
    common::eventually("some traffic before the signal", Duration::from_secs(10), async || {
        (accepted.lock().unwrap().len() >= 200).then_some(())
    })
    .await;
    assert_eq!(histflow.stop(Duration::from_secs(30)), Some(0), "a clean drain exits 0:\n{}", histflow.log_text());
    keep_going.store(false, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }

    let accepted = accepted.lock().unwrap();
    let store = Store::open(data.path()).unwrap();
    let mut missing = Vec::new();
    for (&(uid, oid), &view_at) in accepted.iter() {
        let cells = store.get_row(b"history", keys::hbase_row(uid).as_bytes(), &ColumnFilter::default(), None).unwrap();
        if !cells.iter().any(|cell| cell.column == format!("r:archive:{oid}").into_bytes() && cell.timestamp == view_at) {
            missing.push((uid, oid));
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events are not durable after SIGTERM: {:?}",
        missing.len(),
        accepted.len(),
        &missing[..missing.len().min(10)]
    );
}

/// One process per data directory: a second `--embedded` on the same
/// directory exits at once naming the process that holds it, and the first
/// goes on serving. (Two once opened the same store, with no lock.)
#[tokio::test]
async fn a_second_embedded_process_on_the_same_data_directory_refuses_to_start() {
    let data = tempfile::tempdir().unwrap();
    let http = common::free_port();
    let first = Histflow::start(&topology(http, data.path(), "ids"), http, &["--embedded"]).await;
    let second_http = common::free_port();
    let (_dir, path) = common::temp_file("second.toml", &topology(second_http, data.path(), "ids"));
    let mut second = common::histflow()
        .args(["run", "--embedded"])
        .arg(&path)
        .env("GRPC_ADDR", format!("127.0.0.1:{}", common::free_port()))
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = second.kill();
            panic!("a second histflow on the same data directory kept running");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    let holder = format!("is in use by another process (pid {}", first.pid().unwrap());
    assert!(stderr.contains(&holder), "expected {holder:?} in:\n{stderr}");
    let (status, answer) = post(&reqwest::Client::new(), &first.base, &event(1, 1, 1, now_ms())).await.unwrap();
    assert_eq!(status, 200, "the first process stopped serving: {answer}");
}
