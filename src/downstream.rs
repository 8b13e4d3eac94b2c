//! Client connections: how many may be open at once, and how long a client
//! may take before its connection is closed.
//!
//! Every accepted connection's stream is wrapped in a [`Guarded`] stream,
//! which knows what the connection is waiting for and enforces its
//! deadline:
//!
//! - a new connection, or a kept-alive one whose next request has begun,
//!   must deliver the whole request head within `header_timeout`;
//! - a kept-alive connection with no request on it is closed after
//!   `keepalive_timeout`;
//! - a write to a client that has stopped reading fails after
//!   `send_timeout` without progress;
//! - while a request body is read, Pingora's own per-read timeout applies
//!   (`body_timeout`), set by the proxy.
//!
//! The connection's own loop marks where it waits for a request; the proxy
//! marks where a request's head has been read through [`request_started`],
//! which finds the connection through a task-local: Pingora serves every
//! request of an HTTP/1 connection on the connection's own task.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use crate::config::ClientTimeouts;
use crate::metrics::{ClientTimeout, Metrics};
use crate::pool::Pool;

/// Longest wait between no longer accepting and dropping idle connections.
const MAX_LINGER: Duration = Duration::from_secs(2);

/// Bytes of a request read while its connection waits for it, in one read:
/// a whole head for most requests. The parser reads the rest, if any.
const FIRST_READ: usize = 512;

/// The parser's buffer for a request head, as Pingora sizes it.
const HEAD_BUFFER: usize = 4096;

/// What a connection over `max_connections` is told before it is closed.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
    Content-Type: text/plain; charset=utf-8\r\n\
    Content-Length: 26\r\n\
    Retry-After: 1\r\n\
    Connection: close\r\n\r\n\
    too many open connections\n";

/// How long a refused connection is read (and discarded) after its 503,
/// so that closing it does not reset the connection before the client has
/// read the answer.
const REFUSED_LINGER: Duration = Duration::from_secs(1);

tokio::task_local! {
    /// The state of the connection whose task this is.
    static CONNECTION: Arc<Phase>;
}

/// Marks the end of the current connection's request head: from here until
/// the request ends, the connection has no deadline of its own.
pub fn request_started() {
    let _ = CONNECTION.try_with(|phase| phase.set(Phase::BUSY));
}

/// What a connection is waiting for, with a generation count in the upper
/// bits so that every change is seen even if it returns to the same phase.
/// Only the connection's own task touches it.
#[derive(Debug)]
struct Phase(AtomicU32);

impl Phase {
    /// Waiting for (the rest of) a request head.
    const HEAD: u32 = 0;
    /// Serving a request.
    const BUSY: u32 = 1;
    /// Kept alive, waiting for a request's first byte.
    const IDLE: u32 = 2;
    const MASK: u32 = 3;

    fn load(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, phase: u32) {
        let generation = (self.load() & !Self::MASK).wrapping_add(Self::MASK + 1);
        self.0.store(generation | phase, Ordering::Relaxed);
    }
}

/// The proxy application behind the connection cap and the client
/// deadlines. It also drops idle connections a little after the listeners
/// stop rather than at the same moment: Pingora stops accepting and drops
/// every connection still waiting for a request in one step, so one
/// accepted just before (its request on the wire, not yet read) would be
/// cut. Waiting part of the grace period lets those requests be read and
/// answered (with `Connection: close`) first.
///
/// It also runs each connection's keep-alive loop itself, so that between
/// requests a connection holds only its stream: the proxy's per-request
/// state (tens of KiB, boxed by Pingora for every request) is created when
/// the next request's first bytes arrive, not while the client is idle.
pub struct Connections<A> {
    inner: Arc<A>,
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    open: AtomicUsize,
    linger: Duration,
    /// Set once the listeners have stopped and the linger is over: idle
    /// connections then close.
    stopped: AtomicBool,
    stop: Notify,
}

impl<A> Connections<A> {
    pub fn new(inner: A, pool: Arc<Pool>, metrics: Arc<Metrics>, grace_period: Duration) -> Self {
        Connections {
            inner: Arc::new(inner),
            pool,
            metrics,
            open: AtomicUsize::new(0),
            linger: (grace_period / 2).min(MAX_LINGER),
            stopped: AtomicBool::new(false),
            stop: Notify::new(),
        }
    }

    /// Resolves once idle connections are to close.
    async fn stopping(&self) {
        let notified = self.stop.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.stopped.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }

    /// Waits for the first bytes of the connection's next request; `None`
    /// if the client closes, times out, or the server stops first.
    async fn first_bytes(&self, stream: &mut Stream) -> Option<BytesMut> {
        // A small buffer while waiting, the parser's only once bytes come:
        // an idle connection holds no read buffer at all.
        let mut first = [0u8; FIRST_READ];
        let n = tokio::select! {
            biased;
            read = stream.read(&mut first) => read.ok().filter(|&n| n > 0)?,
            () = self.stopping() => return None,
        };
        let mut buf = BytesMut::with_capacity(HEAD_BUFFER);
        buf.extend_from_slice(&first[..n]);
        Some(buf)
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> Connections<A> {
    /// Serves a client connection's requests one after another, as
    /// Pingora's own loop does, but waiting for each request's first bytes
    /// before handing the connection to the proxy.
    async fn serve(
        &self,
        stream: Stream,
        phase: &Phase,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut next: Option<(Stream, Option<HttpPersistentSettings>)> = Some((stream, None));
        let mut first = true;
        while let Some((mut stream, settings)) = next.take() {
            if !first {
                // The last request is over: idle until the next one begins.
                phase.set(Phase::IDLE);
            }
            let prefix = self.first_bytes(&mut stream).await?;
            let mut session = ServerSession::new_http1(stream);
            if first {
                // Pingora's defaults for a new connection.
                let keepalive = (!*shutdown.borrow()).then_some(60);
                session.set_keepalive(keepalive);
                let limit = self.inner.server_options();
                session
                    .set_keepalive_reuses_remaining(limit.and_then(|o| o.keepalive_request_limit));
                first = false;
            } else if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            session.set_pipelined_prefix(prefix);
            next = self
                .inner
                .process_new_http(session, shutdown)
                .await
                .map(|reused| reused.consume());
        }
        None
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Connections<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let max = self.pool.snapshot().config.server.max_connections;
        let _open = match Open::take(self, max) {
            Some(open) => open,
            None => {
                refuse(stream, &self.metrics).await;
                return None;
            }
        };
        let phase = Arc::new(Phase(AtomicU32::new(Phase::HEAD)));
        let guarded = Guarded::new(
            stream,
            Arc::clone(&phase),
            Arc::clone(&self.pool),
            Arc::clone(&self.metrics),
        );
        let serve = self.serve(Box::new(guarded), &phase, shutdown);
        CONNECTION.scope(Arc::clone(&phase), serve).await
    }

    async fn cleanup(&self) {
        tokio::time::sleep(self.linger).await;
        self.stopped.store(true, Ordering::Release);
        self.stop.notify_waiters();
        self.inner.http_cleanup().await;
    }
}

/// One open client connection, counted while it lives.
struct Open<'a, A> {
    app: &'a Connections<A>,
}

impl<'a, A> Open<'a, A> {
    /// Counts a new connection, unless `max` are already open.
    fn take(app: &'a Connections<A>, max: usize) -> Option<Self> {
        if app.open.fetch_add(1, Ordering::Relaxed) >= max {
            app.open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        app.metrics.client_connections.inc();
        Some(Open { app })
    }
}

impl<A> Drop for Open<'_, A> {
    fn drop(&mut self) {
        self.app.open.fetch_sub(1, Ordering::Relaxed);
        self.app.metrics.client_connections.dec();
    }
}

/// Answers a connection over the cap with a 503 and closes it.
async fn refuse(mut stream: Stream, metrics: &Metrics) {
    metrics.client_connections_refused.inc();
    log::debug!("refused a client connection: max_connections reached");
    if stream.write_all(REFUSED).await.is_err() || stream.flush().await.is_err() {
        return;
    }
    // Read what the client sent until it closes, for a moment at most.
    let mut discard = [0u8; 4096];
    let _ = tokio::time::timeout(REFUSED_LINGER, async {
        while let Ok(1..) = stream.read(&mut discard).await {}
    })
    .await;
}

/// A client stream that closes itself when the client is too slow: to send
/// a request head, to send anything at all on an idle kept-alive
/// connection, or to read what is written to it.
///
/// Timers are set only when a read or a write has to wait, so a request
/// that flows without waiting costs no timer work.
pub struct Guarded {
    inner: Stream,
    phase: Arc<Phase>,
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    /// The phase value `read_deadline` was computed for.
    armed: u32,
    /// When the current wait for the client's bytes ends, if the phase has
    /// such a deadline.
    read_deadline: Option<Instant>,
    read_timer: Option<Pin<Box<Sleep>>>,
    /// When the current stalled write gives up: set at the first write
    /// that has to wait, cleared by any progress.
    write_deadline: Option<Instant>,
    write_timer: Option<Pin<Box<Sleep>>>,
    /// Whether any byte of the current request head has arrived.
    head_begun: bool,
    /// The read deadline passed: every read from now on ends the stream.
    expired: bool,
}

impl Guarded {
    fn new(inner: Stream, phase: Arc<Phase>, pool: Arc<Pool>, metrics: Arc<Metrics>) -> Self {
        Guarded {
            inner,
            phase,
            pool,
            metrics,
            // Not the initial phase value, so the first read sets the deadline.
            armed: u32::MAX,
            read_deadline: None,
            read_timer: None,
            write_deadline: None,
            write_timer: None,
            head_begun: false,
            expired: false,
        }
    }

    fn timeouts(&self) -> ClientTimeouts {
        self.pool.snapshot().config.server.client_timeouts
    }

    /// Sets the read deadline for the phase the connection is in now, if
    /// it changed since the last read.
    fn arm(&mut self) {
        let state = self.phase.load();
        if state == self.armed {
            return;
        }
        self.armed = state;
        let length = match state & Phase::MASK {
            Phase::HEAD => Some(self.timeouts().header),
            Phase::IDLE => {
                self.head_begun = false;
                // With keep-alive off the connection closes after each
                // response; this bounds one that has not yet.
                let timeouts = self.timeouts();
                Some(timeouts.keepalive.unwrap_or(timeouts.header))
            }
            // Serving a request: no deadline, and no need to look one up.
            _ => None,
        };
        self.read_deadline = length.map(|length| Instant::now() + length);
    }

    /// Bytes arrived: an idle connection's next request has begun.
    fn received(&mut self) {
        match self.phase.load() & Phase::MASK {
            Phase::IDLE => {
                self.phase.set(Phase::HEAD);
                self.head_begun = true;
                self.arm();
            }
            Phase::HEAD => self.head_begun = true,
            _ => {}
        }
    }

    /// The read is pending: fails it if the deadline has passed.
    fn poll_read_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(deadline) = self.read_deadline else {
            return Poll::Pending;
        };
        if poll_timer(&mut self.read_timer, deadline, cx).is_pending() {
            return Poll::Pending;
        }
        self.expired = true;
        self.read_deadline = None;
        if self.phase.load() & Phase::MASK == Phase::IDLE {
            self.metrics
                .observe_client_timeout(ClientTimeout::Keepalive);
            log::debug!("closed an idle client connection after keepalive_timeout");
            return Poll::Ready(Ok(()));
        }
        self.metrics.observe_client_timeout(ClientTimeout::Header);
        if !self.head_begun {
            // Nothing of a request: close quietly, as for an idle one.
            return Poll::Ready(Ok(()));
        }
        let header = self.timeouts().header;
        Poll::Ready(Err(timed_out(format!(
            "request head not complete within header_timeout ({})",
            humantime::format_duration(header)
        ))))
    }

    /// Passes on a write's result; a write that has to wait starts the
    /// send timeout, and one that waited that long fails.
    fn guard_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if result.is_ready() {
            self.write_deadline = None;
            return result;
        }
        let send = match self.write_deadline {
            Some(deadline) => deadline,
            None => {
                let deadline = Instant::now() + self.timeouts().send;
                self.write_deadline = Some(deadline);
                deadline
            }
        };
        if poll_timer(&mut self.write_timer, send, cx).is_pending() {
            return Poll::Pending;
        }
        self.write_deadline = None;
        self.metrics.observe_client_timeout(ClientTimeout::Send);
        let send = self.timeouts().send;
        Poll::Ready(Err(timed_out(format!(
            "client read nothing for send_timeout ({})",
            humantime::format_duration(send)
        ))))
    }
}

/// Polls `timer`, created or moved to `deadline` as needed.
fn poll_timer(
    timer: &mut Option<Pin<Box<Sleep>>>,
    deadline: Instant,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    if timer.deadline() != deadline {
        timer.as_mut().reset(deadline);
    }
    timer.as_mut().poll(cx)
}

fn timed_out(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, why)
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.expired {
            return Poll::Ready(Ok(()));
        }
        this.arm();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.received();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => this.poll_read_deadline(cx),
            error => error,
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.guard_write(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.guard_write(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.guard_write(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.guard_write(cx, result)
    }
}

#[async_trait]
impl Shutdown for Guarded {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.inner).await
    }
}

impl UniqueID for Guarded {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Guarded {}

impl GetTimingDigest for Guarded {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Guarded {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Guarded {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for Guarded {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

impl fmt::Debug for Guarded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded")
            .field("inner", &self.inner)
            .field("phase", &self.phase)
            .field("expired", &self.expired)
            .finish_non_exhaustive()
    }
}
