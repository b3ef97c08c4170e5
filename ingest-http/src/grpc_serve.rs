//! The gRPC listener, bounded: a cap on connections, a limit on the streams
//! (calls) open at once on one connection, a deadline for each call (its
//! message included), HTTP/2 keep-alive pings that close dead peers, and a
//! bound on header lists. 5,000 streams that sent their headers and never
//! a message once held about 70 MiB for as long as the client liked, and
//! on a token-protected topology were never answered UNAUTHENTICATED; the
//! token is now checked from the headers ([`crate::grpc::Gatekeeper`]).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::events::GrpcConnectionRefused;
use crate::grpc::GrpcService;
use crate::serve::{Slot, ACCEPT_ERROR_PAUSE};

/// The limits of the gRPC listener, fixed at its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcLimits {
    /// Connections open at once, at most; past it a new one is closed.
    pub max_connections: usize,
    /// Streams open at once on one connection (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub max_streams_per_connection: u32,
    /// Longest a call may take, its request message included.
    pub call_timeout: Duration,
}

/// How often an idle connection is pinged...
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// ...and how long its answer may take before the connection is closed.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of one call's header list, at most (the token and a few names).
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// Streams a client may open and reset before the server has accepted
/// them (the "rapid reset" flood), at most.
const MAX_PENDING_RESETS: usize = 64;

/// Serves `service` on `listener` until `stop`.
pub async fn serve_grpc(
    listener: TcpListener,
    service: GrpcService,
    limits: GrpcLimits,
    stop: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let open = Arc::new(AtomicUsize::new(0));
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).filter_map(move |accepted| {
        let open = open.clone();
        async move {
            match accepted {
                Ok(stream) if open.load(Ordering::Relaxed) >= limits.max_connections => {
                    GrpcConnectionRefused { max_connections: limits.max_connections }.emit();
                    drop(stream);
                    None
                }
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    Some(Ok::<_, io::Error>(Capped { stream, _slot: Slot::take(&open) }))
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a gRPC connection; trying again shortly");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    None
                }
            }
        }
    });
    tonic::transport::Server::builder()
        .max_concurrent_streams(limits.max_streams_per_connection)
        .timeout(limits.call_timeout)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_RESETS))
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await })
        .await
}

/// A connection counted against the cap while it lives.
struct Capped {
    stream: TcpStream,
    _slot: Slot,
}

impl Connected for Capped {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Capped {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Capped {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, bytes)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
