//! The `histflow` command as a user runs it: validate, graph, run.

mod common;

use common::{histflow, repo_root, temp_file, texts};

#[test]
fn validate_accepts_the_shipped_topology() {
    let output = histflow().arg("validate").arg(repo_root().join("topology.toml")).output().unwrap();
    let (stdout, stderr) = texts(&output);
    assert!(output.status.success(), "stderr: {stderr}");
    assert!(stdout.contains("valid (5 stages, 4 businesses)"), "{stdout}");
}

#[test]
fn validate_prints_every_problem_and_exits_2() {
    let broken = std::fs::read_to_string(repo_root().join("topology.toml"))
        .unwrap()
        .replace("type = \"aggregate\"", "type = \"aggregate\"\nflush_every = 3")
        .replace("inputs = [{ from = \"aggregate\"", "inputs = [{ from = \"aggregat\"")
        .replace(
            "redis_url = \"${REDIS_URL:-redis://127.0.0.1:6379}\"\nmax_items",
            "redis_url = \"${HISTFLOW_CLI_TEST_NO_SUCH_VAR}\"\nmax_items",
        );
    let (_dir, path) = temp_file("broken.toml", &broken);
    let output = histflow().arg("validate").arg(&path).output().unwrap();
    let (_, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    for expected in [
        "3 problems in the topology:",
        "stage `realtime`: `redis_url`: environment variable HISTFLOW_CLI_TEST_NO_SUCH_VAR is not set",
        "stage `aggregate`: unknown field `flush_every`",
        "stage `kafka_batch`: input `aggregat` is not a stage of this topology",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in:\n{stderr}");
    }
}

#[test]
fn graph_draws_every_stage_and_edge_with_its_limits() {
    let dot = histflow().arg("graph").arg(repo_root().join("topology.toml")).output().unwrap();
    let (dot, _) = texts(&dot);
    assert!(dot.starts_with("digraph histflow {"), "{dot}");
    assert!(dot.contains("\"ingest\" -> \"realtime\" [label=\"cap 16384 reject\"];"), "{dot}");
    assert!(dot.contains("\"kafka_batch\" -> \"persist\" [label=\"cap 65536 block, via broker\", style=bold];"), "{dot}");
    assert_eq!(dot.matches(" -> ").count(), 4, "{dot}");

    let mermaid = histflow().args(["graph", "--format", "mermaid"]).arg(repo_root().join("topology.toml")).output().unwrap();
    let (mermaid, _) = texts(&mermaid);
    assert!(mermaid.starts_with("flowchart LR"), "{mermaid}");
    assert!(mermaid.contains("aggregate -->|\"cap 65536 block\"| kafka_batch"), "{mermaid}");
}

#[test]
fn run_refuses_what_cannot_run_naming_every_stage() {
    let output = histflow().args(["run", "--role", "service", "--embedded"]).arg(repo_root().join("topology.toml")).output().unwrap();
    let (_, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("stage `kafka_batch`: under --embedded the in-process queue stands in for Kafka and cannot cross processes; run with --role all"), "{stderr}");
}
