//! A backend that announces its keep-alive, as Node.js does: every
//! response says `Keep-Alive: timeout=2`, and each connection is closed
//! exactly [`KEEPALIVE`] after its last response began. It records how
//! long each reused connection sat idle before its next request, and every
//! request whose bytes came after the connection's close was decided: the
//! moment a proxy that lends pooled connections too late gets caught.
//! Requests are read as a head and its `Content-Length` body.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::raw::request_len;

/// The keep-alive the backend announces and keeps to.
pub const KEEPALIVE: Duration = Duration::from_secs(2);

/// The header it announces it with.
const ANNOUNCED: &str = "Keep-Alive: timeout=2";

/// After deciding to close, how long it still reads (with its sending half
/// shut) to see whether a request was on its way. It stops earlier when
/// the proxy closes its end, as it does on seeing the close.
const LINGER: Duration = Duration::from_secs(1);

/// Longest request (head and body) read; a longer one ends the connection.
const MAX_REQUEST: usize = 64 * 1024;

#[derive(Default)]
struct Shared {
    /// When each connection (by its number, from 0) closes if no request
    /// comes first.
    deadlines: Mutex<Vec<Option<Instant>>>,
    /// How long a connection had been idle before each request that
    /// reused it.
    idles: Mutex<Vec<Duration>>,
    /// Requests (whole or in part) that came after their connection's
    /// close was decided.
    after_close: AtomicUsize,
    requests: AtomicUsize,
}

/// A running backend; stops accepting when dropped.
pub struct AnnouncingBackend {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// What the backend saw, to read from any thread.
#[derive(Clone)]
pub struct Seen(Arc<Shared>);

impl AnnouncingBackend {
    /// Starts on a free loopback port.
    pub async fn start() -> AnnouncingBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let accepting = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let number = {
                    let mut deadlines = accepting.deadlines.lock().unwrap();
                    deadlines.push(None);
                    deadlines.len() - 1
                };
                connections.spawn(serve(stream, number, Arc::clone(&accepting)));
            }
        });
        AnnouncingBackend { addr, shared, task }
    }

    pub fn seen(&self) -> Seen {
        Seen(Arc::clone(&self.shared))
    }
}

impl Seen {
    /// When connection `number` closes unless a request comes first; set
    /// before its response is written, so known to whoever read that.
    pub fn deadline(&self, number: usize) -> Option<Instant> {
        *self.0.deadlines.lock().unwrap().get(number)?
    }

    /// Idle times before the requests that reused a connection.
    pub fn idles(&self) -> Vec<Duration> {
        self.0.idles.lock().unwrap().clone()
    }

    /// Requests that came on a connection after its close was decided.
    pub fn after_close(&self) -> usize {
        self.0.after_close.load(Ordering::SeqCst)
    }

    /// Connections accepted.
    pub fn connections(&self) -> usize {
        self.0.deadlines.lock().unwrap().len()
    }

    /// Requests answered.
    pub fn requests(&self) -> usize {
        self.0.requests.load(Ordering::SeqCst)
    }
}

/// Answers the requests of connection `number` until it has been idle for
/// [`KEEPALIVE`], then closes it.
async fn serve(mut stream: TcpStream, number: usize, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    let mut deadline = None;
    loop {
        let whole = match deadline {
            None => read_request(&mut stream, &mut buf).await,
            Some(at) => {
                match tokio::time::timeout_at(at, read_request(&mut stream, &mut buf)).await {
                    Ok(whole) => whole,
                    Err(_) => return close(stream, buf, &shared).await,
                }
            }
        };
        if !whole {
            return;
        }
        if let Some(at) = deadline {
            let idle = Instant::now().saturating_duration_since(at - KEEPALIVE);
            shared.idles.lock().unwrap().push(idle);
        }
        let at = Instant::now() + KEEPALIVE;
        shared.deadlines.lock().unwrap()[number] = Some(at);
        deadline = Some(at);
        shared.requests.fetch_add(1, Ordering::SeqCst);
        let response = format!(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n{ANNOUNCED}\r\n\
             X-Connection: {number}\r\nContent-Length: 3\r\n\r\nok\n"
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Closes at the deadline: shuts the sending half, counts any request
/// bytes that were already there or come within [`LINGER`], then drops.
async fn close(mut stream: TcpStream, buf: Vec<u8>, shared: &Shared) {
    let _ = stream.shutdown().await;
    let mut late = !buf.is_empty();
    let mut chunk = [0u8; 4096];
    if let Ok(Ok(n)) = tokio::time::timeout(LINGER, stream.read(&mut chunk)).await {
        late |= n > 0;
    }
    if late {
        shared.after_close.fetch_add(1, Ordering::SeqCst);
    }
}

/// Reads one whole request into `buf` and takes it off; false at EOF, on
/// an error, or past [`MAX_REQUEST`].
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(len) = request_len(buf) {
            buf.drain(..len);
            return true;
        }
        if buf.len() > MAX_REQUEST {
            return false;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

impl Drop for AnnouncingBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}
