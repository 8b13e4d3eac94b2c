//! WebSocket (RFC 6455) by hand, for tunnel tests: a backend that checks
//! the handshake's `Sec-WebSocket-Key`, answers with its
//! `Sec-WebSocket-Accept`, and echoes every text frame; and a client that
//! opens one, checks the accept value, and sends masked frames. Payloads
//! up to 64 KiB only.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::wire::{header, read_head};

/// Appended to the client's key before hashing (RFC 6455 section 1.3).
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` for `key`.
pub fn accept(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{GUID}").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// A WebSocket echo server on a free loopback port. Stops accepting when
/// dropped.
pub struct WsBackend {
    pub addr: SocketAddr,
    open: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl WsBackend {
    pub async fn start() -> WsBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let counting = Arc::clone(&open);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let open = Arc::clone(&counting);
                connections.spawn(async move {
                    open.fetch_add(1, Ordering::SeqCst);
                    serve(stream).await;
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        WsBackend { addr, open, task }
    }

    /// Connections open on the backend's side now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for WsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Completes one handshake and echoes frames until the peer closes.
async fn serve(mut stream: TcpStream) {
    let mut buf = Vec::new();
    let Some(head) = read_head(&mut stream, &mut buf).await else {
        return;
    };
    let Some(key) = header(&head, "sec-websocket-key") else {
        let _ = stream
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await;
        return;
    };
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        accept(&key)
    );
    if stream.write_all(answer.as_bytes()).await.is_err() {
        return;
    }
    while let Some((opcode, payload)) = read_frame(&mut stream, &mut buf).await {
        if stream
            .write_all(&frame(opcode, &payload, None))
            .await
            .is_err()
            || opcode == 0x8
        {
            return;
        }
    }
}

/// One client WebSocket, opened through the proxy at `addr`.
pub struct WsClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl WsClient {
    /// Opens `GET path` as a WebSocket; `Err` says what went wrong.
    pub async fn open(addr: SocketAddr, path: &str) -> Result<WsClient, String> {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::new();
        let head = read_head(&mut stream, &mut buf)
            .await
            .ok_or("closed before a response")?;
        if !head.starts_with("HTTP/1.1 101 ") {
            return Err(format!("not a 101: {head}"));
        }
        let expected = accept(&key);
        match header(&head, "sec-websocket-accept") {
            Some(got) if got == expected => Ok(WsClient { stream, buf }),
            got => Err(format!("accept {got:?}, expected {expected}")),
        }
    }

    /// Sends `text` as a masked text frame and returns the text of the
    /// next frame that comes back.
    pub async fn echo(&mut self, text: &str) -> Result<String, String> {
        let mask = rand::random::<[u8; 4]>();
        self.stream
            .write_all(&frame(0x1, text.as_bytes(), Some(mask)))
            .await
            .map_err(|e| format!("send: {e}"))?;
        let (_, payload) = read_frame(&mut self.stream, &mut self.buf)
            .await
            .ok_or("closed before an echo")?;
        String::from_utf8(payload).map_err(|e| e.to_string())
    }
}

/// A final frame of `opcode` carrying `payload`, masked with `mask` (as a
/// client must) or not (as a server must).
fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let masked = if mask.is_some() { 0x80 } else { 0 };
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n @ 0..=125 => out.push(masked | n as u8),
        n => {
            out.push(masked | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    match mask {
        Some(mask) => {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// The next frame's opcode and (unmasked) payload, reading into `buf`;
/// `None` when the peer closes first or sends what this cannot read.
async fn read_frame(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    loop {
        match parse_frame(buf) {
            Parsed::Frame {
                len,
                opcode,
                payload,
            } => {
                buf.drain(..len);
                return Some((opcode, payload));
            }
            Parsed::Unreadable => return None,
            Parsed::More => {}
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// What the start of a buffer holds.
enum Parsed {
    /// Not a whole frame yet.
    More,
    /// A frame of `len` bytes on the wire.
    Frame {
        len: usize,
        opcode: u8,
        payload: Vec<u8>,
    },
    /// A 64-bit length, which these tests never send.
    Unreadable,
}

fn parse_frame(buf: &[u8]) -> Parsed {
    let [first, second, rest @ ..] = buf else {
        return Parsed::More;
    };
    let (len, rest, mut at) = match second & 0x7f {
        127 => return Parsed::Unreadable,
        126 if rest.len() < 2 => return Parsed::More,
        126 => (
            usize::from(u16::from_be_bytes([rest[0], rest[1]])),
            &rest[2..],
            4,
        ),
        n => (usize::from(n), rest, 2),
    };
    let mask = if second & 0x80 != 0 {
        let Some(mask) = rest.get(..4) else {
            return Parsed::More;
        };
        at += 4;
        Some([mask[0], mask[1], mask[2], mask[3]])
    } else {
        None
    };
    let Some(payload) = buf.get(at..at + len) else {
        return Parsed::More;
    };
    let payload = match mask {
        Some(m) => payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ m[i % 4])
            .collect(),
        None => payload.to_vec(),
    };
    Parsed::Frame {
        len: at + len,
        opcode: first & 0x0f,
        payload,
    }
}

#[test]
fn the_accept_value_of_the_rfc_example() {
    assert_eq!(
        accept("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}
