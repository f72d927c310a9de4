//! Connection limits of `chime serve`: how many connections it holds at
//! once, how long a client may take to send its request head and its body,
//! and how long a connection may sit silent. One accept loop serves plain
//! and TLS listeners alike, so both get the same limits.
//!
//! The cap on open connections is also what keeps the process from running
//! out of file descriptors: at start the soft `RLIMIT_NOFILE` is raised to
//! the hard limit, and outside connections may use only what is left after
//! a reserve for the dispatcher's webhook calls and the log's files
//! ([`ConnLimits::budget`]). Past the cap the loop stops accepting; further
//! clients wait in the kernel's backlog and hold none of chime's
//! descriptors.
//!
//! This module owns the sockets after `accept`; it knows nothing of the API
//! it serves (the router comes in as a tower service).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// Connections held open at once by default (`--max-connections`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// How long a client may take to send a request's head by default
/// (`--request-header-timeout`). For HTTP/1.1 the clock also runs while a
/// kept-alive connection waits for its next request.
pub const DEFAULT_REQUEST_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection may go without a byte either way by default
/// (`--idle-timeout`).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a client may take to send a whole request body, counted from
/// its head: a body trickled a byte at a time must not hold a connection
/// (and the memory read so far) forever.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Descriptors kept back from outside connections beyond the dispatcher's
/// own (see [`ConnLimits::budget`]): the log's segments and snapshots, the
/// lock, DNS, stdio.
pub const FD_RESERVE: u64 = 64;

/// The fewest connections served however tight the descriptor limit is, so
/// that a small `RLIMIT_NOFILE` degrades service instead of stopping it.
const MIN_CONNECTIONS: usize = 4;

/// How long the accept loop pauses after a failed `accept` (out of
/// descriptors or memory despite the budget) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The limits every connection is served under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections held open at once (`--max-connections`); see
    /// [`ConnLimits::budget`] for the number actually used.
    pub max_connections: usize,
    /// Time to send a request head (`--request-header-timeout`).
    pub request_header_timeout: Duration,
    /// Time a connection may go silent (`--idle-timeout`).
    pub idle_timeout: Duration,
    /// Time to send a request body, from its head.
    pub body_read_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            request_header_timeout: DEFAULT_REQUEST_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
        }
    }
}

impl ConnLimits {
    /// How many outside connections may be open at once:
    /// `min(max_connections, nofile - open_now - reserve)`, where the
    /// reserve is two descriptors per webhook call in flight (the call and
    /// an idle pooled connection) plus [`FD_RESERVE`]. With descriptors to
    /// spare only for fewer than [`MIN_CONNECTIONS`], that many, but never
    /// more than `max_connections`: the floor is for a tight descriptor
    /// limit, not a reason to serve past the number the operator asked for.
    pub fn budget(&self, nofile: u64, open_now: u64, max_in_flight: usize) -> usize {
        let reserve = FD_RESERVE + 2 * max_in_flight as u64;
        let spare = nofile.saturating_sub(open_now).saturating_sub(reserve);
        let spare = usize::try_from(spare).unwrap_or(usize::MAX);
        self.max_connections.min(spare.max(MIN_CONNECTIONS))
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the
/// resulting soft limit (`u64::MAX` for unlimited). A failure leaves the
/// limit as it was, with a warning.
pub fn raise_nofile_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => return limit.maximum.unwrap_or(u64::MAX),
            Err(e) => {
                tracing::warn!(error = %e, soft = ?limit.current, hard = ?limit.maximum, "cannot raise the open-file limit")
            }
        }
    }
    limit.current.unwrap_or(u64::MAX)
}

/// Descriptors this process has open now, from `/proc/self/fd` (0 where
/// there is no such directory).
pub fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| dir.count() as u64)
        .unwrap_or(0)
}

/// A connection that holds one of the budget's places until it is dropped.
pub struct Admitted<Io> {
    pub io: Io,
    pub peer: SocketAddr,
    /// The place in the budget, given back when the connection closes.
    pub permit: OwnedSemaphorePermit,
}

/// Where the serve loop takes its connections from: a plain TCP listener
/// ([`PlainAccept`]) or a TLS one ([`crate::tls::TlsListener`]). Each
/// takes a place in the [`Gate`] before it accepts.
pub trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next admitted connection.
    fn accept(&mut self) -> impl Future<Output = Admitted<Self::Io>> + Send;
}

/// The connection budget shared by an accept loop and its connections.
#[derive(Clone)]
pub struct Gate(Arc<Semaphore>);

impl Gate {
    pub fn new(places: usize) -> Gate {
        Gate(Arc::new(Semaphore::new(places)))
    }

    /// Waits for a free place: while every place is taken nothing is
    /// accepted.
    pub async fn enter(&self) -> OwnedSemaphorePermit {
        self.0
            .clone()
            .acquire_owned()
            .await
            .expect("the gate's semaphore is never closed")
    }

    /// Accepts one TCP connection once a place is free, pausing after a
    /// failed `accept` rather than spinning.
    pub async fn accept_tcp(
        &self,
        tcp: &TcpListener,
    ) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
        let permit = self.enter().await;
        loop {
            match tcp.accept().await {
                Ok((stream, peer)) => return (stream, peer, permit),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }
}

/// Plain TCP connections under a [`Gate`].
pub struct PlainAccept {
    pub tcp: TcpListener,
    pub gate: Gate,
}

impl Accept for PlainAccept {
    type Io = TcpStream;

    async fn accept(&mut self) -> Admitted<TcpStream> {
        let (io, peer, permit) = self.gate.accept_tcp(&self.tcp).await;
        if let Err(e) = io.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        Admitted { io, peer, permit }
    }
}

/// Serves `app` on the connections `listener` admits, under `limits`, until
/// `shutdown` completes; then asks every connection to finish its request
/// and close, and returns once all have. Connections speak HTTP/1.1, and
/// also HTTP/2 prior knowledge (h2c) when `http2` (`--http2`) is set.
pub async fn serve<A: Accept>(
    mut listener: A,
    app: Router,
    limits: ConnLimits,
    http2: bool,
    shutdown: impl Future<Output = ()> + Send,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let admitted = tokio::select! {
            admitted = listener.accept() => admitted,
            () = &mut shutdown => break,
        };
        // Reap finished connection tasks so the set does not grow.
        while connections.try_join_next().is_some() {}
        connections.spawn(serve_connection(
            admitted,
            app.clone(),
            limits,
            http2,
            stop_rx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
}

/// One connection: HTTP/1.1 with the header timeout (or, with `http2`,
/// whichever protocol the client opens with), its IO behind the idle
/// timeout, every request body behind the body timeout.
///
/// HTTP/1.1 alone is served by hyper's own builder, not hyper-util's
/// `auto` one limited to HTTP/1: `auto` with upgrades still answers the
/// HTTP/2 preface, and without the `http2` flag h2c must be refused.
async fn serve_connection<Io: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    admitted: Admitted<Io>,
    app: Router,
    limits: ConnLimits,
    http2: bool,
    stop: watch::Receiver<bool>,
) {
    let Admitted { io, peer, permit } = admitted;
    let io = TokioIo::new(IdleIo::new(io, limits.idle_timeout));
    let body_timeout = limits.body_read_timeout;
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let request = request.map(|body| Body::new(TimedBody::new(body, body_timeout)));
        let app = app.clone();
        async move { Ok::<_, Infallible>(app.oneshot(request).await.unwrap_or_else(|e| match e {})) }
    });
    let outcome = if http2 {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.request_header_timeout);
        let conn = builder.serve_connection_with_upgrades(io, service);
        until_stopped(conn, stop, |conn| conn.graceful_shutdown()).await
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.request_header_timeout);
        let conn = builder.serve_connection(io, service).with_upgrades();
        until_stopped(conn, stop, |conn| conn.graceful_shutdown())
            .await
            .map_err(Into::into)
    };
    if let Err(e) = outcome {
        tracing::debug!(%peer, error = %e, "connection closed with an error");
    }
    drop(permit);
}

/// Drives `conn` to its end; once `stop` turns true, asks it (through
/// `graceful`) to finish the request it is serving and close.
async fn until_stopped<C: Future>(
    conn: C,
    mut stop: watch::Receiver<bool>,
    graceful: impl FnOnce(Pin<&mut C>),
) -> C::Output {
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        outcome = conn.as_mut() => outcome,
        () = async { let _ = stop.wait_for(|stop| *stop).await; } => {
            graceful(conn.as_mut());
            conn.await
        }
    }
}

/// A connection's IO that fails with `TimedOut` once nothing has moved
/// either way for the idle timeout, which closes the connection.
struct IdleIo<Io> {
    inner: Io,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<Io> IdleIo<Io> {
    fn new(inner: Io, timeout: Duration) -> Self {
        IdleIo {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    fn moved(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.timeout);
    }

    /// What a write of the inner IO means for the deadline: bytes written
    /// move it; a write that must wait fails once the deadline has passed.
    fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.moved();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.check(cx).map(|r| r.map(|()| 0)),
        }
    }

    /// `Ready(Err)` once the connection has been silent too long.
    fn check(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle for longer than --idle-timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for IdleIo<Io> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.check(cx),
        }
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for IdleIo<Io> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(cx, polled)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.check(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The body read past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within {0:?}")]
pub struct BodyTimeout(Duration);

/// A request body that fails once its deadline (the head's arrival plus the
/// body timeout) has passed.
struct TimedBody {
    inner: Incoming,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl TimedBody {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        TimedBody {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        ready!(this.deadline.as_mut().poll(cx));
        Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_keeps_a_reserve_of_descriptors() {
        let limits = ConnLimits::default();
        // Plenty of descriptors: the flag decides.
        assert_eq!(limits.budget(1 << 20, 20, 256), DEFAULT_MAX_CONNECTIONS);
        // 1024 descriptors, 20 open, 8 calls in flight: 1024 - 20 - 80.
        assert_eq!(limits.budget(1024, 20, 8), 924);
        // Hardly any: still a few.
        assert_eq!(limits.budget(100, 20, 256), MIN_CONNECTIONS);
        // The floor never lifts an explicit limit below it.
        let one = ConnLimits {
            max_connections: 1,
            ..ConnLimits::default()
        };
        assert_eq!(one.budget(1 << 20, 20, 256), 1);
        assert_eq!(one.budget(100, 20, 256), 1);
    }
}
