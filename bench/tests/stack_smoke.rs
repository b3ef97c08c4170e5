//! `bench --stack` for a few seconds, end to end: it starts Redis, tansu,
//! the HBase-compatible server and histflow's two roles itself, and its
//! JSON must hold every figure, with every posted event acknowledged and
//! every acknowledged item in HBase.

// Tests may unwrap: a failure is the point.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use serde_json::Value;

/// The shipped topology with short flushes, so the run is durable soon
/// after the load stops.
fn fast_topology() -> String {
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../topology.toml")).unwrap();
    let fast = shipped
        .replace("flush_interval_ms = 3000", "flush_interval_ms = 200")
        .replace("flush_interval_ms = 60000", "flush_interval_ms = 500");
    assert_ne!(fast, shipped, "the shipped topology's flush intervals changed; update this test");
    fast
}

#[test]
fn a_short_stack_run_reports_every_figure_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let topology = dir.path().join("topology.toml");
    std::fs::write(&topology, fast_topology()).unwrap();
    let json = dir.path().join("runs.json");
    let output = Command::new(env!("CARGO_BIN_EXE_bench"))
        .arg("--stack")
        .arg("--topology")
        .arg(&topology)
        .args([
            "--users",
            "300",
            "--items-per-user",
            "5",
            "--batch",
            "20",
            "--connections",
            "4",
            "--duration",
            "3s",
            "--drain-timeout",
            "60s",
        ])
        .arg("--json")
        .arg(&json)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "bench failed:\n{stdout}\n{stderr}");

    let runs: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    for field in [
        "topology",
        "batch",
        "events_per_sec",
        "requests_per_sec",
        "p50_ms",
        "p99_ms",
        "p999_ms",
        "errors",
        "events_per_kafka_message",
        "events_per_hbase_cell",
        "durable_lag_p99_ms",
        "rss_peak_bytes",
    ] {
        assert!(run.get(field).is_some_and(|value| !value.is_null()), "`{field}` missing or null in {run}");
    }
    let sent = run["events_sent"].as_u64().unwrap();
    assert!(sent > 0, "nothing was sent: {run}");
    assert_eq!(run["events_acked"].as_u64(), Some(sent), "not every posted event was acknowledged: {run}");
    assert_eq!(run["errors"], serde_json::json!({}));
    let posted = run["posted_items"].as_u64().unwrap();
    assert!(posted > 0);
    assert_eq!(run["hbase_items"].as_u64(), Some(posted), "acknowledged items missing from HBase: {run}");
    assert!(stdout.contains("events/s"), "no table on stdout:\n{stdout}");
}
