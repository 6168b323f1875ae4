//! The HTTP server: an accept loop over hyper's HTTP/1 connections with the
//! limits `axum::serve` lacks (mini-redis style: a semaphore caps
//! connections, a broadcast-like token asks them to finish).
//!
//! Per connection, until it is upgraded to a WebSocket:
//! - at most `http.max_connections` are served at once; the next one is
//!   accepted only when one closes (the rest wait in the listen backlog);
//! - a request head must arrive in full within `header_read_timeout` of its
//!   first byte;
//! - a connection with no request in flight (fresh, or kept alive after a
//!   response) is closed after `idle_timeout`;
//! - a request body must arrive in full within `body_timeout` of its head
//!   (the handler then sees a body error, answered 400).
//!
//! Each close the server makes itself is counted in
//! `callstream_http_connections_closed_total{reason}`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::config::HttpConfig;
use crate::metrics::Metrics;

/// The connection limits, from `[http]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_timeout: Duration,
}

impl From<&HttpConfig> for Limits {
    fn from(c: &HttpConfig) -> Self {
        Self {
            max_connections: c.max_connections,
            header_read_timeout: Duration::from_secs(c.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(c.idle_timeout_secs),
            body_timeout: Duration::from_secs(c.body_timeout_secs),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves to the shutdown
/// deadline; then stops accepting, asks every connection to finish its
/// request in flight, and waits for them until that deadline, which it
/// returns (the caller winds the rest down against the same one).
pub async fn run(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = Instant>,
) -> io::Result<Instant> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    tokio::pin!(shutdown);
    let deadline = loop {
        let permit = tokio::select! {
            deadline = &mut shutdown => break deadline,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                // Never closed; were it, accept nothing more until shutdown.
                Err(_) => break (&mut shutdown).await,
            },
        };
        let (tcp, peer) = tokio::select! {
            deadline = &mut shutdown => break deadline,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        tracker.spawn(serve_connection(
            tcp,
            peer,
            router.clone(),
            limits,
            metrics.clone(),
            stop.clone(),
            permit,
        ));
    };
    drop(listener);
    stop.cancel();
    tracker.close();
    if tokio::time::timeout_at(deadline, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after the grace period; dropping them");
    }
    Ok(deadline)
}

/// What a connection has been doing, for its timeouts. Times are
/// milliseconds since the connection opened.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// When the last request finished (or the connection opened).
    idle_since: AtomicU64,
    /// The first byte of the next request head, if one has arrived.
    head_started: AtomicU64,
}

const NONE: u64 = u64::MAX;

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(NONE),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_started.load(Ordering::Acquire) == NONE
        {
            self.head_started.store(self.now_ms(), Ordering::Release);
        }
    }

    fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NONE, Ordering::Release);
        RequestGuard(self.clone())
    }

    /// When the connection is due to be closed, and why; `None` while a
    /// request is in flight.
    fn deadline(&self, limits: &Limits) -> Option<(Instant, &'static str)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let at = |ms: u64, timeout: Duration| self.opened + Duration::from_millis(ms) + timeout;
        match self.head_started.load(Ordering::Acquire) {
            NONE => Some((
                at(self.idle_since.load(Ordering::Acquire), limits.idle_timeout),
                "idle_timeout",
            )),
            started => Some((at(started, limits.header_read_timeout), "header_timeout")),
        }
    }
}

/// A request in flight; dropped with its response body (or when the
/// connection drops the request).
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since.store(a.now_ms(), Ordering::Release);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

struct OpenConnection(Arc<Metrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.http_connections.dec();
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: std::net::SocketAddr,
    router: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    metrics.http_connections.inc();
    let _open = OpenConnection(metrics.clone());
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        inner: tcp,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        let metrics = metrics.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let guard = activity.request_started();
            let router = router.clone();
            let body_metrics = metrics.clone();
            async move {
                let mut req = req.map(|body| {
                    Body::new(TimedBody {
                        inner: body,
                        deadline: Box::pin(tokio::time::sleep(limits.body_timeout)),
                        metrics: body_metrics,
                        timed_out: false,
                    })
                });
                // The client's address, for per-address limits (sign-in).
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                let response = match tower::ServiceExt::oneshot(router, req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(response.map(|body| Guarded {
                    inner: body,
                    _guard: guard,
                }))
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut finishing = false;
    loop {
        let deadline = activity.deadline(&limits);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                break;
            }
            _ = stop.cancelled(), if !finishing => {
                finishing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = sleep_until(deadline.map(|(at, _)| at)) => {
                // Activity may have moved the deadline since it was taken.
                if let Some((at, reason)) = activity.deadline(&limits) {
                    if at <= Instant::now() {
                        metrics.http_closed(reason);
                        tracing::debug!(reason, "HTTP connection closed by the server");
                        break;
                    }
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The socket, noting when bytes arrive (for the header timeout).
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A request body that must arrive in full before its deadline.
struct TimedBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    metrics: Arc<Metrics>,
    timed_out: bool,
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.timed_out {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.timed_out = true;
                    self.metrics.http_closed("body_timeout");
                    Poll::Ready(Some(Err("request body did not arrive in time".into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request counted as in flight until it
/// has been sent (or dropped).
struct Guarded {
    inner: Body,
    _guard: RequestGuard,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
