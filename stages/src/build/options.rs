//! How a process builds its stages: its role, whether in-process
//! stand-ins replace the services, what outlives one build, and the
//! process's health and metrics.

use std::sync::Arc;

use ingest_http::AdminState;
use pipeline::plan::RoleSelection;

use super::resident::Resident;

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
