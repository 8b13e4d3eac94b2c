//! A raw-socket HTTP/1.1 client for tests that must send exact bytes:
//! it writes them on a new connection, reads the first response, then
//! checks with a probe whether the proxy kept the connection open; or it
//! reads one response and tells whether its body was complete or cut.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::DEADLINE;

/// Sent after a case's bytes: answered (with its request id echoed) only
/// if the proxy kept the connection open and in sync.
const PROBE: &[u8] =
    b"GET /probe HTTP/1.1\r\nHost: probe.test\r\nX-Request-Id: probe\r\nConnection: close\r\n\r\n";

/// What the client saw.
#[derive(Debug)]
pub struct Exchange {
    /// Status of the first response; `None` if the proxy closed first.
    pub status: Option<u16>,
    /// The probe after the first response went unanswered.
    pub closed: bool,
}

/// Writes `bytes` on a new connection, reads the first response, then sends
/// [`PROBE`] and reads until the proxy closes. Bounded by [`DEADLINE`].
pub async fn exchange(addr: SocketAddr, name: &str, bytes: &[u8]) -> Exchange {
    let run = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        // The proxy may answer and close before reading everything.
        let _ = stream.write_all(bytes).await;
        let mut buf = Vec::new();
        let Some((status, _)) = read_response(&mut stream, &mut buf).await else {
            return Exchange {
                status: None,
                closed: true,
            };
        };
        let _ = stream.write_all(PROBE).await;
        let mut probe_answered = false;
        while let Some((_, request_id)) = read_response(&mut stream, &mut buf).await {
            probe_answered |= request_id.as_deref() == Some("probe");
        }
        Exchange {
            status: Some(status),
            closed: !probe_answered,
        }
    };
    tokio::time::timeout(DEADLINE, run)
        .await
        .unwrap_or_else(|_| panic!("{name}: no answer or close within {DEADLINE:?}"))
}

/// One response as the client read it, up to where the connection ended.
#[derive(Debug)]
pub struct Reply {
    /// `None` if the connection ended before a whole head arrived.
    pub status: Option<u16>,
    /// The status line and headers.
    pub head: String,
    /// The body bytes that arrived (decoded if chunked).
    pub body: Vec<u8>,
    /// Whether the body reached the end its framing declares. A body
    /// without a length is complete only at a clean close, not a reset.
    pub complete: bool,
}

/// Writes `bytes` on a new connection, reads one response however it ends,
/// then hangs up and waits for the other side to close. Bounded by
/// [`DEADLINE`].
pub async fn request(addr: SocketAddr, name: &str, bytes: &[u8]) -> Reply {
    let run = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let _ = stream.write_all(bytes).await;
        let mut buf = Vec::new();
        let Some(head) = read_head(&mut stream, &mut buf).await else {
            let (status, body, complete) = (None, Vec::new(), false);
            return Reply {
                status,
                head: String::new(),
                body,
                complete,
            };
        };
        let (body, complete) = read_body(&mut stream, &mut buf, &head).await;
        // Hang up and wait for the other side to close too, so that its
        // socket is gone when this returns.
        let _ = stream.shutdown().await;
        while matches!(fill(&mut stream, &mut buf).await, Ok(n) if n > 0) {}
        let status = head.get(9..12).and_then(|s| s.parse().ok());
        Reply {
            status,
            head,
            body,
            complete,
        }
    };
    tokio::time::timeout(DEADLINE, run)
        .await
        .unwrap_or_else(|_| panic!("{name}: no answer or close within {DEADLINE:?}"))
}

/// Writes `bytes` (two pipelined requests) on a new connection, reads the
/// first response whole and the second one's head: the first's status and
/// the second's head. Bounded by [`DEADLINE`].
pub async fn two_answers(addr: SocketAddr, bytes: &[u8]) -> (u16, String) {
    let run = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(bytes).await.expect("write");
        let mut buf = Vec::new();
        let (first, _) = read_response(&mut stream, &mut buf)
            .await
            .expect("an answer");
        let second = read_head(&mut stream, &mut buf)
            .await
            .expect("a second answer");
        (first, second)
    };
    tokio::time::timeout(DEADLINE, run)
        .await
        .expect("two answers within the deadline")
}

/// The next response's status and `X-Request-Id`, or `None` at EOF or
/// reset, also when its body is cut short.
pub async fn read_response(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Option<(u16, Option<String>)> {
    let head = read_head(stream, buf).await?;
    let status = head.get(9..12)?.parse().ok()?;
    let request_id = header(&head, "x-request-id");
    // A response without a length is taken to have no body: reading to the
    // close would swallow the probe's answer.
    let framed = ["content-length", "transfer-encoding"]
        .iter()
        .any(|name| header(&head, name).is_some());
    if !framed {
        return Some((status, request_id));
    }
    let (_, complete) = read_body(stream, buf, &head).await;
    complete.then_some((status, request_id))
}

/// The next head (status line and headers, without the blank line), taken
/// off `buf`; `None` if the connection ends first.
pub async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let end = loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            break end;
        }
        if !matches!(fill(stream, buf).await, Ok(n) if n > 0) {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    buf.drain(..end + 4);
    Some(head)
}

/// The value of header `name` in `head`, if present.
pub fn header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// The body after `head` as far as it arrived, and whether it is complete.
async fn read_body(stream: &mut TcpStream, buf: &mut Vec<u8>, head: &str) -> (Vec<u8>, bool) {
    if header(head, "transfer-encoding").is_some() {
        return read_chunks(stream, buf).await;
    }
    let Some(length) = header(head, "content-length").and_then(|v| v.parse().ok()) else {
        // Ends at close: complete only if the close is clean.
        loop {
            match fill(stream, buf).await {
                Ok(0) => return (std::mem::take(buf), true),
                Ok(_) => {}
                Err(_) => return (std::mem::take(buf), false),
            }
        }
    };
    while buf.len() < length {
        if !matches!(fill(stream, buf).await, Ok(n) if n > 0) {
            return (std::mem::take(buf), false);
        }
    }
    (buf.drain(..length).collect(), true)
}

/// A chunked body (no trailers), decoded, and whether its last chunk came.
async fn read_chunks(stream: &mut TcpStream, buf: &mut Vec<u8>) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let size = loop {
            if let Some(eol) = find(buf, b"\r\n") {
                let line: Vec<u8> = buf.drain(..eol + 2).collect();
                let text = String::from_utf8_lossy(&line[..eol]).to_string();
                break usize::from_str_radix(text.trim(), 16).ok();
            }
            if !matches!(fill(stream, buf).await, Ok(n) if n > 0) {
                return (body, false);
            }
        };
        let Some(size) = size else {
            return (body, false);
        };
        while buf.len() < size + 2 {
            if !matches!(fill(stream, buf).await, Ok(n) if n > 0) {
                body.extend_from_slice(&buf[..buf.len().min(size)]);
                return (body, false);
            }
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
        if size == 0 {
            return (body, true);
        }
    }
}

/// Reads once into `buf`: the bytes read, 0 at a clean close.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A client on one keep-alive connection that never retries anything: a
/// request whose answer does not come whole is a failure, as it would be
/// for a client that cannot know whether repeating it is safe.
pub struct KeepAlive {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The last response said `Connection: close`.
    closed: bool,
}

impl KeepAlive {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<KeepAlive> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(KeepAlive {
            stream,
            buf: Vec::new(),
            closed: false,
        })
    }

    /// Whether the server said it closes this connection: the next
    /// request needs a new one.
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// `GET path` on this connection: the status and body, or what went
    /// wrong. Bounded by [`DEADLINE`].
    pub async fn get(&mut self, path: &str) -> Result<(u16, String), String> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: keepalive.test\r\n\r\n");
        let run = async {
            self.stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| format!("write: {e}"))?;
            let head = read_head(&mut self.stream, &mut self.buf)
                .await
                .ok_or("the connection ended before a response")?;
            let status = head
                .get(9..12)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad status line: {head}"))?;
            let (body, complete) = read_body(&mut self.stream, &mut self.buf, &head).await;
            self.closed =
                header(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
            if !complete {
                return Err(format!("{status} with its body cut short"));
            }
            Ok((status, String::from_utf8_lossy(&body).trim().to_string()))
        };
        tokio::time::timeout(DEADLINE, run)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {DEADLINE:?}")))
    }
}
