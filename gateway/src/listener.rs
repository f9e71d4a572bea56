//! The TCP side of a replica: accepts connections and serves HTTP/1.1 on them within bounds (the
//! public and the internal listener alike, each with its own cap). Every connection counts against
//! its listener's cap (past it, new ones are closed before anything is read), request headers and an idle keep-alive connection's next request must arrive within the
//! HTTP timeout (slow-header attacks and idle sockets are cut off), and request bodies get the same
//! deadline (see `http::json`). WebSocket upgrades keep their connection's place under the cap
//! until the socket closes.
//!
//! axum's own `serve` has no header timeout and no cap, which is why the accept loop is ours.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower_service::Service;

/// What each of a replica's listeners allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// TCP connections held at once (HTTP and WebSocket), per listener.
    pub max_connections: usize,
    /// For request headers, an idle keep-alive connection's next request, and request bodies.
    pub http_timeout: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            max_connections: herald_contract::defaults::MAX_CONNECTIONS,
            http_timeout: Duration::from_secs(herald_contract::defaults::HTTP_TIMEOUT_SECONDS),
        }
    }
}

/// The deadline a request's body must arrive within, put in every request's extensions for the
/// body extractor (`http::json`): the listener owns the timeouts, handlers only honour them.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

/// Header bytes buffered per connection at most (hyper's default is about 400 KiB, which a few
/// thousand slow senders would turn into gigabytes); a JWT in `Authorization` fits many times over.
const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Connections refused because the replica was at its cap, for `/metrics`.
pub type Refused = prometheus_client::metrics::counter::Counter;

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting and waits for the
/// HTTP exchanges in flight (WebSocket sessions are drained by the gateway itself).
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: ListenerLimits,
    refused: Refused,
    shutdown: impl Future<Output = ()>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    // Each connection finishes its exchange in flight, then closes, once this is cancelled; the
    // tracker says when all have.
    let stopping = tokio_util::sync::CancellationToken::new();
    let connections = tokio_util::task::TaskTracker::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.http_timeout)
        // 431 past it; the read buffer is capped too (at twice that, room for the start of a body).
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(2 * MAX_HEADER_BYTES);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors or similar: retrying at once would spin.
                    tracing::warn!(error = %err, "gateway: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = Slot::take(&open, limits.max_connections) else {
            refused.inc();
            tracing::debug!(%peer, "gateway: connection refused, at the connection cap");
            drop(stream);
            continue;
        };
        // Notifications are small frames that must leave at once: Nagle's algorithm would hold each
        // one back until the previous one is acknowledged (Go's net, as Centrifugo uses, disables it
        // too).
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "gateway: TCP_NODELAY not set");
        }
        let io = TokioIo::new(Counted { stream, _slot: slot });
        let router = router.clone();
        let body_timeout = BodyTimeout(limits.http_timeout);
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(body_timeout);
            let mut router = router.clone();
            async move { router.call(request).await }
        });
        let connection = http.serve_connection(io, service).with_upgrades();
        let stopping = stopping.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = stopping.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = ended {
                tracing::debug!(%peer, error = %err, "gateway: connection ended with an error");
            }
        });
    }
    drop(listener);
    stopping.cancel();
    connections.close();
    connections.wait().await;
}

/// A place under the connection cap, given back when the connection (or the WebSocket it became)
/// is dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Slot(open.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A TCP stream holding its place under the cap.
struct Counted {
    stream: TcpStream,
    _slot: Slot,
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back() {
        let open = Arc::new(AtomicUsize::new(0));
        let first = Slot::take(&open, 2).expect("one");
        let second = Slot::take(&open, 2).expect("two");
        assert!(Slot::take(&open, 2).is_none(), "the cap is two");
        drop(first);
        let third = Slot::take(&open, 2).expect("a place was given back");
        drop((second, third));
        assert_eq!(open.load(Ordering::Acquire), 0);
    }
}
