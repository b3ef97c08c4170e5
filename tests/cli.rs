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

/// `validate` refuses what `run` would: an open job admin listener other
/// machines can reach (an unauthenticated reload) is named, like an open
/// API. (It once called such a topology valid, and a job served it.)
#[test]
fn validate_names_an_open_admin_listener_other_machines_can_reach() {
    let open = std::fs::read_to_string(repo_root().join("topology.toml"))
        .unwrap()
        .replace("admin_listen = \"${ADMIN_ADDR:-127.0.0.1:9464}\"", "admin_listen = \"0.0.0.0:9464\"");
    let (_dir, path) = temp_file("open-admin.toml", &open);
    let output = histflow().arg("validate").arg(&path).output().unwrap();
    let (_, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("`admin_listen` = \"0.0.0.0:9464\" is reachable from other machines and [auth] has no clients, so anyone could reload the topology"),
        "{stderr}"
    );
    let output = histflow().args(["run", "--role", "job"]).arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "run started a job with an open admin listener: {}", texts(&output).1);
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

#[test]
fn run_refuses_an_open_api_other_machines_can_reach_unless_told() {
    let shipped = std::fs::read_to_string(repo_root().join("topology.toml")).unwrap();
    let open = shipped.replace("${HTTP_ADDR:-127.0.0.1:8080}", &format!("0.0.0.0:{}", common::free_port()));
    assert_ne!(open, shipped, "the shipped topology's listen address moved; update this test");
    let (_dir, path) = common::temp_file("open.toml", &open);
    let output = histflow().args(["run", "--embedded"]).arg(&path).output().unwrap();
    let (_, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("`listen` = \"0.0.0.0:") && stderr.contains("is reachable from other machines and [auth] has no clients"),
        "{stderr}"
    );

    // Said so in [auth]: it starts (and is stopped at once).
    let allowed = open.replacen("[[stages]]", "[auth]\nallow_unauthenticated = true\n\n[[stages]]", 1);
    let (_dir, path) = common::temp_file("allowed.toml", &allowed);
    let mut child = histflow()
        .args(["run", "--embedded"])
        .arg(&path)
        .env("ADMIN_ADDR", format!("127.0.0.1:{}", common::free_port()))
        .env("GRPC_ADDR", format!("127.0.0.1:{}", common::free_port()))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let started = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Err(status);
        }
        if open_port_of(&allowed) {
            break Ok(());
        }
        assert!(std::time::Instant::now() < deadline, "not listening within 20 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    common::signal(child.id(), "TERM");
    let output = child.wait_with_output().unwrap();
    assert!(started.is_ok(), "refused although allowed: {}", String::from_utf8_lossy(&output.stderr));
}

/// Whether the `listen = "0.0.0.0:PORT"` of `topology` accepts connections.
fn open_port_of(topology: &str) -> bool {
    let port = topology.split("listen = \"0.0.0.0:").nth(1).and_then(|rest| rest.split('"').next()).and_then(|port| port.parse().ok());
    port.is_some_and(common::tcp_open)
}
