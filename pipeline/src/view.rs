//! The running topology as the live page draws it: every stage placed in a
//! column (its longest distance from a source) and a row, every edge with
//! its capacity and policy, which of them run in this process, and the
//! kind-specific figures each stage shows ([`Figure`]).

use std::collections::BTreeMap;

use serde::Serialize;

pub use crate::figure::{Figure, FigureSource};
use crate::plan::{plan, RoleSelection};
use crate::topology::{Shape, StageSpec, Topology};

/// The whole topology, as one process runs it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TopologyView {
    /// The roles this process runs.
    pub role: String,
    /// Every stage of the file, in file order.
    pub stages: Vec<StageView>,
    /// Every edge of the file.
    pub edges: Vec<EdgeView>,
}

/// One stage.
#[derive(Debug, Clone, Serialize)]
pub struct StageView {
    /// Its name.
    pub name: String,
    /// Its `type`.
    pub kind: &'static str,
    /// `service` or `job` (a bridge: the role of its producing side).
    pub role: String,
    /// `source`, `transform`, `sink` or `bridge`.
    pub shape: &'static str,
    /// Longest path from a source, in edges.
    pub column: usize,
    /// Position within its column, from the top.
    pub row: usize,
    /// The nodes of this stage that run in this process (a bridge has a
    /// producing node, named like the stage, and a consuming node,
    /// `<name>.consumer`); empty when it runs elsewhere.
    pub nodes: Vec<String>,
    /// Its rate limit, events per second.
    pub rate_limit_per_second: Option<u32>,
    /// What its kind shows besides events in and out.
    #[serde(skip)]
    pub figures: Vec<Figure>,
}

/// One edge.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeView {
    /// The upstream stage.
    pub from: String,
    /// The downstream stage.
    pub to: String,
    /// The node the edge leaves from in the runtime (a bridge's consuming
    /// node for an edge out of a bridge); its metrics carry this name.
    pub from_node: String,
    /// Capacity in events.
    pub capacity: usize,
    /// `block` or `reject`.
    pub when_full: String,
    /// Whether the edge leaves a bridge (its data crossed the broker).
    pub via_broker: bool,
    /// Whether the edge runs in this process.
    pub here: bool,
}

fn shape_name(shape: Shape) -> &'static str {
    match shape {
        Shape::Source => "source",
        Shape::Transform => "transform",
        Shape::Sink => "sink",
        Shape::Bridge => "bridge",
    }
}

impl TopologyView {
    /// The view of `topology` from a process running `role`. Assumes a
    /// validated (acyclic) topology.
    pub fn new<S: StageSpec>(topology: &Topology<S>, role: RoleSelection) -> Self {
        let planned = plan(topology, role);
        let columns = columns(topology);
        let mut rows: BTreeMap<usize, usize> = BTreeMap::new();
        let stages = topology
            .stages
            .iter()
            .map(|stage| {
                let column = columns.get(stage.name.as_str()).copied().unwrap_or(0);
                let row = rows.entry(column).or_default();
                let view = StageView {
                    name: stage.name.clone(),
                    kind: stage.config.kind(),
                    role: stage.config.role().to_string(),
                    shape: shape_name(stage.config.shape()),
                    column,
                    row: *row,
                    nodes: planned.iter().filter(|node| node.stage.name == stage.name).map(|node| node.spec.name.clone()).collect(),
                    rate_limit_per_second: stage.rate_limit.map(|limit| limit.per_second),
                    figures: stage.config.figures(),
                };
                *row += 1;
                view
            })
            .collect();
        let mut edges = Vec::new();
        for stage in &topology.stages {
            let receiving = planned.iter().find(|node| node.stage.name == stage.name && !node.spec.source);
            for input in &stage.inputs {
                let via_broker = topology.stage(&input.from).is_some_and(|from| from.config.shape() == Shape::Bridge);
                let from_node = if via_broker { crate::plan::consumer_node_name(&input.from) } else { input.from.clone() };
                edges.push(EdgeView {
                    from: input.from.clone(),
                    to: stage.name.clone(),
                    here: receiving.is_some(),
                    from_node,
                    capacity: input.capacity,
                    when_full: input.when_full.to_string(),
                    via_broker,
                });
            }
        }
        TopologyView { role: role.to_string(), stages, edges }
    }
}

/// Each stage's longest distance from a source, in edges.
fn columns<S: StageSpec>(topology: &Topology<S>) -> BTreeMap<&str, usize> {
    let mut columns: BTreeMap<&str, usize> = topology.stages.iter().map(|stage| (stage.name.as_str(), 0)).collect();
    // A validated topology is acyclic: at most one pass per stage settles it.
    for _ in 0..topology.stages.len() {
        let mut changed = false;
        for stage in &topology.stages {
            let deepest = stage.inputs.iter().filter_map(|input| columns.get(input.from.as_str())).map(|column| column + 1).max();
            if let Some(column) = deepest {
                if columns.get(stage.name.as_str()).is_some_and(|known| *known < column) {
                    columns.insert(stage.name.as_str(), column);
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    columns
}
