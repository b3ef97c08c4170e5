//! What a stage kind sees while it builds itself: its own definition, the
//! topology around it (to find the stages it works with), the process's
//! shared backends and the build options.

use std::collections::BTreeMap;

use ingest_http::AdminState;
use pipeline::plan::{Half, RoleSelection};
use pipeline::topology::Business;
use pipeline::{StageDef, Topology};

use super::backends::Backends;
use super::BuildOptions;
use crate::StageConfig;

/// Key expiry in Redis when no business names a retention, days.
const DEFAULT_RETENTION_DAYS: u64 = 90;

/// One node's view of the build.
pub struct BuildContext<'a> {
    /// The whole topology.
    pub topology: &'a Topology<StageConfig>,
    /// The stage being built.
    pub stage: &'a StageDef<StageConfig>,
    /// Which part of it this node runs.
    pub half: Half,
    /// How the process runs.
    pub options: &'a BuildOptions,
    /// Health and metrics of the process.
    pub admin: &'a AdminState,
    /// The backends stages share.
    pub backends: &'a mut Backends,
}

impl<'a> BuildContext<'a> {
    /// The stage's name.
    pub fn name(&self) -> &'a str {
        &self.stage.name
    }

    /// The roles this process runs.
    pub fn role(&self) -> RoleSelection {
        self.options.role
    }

    /// Whether in-process stand-ins replace Redis, Kafka and HBase.
    pub fn embedded(&self) -> bool {
        self.options.embedded
    }

    /// The registered businesses.
    pub fn businesses(&self) -> &'a BTreeMap<String, Business> {
        &self.topology.businesses
    }

    /// How long a user's Redis keys live without activity: the longest
    /// business retention, seconds.
    pub fn key_ttl_s(&self) -> u64 {
        let days = self.topology.businesses.values().map(|business| u64::from(business.retention_days)).max();
        days.unwrap_or(DEFAULT_RETENTION_DAYS) * 86_400
    }

    /// The first stage that reads this one directly and `matches`.
    pub fn downstream(&self, matches: impl Fn(&StageConfig) -> bool) -> Option<&'a StageConfig> {
        self.topology.downstream_of(&self.stage.name).map(|(stage, _)| &stage.config).find(|config| matches(config))
    }

    /// Whether any stage reads this one.
    pub fn is_read(&self) -> bool {
        self.topology.downstream_of(&self.stage.name).next().is_some()
    }

    /// The first stage this one's data reaches, directly or through
    /// others, that `matches` (breadth first).
    pub fn reached(&self, matches: impl Fn(&StageConfig) -> bool) -> Option<&'a StageConfig> {
        self.walk(&matches, |stage| self.topology.downstream_of(&stage.name).map(|(stage, _)| stage).collect())
    }

    /// The first stage feeding this one, directly or through others, that
    /// `matches` (breadth first).
    pub fn fed_by(&self, matches: impl Fn(&StageConfig) -> bool) -> Option<&'a StageConfig> {
        self.walk(&matches, |stage| stage.inputs.iter().filter_map(|input| self.topology.stage(&input.from)).collect())
    }

    /// Breadth-first search from this stage (excluded) along `next`; each
    /// stage is visited once, so a cycle cannot loop.
    fn walk(
        &self,
        matches: &dyn Fn(&StageConfig) -> bool,
        next: impl Fn(&'a StageDef<StageConfig>) -> Vec<&'a StageDef<StageConfig>>,
    ) -> Option<&'a StageConfig> {
        let mut seen = vec![self.stage.name.as_str()];
        let mut frontier = std::collections::VecDeque::from(next(self.stage));
        while let Some(stage) = frontier.pop_front() {
            if seen.contains(&stage.name.as_str()) {
                continue;
            }
            seen.push(&stage.name);
            if matches(&stage.config) {
                return Some(&stage.config);
            }
            frontier.extend(next(stage));
        }
        None
    }
}
