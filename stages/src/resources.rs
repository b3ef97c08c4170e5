//! The facts stages share, named at the topology level: a stage kind
//! declares which of them it uses ([`Uses`]), and builds from its own
//! settings plus those, never from another stage's settings. This module
//! is the one place that reads across stages: it resolves each declared
//! resource for one node from the topology ([`resolve`]).
//!
//! A reload compares a node's own settings and the resolved values of the
//! resources it declares to be taken by a rebuild ([`Takes::Rebuild`]):
//! what a build can read is what the plan compares, by construction (a
//! build that asks for a resource it did not declare fails:
//! [`Undeclared`]). Resources taken in place (the business
//! registry, through [`crate::registry`], and an ingest stage's clients
//! and reads, through its live API settings) never rebuild anything.

use std::collections::{BTreeMap, VecDeque};

use backends::user_state::CallShape;
use pipeline::topology::Business;
use pipeline::{StageDef, Topology};

use crate::kafka_batch::Payload;
use crate::persist::PersistConfig;
use crate::StageConfig;

/// A shared fact of the topology a stage kind may build from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    /// `[businesses]`: names, ids, retentions.
    Businesses,
    /// `[auth]`: the clients an ingest stage admits.
    Clients,
    /// The shard count and flush interval of the aggregate that folds the
    /// stage's data (the first one downstream).
    Sharding,
    /// Whether the bridge that ships the stage's flushes carries ids or
    /// whole records (the first bridge downstream).
    Payload,
    /// The user-state store (Redis) of the realtime stage on the stage's
    /// path: the first one downstream, else the first one upstream.
    UserState,
    /// Whether something downstream settles pending marks (a bridge the
    /// stage's data reaches).
    Marks,
    /// Whether any stage reads this one.
    Readers,
    /// The Kafka bridge the stage reads (brokers, dead-letter topic).
    Bridge,
    /// The history table the stage's events reach (the first persist
    /// stage downstream).
    HistoryTable,
}

/// How a stage takes a change to a resource it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takes {
    /// It is built again and hands over.
    Rebuild,
    /// It reads the new value while it runs.
    InPlace,
}

/// What a stage kind (or one half of a bridge) uses.
pub type Uses = &'static [(Resource, Takes)];

/// A build asked for a resource its kind does not declare: a bug of the
/// kind (the reload plan would miss changes to it), refused at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the stage kind builds from {0:?} without declaring it (a bug of histflow)")]
pub struct Undeclared(pub Resource);

/// The aggregate that folds a stage's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sharding {
    /// Its shard count.
    pub shards: u32,
    /// Its flush interval, ms.
    pub flush_interval_ms: u64,
}

/// A realtime stage's store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserStateAt {
    /// A Redis, and how the realtime stage groups its users into calls.
    Redis {
        /// Its URL.
        url: String,
        /// Its call shape.
        shape: CallShape,
    },
    /// The in-process store of `--embedded`, whatever the file says.
    Embedded,
}

/// A Kafka bridge, as the stage reading it sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeAt {
    /// Its brokers.
    pub brokers: String,
    /// Where rejected rows go.
    pub dead_letter_topic: String,
}

/// A persist stage's table, as a stage whose events reach it sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableAt {
    /// The HBase Thrift gateway (`None` under `--embedded`).
    pub hbase_thrift: Option<String>,
    /// The table.
    pub table: String,
    /// The embedded store's directory (`None` with real services).
    pub embedded_data_dir: Option<String>,
}

/// The resources one node declared, resolved. Each is asked for by name;
/// asking for one not declared is an error.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolved {
    declared: Vec<Resource>,
    sharding: Option<Sharding>,
    payload: Option<Payload>,
    user_state: Option<UserStateAt>,
    marks: bool,
    readers: bool,
    bridge: Option<BridgeAt>,
    table: Option<TableAt>,
    businesses: BTreeMap<String, Business>,
    clients: Option<pipeline::topology::Auth>,
}

impl Resolved {
    fn get<T>(&self, resource: Resource, value: T) -> Result<T, Undeclared> {
        if self.declared.contains(&resource) {
            Ok(value)
        } else {
            Err(Undeclared(resource))
        }
    }

    /// [`Resource::Sharding`] (`None`: no aggregate downstream).
    pub fn sharding(&self) -> Result<Option<Sharding>, Undeclared> {
        self.get(Resource::Sharding, self.sharding)
    }

    /// [`Resource::Payload`] (`None`: no bridge downstream).
    pub fn payload(&self) -> Result<Option<Payload>, Undeclared> {
        self.get(Resource::Payload, self.payload)
    }

    /// [`Resource::UserState`] (`None`: no realtime stage on the path).
    pub fn user_state(&self) -> Result<Option<&UserStateAt>, Undeclared> {
        self.get(Resource::UserState, self.user_state.as_ref())
    }

    /// [`Resource::Marks`].
    pub fn marks(&self) -> Result<bool, Undeclared> {
        self.get(Resource::Marks, self.marks)
    }

    /// [`Resource::Readers`].
    pub fn readers(&self) -> Result<bool, Undeclared> {
        self.get(Resource::Readers, self.readers)
    }

    /// [`Resource::Bridge`] (`None`: it reads no Kafka bridge).
    pub fn bridge(&self) -> Result<Option<&BridgeAt>, Undeclared> {
        self.get(Resource::Bridge, self.bridge.as_ref())
    }

    /// [`Resource::HistoryTable`] (`None`: its events reach no table).
    pub fn table(&self) -> Result<Option<&TableAt>, Undeclared> {
        self.get(Resource::HistoryTable, self.table.as_ref())
    }

    /// [`Resource::Businesses`], as the file has them now.
    pub fn businesses(&self) -> Result<&BTreeMap<String, Business>, Undeclared> {
        self.get(Resource::Businesses, &self.businesses)
    }

    /// [`Resource::Clients`].
    pub fn clients(&self) -> Result<&pipeline::topology::Auth, Undeclared> {
        self.get(Resource::Clients, self.clients.as_ref().unwrap_or_else(|| unreachable!("resolved when declared")))
    }

    /// The values of the resources the node takes by a rebuild, as text:
    /// equal texts, with equal own settings, build equal stages.
    pub fn rebuild_key(&self, uses: Uses) -> String {
        let mut key = String::new();
        for (resource, takes) in uses {
            if *takes == Takes::InPlace {
                continue;
            }
            let value = match resource {
                Resource::Sharding => format!("{:?}", self.sharding),
                Resource::Payload => format!("{:?}", self.payload),
                Resource::UserState => format!("{:?}", self.user_state),
                Resource::Marks => format!("{:?}", self.marks),
                Resource::Readers => format!("{:?}", self.readers),
                Resource::Bridge => format!("{:?}", self.bridge),
                Resource::HistoryTable => format!("{:?}", self.table),
                Resource::Businesses => format!("{:?}", self.businesses),
                Resource::Clients => format!("{:?}", self.clients),
            };
            key.push_str(&format!("{resource:?} {value}\n"));
        }
        key
    }
}

/// Resolves what `stage` (the `half` of it a node runs) declares in
/// `uses`, from `topology`; `embedded` leaves out the endpoints the
/// in-process stand-ins ignore.
pub fn resolve(topology: &Topology<StageConfig>, stage: &StageDef<StageConfig>, uses: Uses, embedded: bool) -> Resolved {
    let declared: Vec<Resource> = uses.iter().map(|(resource, _)| *resource).collect();
    let has = |resource| declared.contains(&resource);
    let down = |matches: &dyn Fn(&StageConfig) -> bool| downstream(topology, stage, matches);
    let up = |matches: &dyn Fn(&StageConfig) -> bool| upstream(topology, stage, matches);
    let mut resolved = Resolved::default();
    if has(Resource::Sharding) {
        if let Some(StageConfig::Aggregate(aggregate)) = down(&|config| matches!(config, StageConfig::Aggregate(_))) {
            resolved.sharding = Some(Sharding { shards: aggregate.shards, flush_interval_ms: aggregate.flush_interval_ms });
        }
    }
    if has(Resource::Payload) {
        if let Some(StageConfig::KafkaBatch(bridge)) = down(&|config| matches!(config, StageConfig::KafkaBatch(_))) {
            resolved.payload = Some(bridge.payload);
        }
    }
    if has(Resource::UserState) {
        let is_realtime = |config: &StageConfig| matches!(config, StageConfig::Realtime(_));
        if let Some(StageConfig::Realtime(realtime)) = down(&is_realtime).or_else(|| up(&is_realtime)) {
            resolved.user_state = Some(if embedded {
                UserStateAt::Embedded
            } else {
                UserStateAt::Redis { url: realtime.redis_url.clone(), shape: realtime.call_shape() }
            });
        }
    }
    if has(Resource::Marks) {
        resolved.marks = down(&|config| matches!(config, StageConfig::KafkaBatch(_))).is_some();
    }
    if has(Resource::Readers) {
        resolved.readers = topology.downstream_of(&stage.name).next().is_some();
    }
    if has(Resource::Bridge) && !embedded {
        resolved.bridge = stage.inputs.iter().find_map(|input| match topology.stage(&input.from).map(|from| &from.config) {
            Some(StageConfig::KafkaBatch(bridge)) => {
                Some(BridgeAt { brokers: bridge.brokers.clone(), dead_letter_topic: bridge.dead_letter_topic.clone() })
            }
            _ => None,
        });
    }
    if has(Resource::HistoryTable) {
        if let Some(StageConfig::Persist(persist)) = down(&|config| matches!(config, StageConfig::Persist(_))) {
            resolved.table = Some(table_of(persist, embedded));
        }
    }
    if has(Resource::Businesses) {
        resolved.businesses = topology.businesses.clone();
    }
    if has(Resource::Clients) {
        resolved.clients = Some(topology.auth.clone());
    }
    resolved.declared = declared;
    resolved
}

/// The table `persist` writes, as [`Resource::HistoryTable`] names it.
pub fn table_of(persist: &PersistConfig, embedded: bool) -> TableAt {
    TableAt {
        hbase_thrift: (!embedded).then(|| persist.hbase_thrift.clone()),
        table: persist.table.clone(),
        embedded_data_dir: embedded.then(|| persist.embedded_data_dir.clone()),
    }
}

/// The first stage `stage`'s data reaches, directly or through others,
/// that `matches` (breadth first).
fn downstream<'a>(
    topology: &'a Topology<StageConfig>,
    stage: &'a StageDef<StageConfig>,
    matches: &dyn Fn(&StageConfig) -> bool,
) -> Option<&'a StageConfig> {
    walk(stage, matches, |stage| topology.downstream_of(&stage.name).map(|(stage, _)| stage).collect())
}

/// The first stage feeding `stage`, directly or through others, that
/// `matches` (breadth first).
fn upstream<'a>(
    topology: &'a Topology<StageConfig>,
    stage: &'a StageDef<StageConfig>,
    matches: &dyn Fn(&StageConfig) -> bool,
) -> Option<&'a StageConfig> {
    walk(stage, matches, |stage| stage.inputs.iter().filter_map(|input| topology.stage(&input.from)).collect())
}

/// Breadth-first search from `start` (excluded) along `next`; each stage
/// is visited once, so a cycle cannot loop.
fn walk<'a>(
    start: &'a StageDef<StageConfig>,
    matches: &dyn Fn(&StageConfig) -> bool,
    next: impl Fn(&'a StageDef<StageConfig>) -> Vec<&'a StageDef<StageConfig>>,
) -> Option<&'a StageConfig> {
    let mut seen = vec![start.name.as_str()];
    let mut frontier = VecDeque::from(next(start));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_not_declared_is_refused_by_name() {
        let resolved = Resolved { declared: vec![Resource::Marks], ..Resolved::default() };
        assert_eq!(resolved.marks(), Ok(false));
        assert_eq!(resolved.sharding(), Err(Undeclared(Resource::Sharding)));
        assert!(Undeclared(Resource::Payload).to_string().contains("Payload"));
    }

    #[test]
    fn resources_taken_in_place_leave_the_rebuild_key_alone() {
        let one = Resolved { declared: vec![Resource::Marks, Resource::Businesses], ..Resolved::default() };
        let mut other = one.clone();
        other.businesses.insert("music".to_owned(), Business { id: 9, retention_days: 30 });
        let uses: Uses = &[(Resource::Marks, Takes::Rebuild), (Resource::Businesses, Takes::InPlace)];
        assert_eq!(one.rebuild_key(uses), other.rebuild_key(uses));
        other.marks = true;
        assert_ne!(one.rebuild_key(uses), other.rebuild_key(uses));
    }
}
