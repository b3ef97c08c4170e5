//! The internal gRPC service (`proto/histflow/api/v1/history_service.proto`):
//! the HTTP API over tonic, on its own address, calling the same
//! [`HistoryApi`] — same validation, auth, rate limits and answers.
//!
//! Auth reads `authorization: Bearer <token>` from each call's metadata in
//! an interceptor ([`Gatekeeper`]), before the call's message is awaited:
//! a caller without a valid token holds nothing while it waits. The scope
//! and businesses are checked in each call. A call is charged one unit to the client's rate limit, except
//! `DeleteHistories`, charged per item.

use std::sync::Arc;

use pipeline::topology::Scope;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};

use crate::api::HistoryApi;
use crate::auth::Client;
use crate::error::ApiError;
use crate::event::check_events;
use crate::events::ReportStreamOpened;
use crate::grpc_status::status_of;
use crate::params;
use crate::report_stream::{self, OpenStreams};

pub use crate::proto;

use proto::history_server::{History, HistoryServer};

/// The service over an API.
#[derive(Clone)]
pub struct GrpcHistory {
    api: Arc<HistoryApi>,
    /// Report streams open now, per client.
    streams: OpenStreams,
    /// Cancelled when the server stops: report streams drain.
    stop: CancellationToken,
}

impl GrpcHistory {
    /// The service for `api`; its report streams drain when `stop` is
    /// cancelled.
    pub fn new(api: Arc<HistoryApi>, stop: CancellationToken) -> Self {
        GrpcHistory { api, streams: OpenStreams::default(), stop }
    }

    /// The tonic service for `api`, taking messages of at most
    /// `max_message_bytes`, behind the [`Gatekeeper`]; report streams
    /// drain when `stop` is cancelled.
    pub fn server(api: Arc<HistoryApi>, max_message_bytes: usize, stop: CancellationToken) -> GrpcService {
        let gate = Gatekeeper { api: api.clone() };
        ReportStreamOpened::describe();
        InterceptedService::new(HistoryServer::new(GrpcHistory::new(api, stop)).max_decoding_message_size(max_message_bytes), gate)
    }

    /// Refuses while draining; takes the caller the [`Gatekeeper`] found
    /// (or authenticates, for a call that did not pass it), checks its
    /// `scope` and charges `units`.
    fn admit<T>(&self, request: &Request<T>, scope: Scope, units: usize) -> Result<Option<Arc<Client>>, Status> {
        self.api.refuse_if_draining().map_err(status_of)?;
        let client = match request.extensions().get::<Caller>() {
            Some(Caller(client)) => client.clone(),
            None => self.api.authenticate(authorization(request.metadata())).map_err(status_of)?,
        };
        if let Some(client) = &client {
            client.require(scope).map_err(status_of)?;
        }
        HistoryApi::charge(client.as_ref(), units).map_err(status_of)?;
        Ok(client)
    }
}

/// The `authorization` metadata, if it is text.
fn authorization(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    metadata.get("authorization").and_then(|value| value.to_str().ok())
}

/// The service the gRPC listener serves: the calls behind the gatekeeper.
pub type GrpcService = InterceptedService<HistoryServer<GrpcHistory>, Gatekeeper>;

/// The caller a call was authenticated as, from its headers.
#[derive(Clone)]
struct Caller(Option<Arc<Client>>);

/// Checks every call's token from its headers, before its message is
/// awaited or decoded: a caller without a valid token is answered
/// UNAUTHENTICATED at once, and holds nothing while it waits.
#[derive(Clone)]
pub struct Gatekeeper {
    api: Arc<HistoryApi>,
}

impl tonic::service::Interceptor for Gatekeeper {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        self.api.refuse_if_draining().map_err(status_of)?;
        let client = self.api.authenticate(authorization(request.metadata())).map_err(status_of)?;
        request.extensions_mut().insert(Caller(client));
        Ok(request)
    }
}

impl GrpcHistory {
    /// Validates and records events; the caller's limit is charged per
    /// event, as over HTTP.
    async fn add(&self, client: Option<Arc<Client>>, events: Vec<proto::Event>) -> Result<Vec<proto::EventResult>, Status> {
        let records = check_events(events.into_iter().map(Into::into).collect(), &self.api.rules(), model::now_ms())
            .map_err(|errors| status_of(ApiError::BadRequest(errors)))?;
        let results = self.api.add_events(client.as_ref(), records).await.map_err(status_of)?;
        Ok(results.into_iter().map(Into::into).collect())
    }
}

#[tonic::async_trait]
impl History for GrpcHistory {
    type ReportStreamStream = tokio_stream::wrappers::ReceiverStream<Result<proto::ReportStreamReply, Status>>;

    async fn report_stream(
        &self,
        request: Request<Streaming<proto::ReportStreamRequest>>,
    ) -> Result<Response<Self::ReportStreamStream>, Status> {
        // The token was checked from the headers (the Gatekeeper), once;
        // each event is charged to the client's limit as it comes.
        let client = self.admit(&request, Scope::Write, 0)?;
        let limits = self.api.config().streams;
        let slot = self.streams.open(client.as_deref(), limits.max_per_client)?;
        // Replies wait here only while the client does not read them; the
        // stream takes no more than `max_unanswered` requests meanwhile.
        let (replies, answers) = tokio::sync::mpsc::channel(limits.max_unanswered.max(1));
        let (api, stop, mut inbound) = (self.api.clone(), self.stop.clone(), request.into_inner());
        tokio::spawn(async move {
            let ended = report_stream::serve(api, client, &mut inbound, replies, stop, limits).await;
            drop(slot);
            if matches!(ended, report_stream::Ended::Drained | report_stream::Ended::Idle) {
                report_stream::linger(&mut inbound).await;
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(answers)))
    }

    async fn add_history(&self, request: Request<proto::AddHistoryRequest>) -> Result<Response<proto::AddHistoryReply>, Status> {
        let client = self.admit(&request, Scope::Write, 0)?;
        let event = request.into_inner().event.ok_or_else(|| Status::invalid_argument("`event` is required (no_events)"))?;
        let result = self.add(client, vec![event]).await?.pop();
        Ok(Response::new(proto::AddHistoryReply { result }))
    }

    async fn add_histories(&self, request: Request<proto::AddHistoriesRequest>) -> Result<Response<proto::AddHistoriesReply>, Status> {
        let client = self.admit(&request, Scope::Write, 0)?;
        let results = self.add(client, request.into_inner().events).await?;
        Ok(Response::new(proto::AddHistoriesReply { results }))
    }

    async fn user_histories(&self, request: Request<proto::UserHistoriesRequest>) -> Result<Response<proto::UserHistoriesReply>, Status> {
        let client = self.admit(&request, Scope::Read, 1)?;
        let request = request.into_inner();
        let uid = params::uid_number(request.uid).map_err(status_of)?;
        let limit = (request.limit != 0).then(|| request.limit.to_string());
        let filter = params::grpc_business_filter(&request.business, &self.api.rules().businesses).map_err(status_of)?;
        let query = params::page(filter, limit.as_deref(), Some(&request.cursor)).map_err(status_of)?;
        let page = self.api.history(uid, query, client.as_ref()).await.map_err(status_of)?;
        Ok(Response::new(proto::UserHistoriesReply {
            items: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next.map(|cursor| cursor.encode()).unwrap_or_default(),
        }))
    }

    async fn progress(&self, request: Request<proto::ProgressRequest>) -> Result<Response<proto::ProgressReply>, Status> {
        let client = self.admit(&request, Scope::Read, 1)?;
        let request = request.into_inner();
        let uid = params::uid_number(request.uid).map_err(status_of)?;
        let items = params::items(request.items.iter().map(String::as_str), &self.api.rules().businesses).map_err(status_of)?;
        let records = self.api.progress(uid, items.clone(), client.as_ref()).await.map_err(status_of)?;
        let items =
            items.into_iter().zip(records).map(|(item, record)| proto::ProgressEntry { item, record: record.map(Into::into) }).collect();
        Ok(Response::new(proto::ProgressReply { items }))
    }

    async fn delete_histories(
        &self,
        request: Request<proto::DeleteHistoriesRequest>,
    ) -> Result<Response<proto::DeleteHistoriesReply>, Status> {
        // Each item is a delete downstream (a flush and a Kafka message of
        // its own): charged per item, as HTTP charges one item a request.
        let units = request.get_ref().items.len().max(1);
        let client = self.admit(&request, Scope::Mutate, units)?;
        let request = request.into_inner();
        let uid = params::uid_number(request.uid).map_err(status_of)?;
        let keys: Vec<String> = request.items.iter().map(|key| format!("{}:{}", key.business, key.oid)).collect();
        let items = params::items(keys.iter().map(String::as_str), &self.api.rules().businesses).map_err(status_of)?;
        self.api.delete(uid, items, client.as_ref()).await.map_err(status_of)?;
        Ok(Response::new(proto::DeleteHistoriesReply {}))
    }

    async fn clear_history(&self, request: Request<proto::ClearHistoryRequest>) -> Result<Response<proto::ClearHistoryReply>, Status> {
        let client = self.admit(&request, Scope::Mutate, 1)?;
        let request = request.into_inner();
        let uid = params::uid_number(request.uid).map_err(status_of)?;
        // One validator with HTTP's; proto3 cannot tell an empty
        // `business` from an absent one, so empty is "not given".
        let business = (!request.business.is_empty()).then_some(request.business.as_str());
        let scope = params::clear_scope(business, request.all, &self.api.rules().businesses).map_err(status_of)?;
        self.api.clear(uid, scope, client.as_ref()).await.map_err(status_of)?;
        Ok(Response::new(proto::ClearHistoryReply {}))
    }

    async fn set_recording(&self, request: Request<proto::SetRecordingRequest>) -> Result<Response<proto::RecordingReply>, Status> {
        let client = self.admit(&request, Scope::Mutate, 1)?;
        let request = request.into_inner();
        let uid = params::uid_number(request.uid).map_err(status_of)?;
        self.api.set_paused(uid, request.paused, client.as_ref()).await.map_err(status_of)?;
        Ok(Response::new(proto::RecordingReply { paused: request.paused }))
    }

    async fn get_recording(&self, request: Request<proto::GetRecordingRequest>) -> Result<Response<proto::RecordingReply>, Status> {
        self.admit(&request, Scope::Read, 1)?;
        let uid = params::uid_number(request.into_inner().uid).map_err(status_of)?;
        let paused = self.api.paused(uid).await.map_err(status_of)?;
        Ok(Response::new(proto::RecordingReply { paused }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pipeline::topology::{Auth, AuthClient};
    use pipeline::{RateLimitSpec, WhenFull};
    use proto::history_server::History;

    use super::*;
    use crate::auth::Clients;
    use crate::event::EventRules;
    use crate::state::{IngestSettings, IngestState};

    /// The API of a stage whose one client has `limit`.
    fn service(limit: Option<RateLimitSpec>) -> GrpcHistory {
        let (output, _input) = pipeline::edge::channel("ingest", "realtime", 1000, WhenFull::Reject);
        let settings = IngestSettings {
            rules: EventRules { businesses: ["archive".to_owned()].into(), max_events: 1000, max_age_ms: Default::default() },
            request_timeout: Duration::from_millis(200),
            retry_after_s: 1,
            max_body_bytes: 4096,
        };
        let client =
            AuthClient { name: "app".into(), token: "token-0123456789abcdef".into(), rate_limit: limit, scopes: None, businesses: None };
        let clients = Clients::new(&Auth { clients: vec![client], allow_unauthenticated: false });
        let state = IngestState::new(output, settings, clients, pipeline::health::Health::default());
        GrpcHistory::new(state.api.clone(), CancellationToken::new())
    }

    #[tokio::test]
    async fn every_call_refuses_a_caller_without_a_valid_token() {
        let service = service(None);
        for token in [None, Some("Bearer wrong-token-0123456789"), Some("token-0123456789abcdef")] {
            fn with<T>(token: Option<&str>, mut request: Request<T>) -> Request<T> {
                if let Some(token) = token {
                    request.metadata_mut().insert("authorization", token.parse().unwrap());
                }
                request
            }
            let event = proto::Event { uid: 7, business: "archive".into(), oid: 9, progress: 1, ..Default::default() };
            let codes = [
                service.add_history(with(token, Request::new(proto::AddHistoryRequest { event: Some(event.clone()) }))).await.err(),
                service.add_histories(with(token, Request::new(proto::AddHistoriesRequest { events: vec![event] }))).await.err(),
                service.user_histories(with(token, Request::new(proto::UserHistoriesRequest { uid: 7, ..Default::default() }))).await.err(),
                service.progress(with(token, Request::new(proto::ProgressRequest { uid: 7, items: vec!["archive:9".into()] }))).await.err(),
                service.delete_histories(with(token, Request::new(proto::DeleteHistoriesRequest { uid: 7, items: vec![] }))).await.err(),
                service
                    .clear_history(with(token, Request::new(proto::ClearHistoryRequest { uid: 7, business: String::new(), all: true })))
                    .await
                    .err(),
                service.set_recording(with(token, Request::new(proto::SetRecordingRequest { uid: 7, paused: true }))).await.err(),
                service.get_recording(with(token, Request::new(proto::GetRecordingRequest { uid: 7 }))).await.err(),
            ];
            for (call, refused) in codes.iter().enumerate() {
                assert_eq!(refused.as_ref().map(Status::code), Some(tonic::Code::Unauthenticated), "call {call} with {token:?}");
            }
        }
    }

    #[test]
    fn a_request_with_many_bad_events_gets_a_status_that_fits_a_header() {
        let errors = (0..5000).map(|index| crate::event::EventError::at(index, "invalid_uid", "`uid` must be greater than 0")).collect();
        let status = status_of(ApiError::BadRequest(errors));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let message = status.message();
        assert!(message.len() <= crate::text::MESSAGE_MAX_BYTES, "{} bytes", message.len());
        assert!(message.starts_with("nothing was recorded: event 0: "), "{message}");
        let listed = message.matches("event ").count();
        let more: usize = message.rsplit("and ").next().and_then(|tail| tail.strip_suffix(" more")).unwrap().parse().unwrap();
        assert_eq!(listed + more, 5000, "{message}");
    }

    #[tokio::test]
    async fn deleting_many_items_is_charged_per_item() {
        let service = service(Some(RateLimitSpec { per_second: 1, burst: Some(10) }));
        let items = (1..=50).map(|oid| proto::ItemKey { business: "archive".into(), oid }).collect();
        let mut request = Request::new(proto::DeleteHistoriesRequest { uid: 7, items });
        request.metadata_mut().insert("authorization", "Bearer token-0123456789abcdef".parse().unwrap());
        let refused = service.delete_histories(request).await.expect_err("50 deletes passed a burst of 10");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
    }
}
