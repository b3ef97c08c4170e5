//! The topology model (`topology.toml`) and its parser.
//!
//! The file has three parts: `[pipeline]` (process-wide settings),
//! `[businesses]` (the registry of business names) and `[[stages]]` (the
//! nodes of the DAG, each naming its `inputs`). The stage-specific part of
//! a stage is a closed enum supplied by the caller through [`StageSpec`], so
//! this crate knows the shape of the graph without knowing what any stage
//! does.
//!
//! Parsing never stops at the first problem: every stage is parsed on its
//! own and every problem is collected (see [`crate::validate`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::env::{interpolate, VarSource};
use crate::problem::{Problem, Problems};

/// Default number of events an edge holds before its policy applies.
pub const DEFAULT_EDGE_CAPACITY: usize = 8192;
/// Default time the runtime waits for stages to drain after a stop signal.
pub const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = 30_000;
/// Default admin address (metrics, health) when no ingest stage runs.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9464";

/// Which process a stage runs in (the service and the job scale apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Ingest, realtime, aggregate, the producing side of a bridge.
    Service,
    /// The consuming side of a bridge and what follows it (persist).
    Job,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Service => "service",
            Role::Job => "job",
        })
    }
}

/// How a stage connects to the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Produces events from outside (HTTP); takes no inputs.
    Source,
    /// Reads inputs and emits to downstream stages; must reach a sink.
    Transform,
    /// Reads inputs and writes them somewhere durable; may have no outputs.
    Sink,
    /// A sink on its service side (writes to a broker) and a source on its
    /// job side (a consumer group of that broker) feeding its downstream
    /// stages. Its outputs only exist in the job role.
    Bridge,
}

/// What the topology needs to know about a stage-specific configuration.
///
/// Implemented by the closed enum of stage configs (`#[serde(tag = "type")]`).
pub trait StageSpec: DeserializeOwned + fmt::Debug + Send + Sync + 'static {
    /// Every accepted `type` value, for the "unknown stage type" message.
    const KINDS: &'static [&'static str];
    /// This stage's `type` value.
    fn kind(&self) -> &'static str;
    /// How the stage connects to the graph.
    fn shape(&self) -> Shape;
    /// The role the stage runs in (for a bridge: its producing side).
    fn role(&self) -> Role;
    /// Business names the stage refers to; each must be registered.
    fn businesses(&self) -> Vec<&str> {
        Vec::new()
    }
    /// Whether this stage can answer its own client with a refusal (503),
    /// which is what `when_full = "reject"` on its output edges relies on.
    fn can_refuse_clients(&self) -> bool {
        false
    }
    /// Stage-local problems (field ranges, incompatible options), each
    /// starting with the field it is about.
    fn check(&self) -> Vec<String> {
        Vec::new()
    }
    /// The addresses the stage serves clients on, by field name
    /// (`listen`, `grpc_listen`): validation refuses one other machines
    /// can reach while `[auth]` has no clients.
    fn client_listeners(&self) -> Vec<(&'static str, &str)> {
        Vec::new()
    }
    /// What the live page shows of this stage besides its events in and
    /// out (commits per second, consumer lag, ...).
    fn figures(&self) -> Vec<crate::figure::Figure> {
        Vec::new()
    }
}

/// A parsed topology, before validation.
#[derive(Debug)]
pub struct Topology<S> {
    /// `[pipeline]` settings.
    pub settings: Settings,
    /// `[businesses]`, by name.
    pub businesses: BTreeMap<String, Business>,
    /// `[auth]`: the clients allowed to call the HTTP and gRPC APIs.
    pub auth: Auth,
    /// `[[stages]]`, in file order.
    pub stages: Vec<StageDef<S>>,
    /// Stages whose own part failed to parse, kept by name and inputs so
    /// graph checks still run around them (and report nothing false).
    pub(crate) opaque: Vec<OpaqueStage>,
}

/// A stage whose type or fields were wrong: only its name and inputs (when
/// they parsed) are known.
#[derive(Debug)]
pub(crate) struct OpaqueStage {
    pub(crate) name: String,
    /// `None` when the inputs themselves did not parse.
    pub(crate) inputs: Option<Vec<InputSpec>>,
}

impl<S> Topology<S> {
    /// The stage called `name`, if any.
    pub fn stage(&self, name: &str) -> Option<&StageDef<S>> {
        self.stages.iter().find(|stage| stage.name == name)
    }

    /// The stages that read from `name`, with the edge they read it through.
    pub fn downstream_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a StageDef<S>, &'a InputSpec)> + 'a {
        self.stages
            .iter()
            .flat_map(move |stage| stage.inputs.iter().filter(move |input| input.from == name).map(move |input| (stage, input)))
    }
}

/// `[pipeline]`: process-wide settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// How long a stop signal waits for every stage to drain before the
    /// process gives up, names the stages still running and exits non-zero.
    #[serde(default = "default_shutdown_timeout_ms")]
    pub shutdown_timeout_ms: u64,
    /// Address of `/metrics`, `/healthz` and `/readyz` when no ingest stage
    /// runs in this process (the ingest HTTP server serves them otherwise).
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { shutdown_timeout_ms: DEFAULT_SHUTDOWN_TIMEOUT_MS, admin_listen: DEFAULT_ADMIN_LISTEN.to_owned() }
    }
}

fn default_shutdown_timeout_ms() -> u64 {
    DEFAULT_SHUTDOWN_TIMEOUT_MS
}

fn default_admin_listen() -> String {
    DEFAULT_ADMIN_LISTEN.to_owned()
}

/// `[auth]`: who may call the APIs. No clients: the APIs are open (a
/// warning is logged at start-up), which `histflow run` allows only on
/// loopback listeners unless `allow_unauthenticated` says so.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// `[[auth.clients]]`.
    #[serde(default)]
    pub clients: Vec<AuthClient>,
    /// Serve an open API (no clients) on a listener other machines can
    /// reach; without it such a topology is refused at start.
    #[serde(default)]
    pub allow_unauthenticated: bool,
}

/// One API client.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthClient {
    /// Name for logs and metrics.
    pub name: String,
    /// Bearer token; write it as `"${SOME_TOKEN_VAR}"` so it comes from the
    /// environment, not the file.
    pub token: String,
    /// This client's own limit, in events per second; exceeding it answers
    /// 429 with `Retry-After`.
    pub rate_limit: Option<RateLimitSpec>,
    /// What the client may do; [`Scope::DEFAULT`] (write, read, mutate)
    /// when absent. Only `admin` reloads the topology and reads the
    /// operations endpoints.
    pub scopes: Option<Vec<Scope>>,
    /// The businesses the client may write, read and change; every
    /// registered one when absent.
    pub businesses: Option<Vec<String>>,
}

impl AuthClient {
    /// The client's scopes, the default filled in.
    pub fn effective_scopes(&self) -> Vec<Scope> {
        self.scopes.clone().unwrap_or_else(|| Scope::DEFAULT.to_vec())
    }
}

impl fmt::Debug for AuthClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the token.
        f.debug_struct("AuthClient")
            .field("name", &self.name)
            .field("rate_limit", &self.rate_limit)
            .field("scopes", &self.scopes)
            .field("businesses", &self.businesses)
            .finish_non_exhaustive()
    }
}

/// What a client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Report views (`POST /v1/events`, `AddHistory`, `AddHistories`).
    Write,
    /// Read history, progress and the recording switch.
    Read,
    /// Delete items, clear histories, pause and resume recording.
    Mutate,
    /// Reload the topology, read `/metrics`, `/admin/stats`,
    /// `/admin/topology` and the live page.
    Admin,
}

impl Scope {
    /// A client's scopes when its entry names none.
    pub const DEFAULT: [Scope; 3] = [Scope::Write, Scope::Read, Scope::Mutate];

    /// The name `scopes` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Write => "write",
            Scope::Read => "read",
            Scope::Mutate => "mutate",
            Scope::Admin => "admin",
        }
    }
}

/// One entry of `[businesses]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Business {
    /// Stable numeric id (stored values carry it instead of the name).
    pub id: u32,
    /// How long the business's views are kept, in days (ingest refuses
    /// older reports, reads stop showing them, and a user's realtime keys
    /// expire after the longest of these without activity).
    pub retention_days: u32,
}

/// Each business's retention in ms: how old a view of it may be.
pub fn retention_ms(businesses: &BTreeMap<String, Business>) -> std::collections::HashMap<String, i64> {
    businesses.iter().map(|(name, business)| (name.clone(), i64::from(business.retention_days) * 86_400_000)).collect()
}

/// One `[[stages]]` entry: the common part plus the stage-specific config.
#[derive(Debug)]
pub struct StageDef<S> {
    /// Unique name; other stages refer to it in `inputs`.
    pub name: String,
    /// Input edges, in the order written.
    pub inputs: Vec<InputSpec>,
    /// Optional rate limit on the events this stage takes in (sources: on
    /// what they emit).
    pub rate_limit: Option<RateLimitSpec>,
    /// The stage-specific configuration.
    pub config: S,
}

/// What a full edge does to its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// The sender waits for room (backpressure).
    #[default]
    Block,
    /// The send fails at once and the sender refuses its client (503).
    Reject,
}

impl fmt::Display for WhenFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WhenFull::Block => "block",
            WhenFull::Reject => "reject",
        })
    }
}

/// One input edge. Written either as a bare stage name (defaults apply) or
/// as `{ from = "...", capacity = N, when_full = "block" | "reject" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    /// The upstream stage.
    pub from: String,
    /// Maximum events queued on this edge.
    pub capacity: usize,
    /// What a full edge does to its sender.
    pub when_full: WhenFull,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputTable {
    from: String,
    #[serde(default = "default_capacity")]
    capacity: usize,
    #[serde(default)]
    when_full: WhenFull,
}

fn default_capacity() -> usize {
    DEFAULT_EDGE_CAPACITY
}

impl<'de> Deserialize<'de> for InputSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InputVisitor;
        impl<'de> Visitor<'de> for InputVisitor {
            type Value = InputSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a stage name or a table { from, capacity, when_full }")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<InputSpec, E> {
                Ok(InputSpec { from: name.to_owned(), capacity: DEFAULT_EDGE_CAPACITY, when_full: WhenFull::Block })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<InputSpec, A::Error> {
                let table = InputTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(InputSpec { from: table.from, capacity: table.capacity, when_full: table.when_full })
            }
        }
        deserializer.deserialize_any(InputVisitor)
    }
}

/// `rate_limit = { per_second = N, burst = M }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// Sustained events per second.
    pub per_second: u32,
    /// Events that may pass at once after a quiet spell; defaults to one
    /// second's worth (`per_second`).
    pub burst: Option<u32>,
}

impl RateLimitSpec {
    /// The burst in force.
    pub fn burst_or_default(&self) -> u32 {
        self.burst.unwrap_or(self.per_second)
    }
}

/// The keys every stage has, parsed apart from the stage-specific part.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommonKeys {
    #[serde(default)]
    inputs: Vec<InputSpec>,
    rate_limit: Option<RateLimitSpec>,
}

const COMMON_KEYS: &[&str] = &["inputs", "rate_limit"];
const TOP_LEVEL_KEYS: &[&str] = &["pipeline", "businesses", "auth", "stages"];

/// Parses `text` into a topology, interpolating `${VAR}` from `vars`.
/// Returns every problem found, or the topology when there were none.
/// Call [`crate::validate::validate`] on the result for graph checks.
pub fn parse<S: StageSpec>(text: &str, vars: &VarSource) -> Result<Topology<S>, Problems> {
    let (topology, problems) = parse_partial(text, vars)?;
    if problems.is_empty() {
        Ok(topology)
    } else {
        Err(problems.into())
    }
}

/// Parses as much as parses: the topology (unparseable stages kept opaque)
/// and the problems found. Fails outright only when the file is not TOML.
pub(crate) fn parse_partial<S: StageSpec>(text: &str, vars: &VarSource) -> Result<(Topology<S>, Vec<Problem>), Problems> {
    let mut root: toml::Value =
        toml::from_str(text).map_err(|err| Problems::from(vec![Problem::topology(format!("not valid TOML: {}", err.message().trim()))]))?;
    let interpolation_errors = interpolate(&mut root, vars);
    let mut problems: Vec<Problem> = interpolation_errors.iter().map(|err| locate(&root, &err.path, &err.message)).collect();
    // A stage with an unresolved value is reported once, for the variable;
    // its own checks would only complain about the raw `${...}` text.
    let unresolved: Vec<usize> = interpolation_errors.iter().filter_map(|err| stage_index_of(&err.path)).collect();
    let toml::Value::Table(mut root) = root else {
        return Err(vec![Problem::topology("the file must be a TOML table")].into());
    };

    for key in root.keys() {
        if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
            problems.push(Problem::topology(format!("unknown section `{key}`, expected one of {}", quoted(TOP_LEVEL_KEYS))));
        }
    }

    let settings = match root.remove("pipeline") {
        None => Settings::default(),
        Some(value) => value.try_into::<Settings>().unwrap_or_else(|err| {
            problems.push(Problem::pipeline(serde_message(&err)));
            Settings::default()
        }),
    };

    let mut businesses = BTreeMap::new();
    match root.remove("businesses") {
        None => {}
        Some(toml::Value::Table(table)) => {
            for (name, value) in table {
                match value.try_into::<Business>() {
                    Ok(business) => {
                        businesses.insert(name, business);
                    }
                    Err(err) => problems.push(Problem::business(&name, serde_message(&err))),
                }
            }
        }
        Some(_) => problems.push(Problem::topology("`businesses` must be a table of `name = { id, retention_days }`")),
    }

    let auth = match root.remove("auth") {
        None => Auth::default(),
        Some(value) => value.try_into::<Auth>().unwrap_or_else(|err| {
            problems.push(Problem::auth(serde_message(&err)));
            Auth::default()
        }),
    };

    let mut stages = Vec::new();
    let mut opaque = Vec::new();
    match root.remove("stages") {
        None => problems.push(Problem::topology("no `[[stages]]` declared")),
        Some(toml::Value::Array(items)) => {
            for (index, item) in items.into_iter().enumerate() {
                match parse_stage::<S>(index, item) {
                    Ok(stage) if unresolved.contains(&index) => opaque.push(OpaqueStage { name: stage.name, inputs: Some(stage.inputs) }),
                    Ok(stage) => stages.push(stage),
                    Err((unparsed, mut stage_problems)) => {
                        opaque.extend(unparsed);
                        problems.append(&mut stage_problems);
                    }
                }
            }
        }
        Some(_) => problems.push(Problem::topology("`stages` must be an array of tables (`[[stages]]`)")),
    }

    Ok((Topology { settings, businesses, auth, stages, opaque }, problems))
}

/// `stages[3].url` → 3.
fn stage_index_of(path: &str) -> Option<usize> {
    path.strip_prefix("stages[")?.split(']').next()?.parse().ok()
}

/// An interpolation problem, named by its stage when it is in one:
/// `stage `realtime`: `redis_url`: ...` rather than `stages[1].redis_url`.
fn locate(root: &toml::Value, path: &str, message: &str) -> Problem {
    let stage_name = stage_index_of(path).and_then(|index| root.get("stages")?.get(index)?.get("name")?.as_str());
    let field = path.split_once("].").map(|(_, field)| field);
    match (stage_name, field) {
        (Some(name), Some(field)) => Problem::stage(name, format!("`{field}`: {message}")),
        _ => Problem::at_path(path, message),
    }
}

/// One stage, or its problems plus what is known of it (name and inputs).
fn parse_stage<S: StageSpec>(index: usize, item: toml::Value) -> Result<StageDef<S>, (Option<OpaqueStage>, Vec<Problem>)> {
    let toml::Value::Table(mut table) = item else {
        return Err((None, vec![Problem::stage_index(index, "must be a table")]));
    };
    let name = match table.remove("name") {
        Some(toml::Value::String(name)) if !name.is_empty() => name,
        Some(_) => return Err((None, vec![Problem::stage_index(index, "field `name` must be a non-empty string")])),
        None => return Err((None, vec![Problem::stage_index(index, "missing field `name`")])),
    };
    let mut problems = Vec::new();

    let mut common = toml::Table::new();
    for key in COMMON_KEYS {
        if let Some(value) = table.remove(*key) {
            common.insert((*key).to_owned(), value);
        }
    }
    let common =
        toml::Value::Table(common).try_into::<CommonKeys>().map_err(|err| problems.push(Problem::stage(&name, serde_message(&err))));

    let config = match table.get("type") {
        None => {
            problems.push(Problem::stage(&name, "missing field `type`"));
            None
        }
        Some(toml::Value::String(kind)) if !S::KINDS.contains(&kind.as_str()) => {
            problems.push(Problem::stage(&name, format!("unknown stage type `{kind}`, expected one of {}", quoted(S::KINDS))));
            None
        }
        Some(_) => toml::Value::Table(table).try_into::<S>().map_err(|err| problems.push(Problem::stage(&name, serde_message(&err)))).ok(),
    };

    match (common, config) {
        (Ok(common), Some(config)) if problems.is_empty() => {
            Ok(StageDef { name, inputs: common.inputs, rate_limit: common.rate_limit, config })
        }
        (common, _) => {
            let inputs = common.ok().map(|common| common.inputs);
            Err((Some(OpaqueStage { name, inputs }), problems))
        }
    }
}

/// serde's message without toml's source snippet (we parse from a value, so
/// the snippet would be empty) and on one line.
fn serde_message(err: &toml::de::Error) -> String {
    err.message().trim().replace('\n', " ")
}

/// `` `a`, `b`, `c` `` for messages.
pub(crate) fn quoted(items: &[&str]) -> String {
    items.iter().map(|item| format!("`{item}`")).collect::<Vec<_>>().join(", ")
}
