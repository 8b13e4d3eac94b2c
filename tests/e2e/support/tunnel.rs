//! A raw tunnel through the proxy to a backend that answers `101` and
//! echoes (a [`FaultyBackend`](super::faulty::FaultyBackend) with
//! `Fault::Switch`): open it, check it still echoes, wait for it to close.
//! Every step is bounded by [`DEADLINE`](super::DEADLINE).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::wire::read_head;
use super::DEADLINE;

const UPGRADE: &[u8] = b"GET /tunnel HTTP/1.1\r\nHost: tunnel.test\r\nConnection: Upgrade\r\n\
    Upgrade: websocket\r\n\r\n";

/// Opens a tunnel: the upgrade request, and its `101` read.
pub async fn open(addr: SocketAddr) -> Result<TcpStream, String> {
    let run = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .write_all(UPGRADE)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::new();
        let head = read_head(&mut stream, &mut buf)
            .await
            .ok_or("closed before a response")?;
        if !head.starts_with("HTTP/1.1 101 ") || !buf.is_empty() {
            return Err(format!("not a bare 101: {head} then {buf:?}"));
        }
        Ok(stream)
    };
    tokio::time::timeout(DEADLINE, run)
        .await
        .unwrap_or_else(|_| Err("no 101 in time".into()))
}

/// Sends `message` and reads it back.
pub async fn echo(stream: &mut TcpStream, message: &[u8]) -> Result<(), String> {
    let run = async {
        stream
            .write_all(message)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut back = vec![0; message.len()];
        stream
            .read_exact(&mut back)
            .await
            .map_err(|e| format!("echo: {e}"))?;
        if back != message {
            return Err(format!("echoed {back:?}"));
        }
        Ok(())
    };
    tokio::time::timeout(DEADLINE, run)
        .await
        .unwrap_or_else(|_| Err("no echo in time".into()))
}

/// Waits until the proxy closes `stream` (end of stream or reset);
/// `Err` if bytes arrive instead, or nothing happens in time.
pub async fn closed(stream: &mut TcpStream) -> Result<(), String> {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(DEADLINE, stream.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => Ok(()),
        Ok(Ok(n)) => Err(format!("got {:?} instead of a close", &buf[..n])),
        Err(_) => Err("still open".into()),
    }
}
