//! What a reload rebuilds, retunes or leaves alone, per role.

use pipeline::env::VarSource;
use pipeline::plan::RoleSelection;
use pipeline::validate::load;

use super::{build_changes, Changes};
use crate::build::BuildOptions;
use crate::StageConfig;

const BASE: &str = r#"
[businesses]
archive = { id = 1, retention_days = 90 }

[[stages]]
name = "ingest"
type = "http_ingest"
listen = "127.0.0.1:0"

[[stages]]
name = "realtime"
type = "realtime"
inputs = [{ from = "ingest", capacity = 1024, when_full = "reject" }]
redis_url = "redis://127.0.0.1:6379"

[[stages]]
name = "aggregate"
type = "aggregate"
inputs = ["realtime"]
shards = 16

[[stages]]
name = "kafka_batch"
type = "kafka_batch"
inputs = ["aggregate"]
brokers = "127.0.0.1:9092"

[[stages]]
name = "persist"
type = "persist"
inputs = ["kafka_batch"]
hbase_thrift = "127.0.0.1:9090"
flush_interval_ms = 1000
"#;

/// BASE with `edits` applied.
fn edited(edits: &[(&str, &str)]) -> String {
    let mut next = BASE.to_owned();
    for (find, replace) in edits {
        assert!(next.contains(find), "{find:?} is not in the base topology");
        next = next.replace(find, replace);
    }
    next
}

/// The changes `role` sees when BASE becomes BASE with `edits` applied.
fn changes(role: RoleSelection, edits: &[(&str, &str)]) -> Changes {
    changes_between(BASE, &edited(edits), role)
}

/// The changes `role` sees when `running` becomes `next`.
fn changes_between(running: &str, next: &str, role: RoleSelection) -> Changes {
    let running = load::<StageConfig>(running, &VarSource::Fixed(Default::default())).expect("the running topology is valid");
    let next = load::<StageConfig>(next, &VarSource::Fixed(Default::default())).expect("the edited topology is valid");
    let options = BuildOptions { role, ..BuildOptions::default() };
    match build_changes(&running, &next, &options) {
        Ok(prepared) => prepared.changes,
        Err(problems) => panic!("{problems:?}"),
    }
}

#[tokio::test]
async fn a_capacity_is_retuned_and_nothing_is_rebuilt() {
    let changes = changes(RoleSelection::Service, &[("capacity = 1024", "capacity = 64")]);
    assert_eq!(changes, Changes { retuned: vec!["realtime".into()], ..Changes::default() });
}

/// The gRPC server's limits are set when it starts: a reload that changes
/// them rebuilds the ingest stage (it was once reported as changed in place
/// while the old limits stayed). An HTTP-only stage's timeout still
/// changes in place.
#[tokio::test]
async fn grpc_limits_rebuild_the_ingest_stage() {
    let grpc = [(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\ngrpc_listen = \"127.0.0.1:1\"\ngrpc_max_streams_per_connection = 64\nrequest_timeout_ms = 5000",
    )];
    let running = edited(&grpc);
    let rebuilt = Changes { rebuilt: vec!["ingest".into()], ..Changes::default() };
    for (find, replace) in [
        ("grpc_max_streams_per_connection = 64", "grpc_max_streams_per_connection = 32"),
        ("request_timeout_ms = 5000", "request_timeout_ms = 9000"),
    ] {
        let next = running.replace(find, replace);
        assert_eq!(changes_between(&running, &next, RoleSelection::Service), rebuilt, "{replace}");
    }
    let http_only = edited(&[("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:0\"\nrequest_timeout_ms = 5000")]);
    let next = http_only.replace("request_timeout_ms = 5000", "request_timeout_ms = 9000");
    assert_eq!(changes_between(&http_only, &next, RoleSelection::Service), Changes::default());
}

#[tokio::test]
async fn aggregate_shards_rebuild_the_aggregate_and_the_realtime_stage_that_reads_them() {
    let changes = changes(RoleSelection::Service, &[("shards = 16", "shards = 8")]);
    assert_eq!(changes, Changes { rebuilt: vec!["realtime".into(), "aggregate".into()], ..Changes::default() });
}

#[tokio::test]
async fn a_job_ignores_service_edits_and_names_them() {
    let changes = changes(RoleSelection::Job, &[("shards = 16", "shards = 8"), ("capacity = 1024", "capacity = 64")]);
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(changes.other_role, vec!["aggregate".to_owned(), "realtime".to_owned()]);
}

#[tokio::test]
async fn a_service_ignores_the_persist_window_and_the_job_rebuilds_persist_alone() {
    let edit = [("flush_interval_ms = 1000", "flush_interval_ms = 500")];
    let service = changes(RoleSelection::Service, &edit);
    assert!(service.is_empty() && service.other_role == vec!["persist".to_owned()], "{service:?}");
    assert_eq!(changes(RoleSelection::Job, &edit), Changes { rebuilt: vec!["persist".into()], ..Changes::default() });
}

#[tokio::test]
async fn a_branch_added_starts_alone_and_removed_retires_alone() {
    let branch = "\n[[stages]]\nname = \"tap\"\ntype = \"discard\"\ninputs = [\"aggregate\"]\n";
    let with_branch = edited(&[("flush_interval_ms = 1000\n", &format!("flush_interval_ms = 1000\n{branch}"))]);
    assert_eq!(changes_between(BASE, &with_branch, RoleSelection::Service), Changes { started: vec!["tap".into()], ..Changes::default() });
    assert_eq!(changes_between(&with_branch, BASE, RoleSelection::Service), Changes { retired: vec!["tap".into()], ..Changes::default() });
}

/// The reload plan comes from what each kind declares: one edit of each
/// kind, and what each role rebuilds, changes in place, or leaves alone.
#[tokio::test]
async fn each_kind_of_edit_changes_what_declares_it() {
    let rebuilt = |names: &[&str]| names.iter().map(|name| name.to_string()).collect::<Vec<_>>();
    // The aggregate's sharding: its readers of it (the realtime stage).
    let edit = [("shards = 16", "shards = 16\nflush_interval_ms = 500")];
    assert_eq!(changes(RoleSelection::Service, &edit).rebuilt, rebuilt(&["realtime", "aggregate"]));
    // The bridge's payload: the bridge and the aggregate that folds for it.
    let edit = [("brokers = \"127.0.0.1:9092\"", "brokers = \"127.0.0.1:9092\"\npayload = \"full\"")];
    assert_eq!(changes(RoleSelection::Service, &edit).rebuilt, rebuilt(&["aggregate", "kafka_batch"]));
    // The bridge's brokers: its halves, and the persist stage that sends
    // refused rows to them; the job rebuilds its side only.
    let edit = [("brokers = \"127.0.0.1:9092\"", "brokers = \"127.0.0.2:9092\"")];
    assert_eq!(changes(RoleSelection::Service, &edit).rebuilt, rebuilt(&["kafka_batch"]));
    assert_eq!(changes(RoleSelection::Job, &edit).rebuilt, rebuilt(&["kafka_batch.consumer", "persist"]));
    // The realtime store: the realtime stage, the producer that settles
    // its marks; the ingest stage's reads move in place (not rebuilt; no
    // ingest runs here to be reconfigured).
    let edit = [("redis_url = \"redis://127.0.0.1:6379\"", "redis_url = \"redis://127.0.0.2:6379\"")];
    assert_eq!(changes(RoleSelection::Service, &edit).rebuilt, rebuilt(&["realtime", "kafka_batch"]));
    // The history table: the job's persist; the service's ingest reads it
    // (cache-aside) and takes it in place.
    let edit = [("hbase_thrift = \"127.0.0.1:9090\"", "hbase_thrift = \"127.0.0.2:9090\"")];
    assert_eq!(changes(RoleSelection::Service, &edit).rebuilt, Vec::<String>::new());
    assert_eq!(changes(RoleSelection::Job, &edit).rebuilt, rebuilt(&["persist"]));
}

/// A business added, its retention or its id changed, or one removed:
/// every stage reads the registry live, so no role rebuilds anything (a
/// running ingest stage's checks change in place), embedded or not.
#[tokio::test]
async fn a_business_edit_rebuilds_nothing_in_any_role_or_mode() {
    let registry = "archive = { id = 1, retention_days = 90 }";
    let edits = [
        format!("{registry}\nmusic = {{ id = 9, retention_days = 30 }}"),
        "archive = { id = 1, retention_days = 400 }".to_owned(),
        "archive = { id = 7, retention_days = 90 }".to_owned(),
        "pgc = { id = 2, retention_days = 90 }".to_owned(),
    ];
    for edit in &edits {
        let next = edited(&[(registry, edit)]);
        for role in [RoleSelection::Service, RoleSelection::Job, RoleSelection::All] {
            for embedded in [false, true] {
                let running = load::<StageConfig>(BASE, &VarSource::Fixed(Default::default())).expect("valid");
                let next = load::<StageConfig>(&next, &VarSource::Fixed(Default::default())).expect("valid");
                let options = BuildOptions { role, embedded, ..BuildOptions::default() };
                let changes = match build_changes(&running, &next, &options) {
                    Ok(prepared) => prepared.changes,
                    Err(problems) => panic!("{edit} {role:?} embedded {embedded}: {problems:?}"),
                };
                let expected = Changes { registry: true, ..Changes::default() };
                assert_eq!(changes, expected, "{edit} {role:?} embedded {embedded}");
            }
        }
    }
}

/// Under `--embedded` the in-process stand-ins ignore endpoints and call
/// shapes, so an edit to them rebuilds the stage edited and not the bridge
/// (whose queue cannot be rebuilt while it runs).
#[tokio::test]
async fn under_embedded_an_endpoint_edit_rebuilds_no_bridge() {
    let edit = [("redis_url = \"redis://127.0.0.1:6379\"", "redis_url = \"redis://127.0.0.2:6379\"\nscript_max_events = 64")];
    let running = load::<StageConfig>(BASE, &VarSource::Fixed(Default::default())).expect("valid");
    let next = load::<StageConfig>(&edited(&edit), &VarSource::Fixed(Default::default())).expect("valid");
    let embedded = BuildOptions { role: RoleSelection::All, embedded: true, ..BuildOptions::default() };
    let changes =
        build_changes(&running, &next, &embedded).map(|prepared| prepared.changes).unwrap_or_else(|problems| panic!("{problems:?}"));
    assert_eq!(changes.rebuilt, vec!["realtime".to_owned()]);
    let real = BuildOptions { role: RoleSelection::All, ..BuildOptions::default() };
    let changes = build_changes(&running, &next, &real).map(|prepared| prepared.changes).unwrap_or_else(|problems| panic!("{problems:?}"));
    assert_eq!(changes.rebuilt, vec!["realtime".to_owned(), "kafka_batch".to_owned()]);
}
