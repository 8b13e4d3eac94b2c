//! Request framing and request-target checks that Pingora leaves to the
//! application, and the normalisation of what is forwarded, so that a
//! backend never has to guess where a request ends or what it is for.
//!
//! Pingora already refuses (with 400, before any hook runs) a malformed
//! request line or header, an invalid or conflicting `Content-Length`, a
//! `Transfer-Encoding` whose last coding is not `chunked` and several
//! `Host` lines; it frames a request with both `Content-Length` and
//! `Transfer-Encoding` by the latter and closes the connection afterwards.
//! What is left is checked here, `CONNECT` included (405), which Pingora
//! lets through so that the answer is the proxy's own. A chunked body's
//! framing is checked as it arrives, by the client stream
//! (`downstream/chunked.rs`).

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderValue, Method, Version};
use pingora::http::authority::{raw_target_authority, RawTargetAuthority};
use pingora::http::RequestHeader;
use pingora::{Error, ErrorType};

use crate::config::Limits;

/// Why a request is answered locally instead of forwarded.
#[derive(Debug, PartialEq, Eq)]
pub struct Rejection {
    /// 400; 405 for `CONNECT`; 501 for a transfer coding the proxy does
    /// not implement.
    pub status: u16,
    pub why: &'static str,
}

fn reject(status: u16, why: &'static str) -> Result<(), Rejection> {
    Err(Rejection { status, why })
}

/// Checks a request against `[server]`'s limits: 414 for a long target,
/// 431 for too many or too large headers, 413 for a declared body too
/// large (a chunked one is counted as it arrives).
pub fn check_limits(req: &RequestHeader, limits: &Limits) -> Result<(), Rejection> {
    if req.raw_path().len() > limits.uri_bytes {
        return reject(414, "request target longer than max_uri_bytes");
    }
    if req.headers.len() > limits.headers {
        return reject(431, "more header fields than max_headers");
    }
    // As on the wire: "METHOD target HTTP/1.1\r\n", "name: value\r\n" each.
    let line = req.method.as_str().len() + req.raw_path().len() + 12;
    let fields: usize = req
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if line + fields > limits.header_bytes {
        return reject(431, "request header larger than max_header_bytes");
    }
    let declared = req
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let (Some(max), Some(length)) = (limits.body_bytes, declared) {
        if length > max {
            return reject(413, "request body larger than max_body_bytes");
        }
    }
    Ok(())
}

/// Checks a request Pingora has accepted: its target form, its `Host` and
/// its transfer codings.
pub fn check(req: &RequestHeader) -> Result<(), Rejection> {
    if req.method == Method::CONNECT {
        return reject(405, "CONNECT is not proxied");
    }
    check_target(req)?;
    check_host(req)?;
    check_transfer_encoding(req)
}

/// Origin-form (`/path`), absolute-form (`http://host/path`), or `*` for
/// `OPTIONS` (RFC 9112 section 3.2). Authority-form is for `CONNECT` only,
/// refused before this point.
fn check_target(req: &RequestHeader) -> Result<(), Rejection> {
    let target = req.raw_path();
    if target.starts_with(b"/") {
        return Ok(());
    }
    if target == b"*" {
        return if req.method == Method::OPTIONS {
            Ok(())
        } else {
            reject(400, "asterisk-form request target without OPTIONS")
        };
    }
    if let RawTargetAuthority::Absolute { scheme, .. } = raw_target_authority(target) {
        if scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https") {
            return Ok(());
        }
    }
    reject(
        400,
        "request target is neither origin-form nor absolute-form",
    )
}

/// HTTP/1.1 requires exactly one `Host` (RFC 9112 section 3.2); HTTP/1.0
/// may have none.
fn check_host(req: &RequestHeader) -> Result<(), Rejection> {
    match req.headers.get_all(HOST).iter().count() {
        0 if req.version == Version::HTTP_11 => reject(400, "HTTP/1.1 request without Host"),
        0 | 1 => Ok(()),
        _ => reject(400, "several Host header fields"),
    }
}

/// The only transfer coding forwarded is one `chunked`: Pingora decodes
/// chunks and re-frames the body for the backend, dropping the
/// `Transfer-Encoding` header, so any other coding would reach the backend
/// unlabelled (RFC 9112 section 6.1: 501 for a coding not understood), and
/// `chunked` twice is invalid (section 7: not more than once).
fn check_transfer_encoding(req: &RequestHeader) -> Result<(), Rejection> {
    let mut chunked = 0;
    for value in req.headers.get_all(TRANSFER_ENCODING) {
        for coding in value
            .as_bytes()
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
        {
            if coding.eq_ignore_ascii_case(b"chunked") {
                chunked += 1;
            } else if !coding.is_empty() {
                return reject(501, "unsupported transfer coding");
            }
        }
    }
    if chunked > 1 {
        return reject(400, "chunked applied more than once");
    }
    if chunked == 0 && req.headers.contains_key(TRANSFER_ENCODING) {
        // Empty or only commas: no framing a backend could agree on.
        return reject(400, "empty Transfer-Encoding");
    }
    Ok(())
}

/// Rewrites the request bound for a backend so its framing and target
/// cannot be read two ways: one `Content-Length` line (Pingora accepts
/// repeated equal values, RFC 9110 section 8.6, but passes them all on),
/// and origin-form with the target's authority as `Host` (RFC 9112
/// section 3.2.1: an origin server gets the path and query only).
pub fn normalise(req: &mut RequestHeader) -> pingora::Result<()> {
    if req.headers.get_all(CONTENT_LENGTH).iter().count() > 1
        || req
            .headers
            .get(CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes().contains(&b','))
    {
        let length = agreed_content_length(req).ok_or_else(|| {
            Error::explain(ErrorType::InvalidHTTPHeader, "conflicting Content-Length")
        })?;
        req.insert_header(CONTENT_LENGTH, length.to_string())?;
    }
    to_origin_form(req)
}

/// The one value every `Content-Length` line and list element agrees on.
pub(super) fn agreed_content_length(req: &RequestHeader) -> Option<u64> {
    let mut agreed = None;
    for value in req.headers.get_all(CONTENT_LENGTH) {
        for n in value.to_str().ok()?.split(',').map(str::trim) {
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let n: u64 = n.parse().ok()?;
            if agreed.replace(n).is_some_and(|prev| prev != n) {
                return None;
            }
        }
    }
    agreed
}

/// Pingora keeps an absolute-form target verbatim for the wire (its `uri`
/// holds only the path), so the rewrite works on the raw bytes, which also
/// keeps a non-UTF-8 path byte for byte.
fn to_origin_form(req: &mut RequestHeader) -> pingora::Result<()> {
    let RawTargetAuthority::Absolute {
        authority,
        path_and_query,
        ..
    } = raw_target_authority(req.raw_path())
    else {
        return Ok(());
    };
    let host = HeaderValue::from_bytes(authority)
        .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "authority as Host", e))?;
    let mut target = Vec::with_capacity(path_and_query.len() + 1);
    if !path_and_query.starts_with(b"/") {
        target.push(b'/');
    }
    target.extend_from_slice(path_and_query);
    req.set_raw_path(&target)?;
    req.insert_header(HOST, host)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build(method, target.as_bytes(), None).unwrap();
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).unwrap();
        }
        req
    }

    fn status(req: &RequestHeader) -> u16 {
        check(req).err().map_or(0, |r| r.status)
    }

    #[test]
    fn accepts_origin_absolute_and_options_asterisk() {
        let host = [("host", "a.test")];
        assert_eq!(status(&request("GET", "/p?q", &host)), 0);
        assert_eq!(status(&request("GET", "http://a.test/p", &host)), 0);
        assert_eq!(status(&request("GET", "HTTPS://a.test", &host)), 0);
        assert_eq!(status(&request("OPTIONS", "*", &host)), 0);
    }

    #[test]
    fn refuses_an_empty_transfer_encoding() {
        for te in ["", " ", ",", " , ,"] {
            let headers = [("host", "a.test"), ("transfer-encoding", te)];
            assert_eq!(status(&request("POST", "/", &headers)), 400, "{te:?}");
        }
        let chunked = [("host", "a.test"), ("transfer-encoding", ", chunked")];
        assert_eq!(status(&request("POST", "/", &chunked)), 0);
    }

    #[test]
    fn connect_is_refused_with_405() {
        let host = [("host", "a.test:443")];
        assert_eq!(status(&request("CONNECT", "a.test:443", &host)), 405);
    }

    #[test]
    fn refuses_other_target_forms() {
        let host = [("host", "a.test")];
        assert_eq!(status(&request("GET", "*", &host)), 400);
        assert_eq!(status(&request("GET", "a.test:80", &host)), 400);
        assert_eq!(status(&request("GET", "ftp://a.test/", &host)), 400);
    }

    #[test]
    fn http11_needs_exactly_one_host() {
        assert_eq!(status(&request("GET", "/", &[])), 400);
        let two = [("host", "a"), ("host", "a")];
        assert_eq!(status(&request("GET", "/", &two)), 400);
        let mut old = request("GET", "/", &[]);
        old.set_version(Version::HTTP_10);
        assert_eq!(status(&old), 0);
    }

    #[test]
    fn only_a_single_chunked_coding_is_accepted() {
        let te = |values: &[&'static str]| {
            let mut headers = vec![("host", "a")];
            headers.extend(values.iter().map(|v| ("transfer-encoding", *v)));
            status(&request("POST", "/", &headers))
        };
        assert_eq!(te(&["chunked"]), 0);
        assert_eq!(te(&["CHUNKED"]), 0);
        assert_eq!(te(&[" , chunked"]), 0);
        assert_eq!(te(&["chunked, chunked"]), 400);
        assert_eq!(te(&["chunked", "chunked"]), 400);
        assert_eq!(te(&["gzip, chunked"]), 501);
        assert_eq!(te(&["gzip", "chunked"]), 501);
        assert_eq!(te(&["identity, chunked"]), 501);
    }

    #[test]
    fn repeated_content_length_is_forwarded_once() {
        let mut req = request(
            "POST",
            "/",
            &[("content-length", "3"), ("content-length", "3, 3")],
        );
        normalise(&mut req).unwrap();
        let all: Vec<_> = req.headers.get_all(CONTENT_LENGTH).iter().collect();
        assert_eq!(all, ["3"]);
        let mut bad = request("POST", "/", &[("content-length", "3, 4")]);
        assert!(normalise(&mut bad).is_err());
    }

    #[test]
    fn absolute_form_becomes_origin_form_with_its_authority_as_host() {
        let mut req = request("GET", "http://a.test:8080/p?q=1", &[]);
        normalise(&mut req).unwrap();
        assert_eq!(req.raw_path(), b"/p?q=1");
        assert_eq!(req.headers["host"], "a.test:8080");
        let mut bare = request("GET", "http://a.test", &[("host", "a.test")]);
        normalise(&mut bare).unwrap();
        assert_eq!(bare.raw_path(), b"/");
        let mut query = request("GET", "http://a.test?q=1", &[("host", "a.test")]);
        normalise(&mut query).unwrap();
        assert_eq!(query.raw_path(), b"/?q=1");
        let mut origin = request("GET", "/x", &[("host", "h")]);
        normalise(&mut origin).unwrap();
        assert_eq!(origin.raw_path(), b"/x");
        assert_eq!(origin.headers["host"], "h");
    }
}
