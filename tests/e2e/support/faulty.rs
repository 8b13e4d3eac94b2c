//! A backend that breaks HTTP/1.1 on purpose: it reads each request head
//! and then answers as its current [`Fault`] says. It numbers the
//! connections it accepts and records on which one each request came, so a
//! test can tell whether the proxy sent a request over a connection that
//! had failed before. Requests are read as heads only: send no bodies. A
//! refused connection needs no backend: use [`closed_port`](super::closed_port).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the backend answers the next request it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `200` with the body `ok\n`; the connection stays open for more.
    Normal,
    /// Drops the connection with a reset (`SO_LINGER` 0), before any answer.
    ResetBeforeHead,
    /// A `200` head promising 100 bytes, 10 of them, then a reset.
    ResetAfterHead,
    /// A chunked `200` head, one 10-byte chunk and no last chunk, then a reset.
    ResetMidChunks,
    /// A `200` head with no length (the body ends at close), 10 bytes, then
    /// a reset.
    ResetMidUnframed,
    /// Closes the connection cleanly without answering.
    CloseBeforeHead,
    /// A status line that is not HTTP, then silence.
    GarbageStatus,
    /// `Content-Length: 5` and `Content-Length: 6` and 6 bytes, then silence.
    ConflictingLengths,
    /// `Content-Length: 5` and `Transfer-Encoding: chunked`, a body that is
    /// complete either way (`hello` as one chunk), then silence.
    LengthAndChunked,
    /// `101 Switching Protocols` to `Upgrade: websocket` (unsolicited unless
    /// the request asked for it), then echoes every byte it gets.
    Switch,
    /// [`Switch`](Self::Switch), with [`GREETING`] in the same write as the
    /// `101` head: bytes that arrive with the head.
    SwitchAndGreet,
    /// A head larger than the proxy reads (over 1 MiB), then silence.
    HugeHead,
    /// Never answers; the connection stays open.
    Hang,
}

/// The status line and headers of [`Fault::Normal`]'s answer.
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";

/// What [`Fault::SwitchAndGreet`] sends right behind its `101` head.
pub const GREETING: &[u8] = b"hello from the backend\n";

/// The `101` head of [`Fault::Switch`].
const SWITCH: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";

/// Longest request head read; a longer one ends the connection.
const MAX_HEAD: usize = 64 * 1024;

/// One request head as the backend read it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Which accepted connection it came on, counting from 0.
    pub connection: usize,
    /// The request line, e.g. `GET / HTTP/1.1`.
    pub line: String,
    /// Bytes that had arrived after the head when it was read.
    pub early: Vec<u8>,
}

#[derive(Default)]
struct Shared {
    fault: Mutex<Option<Fault>>,
    accepted: AtomicUsize,
    open: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    /// Bytes received after a 101, over all connections.
    tunnelled: Mutex<Vec<u8>>,
}

impl Shared {
    fn fault(&self) -> Fault {
        self.fault.lock().unwrap().unwrap_or(Fault::Normal)
    }
}

/// A running faulty backend. Stops accepting when dropped.
pub struct FaultyBackend {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultyBackend {
    /// Starts on a free loopback port, answering as `fault` says.
    pub async fn start(fault: Fault) -> FaultyBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        *shared.fault.lock().unwrap() = Some(fault);
        let accepting = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let number = accepting.accepted.fetch_add(1, Ordering::SeqCst);
                accepting.open.fetch_add(1, Ordering::SeqCst);
                let shared = Arc::clone(&accepting);
                connections.spawn(async move {
                    serve(stream, number, &shared).await;
                    shared.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        FaultyBackend { addr, shared, task }
    }

    /// Answers the requests read from now on as `fault` says.
    pub fn set(&self, fault: Fault) {
        *self.shared.fault.lock().unwrap() = Some(fault);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections still open on the backend's side.
    pub fn open(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Every request head read so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Every byte received after a 101, in order.
    pub fn tunnelled(&self) -> Vec<u8> {
        self.shared.tunnelled.lock().unwrap().clone()
    }
}

impl Drop for FaultyBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads request heads off one connection and answers each as the current
/// fault says, until the fault or the peer ends the connection.
async fn serve(mut stream: TcpStream, connection: usize, shared: &Shared) {
    let mut buf = Vec::new();
    loop {
        let Some(line) = read_head(&mut stream, &mut buf).await else {
            return;
        };
        let fault = shared.fault();
        shared.seen.lock().unwrap().push(Seen {
            connection,
            line,
            early: buf.clone(),
        });
        if !misbehave(&mut stream, fault, &mut buf, shared).await {
            return;
        }
    }
}

/// Acts out `fault` for one request. Returns whether the connection is
/// still to be read.
async fn misbehave(
    stream: &mut TcpStream,
    fault: Fault,
    buf: &mut Vec<u8>,
    shared: &Shared,
) -> bool {
    let reply: &[u8] = match fault {
        Fault::Normal => OK,
        Fault::ResetBeforeHead => return reset(stream),
        Fault::ResetAfterHead => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
        Fault::ResetMidChunks => {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n"
        }
        Fault::ResetMidUnframed => b"HTTP/1.1 200 OK\r\n\r\n0123456789",
        Fault::CloseBeforeHead => return false,
        Fault::GarbageStatus => b"HTTP/1.1 2OO NOT A STATUS\r\n\r\n",
        Fault::ConflictingLengths => {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello\n"
        }
        Fault::LengthAndChunked => {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n"
        }
        Fault::Switch | Fault::SwitchAndGreet => {
            let mut head = SWITCH.to_vec();
            if fault == Fault::SwitchAndGreet {
                head.extend_from_slice(GREETING);
            }
            if stream.write_all(&head).await.is_ok() {
                echo(stream, std::mem::take(buf), shared).await;
            }
            return false;
        }
        Fault::HugeHead => {
            let filler = format!("X-Filler: {}\r\n", "f".repeat(1000));
            let head = format!("HTTP/1.1 200 OK\r\n{}\r\n", filler.repeat(1100));
            let _ = stream.write_all(head.as_bytes()).await;
            return true;
        }
        Fault::Hang => return true,
    };
    if stream.write_all(reply).await.is_err() {
        return false;
    }
    match fault {
        Fault::ResetAfterHead | Fault::ResetMidChunks | Fault::ResetMidUnframed => reset(stream),
        _ => true,
    }
}

/// Makes the kernel answer the peer with a reset when the stream is dropped.
fn reset(stream: &TcpStream) -> bool {
    stream.set_zero_linger().expect("set SO_LINGER to 0");
    false
}

/// Records and sends back every byte the peer sends, starting with
/// `first`, until it closes.
async fn echo(stream: &mut TcpStream, first: Vec<u8>, shared: &Shared) {
    let mut chunk = first;
    loop {
        shared.tunnelled.lock().unwrap().extend_from_slice(&chunk);
        if stream.write_all(&chunk).await.is_err() {
            return;
        }
        chunk.resize(4096, 0);
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => chunk.truncate(n),
        }
    }
}

/// The request line of the next request head, leaving in `buf` what came
/// after it; `None` when the peer closes or sends too much.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head: Vec<u8> = buf.drain(..end + 4).collect();
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    Some(String::from_utf8_lossy(line).into_owned())
}
