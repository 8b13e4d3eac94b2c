//! The responses a client connection gets before any of the proxy's hooks
//! run, made to say `[server] server_header` as every other local one does.
//!
//! Pingora answers a request head it cannot parse (400) itself, inside
//! `HttpProxy::handle_new_request`, before a `Session` or any `ProxyHttp`
//! hook exists, with its error page builder's `Server: Pingora`. Nothing
//! of the proxy's runs for it; what runs is the client stream, so it
//! rewrites that one line: whatever is written while the connection is
//! still waiting for a request head (the proxy marks the head as read
//! first thing) can only be Pingora's own answer.

use http::HeaderValue;

/// What a connection over `max_connections` is told before it is closed.
pub(super) fn refused(server: Option<&HeaderValue>) -> Vec<u8> {
    let mut out = b"HTTP/1.1 503 Service Unavailable\r\n".to_vec();
    push_server(&mut out, server);
    out.extend_from_slice(
        b"Content-Type: text/plain; charset=utf-8\r\n\
          Content-Length: 26\r\n\
          Retry-After: 1\r\n\
          Connection: close\r\n\r\n\
          too many open connections\n",
    );
    out
}

/// `bytes` with the `Server` lines of the response head they start with
/// replaced by `server` (or dropped when it is `None`); `None` when they
/// are not a whole response head with a `Server` line.
pub(super) fn with_server(bytes: &[u8], server: Option<&HeaderValue>) -> Option<Vec<u8>> {
    if !bytes.starts_with(b"HTTP/1.") {
        return None;
    }
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 2;
    let (head, rest) = bytes.split_at(end);
    let mut lines = head.split_inclusive(|&b| b == b'\n');
    let status = lines.next()?;
    let is_server = |line: &[u8]| line.len() > 7 && line[..7].eq_ignore_ascii_case(b"server:");
    let mut found = false;
    let mut out = status.to_vec();
    for line in lines {
        if !is_server(line) {
            out.extend_from_slice(line);
        } else if !std::mem::replace(&mut found, true) {
            push_server(&mut out, server);
        }
    }
    found.then(|| {
        out.extend_from_slice(rest);
        out
    })
}

fn push_server(out: &mut Vec<u8>, server: Option<&HeaderValue>) {
    if let Some(server) = server {
        out.extend_from_slice(b"Server: ");
        out.extend_from_slice(server.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINGORA_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\nServer: Pingora\r\n\
        Date: Tue, 01 Dec 2026 15:00:00 GMT\r\nContent-Length: 0\r\n\
        Cache-Control: private, no-store\r\nConnection: close\r\n\r\n";

    fn text(bytes: Option<Vec<u8>>) -> String {
        String::from_utf8(bytes.expect("rewritten")).unwrap()
    }

    #[test]
    fn pingoras_server_line_is_replaced_or_dropped() {
        let ours = HeaderValue::from_static("switchyard");
        let out = text(with_server(PINGORA_400, Some(&ours)));
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\nServer: switchyard\r\nDate:"));
        assert!(out.ends_with("Connection: close\r\n\r\n"), "{out}");
        assert_eq!(out.len(), PINGORA_400.len() + 3);
        let none = text(with_server(PINGORA_400, None));
        assert!(!none.to_ascii_lowercase().contains("server"), "{none}");
        assert!(none.ends_with("\r\n\r\n"));
    }

    #[test]
    fn anything_else_is_left_alone() {
        let ours = HeaderValue::from_static("x");
        for bytes in [
            &b"HTTP/1.1 100 Continue\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\nServer: Pin",
            b"hello",
            b"HTTP/1.1 200 OK\r\nX-Server: a\r\n\r\n",
        ] {
            assert_eq!(with_server(bytes, Some(&ours)), None);
        }
    }

    #[test]
    fn the_refusal_says_the_server_it_is_given() {
        let ours = HeaderValue::from_static("edge");
        let with = String::from_utf8(refused(Some(&ours))).unwrap();
        assert!(with.contains("\r\nServer: edge\r\n"));
        assert!(with.ends_with("\r\n\r\ntoo many open connections\n"));
        assert!(!String::from_utf8(refused(None)).unwrap().contains("Server"));
    }
}
