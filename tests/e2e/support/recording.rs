//! A backend that parses HTTP/1.1 itself, strictly, from raw bytes and
//! records every request it parsed, so smuggling tests can see exactly what
//! the proxy put on the wire. Switchyard stamps every request it forwards
//! with `X-Forwarded-For`: a recorded request without it was smuggled.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What every request is answered with; the connection stays open.
const REPLY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nrecorded\n";

/// Longest header section or body accepted; more is a parse error.
const MAX_MESSAGE: usize = 64 * 1024;

/// One request as the backend parsed it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub version: String,
    /// Names lower-cased, values as sent (without surrounding blanks).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    /// Every value of header `name` (lower case), in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The only value of header `name`; panics if it appears several times.
    pub fn header(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(
            all.len() <= 1,
            "{name} appears {} times: {self:?}",
            all.len()
        );
        all.first().copied()
    }

    /// Whether Switchyard forwarded this request (it carries the stamp).
    pub fn stamped(&self) -> bool {
        !self.all("x-forwarded-for").is_empty()
    }
}

#[derive(Default)]
struct Log {
    requests: Vec<Recorded>,
    /// Why a connection was dropped: bytes this strict parser refused.
    errors: Vec<String>,
    /// Connections from the proxy open now.
    open: usize,
}

/// A running recording backend. Stops when dropped.
pub struct RecordingBackend {
    pub addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    task: tokio::task::JoinHandle<()>,
}

impl RecordingBackend {
    /// Starts on a free loopback port.
    pub async fn start() -> RecordingBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Log::default()));
        let shared = Arc::clone(&log);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                shared.lock().unwrap().open += 1;
                let log = Arc::clone(&shared);
                connections.spawn(async move {
                    serve(stream, Arc::clone(&log)).await;
                    log.lock().unwrap().open -= 1;
                });
            }
        });
        RecordingBackend { addr, log, task }
    }

    /// Every request parsed so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().requests.clone()
    }

    /// Requests that reached the backend without Switchyard's stamp.
    pub fn unstamped(&self) -> Vec<Recorded> {
        let log = self.log.lock().unwrap();
        log.requests
            .iter()
            .filter(|r| !r.stamped())
            .cloned()
            .collect()
    }

    /// Connections from the proxy open now (ended by either side).
    pub fn open(&self) -> usize {
        self.log.lock().unwrap().open
    }

    /// Bytes the backend refused to parse, one description per connection.
    pub fn errors(&self) -> Vec<String> {
        self.log.lock().unwrap().errors.clone()
    }
}

impl Drop for RecordingBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Parses requests off one connection until it closes or sends bad bytes.
/// Every complete request already buffered is recorded before any is
/// answered, so a request smuggled behind another is on record by the time
/// the proxy sees the first answer.
async fn serve(mut stream: TcpStream, log: Arc<Mutex<Log>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let mut answers = 0;
        loop {
            match parse(&buf) {
                Ok(Some((request, used))) => {
                    buf.drain(..used);
                    log.lock().unwrap().requests.push(request);
                    answers += 1;
                }
                Ok(None) => break,
                Err(why) => {
                    log.lock().unwrap().errors.push(why);
                    return;
                }
            }
        }
        for _ in 0..answers {
            if stream.write_all(REPLY).await.is_err() {
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A complete request at the start of `buf` and the bytes it used, `None`
/// if more bytes are needed, or why the bytes are not HTTP/1.1.
fn parse(buf: &[u8]) -> Result<Option<(Recorded, usize)>, String> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > MAX_MESSAGE {
            Err("header section too large".into())
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| "header is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let mut request = request_line(lines.next().unwrap_or_default())?;
    for line in lines {
        request.headers.push(header_line(line)?);
    }
    let start = end + 4;
    let body = match framing(&request)? {
        Framing::Length(n) => (buf.len() >= start + n).then(|| (buf[start..start + n].to_vec(), n)),
        Framing::Chunked => dechunk(&buf[start..])?,
    };
    Ok(body.map(|(body, used)| {
        request.body = body;
        (request, start + used)
    }))
}

fn request_line(line: &str) -> Result<Recorded, String> {
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(format!("bad request line {line:?}"));
    };
    let token = |s: &str| !s.is_empty() && s.bytes().all(is_tchar);
    let visible = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    if !token(method) || !visible(target) || !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return Err(format!("bad request line {line:?}"));
    }
    Ok(Recorded {
        method: method.into(),
        target: target.into(),
        version: version.into(),
        headers: Vec::new(),
        body: Vec::new(),
    })
}

fn header_line(line: &str) -> Result<(String, String), String> {
    let (name, value) = line
        .split_once(':')
        .ok_or_else(|| format!("bad header line {line:?}"))?;
    let value = value.trim_matches([' ', '\t']);
    let value_ok = value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
    if name.is_empty() || !name.bytes().all(is_tchar) || !value_ok {
        return Err(format!("bad header line {line:?}"));
    }
    Ok((name.to_ascii_lowercase(), value.into()))
}

enum Framing {
    Length(usize),
    Chunked,
}

/// RFC 9112 section 6.3, strictly: one `Transfer-Encoding: chunked` and no
/// `Content-Length`, or at most one all-digit `Content-Length`.
fn framing(r: &Recorded) -> Result<Framing, String> {
    let (te, cl) = (r.all("transfer-encoding"), r.all("content-length"));
    match (&te[..], &cl[..]) {
        ([], []) => Ok(Framing::Length(0)),
        ([], [n]) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => n
            .parse()
            .ok()
            .filter(|&n| n <= MAX_MESSAGE)
            .map(Framing::Length)
            .ok_or_else(|| format!("bad Content-Length {n:?}")),
        (["chunked"], []) => Ok(Framing::Chunked),
        _ => Err(format!("ambiguous framing: TE {te:?}, CL {cl:?}")),
    }
}

/// The decoded body and the bytes it used, or `None` if incomplete.
fn dechunk(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let (mut body, mut at) = (Vec::new(), 0);
    loop {
        let Some(eol) = find(&buf[at..], b"\r\n") else {
            return Ok(None);
        };
        let line = &buf[at..at + eol];
        let size = std::str::from_utf8(line)
            .ok()
            .filter(|s| (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .filter(|&n| body.len() + n <= MAX_MESSAGE)
            .ok_or_else(|| format!("bad chunk size line {:?}", line.escape_ascii().to_string()))?;
        at += eol + 2;
        if size == 0 {
            // No trailers: Switchyard never forwards any.
            return match buf.get(at..at + 2) {
                None => Ok(None),
                Some(b"\r\n") => Ok(Some((body, at + 2))),
                Some(other) => Err(format!("bad last chunk end {other:?}")),
            };
        }
        let Some(data) = buf.get(at..at + size + 2) else {
            return Ok(None);
        };
        if &data[size..] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        body.extend_from_slice(&data[..size]);
        at += size + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
