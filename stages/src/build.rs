//! Builds a role's runnable nodes from a validated topology: for each
//! planned node, the stage implementation with its real backend or, under
//! `--embedded`, its in-process stand-in. Every problem is collected.

use std::collections::HashMap;

use model::Batch;
use pipeline::plan::{plan, Half, RoleSelection};
use pipeline::{RunnableNode, Stage, Topology};

use crate::kafka_batch::embedded::{self, QueueConsumer, QueueProducer};
use crate::StageConfig;

/// How to build.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuildOptions {
    /// The roles this process runs.
    pub role: RoleSelection,
    /// Use in-process stand-ins for Redis, Kafka and HBase.
    pub embedded: bool,
}

/// Builds every node `options.role` runs, or every reason it cannot.
pub fn build(
    topology: &Topology<StageConfig>,
    options: BuildOptions,
) -> Result<Vec<RunnableNode<Batch>>, Vec<String>> {
    let planned = plan(topology, options.role);
    let mut problems = Vec::new();
    if planned.is_empty() {
        problems.push(format!(
            "the {} role has no stages in this topology",
            options.role
        ));
    }

    // Embedded bridges: both halves share one in-process queue, so both must
    // run in this process.
    let mut embedded_queues: HashMap<&str, (Option<QueueProducer>, Option<QueueConsumer>)> =
        HashMap::new();
    let mut nodes: Vec<RunnableNode<Batch>> = Vec::new();
    for node in planned {
        let name = &node.stage.name;
        let built: Result<Box<dyn Stage<Batch>>, String> = match (&node.stage.config, node.half) {
            (StageConfig::KafkaBatch(config), half) if options.embedded => {
                if options.role != RoleSelection::All {
                    Err(format!("stage `{name}`: under --embedded the in-process queue stands in for Kafka and cannot cross processes; run with --role all"))
                } else {
                    let halves = embedded_queues.entry(name.as_str()).or_insert_with(|| {
                        let (producer, consumer) = embedded::queue(config.embedded_queue_batches);
                        (Some(producer), Some(consumer))
                    });
                    match half {
                        Half::Consumer => halves
                            .1
                            .take()
                            .map(|consumer| Box::new(consumer) as Box<dyn Stage<Batch>>),
                        _ => halves
                            .0
                            .take()
                            .map(|producer| Box::new(producer) as Box<dyn Stage<Batch>>),
                    }
                    .ok_or_else(|| format!("stage `{name}`: planned twice"))
                }
            }
            (config, _) => Err(not_implemented(name, config, options.embedded)),
        };
        match built {
            Ok(stage) => nodes.push((node.spec, stage)),
            Err(problem) => problems.push(problem),
        }
    }
    if problems.is_empty() {
        Ok(nodes)
    } else {
        Err(problems)
    }
}

fn not_implemented(name: &str, config: &StageConfig, embedded: bool) -> String {
    use pipeline::StageSpec;
    let mode = if embedded { " with --embedded" } else { "" };
    format!("stage `{name}`: type `{}` is accepted by the topology but cannot run{mode} in this version of histflow yet", config.kind())
}
