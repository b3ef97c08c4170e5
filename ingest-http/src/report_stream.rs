//! `ReportStream`: a long-lived gRPC stream of reports, authenticated once
//! when it opens (the design notes' "long connection, verify once").
//!
//! Each request is checked and written exactly as `AddHistories` writes
//! its events, except that a bad event gets its own error in its result and
//! the rest of the request is still written; a request refused as a whole
//! (rate limit, full pipeline, store down) gets a [`proto::RequestError`]
//! and the stream goes on. Requests are answered once each, in order.
//!
//! Bounded: at most `max_unanswered` requests are taken before the oldest
//! is answered, and a request is sent down the pipeline before the next is
//! read, so a full `block` edge stops the reading and HTTP/2 flow control
//! holds the client; a full `reject` edge answers RESOURCE_EXHAUSTED for
//! that request only. Streams per client are capped ([`OpenStreams`]); a
//! stream with no request for `idle_timeout` ends DEADLINE_EXCEEDED. On a
//! stop (SIGTERM, an ingest hand-over) the stream reads no more, answers
//! what it took, and ends UNAVAILABLE: the client reconnects and resends
//! what was not answered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, Stream, StreamExt};
use futures::FutureExt;
use model::{Op, Record};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::api::{HistoryApi, StreamLimits, OVERLOADED};
use crate::auth::Client;
use crate::error::ApiError;
use crate::event::{check_each, EventError};
use crate::events::{ReportStreamEnded, ReportStreamOpened, ReportStreamRequest as RequestTaken};
use crate::grpc_status::{status_of, with_retry};
use crate::proto;

/// The name streams without a token are counted under.
const ANONYMOUS: &str = "";

/// Report streams open now, per client name.
#[derive(Clone, Default)]
pub struct OpenStreams(Arc<Mutex<HashMap<String, usize>>>);

impl OpenStreams {
    /// Counts a stream of `client` open, unless it already holds `most`.
    pub fn open(&self, client: Option<&Client>, most: usize) -> Result<StreamSlot, Status> {
        let name = client.map_or(ANONYMOUS, |client| client.name.as_str());
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(name.to_owned()).or_insert(0);
        if *count >= most {
            let who = if name.is_empty() { "callers without a token".to_owned() } else { format!("client `{name}`") };
            return Err(Status::resource_exhausted(format!(
                "{who} already holds {count} report streams open, at most {most} (grpc_max_streams_per_client); send on one of them"
            )));
        }
        *count += 1;
        Ok(StreamSlot { streams: self.clone(), client: name.to_owned(), _gauge: ReportStreamOpened::emit() })
    }

    /// Streams `client` (its name; `""` without a token) holds open now.
    pub fn count(&self, client: &str) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).get(client).copied().unwrap_or(0)
    }
}

/// One open stream, counted while it lives.
pub struct StreamSlot {
    streams: OpenStreams,
    client: String,
    _gauge: crate::events::OpenReportStream,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.streams.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

/// What a stream's replies are sent through.
pub type Replies = mpsc::Sender<Result<proto::ReportStreamReply, Status>>;

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The client closed its side; every request was answered.
    ClientClosed,
    /// The client's side failed or was reset; what was unanswered is lost
    /// to it (it was never acknowledged).
    ClientFailed,
    /// The client stopped reading replies.
    ClientGone,
    /// A stop: every request taken was answered, then UNAVAILABLE.
    Drained,
    /// No request for the idle timeout: DEADLINE_EXCEEDED.
    Idle,
}

impl Ended {
    /// The `reason` label of its metric.
    pub fn label(self) -> &'static str {
        match self {
            Ended::ClientClosed => "client_closed",
            Ended::ClientFailed => "client_failed",
            Ended::ClientGone => "client_gone",
            Ended::Drained => "drained",
            Ended::Idle => "idle",
        }
    }
}

/// How long a stream the server ended (drained, idle) keeps reading, and
/// dropping, what the client still sends, at most.
pub const LINGER: Duration = Duration::from_secs(1);

/// After the server ended a stream: reads and drops what the client still
/// sends until it closes its side, at most [`LINGER`]. The end status has
/// gone out before; were the stream (and, on a drain, its connection)
/// closed while the client's requests sat unread, the kernel would reset
/// the connection and the client could lose the status with it. Nothing
/// read here is answered, so none of it was acknowledged.
pub async fn linger<S>(inbound: &mut S)
where
    S: Stream<Item = Result<proto::ReportStreamRequest, Status>> + Unpin,
{
    let _ = tokio::time::timeout(LINGER, async { while let Some(Ok(_)) = inbound.next().await {} }).await;
}

/// Serves one stream until it ends: takes requests from `inbound`, answers
/// each through `replies` in order, and ends as [`Ended`] says.
pub async fn serve<S>(
    api: Arc<HistoryApi>,
    client: Option<Arc<Client>>,
    inbound: &mut S,
    replies: Replies,
    stop: CancellationToken,
    limits: StreamLimits,
) -> Ended
where
    S: Stream<Item = Result<proto::ReportStreamRequest, Status>> + Unpin,
{
    let mut unanswered: FuturesOrdered<BoxFuture<'static, proto::ReportStreamReply>> = FuturesOrdered::new();
    let idle = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(idle);
    // Set once the stream takes no more requests: how it will end.
    let mut ending: Option<Ended> = None;
    loop {
        if ending.is_some() && unanswered.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            Some(reply) = unanswered.next(), if !unanswered.is_empty() => {
                if replies.send(Ok(reply)).await.is_err() {
                    return finish(Ended::ClientGone, &replies).await;
                }
                if unanswered.is_empty() {
                    idle.as_mut().reset(tokio::time::Instant::now() + limits.idle_timeout);
                }
            }
            () = stop.cancelled(), if ending.is_none() => ending = Some(Ended::Drained),
            () = &mut idle, if ending.is_none() && unanswered.is_empty() => ending = Some(Ended::Idle),
            next = inbound.next(), if ending.is_none() && unanswered.len() < limits.max_unanswered => match next {
                Some(Ok(request)) => {
                    RequestTaken::emit(request.events.len());
                    unanswered.push_back(take(&api, client.as_ref(), request).await);
                    idle.as_mut().reset(tokio::time::Instant::now() + limits.idle_timeout);
                }
                None => ending = Some(Ended::ClientClosed),
                Some(Err(status)) => {
                    tracing::debug!(%status, "a report stream's client side failed; what it did not see answered was not acknowledged");
                    return finish(Ended::ClientFailed, &replies).await;
                }
            },
        }
    }
    finish(ending.unwrap_or(Ended::ClientClosed), &replies).await
}

/// Ends the stream with the status `ended` calls for.
async fn finish(ended: Ended, replies: &Replies) -> Ended {
    ReportStreamEnded { reason: ended.label() }.emit();
    let status = match ended {
        Ended::Drained => Some(Status::unavailable(
            "this instance is draining: every request it took was answered; reconnect (to another instance) and resend the unanswered seqs",
        )),
        Ended::Idle => Some(Status::deadline_exceeded(
            "no request within grpc_stream_idle_timeout_ms; the stream is closed, open a new one when there is more to send",
        )),
        Ended::ClientClosed | Ended::ClientFailed | Ended::ClientGone => None,
    };
    if let Some(status) = status {
        let _ = replies.send(Err(status)).await;
    }
    ended
}

/// Takes one request: checks its events, charges the client per event and
/// sends the good ones down the pipeline (waiting for room on a `block`
/// edge). The answer is the wait for their write.
async fn take(
    api: &HistoryApi,
    client: Option<&Arc<Client>>,
    request: proto::ReportStreamRequest,
) -> BoxFuture<'static, proto::ReportStreamReply> {
    let seq = request.seq;
    let refused = |error: ApiError| futures::future::ready(refusal(seq, error)).boxed();
    if request.events.is_empty() {
        return futures::future::ready(proto::ReportStreamReply { seq, results: Vec::new(), error: None }).boxed();
    }
    let rules = api.rules();
    if request.events.len() > rules.max_events {
        let message = format!("{} events in one request; at most {} are accepted", request.events.len(), rules.max_events);
        return refused(ApiError::BadRequest(vec![EventError::body("too_many_events", message)]));
    }
    let mut checked = check_each(request.events.into_iter().map(Into::into).collect(), &rules, model::now_ms());
    drop(rules);
    if let Some(client) = client {
        for outcome in &mut checked {
            if let Ok(record) = outcome {
                if client.businesses().is_some_and(|allowed| !allowed.contains(&record.business)) {
                    let message = format!("client `{}` may not report business {:?}", client.name, record.business);
                    *outcome = Err(vec![EventError::body("business_not_allowed", message)]);
                }
            }
        }
    }
    let mut results: Vec<Option<proto::EventResult>> = Vec::with_capacity(checked.len());
    let mut records: Vec<Record> = Vec::new();
    for outcome in checked {
        match outcome {
            Ok(record) => {
                records.push(record);
                results.push(None);
            }
            Err(problems) => results.push(Some(event_error(&problems))),
        }
    }
    if records.is_empty() {
        return futures::future::ready(proto::ReportStreamReply { seq, results: results.into_iter().flatten().collect(), error: None })
            .boxed();
    }
    if let Err(error) = HistoryApi::charge(client, records.len()) {
        return refused(error);
    }
    let enqueued = match api.enqueue(records.into_iter().map(Op::Upsert).collect()).await {
        Ok(enqueued) => enqueued,
        Err(error) => return refused(error),
    };
    async move {
        match enqueued.written().await {
            Ok(written) => {
                let mut written = written.into_iter();
                let results = results
                    .into_iter()
                    .map(|result| result.unwrap_or_else(|| written.next().map(Into::into).unwrap_or_default()))
                    .collect();
                proto::ReportStreamReply { seq, results, error: None }
            }
            Err(error) => refusal(seq, error),
        }
    }
    .boxed()
}

/// The result of an event that was not taken: its first problem (the
/// unary answer lists them all; one names what to fix).
fn event_error(problems: &[EventError]) -> proto::EventResult {
    let error = problems.first().map(|problem| proto::EventError { code: problem.code.to_owned(), message: problem.message.clone() });
    proto::EventResult { recorded: false, first_today: false, error }
}

/// The reply of a request refused as a whole. A full `reject` edge is
/// RESOURCE_EXHAUSTED for a stream (UNAVAILABLE for a unary call, which
/// another instance may take).
fn refusal(seq: u64, error: ApiError) -> proto::ReportStreamReply {
    let status = match error {
        ApiError::Unavailable { code: OVERLOADED, message, retry_after_s } => {
            with_retry(Status::resource_exhausted(format!("{message} ({OVERLOADED})")), retry_after_s)
        }
        error => status_of(error),
    };
    let retry_after_s = status.metadata().get("retry-after").and_then(|value| value.to_str().ok()?.parse().ok()).unwrap_or(0);
    let error = proto::RequestError { code: status.code() as i32, message: status.message().to_owned(), retry_after_s };
    proto::ReportStreamReply { seq, results: Vec::new(), error: Some(error) }
}

#[cfg(test)]
mod tests {
    use futures::channel::mpsc as inbound;
    use model::EventResult;
    use pipeline::{Input, WhenFull};

    use super::*;
    use crate::auth::Clients;
    use crate::event::EventRules;
    use crate::state::{IngestSettings, IngestState};

    const LIMITS: StreamLimits = StreamLimits { max_unanswered: 4, idle_timeout: Duration::from_secs(30), max_per_client: 2 };

    /// An open API over an edge of `capacity`, and that edge's far end.
    fn api(capacity: usize, when_full: WhenFull) -> (Arc<HistoryApi>, Input<model::Batch>) {
        let (output, input) = pipeline::edge::channel("ingest", "realtime", capacity, when_full);
        let settings = IngestSettings {
            rules: EventRules { businesses: ["archive".to_owned()].into(), max_events: 10, max_age_ms: Default::default() },
            request_timeout: Duration::from_secs(5),
            retry_after_s: 1,
            max_body_bytes: 4096,
        };
        let clients = Clients::new(&pipeline::topology::Auth::default());
        (IngestState::new(output, settings, clients, pipeline::health::Health::default()).api(), input)
    }

    /// Answers every batch on `input` as recorded, as the realtime stage would.
    fn write_everything(mut input: Input<model::Batch>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while let Some(batch) = input.recv().await {
                let results = batch.ops.iter().map(|_| EventResult { recorded: true, first_today: false }).collect();
                batch.ack.expect("a waiter").complete(Ok(results));
            }
        })
    }

    fn request(seq: u64, oids: &[u64], business: &str) -> proto::ReportStreamRequest {
        let events =
            oids.iter().map(|&oid| proto::Event { uid: 7, business: business.into(), oid, progress: 1, ..Default::default() }).collect();
        proto::ReportStreamRequest { seq, events }
    }

    /// What a test holds of a stream: its sender of requests, its
    /// receiver of replies, and the task serving it.
    type Opened = (
        inbound::Sender<Result<proto::ReportStreamRequest, Status>>,
        mpsc::Receiver<Result<proto::ReportStreamReply, Status>>,
        tokio::task::JoinHandle<Ended>,
    );

    /// A stream over `api`.
    fn open(api: Arc<HistoryApi>, stop: CancellationToken, limits: StreamLimits) -> Opened {
        let (requests, taken) = inbound::channel(0);
        let (replies, answers) = mpsc::channel(limits.max_unanswered);
        let served = tokio::spawn(async move {
            let mut taken = taken;
            serve(api, None, &mut taken, replies, stop, limits).await
        });
        (requests, answers, served)
    }

    #[tokio::test]
    async fn requests_are_answered_in_order_and_a_bad_event_only_fails_itself() {
        let (api, input) = api(1000, WhenFull::Block);
        let _realtime = write_everything(input);
        let (mut requests, mut answers, served) = open(api, CancellationToken::new(), LIMITS);
        // The client sends while it reads: replies wait for a reader.
        tokio::spawn(async move {
            use futures::SinkExt;
            for seq in 0..50u64 {
                let business = if seq % 7 == 3 { "nope" } else { "archive" };
                requests.send(Ok(request(seq, &[1, 2], business))).await.unwrap();
            }
            requests.send(Ok(proto::ReportStreamRequest { seq: 50, events: vec![] })).await.unwrap();
            let mut mixed = request(51, &[1, 2, 3], "archive");
            mixed.events[1].uid = 0;
            requests.send(Ok(mixed)).await.unwrap();
            requests.close_channel();
        });
        for seq in 0..50u64 {
            let reply = answers.recv().await.unwrap().unwrap();
            assert_eq!(reply.seq, seq);
            assert!(reply.error.is_none(), "{reply:?}");
            let codes: Vec<_> = reply.results.iter().map(|result| result.error.as_ref().map(|error| error.code.clone())).collect();
            if seq % 7 == 3 {
                assert_eq!(codes, vec![Some("unknown_business".to_owned()); 2]);
            } else {
                assert!(reply.results.iter().all(|result| result.recorded && result.error.is_none()), "{reply:?}");
            }
        }
        let ping = answers.recv().await.unwrap().unwrap();
        assert_eq!((ping.seq, ping.results.len()), (50, 0));
        let mixed = answers.recv().await.unwrap().unwrap();
        let recorded: Vec<bool> = mixed.results.iter().map(|result| result.recorded).collect();
        assert_eq!(recorded, [true, false, true]);
        assert_eq!(mixed.results[1].error.as_ref().unwrap().code, "invalid_uid");
        assert!(answers.recv().await.is_none(), "the stream ends OK when the client closes its side");
        assert_eq!(served.await.unwrap(), Ended::ClientClosed);
    }

    #[tokio::test]
    async fn a_full_reject_edge_refuses_that_request_only() {
        let (api, input) = api(1, WhenFull::Reject);
        let (mut requests, mut answers, _served) = open(api, CancellationToken::new(), LIMITS);
        use futures::SinkExt;
        requests.send(Ok(request(1, &[1], "archive"))).await.unwrap();
        requests.send(Ok(request(2, &[2], "archive"))).await.unwrap();
        // Neither is answered before the first is written: now write it.
        let _realtime = write_everything(input);
        let first = answers.recv().await.unwrap().unwrap();
        assert!(first.error.is_none() && first.results[0].recorded, "{first:?}");
        let second = answers.recv().await.unwrap().unwrap();
        let error = second.error.expect("the second found the edge full");
        assert_eq!((second.seq, error.code), (2, tonic::Code::ResourceExhausted as i32), "{}", error.message);
        assert!(error.retry_after_s >= 1);
        requests.send(Ok(request(3, &[3], "archive"))).await.unwrap();
        let third = answers.recv().await.unwrap().unwrap();
        assert!(third.error.is_none() && third.results[0].recorded, "the stream goes on: {third:?}");
    }

    #[tokio::test]
    async fn the_stream_takes_no_more_than_its_unanswered_bound() {
        let (api, input) = api(1000, WhenFull::Block);
        let (mut requests, mut answers, _served) = open(api, CancellationToken::new(), LIMITS);
        let mut sent = 0u64;
        // The request channel holds nothing: a send completes only when the
        // stream took the request.
        while sent < 20 {
            let send = futures::SinkExt::send(&mut requests, Ok(request(sent, &[1], "archive")));
            if tokio::time::timeout(Duration::from_millis(300), send).await.is_err() {
                break;
            }
            sent += 1;
        }
        // One more may sit in the channel's slot for its sender.
        assert!((LIMITS.max_unanswered as u64..=LIMITS.max_unanswered as u64 + 1).contains(&sent), "{sent} taken");
        let _realtime = write_everything(input);
        for seq in 0..LIMITS.max_unanswered as u64 {
            assert_eq!(answers.recv().await.unwrap().unwrap().seq, seq);
        }
    }

    #[tokio::test]
    async fn a_stop_answers_what_was_taken_then_ends_unavailable() {
        let (api, input) = api(1000, WhenFull::Block);
        let stop = CancellationToken::new();
        let (mut requests, mut answers, served) = open(api, stop.clone(), LIMITS);
        use futures::SinkExt;
        requests.send(Ok(request(1, &[1], "archive"))).await.unwrap();
        requests.send(Ok(request(2, &[2], "archive"))).await.unwrap();
        stop.cancel();
        let _realtime = write_everything(input);
        assert_eq!(answers.recv().await.unwrap().unwrap().seq, 1);
        assert_eq!(answers.recv().await.unwrap().unwrap().seq, 2);
        let end = answers.recv().await.unwrap().expect_err("the stream ends with a status");
        assert_eq!(end.code(), tonic::Code::Unavailable, "{end:?}");
        assert!(end.message().contains("reconnect"), "{end:?}");
        assert_eq!(served.await.unwrap(), Ended::Drained);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_ends_deadline_exceeded() {
        let (api, _input) = api(1000, WhenFull::Block);
        let (_requests, mut answers, served) = open(api, CancellationToken::new(), LIMITS);
        let end = answers.recv().await.unwrap().expect_err("the stream ends with a status");
        assert_eq!(end.code(), tonic::Code::DeadlineExceeded, "{end:?}");
        assert_eq!(served.await.unwrap(), Ended::Idle);
    }

    #[test]
    fn streams_per_client_are_capped() {
        let streams = OpenStreams::default();
        let first = streams.open(None, 2).unwrap();
        let _second = streams.open(None, 2).unwrap();
        let Err(refused) = streams.open(None, 2) else { panic!("a third stream opened") };
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("grpc_max_streams_per_client"), "{refused:?}");
        drop(first);
        assert_eq!(streams.count(ANONYMOUS), 1);
        streams.open(None, 2).expect("a stream closed makes room");
    }
}
