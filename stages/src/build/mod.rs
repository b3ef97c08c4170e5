//! Builds a role's runnable nodes from a validated topology: walks the
//! role's plan and asks each stage kind to build itself
//! ([`StageConfig::build`]), with its real backend or, under `--embedded`,
//! its in-process stand-in. Every problem is collected.
//!
//! - `context`: what a stage sees while it builds (its neighbours, the
//!   options, the shared backends).
//! - `backends`: the backends a process's stages share, made once each.
//! - `error`: why a stage could not be built, by kind.
//! - `resident`: what outlives one build (a reload builds again).

mod backends;
mod context;
mod error;
mod resident;

use std::sync::Arc;

use ingest_http::AdminState;
use model::Batch;
use pipeline::plan::{plan, RoleSelection};
use pipeline::{RunnableNode, Topology};

use crate::StageConfig;

pub use self::backends::Backends;
pub use context::BuildContext;
pub use error::{BuildError, StageBuildError};
pub use resident::Resident;

/// How to build.
#[derive(Clone, Default)]
pub struct BuildOptions {
    /// What outlives one build of the process's stages (a reload builds
    /// again): bound listeners, shared backends, live API settings.
    pub resident: Arc<Resident>,
    /// The roles this process runs.
    pub role: RoleSelection,
    /// Use in-process stand-ins for Redis, Kafka and HBase.
    pub embedded: bool,
    /// Health and metrics, served by the ingest stage when it runs.
    pub admin: Option<AdminState>,
}

impl BuildOptions {
    /// Health and metrics of the process (fresh ones when none were given).
    pub(crate) fn admin(&self) -> AdminState {
        self.admin.clone().unwrap_or_else(|| AdminState {
            health: pipeline::health::Health::default(),
            metrics: None,
            board: None,
            topology: None,
        })
    }
}

/// Builds every node `options.role` runs, or every reason it cannot.
pub fn build(topology: &Topology<StageConfig>, options: BuildOptions) -> Result<Vec<RunnableNode<Batch>>, Vec<BuildError>> {
    let planned = plan(topology, options.role);
    let mut problems = Vec::new();
    if planned.is_empty() {
        problems.push(BuildError::EmptyRole { role: options.role });
    }
    let admin = options.admin();
    let mut backends = options.resident.backends(options.embedded);
    let mut nodes: Vec<RunnableNode<Batch>> = Vec::new();
    for node in planned {
        let mut cx =
            BuildContext { topology, stage: node.stage, half: node.half, options: &options, admin: &admin, backends: &mut backends };
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
