//! A backend that writes fixed bytes, for answers a well-behaved HTTP
//! server will not give: a 1xx then silence, a body cut short, a close
//! after reading the whole request and before answering.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the raw backend does after writing its reply.
#[derive(Clone, Copy)]
pub enum Then {
    /// Keep the connection open and say nothing more.
    Hang,
    /// Close the connection.
    Close,
}

/// Longest request (head and body) read; a longer one is not answered.
const MAX_REQUEST: usize = 1024 * 1024;

/// Reads a request's head and its `Content-Length` body, then answers every
/// request with `reply`, then hangs or closes. Stops when dropped.
pub struct RawBackend {
    pub addr: SocketAddr,
    received: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl RawBackend {
    pub async fn start(reply: &'static [u8], then: Then) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&received);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                let counter = Arc::clone(&counter);
                connections.spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while request.len() < MAX_REQUEST && !complete(&request) {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    let _ = stream.write_all(reply).await;
                    if let Then::Hang = then {
                        std::future::pending::<()>().await;
                    }
                });
            }
        });
        RawBackend {
            addr,
            received,
            task,
        }
    }

    /// Requests read whole so far.
    pub fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }
}

/// Whether `request` holds a whole head and the body its `Content-Length`
/// declares.
fn complete(request: &[u8]) -> bool {
    request_len(request).is_some()
}

/// The length of the whole request at the start of `buf` (its head and
/// the body its `Content-Length` declares), once it has all arrived.
pub fn request_len(buf: &[u8]) -> Option<usize> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    (buf.len() >= end + 4 + length).then_some(end + 4 + length)
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}
