//! What a topology reload changes in a running process, worked out and
//! built before anything changes ([`prepare`]), then put in force at once
//! ([`Prepared::commit`]).
//!
//! A node of the role's plan is compared with the running one by what its
//! build reads: its own definition and the shared resources its kind
//! declares it takes by a rebuild (`crate::resources`; a realtime stage
//! takes its aggregate's sharding, ...). Then:
//! - new nodes are built and start;
//! - nodes whose reading changed are built again and hand over (their
//!   running instance drains into the same edges first);
//! - an ingest stage on the same addresses is never rebuilt: its settings
//!   (auth clients and tokens, businesses, timeouts, limits, reads) are
//!   replaced in place, so its listeners and connections stay;
//! - edge capacities, `when_full` and rate limits change in place;
//! - the business registry changes in place: every stage reads it while
//!   it runs (`crate::registry`), so a business added, removed or changed
//!   rebuilds nothing;
//! - nodes gone from the plan lose their inputs, drain and end.
//!
//! Endpoints that are new in the file are connected to first ([`probe`]);
//! any problem refuses the whole reload and nothing changes.

pub mod probe;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use ingest_http::api::{ApiConfig, LiveApi};
use model::Batch;
use pipeline::plan::{plan, PlannedNode};
use pipeline::runtime::BuildError as WiringError;
use pipeline::topology::Business;
use pipeline::{Control, NodeSpec, Rewire, Rewired, Stage, Topology};

use crate::build::{resources_of, BuildContext, BuildError, BuildOptions};
use crate::resources::Resolved;
use crate::StageConfig;

/// What a reload will do, built and checked, not yet in force.
pub struct Prepared {
    specs: Vec<NodeSpec>,
    stages: HashMap<String, Box<dyn Stage<Batch>>>,
    in_place: Vec<(Arc<LiveApi>, ApiConfig)>,
    /// Every address the role's servers listen on after the reload.
    listening: HashSet<String>,
    /// The business registry after the reload.
    businesses: BTreeMap<String, Business>,
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
    /// Whether `[businesses]` changes: every stage reads the registry
    /// while it runs, so this rebuilds none.
    pub registry: bool,
}

impl Changes {
    /// Whether the reload changes nothing this process runs.
    pub fn is_empty(&self) -> bool {
        self.started.is_empty()
            && self.rebuilt.is_empty()
            && self.retired.is_empty()
            && self.retuned.is_empty()
            && self.reconfigured.is_empty()
            && !self.registry
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

/// What a node's build reads, as text: its half, its own settings and
/// the resources its kind declared, resolved.
struct NodeKey {
    /// What a change to rebuilds the node: its half, its own settings but
    /// those an ingest stage changes in place, and the resources taken by
    /// a rebuild.
    rebuild: String,
    /// Its own settings, all of them.
    config: String,
    /// Its resources, in place or not (compared as values: a client's
    /// token does not show in their text).
    resources: Resolved,
}

impl NodeKey {
    fn of(topology: &Topology<StageConfig>, node: &PlannedNode<'_, StageConfig>, options: &BuildOptions) -> Self {
        let resources = resources_of(topology, node, options);
        let config = &node.stage.config;
        let rebuild = format!("{:?} {}\n{}", node.half, config.own_rebuild_key(), resources.rebuild_key(config.uses(node.half)));
        NodeKey { rebuild, config: format!("{config:?}"), resources }
    }
}

/// The build half of [`prepare`] (no connections).
fn build_changes(running: &Topology<StageConfig>, next: &Topology<StageConfig>, options: &BuildOptions) -> Result<Prepared, Vec<String>> {
    let admin = options.admin();
    let mut backends = options.resident.backends(options.embedded);
    let running_plan = plan(running, options.role);
    let before: HashMap<String, (NodeKey, NodeSpec)> =
        running_plan.iter().map(|node| (node.spec.name.clone(), (NodeKey::of(running, node, options), node.spec.clone()))).collect();
    let next_plan = plan(next, options.role);
    let mut changes = Changes { registry: running.businesses != next.businesses, ..Changes::default() };
    let mut stages = HashMap::new();
    let mut in_place = Vec::new();
    let mut problems = Vec::new();
    for node in &next_plan {
        let name = &node.spec.name;
        let key = NodeKey::of(next, node, options);
        let previous = before.get(name);
        if previous.is_some_and(|(_, spec)| spec.inputs != node.spec.inputs || spec.rate_limit != node.spec.rate_limit) {
            changes.retuned.push(name.clone());
        }
        let live = options.resident.ingest(name);
        let mut cx = BuildContext {
            name: &node.stage.name,
            half: node.half,
            resources: &key.resources,
            registry: &options.resident.registry,
            options,
            admin: &admin,
            backends: &mut backends,
        };
        let unchanged = previous.is_some_and(|(old, _)| old.rebuild == key.rebuild);
        match (&node.stage.config, previous, live) {
            // Same listeners: the settings change in place.
            (StageConfig::HttpIngest(config), Some((old, _)), Some(live)) if unchanged => {
                match crate::http_ingest::api_config(config, &mut cx) {
                    Ok(api) => {
                        if old.config != key.config || old.resources != key.resources {
                            changes.reconfigured.push(name.clone());
                        }
                        in_place.push((live, api));
                    }
                    Err(problem) => problems.push(BuildError::Stage { stage: node.stage.name.clone(), problem }.to_string()),
                }
            }
            _ if unchanged => {}
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
    Ok(Prepared { specs, stages, in_place, listening, businesses: next.businesses.clone(), changes })
}

impl Prepared {
    /// Puts the reload in force: the business registry and the ingest
    /// settings first (a removed token stops working at once), then the pipeline's rewiring, which returns
    /// once rebuilt nodes have handed over and new ones run.
    pub async fn commit(self, control: &Control<Batch>, options: &BuildOptions) -> Result<Rewired, WiringError> {
        options.resident.registry.replace(&self.businesses);
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
