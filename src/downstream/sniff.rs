//! Which protocol a client connection speaks, told from its first bytes:
//! HTTP/2 when ALPN chose it, or (with `h2c` on a plain listener) when the
//! bytes are the HTTP/2 connection preface; HTTP/1.1 otherwise.
//!
//! HTTP/2 connections are handed on only once the whole preface has
//! arrived, while the connection is still under `header_timeout`: a client
//! that stalls before it holds its connection no longer than one that
//! stalls in an HTTP/1.1 request head.

use bytes::BytesMut;

/// What every HTTP/2 client sends first (RFC 9113, section 3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection's protocol, with the bytes read to tell it.
pub enum Protocol {
    Http1(BytesMut),
    Http2(BytesMut),
}

/// What the bytes read so far say.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Http1,
    Http2,
    /// Too few bytes to tell, or to hand on a whole preface.
    More,
    /// ALPN chose `h2`, and the client sent something else.
    NotHttp2,
}

/// Tells the protocol from `first`, the bytes read so far; `alpn_h2` if
/// the TLS handshake chose `h2`, `h2c` if prior knowledge is accepted.
pub fn tell(first: &[u8], alpn_h2: bool, h2c: bool) -> Decision {
    if !alpn_h2 && !h2c {
        return Decision::Http1;
    }
    let whole = first.len() >= H2_PREFACE.len();
    let preface = if whole {
        first.starts_with(H2_PREFACE)
    } else {
        H2_PREFACE.starts_with(first)
    };
    match (preface, whole, alpn_h2) {
        (true, true, _) => Decision::Http2,
        (true, false, _) => Decision::More,
        (false, _, true) => Decision::NotHttp2,
        (false, _, false) => Decision::Http1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_without_h2c_is_http1_at_once() {
        assert_eq!(tell(b"PRI", false, false), Decision::Http1);
        assert_eq!(tell(H2_PREFACE, false, false), Decision::Http1);
    }

    #[test]
    fn h2c_needs_the_whole_preface() {
        assert_eq!(tell(b"PRI * HTTP/2", false, true), Decision::More);
        assert_eq!(tell(H2_PREFACE, false, true), Decision::Http2);
        let mut more = H2_PREFACE.to_vec();
        more.extend_from_slice(b"\0\0\0\x04");
        assert_eq!(tell(&more, false, true), Decision::Http2);
    }

    #[test]
    fn h2c_tells_http1_from_the_first_differing_byte() {
        assert_eq!(tell(b"GET / HTTP/1.1\r\n", false, true), Decision::Http1);
        // Shorter than the preface, and never to become it.
        assert_eq!(
            tell(b"GET / HTTP/1.0\r\n\r\n", false, true),
            Decision::Http1
        );
        assert_eq!(tell(b"PRJ", false, true), Decision::Http1);
    }

    #[test]
    fn alpn_h2_waits_for_the_preface_and_refuses_anything_else() {
        assert_eq!(tell(b"PRI", true, false), Decision::More);
        assert_eq!(tell(H2_PREFACE, true, false), Decision::Http2);
        assert_eq!(tell(b"GET", true, false), Decision::NotHttp2);
        assert_eq!(
            tell(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true, false),
            Decision::NotHttp2
        );
    }
}
