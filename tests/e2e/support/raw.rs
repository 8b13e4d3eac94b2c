//! A backend that writes fixed bytes, for answers a well-behaved HTTP
//! server will not give: a 1xx then silence, a body cut short.

use std::net::SocketAddr;

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

/// Answers every request with `reply`, then hangs or closes. Stops when dropped.
pub struct RawBackend {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl RawBackend {
    pub async fn start(reply: &'static [u8], then: Then) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                connections.spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 65536 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = stream.write_all(reply).await;
                    if let Then::Hang = then {
                        std::future::pending::<()>().await;
                    }
                });
            }
        });
        RawBackend { addr, task }
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}
