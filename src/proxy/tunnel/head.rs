//! The heads of a tunnel's handshake: which upgrade requests become
//! tunnels, the request head as its backend gets it, and the `101` head as
//! the client gets it.

use bytes::{BufMut, BytesMut};
use http::header::{CONNECTION, HOST, UPGRADE};
use http::HeaderName;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;

/// What becomes of an admitted request that may ask for an upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// No upgrade asked for (or HTTP/2, which has none).
    Plain,
    /// An upgrade Switchyard carries: a tunnel if the backend says `101`.
    Tunnel,
    /// An upgrade Switchyard declines: it is forwarded as a plain request,
    /// without its `Upgrade` (RFC 9110 section 7.8 lets the receiving side
    /// ignore it).
    Declined,
}

/// Fields that concern one connection only (RFC 9110 section 7.6.1, and
/// the de-facto ones): never forwarded as the client sent them.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

/// Decides what `session`'s request becomes. An upgrade is declined when
/// it carries a body (the new protocol would start after a body the proxy
/// has not read), when it also asks to close the connection, or when it
/// asks for `h2c`: HTTP/2 in a tunnel would carry many requests to one
/// backend, past routing and balancing (clients get HTTP/2 by prior
/// knowledge instead, with `[server] h2c`).
pub(super) fn classify(session: &mut Session) -> Kind {
    if session.is_http2() || !session.is_upgrade_req() {
        return Kind::Plain;
    }
    let req = session.req_header();
    let h2c = tokens(req, UPGRADE).any(|t| t.eq_ignore_ascii_case(b"h2c"));
    let close = tokens(req, CONNECTION).any(|t| t.eq_ignore_ascii_case(b"close"));
    if h2c || close || !session.is_body_empty() {
        return Kind::Declined;
    }
    Kind::Tunnel
}

/// Takes the upgrade out of a declined request: without `Upgrade` it is a
/// plain request to Pingora too, so a `101` to it is refused as the
/// protocol error it is.
pub(super) fn decline(req: &mut RequestHeader) {
    req.remove_header(&UPGRADE);
}

/// Rewrites the client's request head for the backend as an upgrade:
/// the fields the client's `Connection` names and the hop-by-hop ones go
/// (`Host` stays, even if `Connection` names it), then `Connection:
/// Upgrade` and the client's `Upgrade` (`websocket` in that spelling) come
/// back.
pub(super) fn for_backend(req: &mut RequestHeader) -> pingora::Result<()> {
    let protocol = req.headers.get(UPGRADE).cloned();
    let named: Vec<HeaderName> = tokens(req, CONNECTION)
        .filter_map(|t| HeaderName::from_bytes(t).ok())
        .filter(|name| *name != HOST)
        .collect();
    for name in named.iter().chain(&HOP_BY_HOP.map(HeaderName::from_static)) {
        req.remove_header(name);
    }
    req.insert_header(CONNECTION, "Upgrade")?;
    match protocol {
        Some(p) if p.as_bytes().eq_ignore_ascii_case(b"websocket") => {
            req.insert_header(UPGRADE, "websocket")?
        }
        Some(p) => req.insert_header(UPGRADE, p)?,
        None => {}
    }
    Ok(())
}

/// The comma-separated tokens of every `name` field of `req`, trimmed.
fn tokens(req: &RequestHeader, name: HeaderName) -> impl Iterator<Item = &[u8]> {
    req.headers
        .get_all(name)
        .into_iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// `resp` (a `101`) as HTTP/1.1 bytes, its fields as the backend spelled
/// them.
pub(super) fn to_wire(resp: &ResponseHeader) -> BytesMut {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_slice(b"HTTP/1.1 ");
    buf.put_slice(resp.status.as_str().as_bytes());
    buf.put_u8(b' ');
    buf.put_slice(resp.get_reason_phrase().unwrap_or_default().as_bytes());
    buf.put_slice(b"\r\n");
    resp.header_to_h1_wire(&mut buf);
    buf.put_slice(b"\r\n");
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/chat", None).unwrap();
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).unwrap();
        }
        req
    }

    fn all(req: &RequestHeader, name: &str) -> Vec<String> {
        let values = req.headers.get_all(name).iter();
        values.map(|v| v.to_str().unwrap().to_string()).collect()
    }

    #[test]
    fn a_websocket_upgrade_keeps_its_handshake_and_loses_hop_by_hop_fields() {
        let mut req = request(&[
            ("host", "chat.test"),
            ("connection", "keep-alive, Upgrade, X-Secret"),
            ("upgrade", "WebSocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
            ("x-secret", "for the proxy only"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic eDp5"),
        ]);
        for_backend(&mut req).unwrap();
        assert_eq!(all(&req, "connection"), ["Upgrade"]);
        assert_eq!(all(&req, "upgrade"), ["websocket"]);
        assert_eq!(all(&req, "sec-websocket-key"), ["dGhlIHNhbXBsZSBub25jZQ=="]);
        assert_eq!(all(&req, "sec-websocket-version"), ["13"]);
        assert_eq!(all(&req, "host"), ["chat.test"]);
        for gone in ["x-secret", "keep-alive", "te", "proxy-authorization"] {
            assert!(all(&req, gone).is_empty(), "{gone} forwarded");
        }
    }

    #[test]
    fn another_protocol_is_asked_for_as_the_client_wrote_it() {
        let mut req = request(&[
            ("host", "a.test"),
            ("connection", "upgrade, host"),
            ("upgrade", "example/1, other/2"),
        ]);
        for_backend(&mut req).unwrap();
        assert_eq!(all(&req, "upgrade"), ["example/1, other/2"]);
        assert_eq!(all(&req, "connection"), ["Upgrade"]);
        // Naming Host in Connection cannot take it away.
        assert_eq!(all(&req, "host"), ["a.test"]);
    }

    #[test]
    fn tokens_are_split_and_trimmed_across_lines() {
        let req = request(&[("connection", " a ,, b"), ("connection", "c")]);
        let got: Vec<&[u8]> = tokens(&req, CONNECTION).collect();
        assert_eq!(got, [&b"a"[..], b"b", b"c"]);
    }

    #[test]
    fn declining_removes_the_upgrade() {
        let mut req = request(&[("connection", "Upgrade"), ("upgrade", "h2c")]);
        decline(&mut req);
        assert!(all(&req, "upgrade").is_empty());
    }

    #[test]
    fn a_101_goes_out_as_http11_with_its_fields() {
        let mut resp = ResponseHeader::build(101, None).unwrap();
        resp.append_header("Upgrade", "websocket").unwrap();
        resp.append_header("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            .unwrap();
        let wire = to_wire(&resp);
        assert_eq!(
            &wire[..],
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }
}
