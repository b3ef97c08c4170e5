//! What a topology reload changes in a running process, worked out and
//! built before anything changes ([`prepare`]), then put in force at once
//! ([`Prepared::commit`]).
//!
//! A node of the role's plan is compared with the running one by what its
//! build reads: its own definition and, per kind, the neighbours it takes
//! settings from (a realtime stage reads its aggregate's shards and flush
//! interval, ...) and the business registry. Then:
//! - new nodes are built and start;
//! - nodes whose reading changed are built again and hand over (their
//!   running instance drains into the same edges first);
//! - an ingest stage on the same addresses is never rebuilt: its settings
//!   (auth clients and tokens, businesses, timeouts, limits, reads) are
//!   replaced in place, so its listeners and connections stay;
//! - edge capacities, `when_full` and rate limits change in place;
//! - nodes gone from the plan lose their inputs, drain and end.
//!
//! Endpoints that are new in the file are connected to first ([`probe`]);
//! any problem refuses the whole reload and nothing changes.

pub mod probe;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use ingest_http::api::{ApiConfig, LiveApi};
use model::Batch;
use pipeline::plan::{plan, Half, PlannedNode};
use pipeline::runtime::BuildError as WiringError;
use pipeline::{Control, NodeSpec, Rewire, Rewired, Stage, Topology};

use crate::build::{BuildContext, BuildError, BuildOptions};
use crate::StageConfig;

/// What a reload will do, built and checked, not yet in force.
pub struct Prepared {
    specs: Vec<NodeSpec>,
    stages: HashMap<String, Box<dyn Stage<Batch>>>,
    in_place: Vec<(Arc<LiveApi>, ApiConfig)>,
    /// Every address the role's servers listen on after the reload.
    listening: HashSet<String>,
    /// What changes, for the answer and the log.
    pub changes: Changes,
}

/// What a reload changes, by node.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Changes {
    /// Nodes that start.
    pub started: Vec<String>,
    /// Nodes built again and handed over.
    pub rebuilt: Vec<String>,
    /// Nodes that drain and end.
    pub retired: Vec<String>,
    /// Nodes whose inputs or rate limit change in place.
    pub retuned: Vec<String>,
    /// Ingest nodes whose API settings change in place.
    pub reconfigured: Vec<String>,
    /// Stages that changed in the file but run in the other role here.
    pub other_role: Vec<String>,
}

impl Changes {
    /// Whether the reload changes nothing this process runs.
    pub fn is_empty(&self) -> bool {
        self.started.is_empty()
            && self.rebuilt.is_empty()
            && self.retired.is_empty()
            && self.retuned.is_empty()
            && self.reconfigured.is_empty()
    }
}

/// Works out and builds what reloading `running` into `next` changes for
/// `options.role`, connecting to every endpoint `next` adds. Every problem
/// is returned; nothing running is touched.
pub async fn prepare(
    running: &Topology<StageConfig>,
    next: &Topology<StageConfig>,
    options: &BuildOptions,
) -> Result<Prepared, Vec<String>> {
    if !options.embedded {
        let known: BTreeSet<probe::Endpoint> = running.stages.iter().flat_map(|stage| probe::endpoints(&stage.config)).collect();
        let planned: BTreeSet<probe::Endpoint> =
            plan(next, options.role).iter().flat_map(|node| probe::endpoints(&node.stage.config)).collect();
        let mut problems = Vec::new();
        for endpoint in planned.difference(&known) {
            if let Err(problem) = probe::probe(endpoint).await {
                problems.push(problem);
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
    }
    build_changes(running, next, options)
}

/// The build half of [`prepare`] (no connections).
fn build_changes(running: &Topology<StageConfig>, next: &Topology<StageConfig>, options: &BuildOptions) -> Result<Prepared, Vec<String>> {
    let admin = options.admin();
    let mut backends = options.resident.backends(options.embedded);
    let mut fingerprints = HashMap::new();
    let running_plan = plan(running, options.role);
    for node in &running_plan {
        let mut cx =
            BuildContext { topology: running, stage: node.stage, half: node.half, options, admin: &admin, backends: &mut backends };
        fingerprints.insert(node.spec.name.clone(), (fingerprint(&mut cx), node.spec.clone()));
    }
    let next_plan = plan(next, options.role);
    let mut changes = Changes::default();
    let mut stages = HashMap::new();
    let mut in_place = Vec::new();
    let mut problems = Vec::new();
    for node in &next_plan {
        let name = &node.spec.name;
        let mut cx = BuildContext { topology: next, stage: node.stage, half: node.half, options, admin: &admin, backends: &mut backends };
        let print = fingerprint(&mut cx);
        let previous = fingerprints.get(name);
        if previous.is_some_and(|(_, spec)| spec.inputs != node.spec.inputs || spec.rate_limit != node.spec.rate_limit) {
            changes.retuned.push(name.clone());
        }
        let live = options.resident.ingest(name);
        match (&node.stage.config, previous, live) {
            // Same listeners: the settings change in place.
            (StageConfig::HttpIngest(config), Some((old, _)), Some(live)) if *old == print => {
                match crate::http_ingest::api_config(config, &mut cx) {
                    Ok(api) => {
                        let described =
                            |topology: &Topology<StageConfig>| topology.stage(&node.stage.name).map(|stage| format!("{:?}", stage.config));
                        if described(running) != described(next) || running.auth != next.auth || running.businesses != next.businesses {
                            changes.reconfigured.push(name.clone());
                        }
                        in_place.push((live, api));
                    }
                    Err(problem) => problems.push(BuildError::Stage { stage: node.stage.name.clone(), problem }.to_string()),
                }
            }
            (_, Some((old, _)), _) if *old == print => {}
            (_, previous, _) => match node.stage.config.build(&mut cx) {
                Ok(stage) => {
                    if previous.is_some() {
                        changes.rebuilt.push(name.clone());
                    } else {
                        changes.started.push(name.clone());
                    }
                    stages.insert(name.clone(), stage);
                }
                Err(problem) => problems.push(BuildError::Stage { stage: node.stage.name.clone(), problem }.to_string()),
            },
        }
    }
    let next_names: HashSet<&str> = next_plan.iter().map(|node| node.spec.name.as_str()).collect();
    changes.retired = running_plan.iter().map(|node| node.spec.name.clone()).filter(|name| !next_names.contains(name.as_str())).collect();
    changes.other_role = other_role_edits(running, next, &running_plan, &next_plan);
    if !problems.is_empty() {
        return Err(problems);
    }
    let listening = next_plan
        .iter()
        .filter_map(|node| match &node.stage.config {
            StageConfig::HttpIngest(ingest) => Some(std::iter::once(ingest.listen.clone()).chain(ingest.grpc_listen.clone())),
            _ => None,
        })
        .flatten()
        .collect();
    let specs = next_plan.into_iter().map(|node| node.spec).collect();
    Ok(Prepared { specs, stages, in_place, listening, changes })
}

impl Prepared {
    /// Puts the reload in force: ingest settings first (a removed token
    /// stops working at once), then the pipeline's rewiring, which returns
    /// once rebuilt nodes have handed over and new ones run.
    pub async fn commit(self, control: &Control<Batch>, options: &BuildOptions) -> Result<Rewired, WiringError> {
        for (live, api) in self.in_place {
            live.replace(api);
        }
        let running: Vec<String> = self.specs.iter().map(|spec| spec.name.clone()).collect();
        let rewired = control.apply(Rewire { specs: self.specs, stages: self.stages }).await?;
        // Servers on moved addresses have stopped: release those addresses.
        options.resident.keep_ingest(&running);
        options.resident.listeners.keep_only(&self.listening);
        Ok(rewired)
    }
}

/// What `cx`'s node reads when it is built, as text: equal texts build
/// equal stages. Inputs and rate limits are left out (they change in
/// place).
fn fingerprint(cx: &mut BuildContext<'_>) -> String {
    let config = &cx.stage.config;
    let show = |config: Option<&StageConfig>| format!("{config:?}");
    let businesses = format!("{:?}", cx.businesses());
    let reads: Vec<String> = match config {
        // The listeners, and the gRPC server's limits, which are set when
        // it starts (its call deadline follows `request_timeout_ms`): a
        // change to any of them rebuilds the stage, so it takes effect.
        StageConfig::HttpIngest(ingest) => vec![format!(
            "listen {:?} grpc {:?} grpc limits {} {} {}",
            ingest.listen,
            ingest.grpc_listen,
            ingest.grpc_max_connections,
            ingest.grpc_max_streams_per_connection,
            ingest.grpc_listen.as_ref().map_or(0, |_| ingest.request_timeout_ms)
        )],
        StageConfig::Realtime(_) => vec![
            show(cx.downstream(|config| matches!(config, StageConfig::Aggregate(_)))),
            show(cx.reached(|config| matches!(config, StageConfig::KafkaBatch(_)))),
            businesses,
        ],
        StageConfig::Aggregate(_) => vec![show(cx.downstream(|config| matches!(config, StageConfig::KafkaBatch(_)))), businesses],
        StageConfig::KafkaBatch(_) if cx.half == Half::Consumer => Vec::new(),
        StageConfig::KafkaBatch(_) => vec![show(cx.fed_by(|config| matches!(config, StageConfig::Realtime(_)))), businesses],
        StageConfig::Persist(_) => {
            let bridges = cx.stage.inputs.iter().map(|input| show(cx.topology.stage(&input.from).map(|from| &from.config)));
            bridges.chain(std::iter::once(businesses)).collect()
        }
        StageConfig::Discard(_) => Vec::new(),
    };
    match config {
        // Everything else of an ingest stage changes in place.
        StageConfig::HttpIngest(_) => reads.join("\n"),
        _ => format!("{:?} {config:?}\n{}", cx.half, reads.join("\n")),
    }
}

/// Stages whose definition changed but that this role does not run.
fn other_role_edits(
    running: &Topology<StageConfig>,
    next: &Topology<StageConfig>,
    running_plan: &[PlannedNode<'_, StageConfig>],
    next_plan: &[PlannedNode<'_, StageConfig>],
) -> Vec<String> {
    let ours: HashSet<&str> = running_plan.iter().chain(next_plan).map(|node| node.stage.name.as_str()).collect();
    let described = |topology: &Topology<StageConfig>, name: &str| {
        topology.stage(name).map(|stage| format!("{:?} {:?} {:?}", stage.config, stage.inputs, stage.rate_limit))
    };
    let names: BTreeSet<&str> = running.stages.iter().chain(&next.stages).map(|stage| stage.name.as_str()).collect();
    names.into_iter().filter(|name| !ours.contains(name) && described(running, name) != described(next, name)).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests;
