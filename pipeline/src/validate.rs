//! Graph-level validation of a parsed topology: names, edges, cycles, roles,
//! sinks, rate limits, businesses. Every problem is collected, in file order.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;

use crate::problem::{Problem, Problems};
use crate::topology::{InputSpec, Role, Shape, StageSpec, Topology, WhenFull};

/// A stage as the graph checks see it; `config` is `None` for a stage whose
/// own part did not parse (it is given the benefit of the doubt: treated as
/// able to reach a sink, with no role or shape to check).
struct Node<'a, S> {
    name: &'a str,
    inputs: &'a [InputSpec],
    config: Option<&'a S>,
}

fn nodes<S>(topology: &Topology<S>) -> Vec<Node<'_, S>> {
    let parsed = topology.stages.iter().map(|stage| Node { name: &stage.name, inputs: &stage.inputs, config: Some(&stage.config) });
    let opaque =
        topology.opaque.iter().map(|stage| Node { name: &stage.name, inputs: stage.inputs.as_deref().unwrap_or_default(), config: None });
    parsed.chain(opaque).collect()
}

/// Parses and validates in one step: the whole check `histflow validate` runs.
pub fn load<S: StageSpec>(text: &str, vars: &crate::env::VarSource) -> Result<Topology<S>, Problems> {
    let (topology, mut problems) = crate::topology::parse_partial::<S>(text, vars)?;
    problems.extend(validate(&topology));
    if problems.is_empty() {
        Ok(topology)
    } else {
        Err(problems.into())
    }
}

/// Every graph-level problem of `topology` (empty when it is sound).
pub fn validate<S: StageSpec>(topology: &Topology<S>) -> Vec<Problem> {
    let mut problems = Vec::new();
    check_settings(topology, &mut problems);
    check_businesses(topology, &mut problems);
    check_auth(topology, &mut problems);
    check_exposure(topology, &mut problems);
    check_names(topology, &mut problems);
    check_stages(topology, &mut problems);
    check_cycles(topology, &mut problems);
    check_reaches_sink(topology, &mut problems);
    problems
}

fn check_settings<S: StageSpec>(topology: &Topology<S>, problems: &mut Vec<Problem>) {
    let settings = &topology.settings;
    if settings.shutdown_timeout_ms == 0 {
        problems.push(Problem::pipeline("`shutdown_timeout_ms` must be at least 1"));
    }
    if settings.admin_listen.parse::<SocketAddr>().is_err() {
        problems.push(Problem::pipeline(format!("`admin_listen` = {:?} is not an address such as 127.0.0.1:9464", settings.admin_listen)));
    }
}

fn check_businesses<S: StageSpec>(topology: &Topology<S>, problems: &mut Vec<Problem>) {
    let mut ids: HashMap<u32, &str> = HashMap::new();
    for (name, business) in &topology.businesses {
        if let Some(other) = ids.insert(business.id, name) {
            problems.push(Problem::business(name, format!("`id` = {} is already the id of business `{other}`", business.id)));
        }
        if business.retention_days == 0 {
            problems.push(Problem::business(name, "`retention_days` must be at least 1"));
        }
        if name.is_empty() || name.contains(':') {
            problems.push(Problem::business(
                name,
                "a business name must be non-empty and must not contain `:` (it is part of the item key `business:oid`)",
            ));
        }
    }
}

fn check_auth<S: StageSpec>(topology: &Topology<S>, problems: &mut Vec<Problem>) {
    let mut names = HashSet::new();
    let mut tokens = HashSet::new();
    for client in &topology.auth.clients {
        let name = &client.name;
        if !names.insert(name.as_str()) {
            problems.push(Problem::auth(format!("client `{name}` is declared twice")));
        }
        if client.token.len() < 16 {
            problems.push(Problem::auth(format!("client `{name}`: `token` must be at least 16 characters")));
        } else if !tokens.insert(client.token.as_str()) {
            problems.push(Problem::auth(format!("client `{name}`: `token` is the same as another client's")));
        }
        if let Some(limit) = &client.rate_limit {
            if limit.per_second == 0 || limit.burst == Some(0) {
                problems.push(Problem::auth(format!("client `{name}`: `rate_limit.per_second` and `rate_limit.burst` must be at least 1")));
            }
        }
        if client.scopes.as_ref().is_some_and(Vec::is_empty) {
            problems.push(Problem::auth(format!(
                "client `{name}`: `scopes` is empty, so the client could do nothing; name some of write, read, mutate, admin, or leave it out"
            )));
        }
        if let Some(businesses) = &client.businesses {
            if businesses.is_empty() {
                problems.push(Problem::auth(format!(
                    "client `{name}`: `businesses` is empty, so the client could touch nothing; name some, or leave it out for all"
                )));
            }
            let unknown: Vec<&str> = businesses.iter().map(String::as_str).filter(|b| !topology.businesses.contains_key(*b)).collect();
            if !unknown.is_empty() {
                problems.push(Problem::auth(format!("client `{name}`: `businesses` names {unknown:?}, not registered in [businesses]")));
            }
        }
    }
}

/// Whether `address` (host:port) can be reached from other machines: not a
/// loopback address. One that does not parse is reported elsewhere.
fn reachable_from_elsewhere(address: &str) -> bool {
    address.parse::<SocketAddr>().is_ok_and(|address| !address.ip().is_loopback())
}

/// Listeners other machines can reach while `[auth]` has no clients: anyone
/// could write and delete any user's history, or reload the topology.
fn check_exposure<S: StageSpec>(topology: &Topology<S>, problems: &mut Vec<Problem>) {
    let auth = &topology.auth;
    if !auth.clients.is_empty() || auth.allow_unauthenticated {
        return;
    }
    const FIX: &str = "add [[auth.clients]], listen on loopback, or set `allow_unauthenticated = true` in [auth]";
    for stage in &topology.stages {
        for (field, address) in stage.config.client_listeners() {
            if reachable_from_elsewhere(address) {
                problems.push(Problem::stage(
                    &stage.name,
                    format!("`{field}` = {address:?} is reachable from other machines and [auth] has no clients, so anyone could write and delete any user's history: {FIX}"),
                ));
            }
        }
    }
    if reachable_from_elsewhere(&topology.settings.admin_listen) {
        problems.push(Problem::pipeline(format!(
            "`admin_listen` = {:?} is reachable from other machines and [auth] has no clients, so anyone could reload the topology and read the metrics: {FIX}",
            topology.settings.admin_listen
        )));
    }
}

fn check_names<S: StageSpec>(topology: &Topology<S>, problems: &mut Vec<Problem>) {
    let mut seen = HashSet::new();
    for node in nodes(topology) {
        if !seen.insert(node.name) {
            problems.push(Problem::stage(node.name, "duplicate stage name: another stage already has it"));
        }
    }
}

/// The role in which the events a stage emits exist.
fn output_role<S: StageSpec>(config: &S) -> Role {
    match config.shape() {
        Shape::Bridge => Role::Job,
        _ => config.role(),
    }
}

fn check_stages<S: StageSpec>(topology: &Topology<S>, problems: &mut Vec<Problem>) {
    let all = nodes(topology);
    for node in &all {
        check_edges(&all, node, problems);
    }
    for stage in &topology.stages {
        let name = &stage.name;
        match (stage.config.shape(), stage.inputs.is_empty()) {
            (Shape::Source, false) => {
                problems.push(Problem::stage(name, format!("a `{}` stage is a source and takes no `inputs`", stage.config.kind())))
            }
            (Shape::Transform | Shape::Sink | Shape::Bridge, true) => {
                problems.push(Problem::stage(name, "`inputs` is empty: nothing feeds this stage"))
            }
            _ => {}
        }
        if let Some(limit) = &stage.rate_limit {
            if limit.per_second == 0 {
                problems.push(Problem::stage(name, "`rate_limit.per_second` must be at least 1"));
            }
            if limit.burst == Some(0) {
                problems.push(Problem::stage(name, "`rate_limit.burst` must be at least 1"));
            }
        }

        for business in stage.config.businesses() {
            if !topology.businesses.contains_key(business) {
                problems.push(Problem::stage(name, format!("business `{business}` is not registered in [businesses]")));
            }
        }
        for message in stage.config.check() {
            problems.push(Problem::stage(name, message));
        }
    }
}

/// Largest edge `capacity` accepted: events an edge may hold in memory. A
/// `capacity = 1000000000000` is a typo, not a plan.
pub const MAX_EDGE_CAPACITY: usize = 10_000_000;

fn check_edges<S: StageSpec>(all: &[Node<'_, S>], node: &Node<'_, S>, problems: &mut Vec<Problem>) {
    let name = node.name;
    let mut seen_inputs = HashSet::new();
    for input in node.inputs {
        let from = &input.from;
        if !seen_inputs.insert(from.as_str()) {
            problems.push(Problem::stage(name, format!("input `{from}` is listed twice")));
        }
        if input.capacity == 0 {
            problems.push(Problem::stage(name, format!("input `{from}`: `capacity` must be at least 1")));
        } else if input.capacity > MAX_EDGE_CAPACITY {
            problems.push(Problem::stage(
                name,
                format!(
                    "input `{from}`: `capacity` = {} is more than {MAX_EDGE_CAPACITY}, the most accepted (events held in memory)",
                    input.capacity
                ),
            ));
        }
        let Some(upstream) = all.iter().find(|other| other.name == from) else {
            problems.push(Problem::stage(name, format!("input `{from}` is not a stage of this topology")));
            continue;
        };
        // Shape and role checks need both ends parsed.
        let (Some(upstream), Some(config)) = (upstream.config, node.config) else {
            continue;
        };
        if upstream.shape() == Shape::Sink {
            problems.push(Problem::stage(name, format!("input `{from}` is a `{}` sink and emits nothing", upstream.kind())));
        }
        if input.when_full == WhenFull::Reject && !upstream.can_refuse_clients() {
            problems.push(Problem::stage(
                name,
                format!("input `{from}`: `when_full = \"reject\"` needs a sender that can refuse its client (http_ingest); a `{}` stage can only wait, use \"block\"", upstream.kind()),
            ));
        }
        let (upstream_role, role) = (output_role(upstream), config.role());
        if upstream_role != role {
            problems.push(Problem::stage(
                name,
                format!("runs in the {role} role but input `{from}` emits in the {upstream_role} role; connect the roles through a bridge stage such as kafka_batch"),
            ));
        }
    }
}

/// Depth-first search over "reads from" edges; every back edge closes a
/// cycle, reported once with its path (`a -> b -> a`, in data-flow order).
fn check_cycles<S: StageSpec>(topology: &Topology<S>, problems: &mut Vec<Problem>) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let all = nodes(topology);
    // With duplicate names, edges resolve to the first stage of that name
    // (the duplicate itself is reported by `check_names`).
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, node) in all.iter().enumerate() {
        index.entry(node.name).or_insert(i);
    }
    let mut marks = vec![Mark::New; all.len()];
    let mut reported: BTreeSet<Vec<usize>> = BTreeSet::new();

    fn visit<S>(
        node: usize,
        all: &[Node<'_, S>],
        index: &HashMap<&str, usize>,
        marks: &mut [Mark],
        path: &mut Vec<usize>,
        reported: &mut BTreeSet<Vec<usize>>,
        problems: &mut Vec<Problem>,
    ) {
        marks[node] = Mark::OnPath;
        path.push(node);
        for input in all[node].inputs {
            let Some(&next) = index.get(input.from.as_str()) else {
                continue;
            };
            match marks[next] {
                Mark::New => visit(next, all, index, marks, path, reported, problems),
                Mark::OnPath => {
                    let start = path.iter().rposition(|&n| n == next).unwrap_or(0);
                    let mut cycle: Vec<usize> = path[start..].to_vec();
                    // Walked against the data flow; reverse to read a -> b -> a,
                    // then start at the stage written first in the file.
                    cycle.reverse();
                    if let Some(first) = cycle.iter().enumerate().min_by_key(|(_, &n)| n).map(|(at, _)| at) {
                        cycle.rotate_left(first);
                    }
                    let mut key = cycle.clone();
                    key.sort_unstable();
                    if reported.insert(key) {
                        let mut names: Vec<&str> = cycle.iter().map(|&n| all[n].name).collect();
                        names.push(names[0]);
                        problems.push(Problem::stage(names[0], format!("cyclic dependency: {}", names.join(" -> "))));
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks[node] = Mark::Done;
    }

    for node in 0..all.len() {
        if marks[node] == Mark::New {
            visit(node, &all, &index, &mut marks, &mut Vec::new(), &mut reported, problems);
        }
    }
}

/// A stage whose events can never arrive at a sink or bridge would drop
/// them: every non-sink stage must have a path to one.
fn check_reaches_sink<S: StageSpec>(topology: &Topology<S>, problems: &mut Vec<Problem>) {
    // A stage whose inputs did not parse could read from anything: nothing
    // can be said about which stages reach a sink.
    if topology.opaque.iter().any(|stage| stage.inputs.is_none()) {
        return;
    }
    let all = nodes(topology);
    let ends = |node: &Node<'_, S>| node.config.is_none_or(|config| matches!(config.shape(), Shape::Sink | Shape::Bridge));
    let mut reaches: HashSet<&str> = all.iter().filter(|node| ends(node)).map(|node| node.name).collect();
    let mut frontier: Vec<&str> = reaches.iter().copied().collect();
    while let Some(name) = frontier.pop() {
        for node in all.iter().filter(|node| node.name == name) {
            for input in node.inputs {
                if reaches.insert(input.from.as_str()) {
                    frontier.push(input.from.as_str());
                }
            }
        }
    }
    for node in &all {
        if !reaches.contains(node.name) {
            problems.push(Problem::stage(
                node.name,
                "reaches no sink: nothing downstream writes its events anywhere, so they would be dropped",
            ));
        }
    }
}
