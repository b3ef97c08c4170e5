//! What a stage kind sees while it builds itself: its own name and half,
//! the shared resources its kind declared (resolved for it), the live
//! business registry, the process's shared backends and the build
//! options. Never the topology: a stage builds from its own settings plus
//! what it declared (`crate::resources`).

use ingest_http::AdminState;
use pipeline::plan::{Half, RoleSelection};

use super::backends::Backends;
use super::options::BuildOptions;
use crate::registry::LiveRegistry;
use crate::resources::Resolved;

/// One node's view of the build.
pub struct BuildContext<'a> {
    /// The stage's name.
    pub name: &'a str,
    /// Which part of it this node runs.
    pub half: Half,
    /// The resources its kind declared, resolved for it.
    pub resources: &'a Resolved,
    /// The business registry of the process, replaced by each reload.
    pub registry: &'a LiveRegistry,
    /// How the process runs.
    pub options: &'a BuildOptions,
    /// Health and metrics of the process.
    pub admin: &'a AdminState,
    /// The backends stages share.
    pub backends: &'a mut Backends,
}

impl BuildContext<'_> {
    /// The roles this process runs.
    pub fn role(&self) -> RoleSelection {
        self.options.role
    }

    /// Whether in-process stand-ins replace Redis, Kafka and HBase.
    pub fn embedded(&self) -> bool {
        self.options.embedded
    }
}
