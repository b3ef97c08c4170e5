//! Builds a role's runnable nodes from a validated topology: walks the
//! role's plan and asks each stage kind to build itself
//! ([`StageConfig::build`]), with its real backend or, under `--embedded`,
//! its in-process stand-in. Every problem is collected.
//!
//! - `context`: what a stage sees while it builds (its resolved
//!   resources, the live registry, the options, the shared backends).
//! - `options`: how the process builds (role, stand-ins, what outlives a
//!   build).
//! - `backends`: the backends a process's stages share, made once each.
//! - `error`: why a stage could not be built, by kind.
//! - `resident`: what outlives one build (a reload builds again).

mod backends;
mod context;
mod error;
mod options;
mod resident;

use model::Batch;
use pipeline::plan::{plan, PlannedNode};
use pipeline::{RunnableNode, Topology};

use crate::resources::{resolve, Resolved};
use crate::StageConfig;

pub use self::backends::Backends;
pub use context::BuildContext;
pub use error::{BuildError, StageBuildError};
pub use options::BuildOptions;
pub use resident::Resident;

/// Builds every node `options.role` runs, or every reason it cannot.
pub fn build(topology: &Topology<StageConfig>, options: BuildOptions) -> Result<Vec<RunnableNode<Batch>>, Vec<BuildError>> {
    let planned = plan(topology, options.role);
    let mut problems = Vec::new();
    if planned.is_empty() {
        problems.push(BuildError::EmptyRole { role: options.role });
    }
    let admin = options.admin();
    options.resident.registry.replace(&topology.businesses);
    let mut backends = options.resident.backends(options.embedded);
    let mut nodes: Vec<RunnableNode<Batch>> = Vec::new();
    for node in planned {
        let resources = resources_of(topology, &node, &options);
        let mut cx = BuildContext {
            name: &node.stage.name,
            half: node.half,
            resources: &resources,
            registry: &options.resident.registry,
            options: &options,
            admin: &admin,
            backends: &mut backends,
        };
        match node.stage.config.build(&mut cx) {
            Ok(stage) => nodes.push((node.spec, stage)),
            Err(problem) => problems.push(BuildError::Stage { stage: node.stage.name.clone(), problem }),
        }
    }
    if problems.is_empty() {
        Ok(nodes)
    } else {
        Err(problems)
    }
}

/// The resources `node`'s kind declares, resolved in `topology`.
pub(crate) fn resources_of(topology: &Topology<StageConfig>, node: &PlannedNode<'_, StageConfig>, options: &BuildOptions) -> Resolved {
    resolve(topology, node.stage, node.stage.config.uses(node.half), options.embedded)
}
