//! HTTP/2 frames written by hand, for the clients no well-behaved library
//! will be: one that opens more streams than the server allows, resets
//! streams as fast as it opens them, or breaks the protocol on purpose.
//! Plain TCP (h2c) only; header blocks use HPACK's static table and
//! literals without indexing, so no compression state is kept.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;

pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub const CANCEL: u32 = 0x8;
pub const REFUSED_STREAM: u32 = 0x7;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// A frame as read: type, flags, stream and payload.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a `RST_STREAM` or `GOAWAY`.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        let b = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// The bytes of one frame.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A `HEADERS` frame for `GET /` on `authority`, ending the stream if
/// `end_stream` (no body follows).
pub fn get(stream: u32, authority: &str, end_stream: bool) -> Vec<u8> {
    // :method GET, :scheme http, :path / from the static table; then
    // :authority (static name 1) as a literal without indexing.
    let mut block = vec![0x82, 0x86, 0x84, 0x01, authority.len() as u8];
    block.extend_from_slice(authority.as_bytes());
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(HEADERS, flags, stream, &block)
}

/// A `RST_STREAM` with `code`.
pub fn rst(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

/// A `WINDOW_UPDATE` of `increment` (0 is a protocol error on a stream).
pub fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

/// The frames coming from the server.
pub struct Frames {
    reader: BufReader<OwnedReadHalf>,
}

impl Frames {
    /// The next frame, within `wait`.
    pub async fn read(&mut self, wait: Duration) -> std::io::Result<Frame> {
        let read = async {
            let mut head = [0u8; 9];
            self.reader.read_exact(&mut head).await?;
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0; len];
            self.reader.read_exact(&mut payload).await?;
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            Ok(Frame {
                kind: head[3],
                flags: head[4],
                stream,
                payload,
            })
        };
        tokio::time::timeout(wait, read)
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    }

    /// Reads frames until `want` matches one, within `wait` in all;
    /// returns it, or what ended the wait.
    pub async fn read_until(
        &mut self,
        wait: Duration,
        want: impl Fn(&Frame) -> bool,
    ) -> std::io::Result<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let f = self.read(left).await?;
            if want(&f) {
                return Ok(f);
            }
        }
    }
}

/// One HTTP/2 connection, past the preface and the SETTINGS exchange.
pub struct Conn {
    pub frames: Frames,
    pub writer: OwnedWriteHalf,
}

impl Conn {
    /// Connects, sends the preface and empty SETTINGS, and acknowledges
    /// the server's: from then on its limits apply.
    pub async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        Self::open_with(addr, &[]).await
    }

    /// [`open`](Self::open), sending these settings (identifier, value).
    pub async fn open_with(addr: SocketAddr, settings: &[(u16, u32)]) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        let mut conn = Conn {
            frames: Frames {
                reader: BufReader::new(r),
            },
            writer: w,
        };
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let payload: Vec<u8> = settings
            .iter()
            .flat_map(|(id, value)| [&id.to_be_bytes()[..], &value.to_be_bytes()[..]].concat())
            .collect();
        hello.extend(frame(SETTINGS, 0, 0, &payload));
        conn.writer.write_all(&hello).await?;
        loop {
            let f = conn.frames.read(Duration::from_secs(5)).await?;
            if f.kind == SETTINGS && f.flags & ACK == 0 {
                conn.writer.write_all(&frame(SETTINGS, ACK, 0, &[])).await?;
                return Ok(conn);
            }
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes).await
    }

    /// See [`Frames::read_until`].
    pub async fn read_until(
        &mut self,
        wait: Duration,
        want: impl Fn(&Frame) -> bool,
    ) -> std::io::Result<Frame> {
        self.frames.read_until(wait, want).await
    }
}
