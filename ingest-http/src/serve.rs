//! The HTTP listener, with every connection bounded: how many there are, how
//! long one may take to send a request's head, and how long one may sit
//! idle between requests. Silent or half-sent connections once stayed open
//! for minutes (300 of them all still open after 65 s), and with a low
//! open-file limit they made ordinary requests fail.
//!
//! Each connection has a clock ([`Clock`]) in one of three phases:
//! - *receiving*: from its accept, or from the first byte after an idle
//!   wait, until its request's head is complete; past
//!   `header_read_timeout` the connection is closed (nothing of the request
//!   was read, so nothing is lost);
//! - *busy*: a request is being answered (bounded by the handlers' own
//!   request timeout);
//! - *idle*: between requests on a kept-alive connection; past
//!   `idle_timeout` it is closed.
//!
//! The bytes read move the clock from idle to receiving (the IO wrapper
//! [`Watched`] sees them), the service moves it to busy and back to idle.
//! Past `max_connections` a new connection gets a 503 in the JSON error
//! shape and is closed. HTTP/1.1 only: the API has no use for h2c on this
//! port (gRPC has its own listener).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::events::{ConnectionClosed, ConnectionOpened, ConnectionRefused};

/// The limits of one listener's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Longest a connection may take to send a request's head, from its
    /// accept or from the first byte after an idle wait.
    pub header_read_timeout: Duration,
    /// Longest a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Connections open at once, at most.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    /// The `http_ingest` stage's defaults.
    fn default() -> Self {
        ConnectionLimits { header_read_timeout: Duration::from_secs(10), idle_timeout: Duration::from_secs(60), max_connections: 10_000 }
    }
}

/// Serves `app` on `listener` until `stop`: stops accepting, lets every
/// connection finish the request it is answering, and returns once all are
/// closed. `limits` is asked for the limits in force at each accept and
/// each wait, so a reload changes them for what comes next.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: impl Fn() -> ConnectionLimits + Clone + Send + Sync + 'static,
    stop: CancellationToken,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let connections = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, say: not the listener's end.
                    // A pause keeps the loop from spinning on it.
                    tracing::warn!(%error, "cannot accept a connection; trying again shortly");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            }
        };
        let max_connections = limits().max_connections;
        if open.load(Ordering::Relaxed) >= max_connections {
            ConnectionRefused { max_connections }.emit();
            connections.spawn(refuse(stream));
            continue;
        }
        let counted = Counted::new(&open);
        connections.spawn(connection(stream, app.clone(), limits.clone(), counted, stop.clone()));
    }
    connections.close();
    connections.wait().await;
}

/// A connection's place in its listener's count of open connections (the
/// HTTP and the gRPC listener's caps), given back when dropped.
pub(crate) struct Slot(Arc<AtomicUsize>);

impl Slot {
    pub(crate) fn take(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Slot(open.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One connection in the listener's count and its gauge, until dropped.
struct Counted {
    _slot: Slot,
    _gauge: crate::events::OpenConnection,
}

impl Counted {
    fn new(open: &Arc<AtomicUsize>) -> Self {
        Counted { _slot: Slot::take(open), _gauge: ConnectionOpened::emit() }
    }
}

/// Pause after a failed accept (out of file descriptors, say); both
/// listeners take it.
pub(crate) const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// Longest a refused connection is given to take its 503.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Answers a connection over the cap with a 503 and closes it.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str =
        r#"{"error":{"code":"too_many_connections","message":"this server has as many connections open as it takes; retry shortly"}}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// Serves one connection, closing it when its clock runs out.
async fn connection(stream: TcpStream, app: Router, limits: impl Fn() -> ConnectionLimits, _counted: Counted, stop: CancellationToken) {
    // Small answers: each would otherwise wait for the peer's delayed ACK.
    let _ = stream.set_nodelay(true);
    let clock = Arc::new(Clock::new());
    let io = TokioIo::new(Watched { inner: stream, clock: clock.clone() });
    let service_clock = clock.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let busy = service_clock.busy();
        let app = app.clone();
        async move {
            let response = app.oneshot(request.map(Body::new)).await;
            drop(busy);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The clock enforces the head's deadline, whose start hyper cannot see
    // (the first byte after an idle wait).
    builder.timer(TokioTimer::new()).header_read_timeout(None).keep_alive(true);
    let served = builder.serve_connection(io, service);
    tokio::pin!(served);
    let mut stopping = false;
    loop {
        let limits = limits();
        let deadline = clock.deadline(&limits);
        tokio::select! {
            result = served.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "HTTP connection ended with an error");
                }
                return;
            }
            () = clock.changed.notified() => {}
            () = sleep_until(deadline) => {
                if let Some(reason) = clock.expired(&limits) {
                    // Nothing of a request is in flight: dropping the
                    // connection closes the socket.
                    ConnectionClosed { reason }.emit();
                    return;
                }
            }
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Sleeps until `deadline`, or for ever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// What a connection is doing, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a request's head since then.
    Receiving(Instant),
    /// Answering this many requests.
    Busy(usize),
    /// Waiting for the next request since then.
    Idle(Instant),
}

/// A connection's phase, moved by its IO and its service.
struct Clock {
    phase: Mutex<Phase>,
    /// Woken when a new phase may bring the deadline forward.
    changed: Notify,
}

impl Clock {
    fn new() -> Self {
        Clock { phase: Mutex::new(Phase::Receiving(Instant::now())), changed: Notify::new() }
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When the connection's time runs out in its current phase.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        match *self.phase() {
            Phase::Receiving(since) => Some(since + limits.header_read_timeout),
            Phase::Busy(_) => None,
            Phase::Idle(since) => Some(since + limits.idle_timeout),
        }
    }

    /// Why the connection must close now, if it must.
    fn expired(&self, limits: &ConnectionLimits) -> Option<&'static str> {
        let now = Instant::now();
        match *self.phase() {
            Phase::Receiving(since) if now >= since + limits.header_read_timeout => Some("header_timeout"),
            Phase::Idle(since) if now >= since + limits.idle_timeout => Some("idle_timeout"),
            _ => None,
        }
    }

    /// Bytes arrived: an idle connection starts receiving a request.
    fn bytes_read(&self) {
        let mut phase = self.phase();
        if let Phase::Idle(_) = *phase {
            *phase = Phase::Receiving(Instant::now());
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// A request's head is complete; busy until the guard drops.
    fn busy(self: &Arc<Self>) -> BusyGuard {
        let mut phase = self.phase();
        *phase = match *phase {
            Phase::Busy(requests) => Phase::Busy(requests + 1),
            Phase::Receiving(_) | Phase::Idle(_) => Phase::Busy(1),
        };
        drop(phase);
        self.changed.notify_one();
        BusyGuard(self.clone())
    }
}

/// Marks a request answered when dropped.
struct BusyGuard(Arc<Clock>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let mut phase = self.0.phase();
        *phase = match *phase {
            Phase::Busy(requests) if requests > 1 => Phase::Busy(requests - 1),
            _ => Phase::Idle(Instant::now()),
        };
        drop(phase);
        self.0.changed.notify_one();
    }
}

/// A connection's socket, telling its clock when bytes arrive.
struct Watched {
    inner: TcpStream,
    clock: Arc<Clock>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, bytes)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
