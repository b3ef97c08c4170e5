//! The history API itself, shared by the HTTP routes and the gRPC service:
//! who may call, what a valid parameter is, how events and mutations enter
//! the pipeline (and wait for their realtime write), and how reads reach
//! the stores. Transports only translate requests and answers.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use model::{Ack, Batch, EventResult, Op, Record};
use pipeline::{Output, SendError};

use crate::auth::{Client, Clients};
use crate::error::ApiError;
use crate::event::EventRules;
use history_read::{Cursor, HistoryReader, Page, PageError, PageQuery, ReadError};
use pipeline::health::Health;

/// Most items one history page may ask for.
pub const MAX_PAGE_LIMIT: usize = 100;
/// Page size when the request names none.
pub const DEFAULT_PAGE_LIMIT: usize = 20;
/// Most items one progress look-up may name.
pub const MAX_PROGRESS_ITEMS: usize = 100;
/// Rate-limit units a history page costs on top of its one when it must
/// read the user's HBase row (up to 100,000 cells through Thrift, and a
/// Redis read of a delete marker per item).
pub const HBASE_PAGE_UNITS: usize = 10;

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

    /// The caller with `token` (`None` when the API is open): 401 if the
    /// token is missing or unknown.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Option<Arc<Client>>, ApiError> {
        self.live.current().clients.authenticate(token)
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
        Self::charge(client, records.len())?;
        self.submit(records.into_iter().map(Op::Upsert).collect()).await
    }

    /// Sends `ops` down the pipeline and waits for their realtime write.
    async fn submit(&self, ops: Vec<Op>) -> Result<Vec<EventResult>, ApiError> {
        let count = ops.len();
        let (ack, answer) = Ack::new();
        let batch = Batch { ack: Some(ack), ..Batch::of(ops) };
        let request_timeout = self.live.current().settings.request_timeout;
        let written = tokio::time::timeout(request_timeout, async {
            self.output.send(batch).await.map_err(|error| match error {
                SendError::Full { .. } => self.unavailable("overloaded", "the pipeline is full; retry shortly"),
                SendError::Closed { .. } => self.unavailable("stopping", "the pipeline is stopping"),
            })?;
            answer.await.map_err(|_| self.unavailable("not_written", "the request was not written; retry"))
        })
        .await
        .map_err(|_| {
            self.unavailable(
                "timeout",
                format!(
                    "no answer within {} ms; the request may or may not have been applied, retrying is safe",
                    request_timeout.as_millis()
                ),
            )
        })??;
        match written {
            Ok(results) if results.len() == count => Ok(results),
            Ok(results) => {
                tracing::error!(expected = count, got = results.len(), "realtime answered with the wrong number of results");
                Err(self.unavailable("internal", "the write answered inconsistently; retry"))
            }
            Err(reason) => {
                tracing::warn!(%reason, ops = count, "realtime write failed; answering 503");
                Err(self.unavailable("write_failed", "the realtime store did not take the request; retry"))
            }
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
    pub async fn history(&self, uid: u64, query: PageQuery, client: Option<&Arc<Client>>) -> Result<Page, ApiError> {
        let reads = self.reads()?;
        let charge = || client.map_or(Ok(()), |client| client.charge_within_burst(HBASE_PAGE_UNITS));
        reads.page_with(uid, query, charge).await.map_err(|error| match error {
            PageError::Read(error) => self.read_failed(error),
            PageError::Refused(refused) => refused,
        })
    }

    /// The record of each item, in order.
    pub async fn progress(&self, uid: u64, items: Vec<String>) -> Result<Vec<Option<Record>>, ApiError> {
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
    pub async fn delete(&self, uid: u64, items: Vec<String>) -> Result<(), ApiError> {
        self.reads()?;
        let at = model::now_ms();
        self.submit(items.into_iter().map(|item| Op::Delete { uid, item, at }).collect()).await.map(drop)
    }

    /// Removes every item of `uid`'s history now, or (`businesses`) every
    /// item of those businesses.
    pub async fn clear(&self, uid: u64, businesses: Option<BTreeSet<String>>) -> Result<(), ApiError> {
        self.reads()?;
        let at = model::now_ms();
        let ops = match businesses {
            None => vec![Op::Clear { uid, business: None, at }],
            Some(businesses) => businesses.into_iter().map(|business| Op::Clear { uid, business: Some(business), at }).collect(),
        };
        self.submit(ops).await.map(drop)
    }

    /// Pauses or resumes recording for `uid`.
    pub async fn set_paused(&self, uid: u64, paused: bool) -> Result<(), ApiError> {
        self.reads()?;
        self.submit(vec![Op::SetRecording { uid, paused, at: model::now_ms() }]).await.map(drop)
    }
}

/// Parameter checks shared by the HTTP and gRPC transports; each error
/// names the parameter.
pub mod params {
    use std::collections::{BTreeSet, HashSet};

    use super::{Cursor, PageQuery, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, MAX_PROGRESS_ITEMS};
    use crate::error::ApiError;

    fn invalid(code: &'static str, message: String) -> ApiError {
        ApiError::InvalidParameter { code, message }
    }

    /// A uid: a decimal integer above 0.
    pub fn uid(text: &str) -> Result<u64, ApiError> {
        match text.parse::<u64>() {
            Ok(uid) if uid > 0 => Ok(uid),
            _ => Err(invalid("invalid_uid", format!("`uid` {text:?} must be an integer greater than 0"))),
        }
    }

    /// A uid given as a number (gRPC).
    pub fn uid_number(uid: u64) -> Result<u64, ApiError> {
        if uid == 0 {
            return Err(invalid("invalid_uid", "`uid` must be greater than 0".to_owned()));
        }
        Ok(uid)
    }

    /// A business registered on this endpoint.
    pub fn business(name: &str, businesses: &HashSet<String>) -> Result<String, ApiError> {
        if businesses.contains(name) {
            Ok(name.to_owned())
        } else {
            Err(invalid("unknown_business", format!("`business` {name:?} is not registered on this endpoint")))
        }
    }

    /// A business filter (of a page or a clear): registered names,
    /// comma-separated (empty entries ignored); `None` when it names none
    /// (all businesses). Every unregistered name is listed in the error.
    pub fn business_filter(names: &str, businesses: &HashSet<String>) -> Result<Option<BTreeSet<String>>, ApiError> {
        let wanted: BTreeSet<String> = names.split(',').map(str::trim).filter(|name| !name.is_empty()).map(str::to_owned).collect();
        let unknown: Vec<&str> = wanted.iter().filter(|name| !businesses.contains(*name)).map(String::as_str).collect();
        if !unknown.is_empty() {
            return Err(invalid("unknown_business", format!("`business` names {unknown:?}, not registered on this endpoint")));
        }
        Ok((!wanted.is_empty()).then_some(wanted))
    }

    /// The businesses an HTTP clear names: at least one, each registered.
    /// A `business` parameter naming none is refused, not read as "every
    /// business": a clear cannot be undone.
    pub fn clear_businesses(names: &str, businesses: &HashSet<String>) -> Result<BTreeSet<String>, ApiError> {
        business_filter(names, businesses)?
            .ok_or_else(|| invalid("invalid_business", "`business` names no business; leave it out to clear every business".to_owned()))
    }

    /// An item key `business:oid` with a registered business.
    pub fn item(text: &str, businesses: &HashSet<String>) -> Result<String, ApiError> {
        let (name, oid) = item_shape(text)?;
        Ok(model::record::item_key(&business(name, businesses)?, oid))
    }

    /// The `items` of a progress look-up: 1 to 100 item keys.
    pub fn items<'a>(list: impl IntoIterator<Item = &'a str>, businesses: &HashSet<String>) -> Result<Vec<String>, ApiError> {
        let items: Vec<String> = list.into_iter().map(str::trim).filter(|item| !item.is_empty()).map(|item| item.to_owned()).collect();
        if items.is_empty() {
            return Err(invalid("invalid_items", "`items` must name at least one `business:oid`".to_owned()));
        }
        if items.len() > MAX_PROGRESS_ITEMS {
            return Err(invalid("invalid_items", format!("`items` names {} items; at most {MAX_PROGRESS_ITEMS} are allowed", items.len())));
        }
        // Malformed items fail first; then every item of an unregistered
        // business is named in one error.
        let shapes = items.iter().map(|text| item_shape(text)).collect::<Result<Vec<_>, _>>()?;
        let unknown: Vec<&str> =
            items.iter().zip(&shapes).filter(|(_, (name, _))| !businesses.contains(*name)).map(|(text, _)| text.as_str()).collect();
        if !unknown.is_empty() {
            return Err(invalid("unknown_business", format!("`items` {unknown:?} name businesses not registered on this endpoint")));
        }
        Ok(shapes.into_iter().map(|(name, oid)| model::record::item_key(name, oid)).collect())
    }

    /// The business and oid of an item key `business:oid`.
    fn item_shape(text: &str) -> Result<(&str, u64), ApiError> {
        let bad = || invalid("invalid_item", format!("item {text:?} must be `business:oid`, e.g. archive:42"));
        let (name, oid) = text.split_once(':').ok_or_else(bad)?;
        Ok((name, oid.parse().map_err(|_| bad())?))
    }

    /// A page query: `limit` 1..=100 (default 20), an optional business
    /// and cursor.
    pub fn page(
        business_names: Option<&str>,
        limit: Option<&str>,
        cursor: Option<&str>,
        businesses: &HashSet<String>,
    ) -> Result<PageQuery, ApiError> {
        let limit = match limit.map(str::trim).filter(|text| !text.is_empty()) {
            None => DEFAULT_PAGE_LIMIT,
            Some(text) => match text.parse::<usize>() {
                Ok(limit) if (1..=MAX_PAGE_LIMIT).contains(&limit) => limit,
                _ => return Err(invalid("invalid_limit", format!("`limit` {text:?} must be an integer from 1 to {MAX_PAGE_LIMIT}"))),
            },
        };
        let businesses = business_names.map(|names| business_filter(names, businesses)).transpose()?.flatten();
        let cursor = cursor
            .filter(|text| !text.is_empty())
            .map(|text| Cursor::decode(text).map_err(|error| invalid("invalid_cursor", error.to_string())))
            .transpose()?;
        Ok(PageQuery { businesses, limit, cursor })
    }
}

#[cfg(test)]
mod tests {
    use super::params;
    use crate::error::ApiError;

    fn code(result: Result<impl std::fmt::Debug, ApiError>) -> &'static str {
        match result {
            Err(ApiError::InvalidParameter { code, .. }) => code,
            other => panic!("expected an invalid parameter, got {other:?}"),
        }
    }

    #[test]
    fn parameters_are_named_when_wrong() {
        let businesses = ["archive".to_owned()].into();
        assert_eq!(params::uid("42").ok(), Some(42));
        assert_eq!(code(params::uid("0")), "invalid_uid");
        assert_eq!(code(params::uid("-3")), "invalid_uid");
        assert_eq!(code(params::page(None, Some("0"), None, &businesses)), "invalid_limit");
        assert_eq!(code(params::page(None, Some("101"), None, &businesses)), "invalid_limit");
        assert_eq!(params::page(None, Some("100"), None, &businesses).map(|q| q.limit).ok(), Some(100));
        assert_eq!(params::page(None, None, None, &businesses).map(|q| q.limit).ok(), Some(20));
        assert_eq!(code(params::page(Some("comic"), None, None, &businesses)), "unknown_business");
        assert_eq!(code(params::page(Some("archive,comic"), None, None, &businesses)), "unknown_business");
        let filter = |names| params::page(Some(names), None, None, &businesses).ok().and_then(|q| q.businesses);
        assert_eq!(filter(" archive , archive,"), Some(["archive".to_owned()].into()));
        assert_eq!(filter(" , "), None);
        let unknown = params::items(["archive:1", "comic:2", "radio:3"], &businesses);
        assert!(
            matches!(&unknown, Err(ApiError::InvalidParameter { code: "unknown_business", message, .. }) if message.contains("comic:2") && message.contains("radio:3") && !message.contains("archive:1")),
            "{unknown:?}"
        );
        assert_eq!(code(params::items(["comic:2", "archive"], &businesses)), "invalid_item");
        assert_eq!(code(params::page(None, None, Some("nope"), &businesses)), "invalid_cursor");
        assert_eq!(params::items(["archive:1", " archive:2 "], &businesses).ok(), Some(vec!["archive:1".into(), "archive:2".into()]));
        assert_eq!(code(params::items(["pgc:1"], &businesses)), "unknown_business");
        assert_eq!(code(params::items(["archive"], &businesses)), "invalid_item");
        assert_eq!(code(params::items(Vec::<&str>::new(), &businesses)), "invalid_items");
        let many: Vec<String> = (0..101).map(|i| format!("archive:{i}")).collect();
        assert_eq!(code(params::items(many.iter().map(String::as_str), &businesses)), "invalid_items");
    }
}
