//! The history API itself, shared by the HTTP routes and the gRPC service:
//! who may call, what a valid parameter is, how events and mutations enter
//! the pipeline (and wait for their realtime write), and how reads reach
//! the stores. Transports only translate requests and answers.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use model::{Ack, Batch, EventResult, Op, Record};
use pipeline::{Output, SendError};

use crate::auth::{Client, Clients};
use crate::error::ApiError;
use crate::event::EventRules;
use crate::params::ClearScope;
use crate::serve::ConnectionLimits;
use history_read::{HistoryReader, Page, PageError, PageQuery, ReadError};
use pipeline::health::Health;
use pipeline::topology::Scope;

/// Rate-limit units a history page costs on top of its one when it must
/// read the user's HBase row (up to 100,000 cells through Thrift, and a
/// Redis read of a delete marker per item).
pub const HBASE_PAGE_UNITS: usize = 10;

/// The code of a refusal by a full `reject` edge.
pub const OVERLOADED: &str = "overloaded";

/// Settings of the API.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// What a valid event is (and which businesses exist here).
    pub rules: EventRules,
    /// Longest wait for room downstream plus the realtime write.
    pub request_timeout: Duration,
    /// `Retry-After` seconds for 429/503.
    pub retry_after_s: u64,
}

/// The limits of report streams; a reload changes them for streams opened
/// after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Requests taken and not yet answered, per stream, at most.
    pub max_unanswered: usize,
    /// A stream with no request (and nothing unanswered) this long ends.
    pub idle_timeout: Duration,
    /// Streams one client holds open at once, at most.
    pub max_per_client: usize,
}

impl Default for StreamLimits {
    /// The `http_ingest` stage's defaults.
    fn default() -> Self {
        StreamLimits { max_unanswered: 64, idle_timeout: Duration::from_secs(60), max_per_client: 256 }
    }
}

/// Everything a reload may change in the API while it serves.
pub struct ApiConfig {
    /// Validation, timeouts, `Retry-After`.
    pub settings: ApiSettings,
    /// Largest HTTP body read.
    pub max_body_bytes: usize,
    /// Who may call.
    pub clients: Clients,
    /// Where reads go (none: the read routes answer 501).
    pub reads: Option<Arc<HistoryReader>>,
    /// The HTTP listener's connection limits.
    pub connections: ConnectionLimits,
    /// The limits of gRPC report streams (for streams opened next).
    pub streams: StreamLimits,
}

/// The API's reloadable part, replaced whole: each step of a call (the
/// token check, the body limit, the wait for the write) reads the
/// configuration in force when it runs, so a removed token stops working
/// on the next request and a new one works on it.
pub struct LiveApi {
    config: ArcSwap<ApiConfig>,
}

impl LiveApi {
    /// The API's configuration to start with.
    pub fn new(config: ApiConfig) -> Arc<Self> {
        Arc::new(LiveApi { config: ArcSwap::from_pointee(config) })
    }

    /// Serves `config` from the next call on. A client whose name, token
    /// and rate limit are unchanged keeps what it has used of its limit.
    pub fn replace(&self, mut config: ApiConfig) {
        config.clients.keep_usage_of(&self.config.load().clients);
        self.config.store(Arc::new(config));
    }

    /// The configuration in force now.
    pub fn current(&self) -> Arc<ApiConfig> {
        self.config.load_full()
    }
}

/// The event rules in force when it was taken.
pub struct Rules(Arc<ApiConfig>);

impl std::ops::Deref for Rules {
    type Target = EventRules;

    fn deref(&self) -> &EventRules {
        &self.0.settings.rules
    }
}

/// The API: one per ingest stage, shared by its transports.
pub struct HistoryApi {
    output: Output<Batch>,
    health: Health,
    live: Arc<LiveApi>,
}

impl HistoryApi {
    /// An API configured by `live`, which a reload replaces.
    pub fn live(output: Output<Batch>, live: Arc<LiveApi>, health: Health) -> Self {
        HistoryApi { output, health, live }
    }

    /// The configuration in force now.
    pub fn config(&self) -> Arc<ApiConfig> {
        self.live.current()
    }

    /// The validation rules for events.
    pub fn rules(&self) -> Rules {
        Rules(self.live.current())
    }

    /// The caller with `authorization` (`None` when the API is open): 401
    /// if the token is missing or unknown. Its scopes are not checked.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Option<Arc<Client>>, ApiError> {
        self.live.current().clients.authenticate(authorization)
    }

    /// The caller with `authorization` (`None` when the API is open): 401
    /// if the token is missing or unknown, 403 if its client lacks `scope`.
    pub fn admit(&self, authorization: Option<&str>, scope: Scope) -> Result<Option<Arc<Client>>, ApiError> {
        self.live.current().clients.admit(authorization, scope)
    }

    /// 503 while the process drains.
    pub fn refuse_if_draining(&self) -> Result<(), ApiError> {
        if self.health.is_draining() {
            return Err(self.unavailable("draining", "this instance is shutting down; retry on another"));
        }
        Ok(())
    }

    fn unavailable(&self, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::Unavailable { code, message: message.into(), retry_after_s: self.live.current().settings.retry_after_s }
    }

    /// Charges a request of `units` to the caller's rate limit.
    pub fn charge(client: Option<&Arc<Client>>, units: usize) -> Result<(), ApiError> {
        client.map_or(Ok(()), |client| client.charge(units))
    }

    /// Records validated events: answered once the realtime write of
    /// exactly these events is done, one result per event.
    pub async fn add_events(&self, client: Option<&Arc<Client>>, records: Vec<Record>) -> Result<Vec<EventResult>, ApiError> {
        if let Some(client) = client {
            client.require_businesses(records.iter().map(|record| record.business.as_str()))?;
        }
        Self::charge(client, records.len())?;
        self.submit(records.into_iter().map(Op::Upsert).collect()).await
    }

    /// Sends `ops` down the pipeline and waits for their realtime write.
    async fn submit(&self, ops: Vec<Op>) -> Result<Vec<EventResult>, ApiError> {
        self.enqueue(ops).await?.written().await
    }

    /// Sends `ops` down the pipeline (waiting for room on a `block` edge);
    /// the answer is the wait for their realtime write. Sending and the
    /// wait share one `request_timeout`.
    pub async fn enqueue(&self, ops: Vec<Op>) -> Result<Enqueued, ApiError> {
        let count = ops.len();
        let (ack, answer) = Ack::new();
        let batch = Batch { ack: Some(ack), ..Batch::of(ops) };
        let settings = &self.live.current().settings;
        let (request_timeout, retry_after_s) = (settings.request_timeout, settings.retry_after_s);
        let deadline = tokio::time::Instant::now() + request_timeout;
        let unavailable = |code, message: String| ApiError::Unavailable { code, message, retry_after_s };
        match tokio::time::timeout_at(deadline, self.output.send(batch)).await {
            Ok(Ok(())) => Ok(Enqueued { count, answer, deadline, request_timeout, retry_after_s }),
            Ok(Err(SendError::Full { .. })) => Err(unavailable(OVERLOADED, "the pipeline is full; retry shortly".to_owned())),
            Ok(Err(SendError::Closed { .. })) => Err(unavailable("stopping", "the pipeline is stopping".to_owned())),
            Err(_) => Err(unavailable("timeout", timed_out(request_timeout))),
        }
    }

    fn reads(&self) -> Result<Arc<HistoryReader>, ApiError> {
        self.live
            .current()
            .reads
            .clone()
            .ok_or(ApiError::NotImplemented("this topology has no realtime stage after the ingest stage to read from"))
    }

    fn read_failed(&self, error: ReadError) -> ApiError {
        tracing::warn!(%error, "history read failed; answering 503");
        self.unavailable("read_failed", "the history store did not answer; retry")
    }

    /// A page of `uid`'s history, newest first, for `client`. A page that
    /// must read the user's HBase row costs [`HBASE_PAGE_UNITS`] more of
    /// the client's rate limit (at most its burst), charged before the read.
    pub async fn history(&self, uid: u64, mut query: PageQuery, client: Option<&Arc<Client>>) -> Result<Page, ApiError> {
        // A client limited to some businesses reads only those: a filter
        // must stay inside them, and no filter means all of them.
        if let Some(client) = client {
            match (&query.businesses, client.businesses()) {
                (Some(wanted), Some(_)) => client.require_businesses(wanted.iter().map(String::as_str))?,
                (None, Some(allowed)) => query.businesses = Some(allowed.iter().cloned().collect()),
                (_, None) => {}
            }
        }
        let reads = self.reads()?;
        let charge = || client.map_or(Ok(()), |client| client.charge_within_burst(HBASE_PAGE_UNITS));
        reads.page_with(uid, query, charge).await.map_err(|error| match error {
            PageError::Read(error) => self.read_failed(error),
            PageError::Refused(refused) => refused,
        })
    }

    /// The record of each item, in order.
    pub async fn progress(&self, uid: u64, items: Vec<String>, client: Option<&Arc<Client>>) -> Result<Vec<Option<Record>>, ApiError> {
        require_item_businesses(client, &items)?;
        let reads = self.reads()?;
        reads.progress(uid, items).await.map_err(|error| self.read_failed(error))
    }

    /// Whether `uid`'s recording is paused.
    pub async fn paused(&self, uid: u64) -> Result<bool, ApiError> {
        let reads = self.reads()?;
        reads.paused(uid).await.map_err(|error| self.read_failed(error))
    }

    /// Removes items from `uid`'s history now; the deletes travel to HBase
    /// in order with the user's other writes.
    pub async fn delete(&self, uid: u64, items: Vec<String>, client: Option<&Arc<Client>>) -> Result<(), ApiError> {
        require_item_businesses(client, &items)?;
        self.reads()?;
        let at = model::now_ms();
        self.submit(items.into_iter().map(|item| Op::Delete { uid, item, at }).collect()).await.map(drop)
    }

    /// Removes what `scope` names of `uid`'s history now: every item, or
    /// every item of some businesses.
    pub async fn clear(&self, uid: u64, scope: ClearScope, client: Option<&Arc<Client>>) -> Result<(), ApiError> {
        if let Some(client) = client {
            match &scope {
                ClearScope::Everything => client.require_every_business("clear every business")?,
                ClearScope::Businesses(businesses) => client.require_businesses(businesses.iter().map(String::as_str))?,
            }
        }
        self.reads()?;
        let at = model::now_ms();
        let ops = match scope {
            ClearScope::Everything => vec![Op::Clear { uid, business: None, at }],
            ClearScope::Businesses(businesses) => {
                businesses.into_iter().map(|business| Op::Clear { uid, business: Some(business), at }).collect()
            }
        };
        self.submit(ops).await.map(drop)
    }

    /// Pauses or resumes recording for `uid`.
    pub async fn set_paused(&self, uid: u64, paused: bool, client: Option<&Arc<Client>>) -> Result<(), ApiError> {
        if let Some(client) = client {
            client.require_every_business("pause or resume recording")?;
        }
        self.reads()?;
        self.submit(vec![Op::SetRecording { uid, paused, at: model::now_ms() }]).await.map(drop)
    }
}

/// The message of a request that had no answer within `request_timeout`.
fn timed_out(request_timeout: Duration) -> String {
    format!("no answer within {} ms; the request may or may not have been applied, retrying is safe", request_timeout.as_millis())
}

/// Ops handed to the pipeline, waiting for their realtime write.
pub struct Enqueued {
    count: usize,
    answer: tokio::sync::oneshot::Receiver<model::AckOutcome>,
    deadline: tokio::time::Instant,
    request_timeout: Duration,
    retry_after_s: u64,
}

impl Enqueued {
    /// One result per op once the realtime write is done; 503 when it
    /// failed, answered wrongly or took past the request's deadline.
    pub async fn written(self) -> Result<Vec<EventResult>, ApiError> {
        let Enqueued { count, answer, deadline, request_timeout, retry_after_s } = self;
        let unavailable = |code, message: String| ApiError::Unavailable { code, message, retry_after_s };
        let written = match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(written)) => written,
            Ok(Err(_)) => return Err(unavailable("not_written", "the request was not written; retry".to_owned())),
            Err(_) => return Err(unavailable("timeout", timed_out(request_timeout))),
        };
        match written {
            Ok(results) if results.len() == count => Ok(results),
            Ok(results) => {
                tracing::error!(expected = count, got = results.len(), "realtime answered with the wrong number of results");
                Err(unavailable("internal", "the write answered inconsistently; retry".to_owned()))
            }
            Err(reason) => {
                tracing::warn!(%reason, ops = count, "realtime write failed; answering 503");
                Err(unavailable("write_failed", "the realtime store did not take the request; retry".to_owned()))
            }
        }
    }
}

/// 403 unless `client` may touch the business of every item key
/// (`business:oid`) in `items`.
fn require_item_businesses(client: Option<&Arc<Client>>, items: &[String]) -> Result<(), ApiError> {
    match client {
        Some(client) => {
            client.require_businesses(items.iter().map(|item| item.split_once(':').map_or(item.as_str(), |(business, _)| business)))
        }
        None => Ok(()),
    }
}
