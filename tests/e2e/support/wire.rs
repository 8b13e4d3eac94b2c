//! A raw-socket HTTP/1.1 client for tests that must send exact bytes:
//! it writes them on a new connection, reads the first response, then
//! checks with a probe whether the proxy kept the connection open.

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

/// The next response's status and `X-Request-Id`, or `None` at EOF or
/// reset. Bodies framed by `Content-Length` or chunked are skipped.
pub async fn read_response(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Option<(u16, Option<String>)> {
    let end = loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            break end;
        }
        fill(stream, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    buf.drain(..end + 4);
    let status = head.get(9..12)?.parse().ok()?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    if header("transfer-encoding").is_some() {
        let end = loop {
            if let Some(end) = find(buf, b"0\r\n\r\n") {
                break end + 5;
            }
            fill(stream, buf).await?;
        };
        buf.drain(..end);
    } else {
        let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap_or(0));
        while buf.len() < length {
            fill(stream, buf).await?;
        }
        buf.drain(..length);
    }
    Some((status, header("x-request-id")))
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
