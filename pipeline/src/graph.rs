//! Renders a topology as Graphviz DOT or Mermaid: every stage, every edge,
//! each edge labelled with its capacity and policy, and the reading stage's
//! rate limit. Edges out of a bridge are drawn as broker hops.

use std::fmt::Write as _;

use crate::topology::{InputSpec, Role, Shape, StageDef, StageSpec, Topology};

/// Output format of `histflow graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GraphFormat {
    /// Graphviz DOT.
    #[default]
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

fn node_label<S: StageSpec>(stage: &StageDef<S>) -> String {
    let role = match stage.config.shape() {
        Shape::Bridge => format!("{} → {}", Role::Service, Role::Job),
        _ => stage.config.role().to_string(),
    };
    let mut label = format!("{}\\n{} ({role})", stage.name, stage.config.kind());
    if let Some(limit) = &stage.rate_limit {
        let _ = write!(label, "\\nrate {}/s burst {}", limit.per_second, limit.burst_or_default());
    }
    label
}

fn edge_label<S: StageSpec>(to: &StageDef<S>, input: &InputSpec) -> String {
    let mut label = format!("cap {} {}", input.capacity, input.when_full);
    if let Some(limit) = &to.rate_limit {
        let _ = write!(label, ", rate {}/s", limit.per_second);
    }
    label
}

fn is_broker_hop<S: StageSpec>(topology: &Topology<S>, input: &InputSpec) -> bool {
    topology.stage(&input.from).is_some_and(|from| from.config.shape() == Shape::Bridge)
}

/// Mermaid node ids must be plain identifiers.
fn mermaid_id(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

/// Renders `topology` in `format`.
pub fn render<S: StageSpec>(topology: &Topology<S>, format: GraphFormat) -> String {
    let mut out = String::new();
    match format {
        GraphFormat::Dot => {
            out.push_str("digraph histflow {\n  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];\n");
            for stage in &topology.stages {
                let shape = match stage.config.shape() {
                    Shape::Source => "invhouse",
                    Shape::Sink => "cylinder",
                    Shape::Bridge => "cds",
                    Shape::Transform => "box",
                };
                let _ = writeln!(out, "  \"{}\" [label=\"{}\", shape={shape}];", stage.name, node_label(stage));
            }
            for stage in &topology.stages {
                for input in &stage.inputs {
                    let mut label = edge_label(stage, input);
                    let style = if is_broker_hop(topology, input) {
                        label.push_str(", via broker");
                        ", style=bold"
                    } else {
                        ""
                    };
                    let _ = writeln!(out, "  \"{}\" -> \"{}\" [label=\"{label}\"{style}];", input.from, stage.name);
                }
            }
            out.push_str("}\n");
        }
        GraphFormat::Mermaid => {
            out.push_str("flowchart LR\n");
            for stage in &topology.stages {
                let label = node_label(stage).replace("\\n", "<br/>");
                let _ = writeln!(out, "  {}[\"{label}\"]", mermaid_id(&stage.name));
            }
            for stage in &topology.stages {
                for input in &stage.inputs {
                    let mut label = edge_label(stage, input);
                    let arrow = if is_broker_hop(topology, input) {
                        label.push_str(", via broker");
                        "==>"
                    } else {
                        "-->"
                    };
                    let _ = writeln!(out, "  {} {arrow}|\"{label}\"| {}", mermaid_id(&input.from), mermaid_id(&stage.name));
                }
            }
        }
    }
    out
}
