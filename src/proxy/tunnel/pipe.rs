//! Carrying a tunnel's bytes both ways until it ends: either side closes
//! (each direction half-closes on its own, as TCP does), the tunnel is
//! idle for its `tunnel_idle_timeout`, or the drain reaches its close time.
//!
//! Each side counts the bytes read from it, for the access log.
//!
//! Idleness is measured, not polled: each read and write that moves bytes
//! stamps the time, and one timer set at the last stamp plus the timeout
//! is moved on when it fires early. A quiet tunnel costs one timer and no
//! wake-ups until then.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Why a tunnel ended.
#[derive(Debug)]
pub(super) enum End {
    /// Both sides closed.
    Closed,
    /// A side failed (a reset, mostly).
    Failed(io::Error),
    /// No byte moved either way for the idle timeout.
    Idle,
    /// The drain reached this tunnel's close time.
    Drained,
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Closed => f.write_str("closed"),
            End::Failed(e) => write!(f, "failed: {e}"),
            End::Idle => f.write_str("idle for tunnel_idle_timeout"),
            End::Drained => f.write_str("closed by the drain"),
        }
    }
}

/// How a tunnel ended, and the bytes it carried each way (early ones
/// included).
#[derive(Debug)]
pub(super) struct Carried {
    pub end: End,
    pub from_client: u64,
    pub from_backend: u64,
}

/// Copies between `client` and `backend`, each side's `early` bytes (read
/// before the tunnel began) first, until one of the ends in [`End`];
/// `closing` resolves at the drain's close time.
pub(super) async fn carry<C, B>(
    client: (C, Bytes),
    backend: (B, Bytes),
    idle: Duration,
    closing: impl Future<Output = ()>,
) -> Carried
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let mut client = Side::new(client, &activity);
    let mut backend = Side::new(backend, &activity);
    let end = {
        let copy = tokio::io::copy_bidirectional(&mut client, &mut backend);
        tokio::pin!(copy, closing);
        let timer = tokio::time::sleep(idle);
        tokio::pin!(timer);
        loop {
            tokio::select! {
                biased;
                copied = &mut copy => break copied.map_or_else(End::Failed, |_| End::Closed),
                () = &mut closing => break End::Drained,
                () = &mut timer => {
                    // Each turn moves the timer strictly later, past bytes
                    // that moved since it was set.
                    let due = activity.last() + idle;
                    if due <= Instant::now() {
                        break End::Idle;
                    }
                    timer.as_mut().reset(due);
                }
            }
        }
    };
    Carried {
        end,
        from_client: client.read,
        from_backend: backend.read,
    }
}

/// When bytes last moved either way, in nanoseconds since the tunnel began.
struct Activity {
    began: Instant,
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            began: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let since = u64::try_from(self.began.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(since, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.began + Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }
}

/// One side of the tunnel: its stream, the bytes it sent before the
/// tunnel began (read first), the shared activity stamp, and the bytes
/// read from it so far.
struct Side<'a, S> {
    stream: S,
    early: Bytes,
    activity: &'a Activity,
    read: u64,
}

impl<'a, S> Side<'a, S> {
    fn new((stream, early): (S, Bytes), activity: &'a Activity) -> Self {
        Side {
            stream,
            early,
            activity,
            read: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Side<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.early.is_empty() {
            let n = this.early.len().min(buf.remaining());
            buf.put_slice(&this.early[..n]);
            this.early.advance(n);
            this.activity.touch();
            this.read += n as u64;
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            this.activity.touch();
            this.read += n as u64;
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Side<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

    const IDLE: Duration = Duration::from_secs(60);

    /// A tunnel between two in-memory pipes; returns the far ends (the
    /// client's and the backend's) and the running tunnel.
    fn tunnel(
        client_early: &'static [u8],
        backend_early: &'static [u8],
        closing: impl Future<Output = ()> + Send + 'static,
    ) -> (DuplexStream, DuplexStream, tokio::task::JoinHandle<Carried>) {
        let (client, client_far) = duplex(1024);
        let (backend, backend_far) = duplex(1024);
        let task = tokio::spawn(carry(
            (client, Bytes::from_static(client_early)),
            (backend, Bytes::from_static(backend_early)),
            IDLE,
            closing,
        ));
        (client_far, backend_far, task)
    }

    async fn read_exactly(stream: &mut DuplexStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        stream.read_exact(&mut buf).await.unwrap();
        buf
    }

    #[tokio::test(start_paused = true)]
    async fn early_bytes_go_first_then_both_ways_until_both_close() {
        let (mut client, mut backend, task) = tunnel(b"hello", b"welcome", std::future::pending());
        assert_eq!(read_exactly(&mut backend, 5).await, b"hello");
        assert_eq!(read_exactly(&mut client, 7).await, b"welcome");
        client.write_all(b"ping").await.unwrap();
        assert_eq!(read_exactly(&mut backend, 4).await, b"ping");
        backend.write_all(b"pong").await.unwrap();
        assert_eq!(read_exactly(&mut client, 4).await, b"pong");
        // One side's close reaches the other; the way back stays open.
        client.shutdown().await.unwrap();
        assert_eq!(backend.read(&mut [0; 8]).await.unwrap(), 0);
        backend.write_all(b"bye").await.unwrap();
        assert_eq!(read_exactly(&mut client, 3).await, b"bye");
        backend.shutdown().await.unwrap();
        let carried = task.await.unwrap();
        assert!(matches!(carried.end, End::Closed));
        // "hello" + "ping"; "welcome" + "pong" + "bye".
        assert_eq!((carried.from_client, carried.from_backend), (9, 14));
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_tunnel_ends_after_the_idle_timeout_and_not_before() {
        let (mut client, mut backend, task) = tunnel(b"", b"", std::future::pending());
        let began = Instant::now();
        // Traffic every half timeout keeps it open well past one timeout.
        for _ in 0..4 {
            tokio::time::sleep(IDLE / 2).await;
            client.write_all(b"x").await.unwrap();
            assert_eq!(read_exactly(&mut backend, 1).await, b"x");
        }
        let last = Instant::now();
        assert!(last - began >= 2 * IDLE);
        assert!(matches!(task.await.unwrap().end, End::Idle));
        let ended = Instant::now();
        assert!(
            ended - last >= IDLE,
            "closed {:?} after the last byte",
            ended - last
        );
        assert!(ended - last < IDLE + Duration::from_secs(1));
        assert_eq!(client.read(&mut [0; 8]).await.unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_ends_a_busy_tunnel() {
        let (closes, closing) = tokio::sync::oneshot::channel::<()>();
        let (mut client, _backend, task) = tunnel(b"", b"", async {
            let _ = closing.await;
        });
        client.write_all(b"busy").await.unwrap();
        closes.send(()).unwrap();
        let carried = task.await.unwrap();
        assert!(matches!(carried.end, End::Drained));
        assert_eq!(carried.from_client, 4);
    }
}
