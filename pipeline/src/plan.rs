//! Which nodes one process runs for a role (`--role service|job|all`).
//!
//! A stage becomes one node, except a bridge (kafka_batch), which becomes a
//! producing node in the service role and, when anything reads it, a
//! consuming node (`<name>.consumer`) in the job role. Edges out of a bridge
//! start at its consuming node.

use std::fmt;

use crate::topology::{InputSpec, RateLimitSpec, Role, Shape, StageDef, StageSpec, Topology};

/// A node to run: its name, where its input comes from, and its limit.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    /// Unique node name; `inputs[].from` refer to these.
    pub name: String,
    /// Input edges.
    pub inputs: Vec<InputSpec>,
    /// Rate limit on events taken in (or emitted, for a source).
    pub rate_limit: Option<RateLimitSpec>,
    /// A source has no inputs and stops on the signal.
    pub source: bool,
}

/// The roles a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoleSelection {
    /// HTTP ingest through the bridge's producer.
    Service,
    /// The bridge's consumer group and what follows it.
    Job,
    /// Both, in one process.
    #[default]
    All,
}

impl RoleSelection {
    /// Whether this selection runs stages of `role`.
    pub fn includes(self, role: Role) -> bool {
        matches!((self, role), (RoleSelection::All, _) | (RoleSelection::Service, Role::Service) | (RoleSelection::Job, Role::Job))
    }
}

impl fmt::Display for RoleSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RoleSelection::Service => "service",
            RoleSelection::Job => "job",
            RoleSelection::All => "all",
        })
    }
}

/// Which part of a stage a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    /// The whole stage.
    Whole,
    /// A bridge's producing side (a sink).
    Producer,
    /// A bridge's consuming side (a source that drains, see the stage).
    Consumer,
}

/// One node of a role's plan.
#[derive(Debug)]
pub struct PlannedNode<'t, S> {
    /// The stage it comes from.
    pub stage: &'t StageDef<S>,
    /// Which part of it.
    pub half: Half,
    /// The node's wiring.
    pub spec: NodeSpec,
}

/// The name of a bridge's consuming node.
pub fn consumer_node_name(stage: &str) -> String {
    format!("{stage}.consumer")
}

/// The nodes `role` runs, in topology order. Assumes a validated topology.
pub fn plan<S: StageSpec>(topology: &Topology<S>, role: RoleSelection) -> Vec<PlannedNode<'_, S>> {
    let mut nodes = Vec::new();
    for stage in &topology.stages {
        let config = &stage.config;
        let inputs: Vec<InputSpec> = stage
            .inputs
            .iter()
            .map(|input| {
                let from_bridge = topology.stage(&input.from).is_some_and(|upstream| upstream.config.shape() == Shape::Bridge);
                let from = if from_bridge { consumer_node_name(&input.from) } else { input.from.clone() };
                InputSpec { from, ..input.clone() }
            })
            .collect();
        let rate_limit = stage.rate_limit;
        match config.shape() {
            Shape::Bridge => {
                if role.includes(config.role()) {
                    let spec = NodeSpec { name: stage.name.clone(), inputs, rate_limit, source: false };
                    nodes.push(PlannedNode { stage, half: Half::Producer, spec });
                }
                let read = topology.downstream_of(&stage.name).next().is_some();
                if role.includes(Role::Job) && read {
                    let spec = NodeSpec { name: consumer_node_name(&stage.name), inputs: Vec::new(), rate_limit: None, source: true };
                    nodes.push(PlannedNode { stage, half: Half::Consumer, spec });
                }
            }
            shape if role.includes(config.role()) => {
                let spec = NodeSpec { name: stage.name.clone(), inputs, rate_limit, source: shape == Shape::Source };
                nodes.push(PlannedNode { stage, half: Half::Whole, spec });
            }
            _ => {}
        }
    }
    nodes
}
