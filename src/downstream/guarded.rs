//! The client stream with the connection's deadlines (see the module
//! above for which applies when), the framing checks of `framing.rs` on
//! what it reads, and Pingora's own early answers rewritten (`reply.rs`)
//! on what it writes.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use pingora::protocols::{Shutdown, Stream};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::framing::Reader;
use super::{reply, Phase};
use crate::config::ClientTimeouts;
use crate::metrics::{ClientTimeout, Metrics};
use crate::pool::Pool;

/// A client stream that closes itself when the client is too slow: to send
/// a request head, to send anything at all on an idle kept-alive
/// connection, or to read what is written to it (except in a tunnel).
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
    /// Bytes already read from the client, to be read again first: the
    /// HTTP/2 preface, read to tell the protocol, and what a read held
    /// back for the next (past a request head or a chunked body's end).
    unread: BytesMut,
    /// How much of what arrives may be read now, for the phase value
    /// `reader_for`.
    reader: Reader,
    reader_for: u32,
    /// A rewritten answer of Pingora's, still to be written.
    out: BytesMut,
}

mod delegate;

impl Guarded {
    pub(super) fn new(
        inner: Stream,
        phase: Arc<Phase>,
        pool: Arc<Pool>,
        metrics: Arc<Metrics>,
    ) -> Self {
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
            unread: BytesMut::new(),
            reader: Reader::Through,
            reader_for: u32::MAX,
            out: BytesMut::new(),
        }
    }

    /// Puts `bytes` back, to be read before anything else.
    pub(super) fn unread(&mut self, mut bytes: BytesMut) {
        bytes.extend_from_slice(&self.unread);
        self.unread = bytes;
    }

    /// Makes the reader the one for the phase the connection is in now.
    fn sync_reader(&mut self) {
        let state = self.phase.load();
        if state != self.reader_for {
            self.reader_for = state;
            self.reader = Reader::for_phase(state, self.phase.body());
        }
    }

    /// Whatever is written now is Pingora's own answer to a request head
    /// the proxy has not seen.
    fn before_proxy(&self) -> bool {
        self.phase.load() & Phase::MASK == Phase::HEAD
    }

    /// Writes out a rewritten answer before anything else.
    fn poll_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let result = Pin::new(&mut self.inner).poll_write(cx, &self.out);
            match self.guard_write(cx, result) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.out.advance(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
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
        if self.phase.load() & Phase::MASK == Phase::TUNNEL {
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
        this.sync_reader();
        if this.reader.holds() {
            return this.poll_held(cx, buf);
        }
        if !this.unread.is_empty() {
            // Held-back bytes arriving, as if from the socket.
            this.received();
            this.sync_reader();
            let n = this.unread.len().min(buf.remaining());
            let n = this.reader.admit(&this.unread[..n])?;
            buf.put_slice(&this.unread.split_to(n));
            return Poll::Ready(Ok(()));
        }
        if this.expired {
            return Poll::Ready(Ok(()));
        }
        this.arm();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.received();
                    this.sync_reader();
                    let n = this.reader.admit(&buf.filled()[before..])?;
                    this.unread = BytesMut::from(&buf.filled()[before + n..]);
                    buf.set_filled(before + n);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => this.poll_read_deadline(cx),
            error => error,
        }
    }
}

impl Guarded {
    /// A read after the request's body: the client's close (or error)
    /// shows; its bytes wait for the next request, and the read with them.
    fn poll_held(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.unread.is_empty() || self.expired {
            return Poll::Pending;
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if buf.filled().len() == before {
            return Poll::Ready(Ok(()));
        }
        self.unread = BytesMut::from(&buf.filled()[before..]);
        buf.set_filled(before);
        Poll::Pending
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_out(cx))?;
        if this.before_proxy() {
            let server = this.pool.snapshot().config.server.server_header.clone();
            if let Some(rewritten) = reply::with_server(buf, server.as_ref()) {
                this.out = BytesMut::from(&rewritten[..]);
                // Taken whole; what is left goes out on the next write or flush.
                if let Poll::Ready(Err(e)) = this.poll_out(cx) {
                    return Poll::Ready(Err(e));
                }
                return Poll::Ready(Ok(buf.len()));
            }
        }
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.guard_write(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_out(cx))?;
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.guard_write(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_out(cx))?;
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.guard_write(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_out(cx))?;
        let result = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.guard_write(cx, result)
    }
}

#[async_trait]
impl Shutdown for Guarded {
    async fn shutdown(&mut self) {
        if !self.out.is_empty() {
            let _ = self.flush().await;
        }
        Shutdown::shutdown(&mut *self.inner).await
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
