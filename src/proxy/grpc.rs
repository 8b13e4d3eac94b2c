//! gRPC over the proxy: telling a gRPC request, the errors Switchyard
//! makes itself as gRPC errors (HTTP 200, trailers-only, a `grpc-status`
//! and a `grpc-message`, never a bare 502 that a client reports as
//! UNKNOWN), the deadline a client's `grpc-timeout` sets, and the status
//! of a backend's answer, for the metrics and passive ejection.

use std::time::Duration;

use http::HeaderMap;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::ServerSession;

/// Status codes, by number, as gRPC names them (`grpc_status` labels).
const NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// `grpc-status` 14: the one that says "try another backend".
pub const UNAVAILABLE: u8 = 14;

/// Whether `req` is a gRPC call: `content-type: application/grpc`, alone
/// or with a `+codec` or parameters. gRPC-Web (`application/grpc-web`)
/// answers in its own format, so it is not.
pub fn is_grpc(req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| is_grpc_type(v.as_bytes()))
}

fn is_grpc_type(v: &[u8]) -> bool {
    let Some(rest) = v
        .get(..16)
        .filter(|p| p.eq_ignore_ascii_case(b"application/grpc"))
        .map(|_| &v[16..])
    else {
        return false;
    };
    matches!(rest.first(), None | Some(b'+' | b';' | b' '))
}

/// The label for a status code: its name, or `"OTHER"` beyond the 17
/// gRPC defines, so the label set stays bounded.
pub fn status_name(code: u8) -> &'static str {
    NAMES.get(code as usize).copied().unwrap_or("OTHER")
}

/// The `grpc-status` of `headers` (a trailers-only answer's head, or a
/// response's trailers), if it has a valid one.
pub fn status_of(headers: &HeaderMap) -> Option<u8> {
    let v = headers.get("grpc-status")?.to_str().ok()?;
    v.trim().parse::<u16>().ok().map(|c| c.min(255) as u8)
}

/// A client's `grpc-timeout` (`1..=8` digits and a unit: `H`, `M`, `S`,
/// `m`, `u`, `n`); `None` when absent or malformed, as gRPC servers treat
/// a malformed one.
pub fn timeout(req: &RequestHeader) -> Option<Duration> {
    let v = req.headers.get("grpc-timeout")?.as_bytes();
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The gRPC status and message for a request Switchyard answers itself
/// with HTTP `code`.
pub fn local_status(code: u16) -> (u8, &'static str) {
    match code {
        502 => (UNAVAILABLE, "the backend failed before answering"),
        503 => (UNAVAILABLE, "no backend is available"),
        504 => (4, "the backend did not answer within the deadline"),
        408 => (4, "the request did not arrive in time"),
        413 | 414 | 429 | 431 => (8, "the request exceeds a limit of the proxy"),
        404 => (12, "no route for this method"),
        400 => (13, "the request is malformed"),
        _ => (2, "the proxy could not serve the request"),
    }
}

/// Answers the gRPC request of `session` with the status for HTTP `code`:
/// HTTP 200, `content-type: application/grpc`, and the status in the head
/// itself (trailers-only), which ends the stream; `server` as its
/// `Server` header. Does nothing if a response has already started.
pub async fn respond(
    session: &mut ServerSession,
    code: u16,
    request_id: &str,
    server: Option<&http::HeaderValue>,
) -> pingora::Result<u8> {
    let (status, message) = local_status(code);
    let mut resp = ResponseHeader::build(200, Some(6))?;
    super::errors::set_server(&mut resp, server)?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/grpc")?;
    resp.insert_header("grpc-status", status.to_string())?;
    resp.insert_header("grpc-message", format!("{message} ({code})"))?;
    resp.insert_header(super::headers::X_REQUEST_ID, request_id)?;
    match session {
        ServerSession::H2(h2) => {
            if h2.response_written().is_none() {
                h2.write_response_header(Box::new(resp), true)?;
            }
        }
        _ => {
            resp.set_content_length(0)?;
            session
                .write_error_response(resp, bytes::Bytes::new())
                .await?;
        }
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("POST", b"/pkg.Svc/Call", None).unwrap();
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).unwrap();
        }
        req
    }

    #[test]
    fn grpc_is_told_by_its_content_type() {
        for t in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC+json",
            "application/grpc; charset=utf-8",
        ] {
            assert!(is_grpc(&request(&[("content-type", t)])), "{t}");
        }
        for t in [
            "application/grpc-web",
            "application/grpcx",
            "text/plain",
            "",
        ] {
            assert!(!is_grpc(&request(&[("content-type", t)])), "{t}");
        }
        assert!(!is_grpc(&request(&[])));
    }

    #[test]
    fn grpc_timeouts_are_read_in_every_unit() {
        let t = |v: &str| timeout(&request(&[("grpc-timeout", v)]));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("2M"), Some(Duration::from_secs(120)));
        assert_eq!(t("3S"), Some(Duration::from_secs(3)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("7u"), Some(Duration::from_micros(7)));
        assert_eq!(t("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "123456789m", "10x", "-1S", "1.5S", "10 S"] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn statuses_have_bounded_names() {
        assert_eq!(status_name(0), "OK");
        assert_eq!(status_name(14), "UNAVAILABLE");
        assert_eq!(status_name(16), "UNAUTHENTICATED");
        assert_eq!(status_name(17), "OTHER");
        let mut h = HeaderMap::new();
        h.insert("grpc-status", "14".parse().unwrap());
        assert_eq!(status_of(&h), Some(14));
        h.insert("grpc-status", "x".parse().unwrap());
        assert_eq!(status_of(&h), None);
    }

    #[test]
    fn local_errors_map_as_the_issue_asks() {
        assert_eq!(local_status(502).0, UNAVAILABLE);
        assert_eq!(local_status(503).0, UNAVAILABLE);
        assert_eq!(local_status(504).0, 4);
        assert_eq!(local_status(413).0, 8);
        assert_eq!(local_status(431).0, 8);
    }
}
