//! How much of what a client sent may go to Pingora in one read: the
//! client stream hands it a request head and nothing past it, a chunked
//! body only as far as its framing is valid, and nothing past the end of
//! the body until the next request begins.
//!
//! Holding back the bytes after a head is what lets the chunked framing
//! be checked at all: Pingora keeps whatever it read past the head as the
//! start of the body and decodes it itself, out of reach. Given only the
//! head, it reads the whole body from the stream, through [`Chunked`].
//! Holding back what follows a body keeps the next request (pipelined)
//! where it was before these cuts: not read while this one is served
//! (Pingora's idle read would take it for a protocol error), and read as
//! the next head once this one is over. A client's close still shows.
//!
//! A head ends at an empty line: `LF LF` or `LF CR LF`, as httparse sees
//! it. Every such place is a cut, so Pingora's parser, which completes at
//! the first one it can, completes exactly at the end of a read. A cut
//! that is not the end (leading empty lines) only makes it read again.

use std::io;

use super::chunked::{Chunked, Malformed, Step};
use super::phase::{Body, Phase};

/// The reader for the current phase of the connection.
#[derive(Debug)]
pub(super) enum Reader {
    /// A request head: cut after its end. The state is how much of an
    /// empty line has been seen: 0 none, 1 `LF`, 2 `LF CR`.
    Head(u8),
    /// A chunked body: checked, and cut at its end.
    Chunked(Chunked),
    /// A body of this many more bytes.
    Length(u64),
    /// The body is over: nothing until the next request begins.
    Hold,
    /// Anything else (a tunnel, HTTP/2, an upgrade request): all of it.
    Through,
    /// The chunked framing was broken: every read fails.
    Failed(Malformed),
}

impl Reader {
    /// The reader for the connection's `phase` value, serving a request
    /// whose body is `body`.
    pub(super) fn for_phase(phase: u32, body: Body) -> Reader {
        match (phase & Phase::MASK, body) {
            (Phase::HEAD | Phase::IDLE, _) => Reader::Head(0),
            (Phase::BUSY, Body::Chunked) => Reader::Chunked(Chunked::new()),
            (Phase::BUSY, Body::Length(0)) => Reader::Hold,
            (Phase::BUSY, Body::Length(n)) => Reader::Length(n),
            _ => Reader::Through,
        }
    }

    /// Whether nothing may be read now.
    pub(super) fn holds(&self) -> bool {
        matches!(self, Reader::Hold)
    }

    /// How many of the `new` bytes may be read now; the rest wait for the
    /// next read. At least one when `new` is not empty, unless refused or
    /// [holding](Self::holds).
    pub(super) fn admit(&mut self, new: &[u8]) -> io::Result<usize> {
        match self {
            Reader::Head(seen) => Ok(head_cut(seen, new)),
            Reader::Length(left) => {
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(new.len());
                *left -= n as u64;
                if *left == 0 {
                    *self = Reader::Hold;
                }
                Ok(n)
            }
            Reader::Hold => Ok(0),
            Reader::Chunked(chunked) => match chunked.feed(new, |_| {}) {
                Ok(Step::More) => Ok(new.len()),
                Ok(Step::End(n)) => {
                    *self = Reader::Hold;
                    Ok(n)
                }
                Err(why) => {
                    log::debug!("refused a request body: {why}");
                    *self = Reader::Failed(why);
                    Err(refused(why))
                }
            },
            Reader::Through => Ok(new.len()),
            Reader::Failed(why) => Err(refused(*why)),
        }
    }
}

/// The bytes of `new` up to and including the first end of an empty
/// line, or all of them.
fn head_cut(seen: &mut u8, new: &[u8]) -> usize {
    for (i, &b) in new.iter().enumerate() {
        *seen = match (b, *seen) {
            (b'\n', 1 | 2) => {
                *seen = 0;
                return i + 1;
            }
            (b'\n', _) => 1,
            (b'\r', 1) => 2,
            _ => 0,
        };
    }
    new.len()
}

fn refused(why: Malformed) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// Whether `e` (an error Pingora passed on) comes from a chunked body this
/// stream refused.
pub fn is_malformed_body(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<io::Error>()
        .and_then(|io| io.get_ref())
        .is_some_and(|inner| inner.is::<Malformed>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cuts(reader: &mut Reader, bytes: &[u8]) -> Vec<usize> {
        let (mut at, mut out) = (0, Vec::new());
        while at < bytes.len() {
            let n = reader.admit(&bytes[at..]).unwrap();
            assert!(n > 0);
            at += n;
            out.push(at);
        }
        out
    }

    #[test]
    fn a_head_is_cut_at_each_empty_line() {
        let mut head = Reader::for_phase(Phase::HEAD, Body::Unknown);
        let req = b"POST / HTTP/1.1\r\nHost: a\r\n\r\n5\r\nhello";
        assert_eq!(cuts(&mut head, req), [28, req.len()]);
        let mut lf = Reader::for_phase(Phase::IDLE, Body::Chunked);
        assert_eq!(cuts(&mut lf, b"GET / HTTP/1.1\nHost: a\n\nX"), [24, 25]);
        let mut leading = Reader::Head(0);
        assert_eq!(cuts(&mut leading, b"\r\n\r\nGET"), [4, 7]);
        // Split inside the empty line.
        let mut split = Reader::Head(0);
        assert_eq!(split.admit(b"Host: a\r\n\r").unwrap(), 10);
        assert_eq!(split.admit(b"\nbody").unwrap(), 1);
    }

    #[test]
    fn a_chunked_body_is_cut_at_its_end_then_refused_when_broken() {
        let mut body = Reader::for_phase(Phase::BUSY, Body::Chunked);
        assert_eq!(body.admit(b"3\r\nabc\r\n0\r\n\r\nGET").unwrap(), 13);
        assert!(body.holds());
        let mut bad = Reader::for_phase(Phase::BUSY, Body::Chunked);
        let e = bad.admit(b"5;ext=1\nhello\r\n").unwrap_err();
        assert!(is_malformed_body(&e));
        assert!(bad.admit(b"0\r\n\r\n").is_err());
    }

    #[test]
    fn a_body_with_a_length_is_cut_at_its_end() {
        let mut body = Reader::for_phase(Phase::BUSY, Body::Length(5));
        assert_eq!(body.admit(b"hel").unwrap(), 3);
        assert_eq!(body.admit(b"loGET").unwrap(), 2);
        assert!(body.holds());
        assert!(Reader::for_phase(Phase::BUSY, Body::Length(0)).holds());
        let through = |phase, body| matches!(Reader::for_phase(phase, body), Reader::Through);
        assert!(through(Phase::BUSY, Body::Unknown));
        assert!(through(Phase::TUNNEL, Body::Length(0)));
    }
}
