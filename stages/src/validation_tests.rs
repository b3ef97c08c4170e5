//! The validation table: each broken topology and the exact messages it
//! must produce, all of them at once.

use pipeline::env::VarSource;
use pipeline::validate::load;

use crate::StageConfig;

/// A sound topology; each case edits it with (find, replace) pairs.
const BASE: &str = r#"
[businesses]
archive = { id = 1, retention_days = 90 }
pgc = { id = 2, retention_days = 365 }

[[stages]]
name = "ingest"
type = "http_ingest"
listen = "127.0.0.1:8080"

[[stages]]
name = "realtime"
type = "realtime"
inputs = [{ from = "ingest", capacity = 1024, when_full = "reject" }]
redis_url = "redis://127.0.0.1:6379"

[[stages]]
name = "aggregate"
type = "aggregate"
inputs = ["realtime"]

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
"#;

fn problems_of(edits: &[(&str, &str)]) -> Vec<String> {
    let mut text = BASE.to_owned();
    for (find, replace) in edits {
        assert!(text.contains(find), "edit target {find:?} not in the base topology");
        text = text.replacen(find, replace, 1);
    }
    match load::<StageConfig>(&text, &VarSource::Fixed(Default::default())) {
        Ok(_) => Vec::new(),
        Err(problems) => problems.lines(),
    }
}

#[test]
fn base_topology_is_sound() {
    assert_eq!(problems_of(&[]), Vec::<String>::new());
}

/// (case name, edits to the base topology, the exact problems expected).
type Case = (&'static str, &'static [(&'static str, &'static str)], &'static [&'static str]);

#[test]
fn broken_topologies_report_exact_messages() {
    let table: &[Case] = &[
        (
            "unknown stage type",
            &[("type = \"aggregate\"", "type = \"aggregator\"")],
            &["stage `aggregate`: unknown stage type `aggregator`, expected one of `http_ingest`, `realtime`, `aggregate`, `kafka_batch`, `persist`, `discard`"],
        ),
        (
            "unknown field",
            &[("redis_url = ", "redis_urll = ")],
            &["stage `realtime`: unknown field `redis_urll`, expected one of `redis_url`, `max_items_per_user`, `group_commit_max_events`, `group_commit_linger_us`, `script_max_events`, `cluster`, `max_in_flight_commits`, `broadcast_brokers`, `broadcast_topic`, `redrive`, `redrive_after_ms`, `redrive_every_ms`"],
        ),
        (
            "unknown field of an edge",
            &[("capacity = 1024,", "capacty = 1024,")],
            &["stage `realtime`: unknown field `capacty`, expected one of `from`, `capacity`, `when_full`"],
        ),
        ("unknown input", &[("inputs = [\"realtime\"]", "inputs = [\"realtme\"]")], &[
            "stage `aggregate`: input `realtme` is not a stage of this topology",
            "stage `ingest`: reaches no sink: nothing downstream writes its events anywhere, so they would be dropped",
            "stage `realtime`: reaches no sink: nothing downstream writes its events anywhere, so they would be dropped",
        ]),
        (
            "duplicate stage name",
            &[("name = \"persist\"", "name = \"aggregate\"")],
            &["stage `aggregate`: duplicate stage name: another stage already has it"],
        ),
        (
            "cycle",
            &[("inputs = [\"realtime\"]", "inputs = [\"realtime\", \"kafka_batch\"]")],
            &[
                "stage `aggregate`: runs in the service role but input `kafka_batch` emits in the job role; connect the roles through a bridge stage such as kafka_batch",
                "stage `aggregate`: cyclic dependency: aggregate -> kafka_batch -> aggregate",
            ],
        ),
        (
            "cycle among transforms",
            &[("inputs = [{ from = \"ingest\", capacity = 1024, when_full = \"reject\" }]", "inputs = [\"ingest\", \"aggregate\"]")],
            &["stage `realtime`: cyclic dependency: realtime -> aggregate -> realtime"],
        ),
        ("capacity 0", &[("capacity = 1024", "capacity = 0")], &["stage `realtime`: input `ingest`: `capacity` must be at least 1"]),
        (
            "capacity and limits past their bounds",
            &[
                ("capacity = 1024", "capacity = 1000000000000"),
                ("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:8080\"\nmax_connections = 5000000\nrequest_timeout_ms = 86400000"),
            ],
            &[
                "stage `realtime`: input `ingest`: `capacity` = 1000000000000 is more than 10000000, the most accepted (events held in memory)",
                "stage `ingest`: `request_timeout_ms` = 86400000 is more than 3600000, the most accepted",
                "stage `ingest`: `max_connections` = 5000000 is more than 1000000, the most accepted",
            ],
        ),
        (
            "zero rate",
            &[("inputs = [\"realtime\"]", "inputs = [\"realtime\"]\nrate_limit = { per_second = 0, burst = 0 }")],
            &["stage `aggregate`: `rate_limit.per_second` must be at least 1", "stage `aggregate`: `rate_limit.burst` must be at least 1"],
        ),
        (
            "reaches no sink",
            &[("[[stages]]\nname = \"kafka_batch\"", "[[stages]]\nname = \"orphan\"\ntype = \"aggregate\"\ninputs = [\"realtime\"]\n\n[[stages]]\nname = \"kafka_batch\"")],
            &["stage `orphan`: reaches no sink: nothing downstream writes its events anywhere, so they would be dropped"],
        ),
        (
            "undefined variable",
            &[("redis_url = \"redis://127.0.0.1:6379\"", "redis_url = \"${HISTFLOW_TEST_UNDEFINED}\"")],
            &["stage `realtime`: `redis_url`: environment variable HISTFLOW_TEST_UNDEFINED is not set and `${HISTFLOW_TEST_UNDEFINED}` has no default (write `${HISTFLOW_TEST_UNDEFINED:-default}`)"],
        ),
        (
            "unregistered business",
            &[("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:8080\"\nbusinesses = [\"archive\", \"comic\"]")],
            &["stage `ingest`: business `comic` is not registered in [businesses]"],
        ),
        (
            "reject on an edge whose sender cannot refuse",
            &[("inputs = [\"realtime\"]", "inputs = [{ from = \"realtime\", when_full = \"reject\" }]")],
            &["stage `aggregate`: input `realtime`: `when_full = \"reject\"` needs a sender that can refuse its client (http_ingest); a `realtime` stage can only wait, use \"block\""],
        ),
        (
            "job stage reading a service stage",
            &[("inputs = [\"kafka_batch\"]", "inputs = [\"aggregate\"]")],
            &["stage `persist`: runs in the job role but input `aggregate` emits in the service role; connect the roles through a bridge stage such as kafka_batch"],
        ),
        (
            "source with inputs, stage-local ranges, duplicate business id",
            &[
                ("listen = \"127.0.0.1:8080\"", "listen = \"localhost\"\ninputs = [\"persist\"]"),
                ("pgc = { id = 2,", "pgc = { id = 1,"),
                ("inputs = [\"realtime\"]", "inputs = [\"realtime\"]\nshards = 0"),
            ],
            &[
                "business `pgc`: `id` = 1 is already the id of business `archive`",
                "stage `ingest`: input `persist` is a `persist` sink and emits nothing",
                "stage `ingest`: runs in the service role but input `persist` emits in the job role; connect the roles through a bridge stage such as kafka_batch",
                "stage `ingest`: a `http_ingest` stage is a source and takes no `inputs`",
                "stage `ingest`: `listen` = \"localhost\" is not an address such as 127.0.0.1:8080",
                "stage `aggregate`: `shards` must be at least 1",
                "stage `ingest`: cyclic dependency: ingest -> realtime -> aggregate -> kafka_batch -> persist -> ingest",
            ],
        ),
        (
            "more in-sync copies than copies",
            &[("brokers = \"127.0.0.1:9092\"", "brokers = \"127.0.0.1:9092\"\nreplication_factor = 2\nmin_insync_replicas = 3")],
            &["stage `kafka_batch`: `min_insync_replicas` = 3 must be from 1 to `replication_factor` (2): a write cannot wait for more copies than exist"],
        ),
        (
            "an open API and admin listener other machines can reach",
            &[
                ("[businesses]", "[pipeline]\nadmin_listen = \"0.0.0.0:9464\"\n\n[businesses]"),
                ("listen = \"127.0.0.1:8080\"", "listen = \"0.0.0.0:8080\"\ngrpc_listen = \"10.1.2.3:50051\""),
            ],
            &[
                "stage `ingest`: `listen` = \"0.0.0.0:8080\" is reachable from other machines and [auth] has no clients, so anyone could write and delete any user's history: add [[auth.clients]], listen on loopback, or set `allow_unauthenticated = true` in [auth]",
                "stage `ingest`: `grpc_listen` = \"10.1.2.3:50051\" is reachable from other machines and [auth] has no clients, so anyone could write and delete any user's history: add [[auth.clients]], listen on loopback, or set `allow_unauthenticated = true` in [auth]",
                "[pipeline]: `admin_listen` = \"0.0.0.0:9464\" is reachable from other machines and [auth] has no clients, so anyone could reload the topology and read the metrics: add [[auth.clients]], listen on loopback, or set `allow_unauthenticated = true` in [auth]",
            ],
        ),
        (
            "a client with no scopes, and one limited to unregistered businesses",
            &[(
                "[businesses]",
                "[[auth.clients]]\nname = \"idle\"\ntoken = \"idle-token-0123456789\"\nscopes = []\n\n[[auth.clients]]\nname = \"comics\"\ntoken = \"comic-token-0123456789\"\nscopes = [\"read\", \"admin\"]\nbusinesses = [\"comic\", \"archive\"]\n\n[businesses]",
            )],
            &[
                "[auth]: client `idle`: `scopes` is empty, so the client could do nothing; name some of write, read, mutate, admin, or leave it out",
                "[auth]: client `comics`: `businesses` names [\"comic\"], not registered in [businesses]",
            ],
        ),
        (
            "no copy at all",
            &[("brokers = \"127.0.0.1:9092\"", "brokers = \"127.0.0.1:9092\"\nreplication_factor = 0")],
            &["stage `kafka_batch`: `replication_factor` must be at least 1"],
        ),
    ];
    let mut failures = Vec::new();
    for (case, edits, expected) in table {
        let got = problems_of(edits);
        if got != *expected {
            failures.push(format!("case {case:?}\n  expected: {expected:#?}\n  got:      {got:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn unknown_field_and_graph_problems_are_reported_together() {
    // A stage that fails to parse must not hide the graph problems around it.
    let got = problems_of(&[
        ("redis_url = ", "redis_urll = "),
        ("inputs = [\"realtime\"]", "inputs = [\"realtime\", \"nowhere\"]"),
        ("capacity = 1024", "capacity = 0"),
    ]);
    assert_eq!(
        got,
        vec![
            "stage `realtime`: unknown field `redis_urll`, expected one of `redis_url`, `max_items_per_user`, `group_commit_max_events`, `group_commit_linger_us`, `script_max_events`, `cluster`, `max_in_flight_commits`, `broadcast_brokers`, `broadcast_topic`, `redrive`, `redrive_after_ms`, `redrive_every_ms`",
            "stage `aggregate`: input `nowhere` is not a stage of this topology",
            "stage `realtime`: input `ingest`: `capacity` must be at least 1",
        ]
    );
}

#[test]
fn not_toml_is_one_clear_problem() {
    let got = match load::<StageConfig>("[[stages]\nname=", &VarSource::Fixed(Default::default())) {
        Ok(_) => Vec::new(),
        Err(problems) => problems.lines(),
    };
    assert_eq!(got.len(), 1);
    assert!(got[0].starts_with("topology: not valid TOML"), "{got:?}");
}
