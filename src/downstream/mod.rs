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
//!   (`body_timeout`), set by the proxy;
//! - an upgraded connection (a tunnel, after `101`) has none of these: its
//!   tunnel's idle timeout bounds it.
//!
//! The connection's own loop marks where it waits for a request; the proxy
//! marks where a request's head has been read through [`request_started`],
//! which finds the connection through a task-local: Pingora serves every
//! request of an HTTP/1 connection on the connection's own task.
//!
//! On a TLS listener the handshake comes first, within `header_timeout`.
//! Then the connection's first bytes tell its protocol (`sniff.rs`): HTTP/2
//! when ALPN chose `h2`, or with `h2c` when they are the HTTP/2 preface;
//! HTTP/1.1 otherwise. An HTTP/2 connection is handed to Pingora's HTTP/2
//! server, which serves each stream on a task of its own, closes the
//! connection after `keepalive_timeout` without streams, and sends GOAWAY
//! on shutdown.

mod chunked;
mod framing;
mod guarded;
mod h2;
mod phase;
mod reply;
mod sniff;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use http::HeaderValue;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Ssl, Stream, ALPN};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

pub use chunked::{Chunked, Malformed, Step as ChunkedStep};
pub use framing::is_malformed_body;
pub use guarded::Guarded;
pub use h2::{h2_options, App, MAX_PENDING_RESETS, MAX_PROTOCOL_RESETS};
pub use phase::{request_started, tunnel_started, Body};
use phase::{Phase, CONNECTION};
use sniff::{Decision, Protocol};

use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::tls::Tls;

/// Longest wait between no longer accepting and dropping idle connections.
const MAX_LINGER: Duration = Duration::from_secs(2);

/// Bytes of a request read while its connection waits for it, in one read:
/// a whole head for most requests. The parser reads the rest, if any.
const FIRST_READ: usize = 512;

/// The parser's buffer for a request head, as Pingora sizes it.
const HEAD_BUFFER: usize = 4096;

/// How long a refused connection is read (and discarded) after its 503,
/// so that closing it does not reset the connection before the client has
/// read the answer.
const REFUSED_LINGER: Duration = Duration::from_secs(1);

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
    inner: Arc<App<A>>,
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    tls: Option<Arc<Tls>>,
    /// Whether plain connections may speak HTTP/2 with prior knowledge.
    h2c: bool,
    open: AtomicUsize,
    linger: Duration,
    /// Set once the listeners have stopped and the linger is over: idle
    /// connections then close.
    stopped: AtomicBool,
    stop: Notify,
}

impl<A> Connections<A> {
    /// Serves `inner` (the proxy) behind the cap and the deadlines, with
    /// TLS on `tls`' listeners, and HTTP/2 with prior knowledge on plain
    /// listeners if `h2c`.
    pub fn new(
        inner: A,
        pool: Arc<Pool>,
        metrics: Arc<Metrics>,
        tls: Option<Arc<Tls>>,
        h2c: bool,
    ) -> Self {
        let grace_period = pool.snapshot().config.server.grace_period;
        Connections {
            inner: Arc::new(App::new(inner, Arc::clone(&pool), h2c)),
            pool,
            metrics,
            tls,
            h2c,
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
    async fn first_bytes<S: AsyncRead + Unpin>(&self, stream: &mut S) -> Option<BytesMut> {
        let mut buf = BytesMut::with_capacity(HEAD_BUFFER);
        self.more_bytes(stream, &mut buf).await?;
        Some(buf)
    }

    /// Reads more of a request into `buf`; `None` if the client closes,
    /// times out, or the server stops first.
    async fn more_bytes<S: AsyncRead + Unpin>(
        &self,
        stream: &mut S,
        buf: &mut BytesMut,
    ) -> Option<()> {
        // A small buffer while waiting, the parser's only once bytes come:
        // an idle connection holds no read buffer at all.
        let mut first = [0u8; FIRST_READ];
        let n = tokio::select! {
            biased;
            read = stream.read(&mut first) => read.ok().filter(|&n| n > 0)?,
            () = self.stopping() => return None,
        };
        buf.extend_from_slice(&first[..n]);
        Some(())
    }

    /// Reads until the connection's protocol is known.
    async fn sniff(&self, stream: &mut Guarded) -> Option<Protocol> {
        let alpn_h2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        let h2c = self.h2c && stream.get_ssl_digest().is_none();
        let mut buf = self.first_bytes(stream).await?;
        loop {
            match sniff::tell(&buf, alpn_h2, h2c) {
                Decision::Http1 => return Some(Protocol::Http1(buf)),
                Decision::Http2 => return Some(Protocol::Http2(buf)),
                Decision::More => self.more_bytes(stream, &mut buf).await?,
                Decision::NotHttp2 => {
                    log::debug!("closed a connection that chose h2 and sent something else");
                    return None;
                }
            }
        }
    }

    /// The TLS side for a connection accepted on `stream`'s listener, if it
    /// is a TLS listener; `Err` when that cannot be told (the connection is
    /// closed rather than risk serving a TLS port in plain text).
    fn tls_for(&self, stream: &Stream) -> Result<Option<Arc<Tls>>, ()> {
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        let digest = stream.get_socket_digest();
        let local = digest
            .as_ref()
            .and_then(|d| d.local_addr()?.as_inet().copied());
        match local {
            Some(local) => Ok(tls.is_tls_listener(local).then(|| Arc::clone(tls))),
            None => {
                log::error!("closed a client connection whose local address is unknown");
                Err(())
            }
        }
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> Connections<A> {
    /// Serves a client connection's requests one after another, as
    /// Pingora's own loop does, but waiting for each request's first bytes
    /// before handing the connection to the proxy.
    async fn serve_http1(
        &self,
        stream: Stream,
        prefix: BytesMut,
        phase: &Phase,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut session = ServerSession::new_http1(stream);
        // Pingora's defaults for a new connection.
        let keepalive = (!*shutdown.borrow()).then_some(60);
        session.set_keepalive(keepalive);
        let limit = self.inner.server_options();
        session.set_keepalive_reuses_remaining(limit.and_then(|o| o.keepalive_request_limit));
        session.set_pipelined_prefix(prefix);
        loop {
            let reused = self.inner.process_new_http(session, shutdown).await?;
            let (mut stream, settings) = reused.consume();
            // The last request is over: idle until the next one begins.
            phase.set(Phase::IDLE);
            let prefix = self.first_bytes(&mut stream).await?;
            session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            session.set_pipelined_prefix(prefix);
        }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Connections<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let tls = self.tls_for(&stream).ok()?;
        // Read and let go: a connection must not hold the snapshot it
        // began under, nor the state of backends a reload removed.
        let (max, header_timeout) = {
            let snapshot = self.pool.snapshot();
            let server = &snapshot.config.server;
            (server.max_connections, server.client_timeouts.header)
        };
        let _open = match Open::take(self, max) {
            Some(open) => open,
            // Before a handshake there is no way to answer: just close.
            None if tls.is_some() => {
                self.metrics.client_connections_refused.inc();
                return None;
            }
            None => {
                let server = self.pool.snapshot().config.server.server_header.clone();
                refuse(stream, &self.metrics, server.as_ref()).await;
                return None;
            }
        };
        let stream = match &tls {
            Some(tls) => tls.accept(stream, header_timeout).await?,
            None => stream,
        };
        let phase = Arc::new(Phase::new(Phase::HEAD));
        let mut guarded = Guarded::new(
            stream,
            Arc::clone(&phase),
            Arc::clone(&self.pool),
            Arc::clone(&self.metrics),
        );
        let serve = async {
            match self.sniff(&mut guarded).await? {
                Protocol::Http1(prefix) => {
                    self.serve_http1(Box::new(guarded), prefix, &phase, shutdown)
                        .await
                }
                Protocol::Http2(preface) => {
                    // Streams have deadlines of their own from here on.
                    phase.set(Phase::BUSY);
                    guarded.unread(preface);
                    ServerApp::process_new(&self.inner, Box::new(guarded), shutdown).await
                }
            }
        };
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
async fn refuse(mut stream: Stream, metrics: &Metrics, server: Option<&HeaderValue>) {
    metrics.client_connections_refused.inc();
    log::debug!("refused a client connection: max_connections reached");
    let refused = reply::refused(server);
    if stream.write_all(&refused).await.is_err() || stream.flush().await.is_err() {
        return;
    }
    // Read what the client sent until it closes, for a moment at most.
    let mut discard = [0u8; 4096];
    let _ = tokio::time::timeout(REFUSED_LINGER, async {
        while let Ok(1..) = stream.read(&mut discard).await {}
    })
    .await;
}
