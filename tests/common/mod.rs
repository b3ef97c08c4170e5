//! Helpers shared by the end-to-end tests: where the real services are,
//! and failing loudly (never skipping) when they are not there.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The Redis the tests use: `REDIS_URL`, as exported by scripts/test.sh.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The Kafka-protocol brokers the tests use: `KAFKA_BROKERS`.
pub fn kafka_brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// The message for a missing service: how to get one.
pub fn missing(service: &str, address: &str, error: impl std::fmt::Display) -> String {
    format!("{service} is not reachable at {address} ({error}). These tests need the real service: run them through scripts/test.sh, which installs and starts Redis and the tansu broker.")
}

/// The `histflow` binary built for these tests.
pub fn histflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_histflow"))
}

/// The repository root (where topology.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file in a fresh temporary directory, holding `text`.
pub fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write temporary file");
    (dir, path)
}

/// stdout and stderr of a finished command, as text.
pub fn texts(output: &Output) -> (String, String) {
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}
