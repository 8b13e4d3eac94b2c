//! A way in for the fuzz targets and property tests, not an API: arbitrary
//! bytes become a request as Pingora hands it to the proxy, go through the
//! proxy's own checks and rewrites (framing, limits, request id, forwarded
//! headers), and what would reach a backend must keep their promises; or
//! they become a chunked body for the client stream's reader
//! ([`chunked_body`]).
//!
//! Input: one flags byte, then lines split on `\n`: `METHOD TARGET`, then
//! `name:value` header lines. Flags: bit 0 HTTP/1.0 (else 1.1); bits 1-2
//! the client address (IPv4, IPv6, none, none); bit 3 small `[server]`
//! limits instead of the defaults. A request the `http` crate refuses to
//! build is skipped, as Pingora's parser would not produce it either.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderValue, Method, Version};
use pingora::http::authority::{raw_target_authority, RawTargetAuthority};
use pingora::http::RequestHeader;

mod chunked;

pub use chunked::chunked_body;

use super::framing;
use super::headers::{self, MAX_REQUEST_ID_LEN, X_FORWARDED_FOR, X_FORWARDED_HOST};
use super::headers::{X_FORWARDED_PROTO, X_REQUEST_ID};
use crate::config::Limits;

/// Runs one input through the request path; panics if a promise is broken.
pub fn request(data: &[u8]) {
    let Some((flags, rest)) = data.split_first() else {
        return;
    };
    let Some(mut req) = build(*flags, rest) else {
        return;
    };
    let client = client_ip(*flags);
    let limits = limits(*flags);
    // `request_filter`: the id first, whatever the request.
    let id = headers::request_id(&req);
    check_request_id(&req, &id);
    if !pingora_accepts(&mut req)
        || framing::check(&req).is_err()
        || framing::check_limits(&req, &limits).is_err()
    {
        return;
    }
    // `upstream_request_filter`.
    let host_before = req.headers.get(HOST).cloned();
    let authority = match raw_target_authority(req.raw_path()) {
        RawTargetAuthority::Absolute { authority, .. } => Some(authority.to_vec()),
        _ => None,
    };
    if framing::normalise(&mut req).is_err() {
        return;
    }
    let forwarded = headers::add_forwarded(&mut req, client, false, &id);
    assert!(forwarded.is_ok(), "an accepted request cannot be forwarded");
    check_framing(&req);
    check_target_and_host(&req, host_before.as_ref(), authority.as_deref());
    check_forwarded(&req, client, &id);
}

/// The request the input describes, if the `http` crate accepts it.
fn build(flags: u8, rest: &[u8]) -> Option<RequestHeader> {
    let mut lines = rest.split(|&b| b == b'\n');
    let line = lines.next()?;
    let space = line.iter().position(|&b| b == b' ')?;
    let method = Method::from_bytes(&line[..space]).ok()?;
    let mut req = RequestHeader::build(method, &line[space + 1..], None).ok()?;
    if flags & 1 != 0 {
        req.set_version(Version::HTTP_10);
    }
    // A line the `http` crate refuses is left out rather than the whole
    // input, so one bad line does not hide the rest from the checks.
    for header in lines {
        let Some(colon) = header.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = Bytes::copy_from_slice(&header[..colon]);
        if let Ok(value) = HeaderValue::from_bytes(header[colon + 1..].trim_ascii()) {
            let _ = req.append_header(name, value);
        }
    }
    Some(req)
}

fn client_ip(flags: u8) -> Option<IpAddr> {
    match (flags >> 1) & 3 {
        0 => Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))),
        1 => Some(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7))),
        _ => None,
    }
}

fn limits(flags: u8) -> Limits {
    if flags & 8 == 0 {
        return Limits::default();
    }
    Limits {
        header_bytes: 1024,
        headers: 8,
        uri_bytes: 64,
        body_bytes: Some(100),
    }
}

/// What Pingora's HTTP/1 reader does before any hook: it drops
/// `Content-Length` beside `Transfer-Encoding`, and refuses a
/// `Content-Length` that is not one number, `Transfer-Encoding` in
/// HTTP/1.0, and a last transfer coding that is not `chunked`.
fn pingora_accepts(req: &mut RequestHeader) -> bool {
    let Some(last) = req.headers.get_all(TRANSFER_ENCODING).iter().next_back() else {
        return !req.headers.contains_key(CONTENT_LENGTH)
            || framing::agreed_content_length(req).is_some();
    };
    let last_coding = last.as_bytes().split(|&b| b == b',').next_back();
    let chunked = last_coding.is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
    req.remove_header(&CONTENT_LENGTH);
    chunked && req.version != Version::HTTP_10
}

fn count(req: &RequestHeader, name: &str) -> usize {
    req.headers.get_all(name).iter().count()
}

/// The id is the client's if that was valid, and always a short visible token.
fn check_request_id(req: &RequestHeader, id: &str) {
    assert!((1..=MAX_REQUEST_ID_LEN).contains(&id.len()), "id {id:?}");
    assert!(id.bytes().all(|b| b.is_ascii_graphic()), "id {id:?}");
    let theirs = req.headers.get(X_REQUEST_ID).and_then(|v| v.to_str().ok());
    if let Some(theirs) = theirs.filter(|t| headers::is_valid_request_id(t)) {
        assert_eq!(id, theirs, "a valid client id is kept");
    }
}

/// One framing, stated once: a single all-digit `Content-Length`, or one
/// `chunked` coding and no `Content-Length`.
fn check_framing(req: &RequestHeader) {
    let lengths: Vec<&HeaderValue> = req.headers.get_all(CONTENT_LENGTH).iter().collect();
    assert!(lengths.len() <= 1, "Content-Length {lengths:?}");
    if let Some(length) = lengths.first() {
        let digits = length.as_bytes();
        assert!(!digits.is_empty() && digits.iter().all(u8::is_ascii_digit));
    }
    let codings: Vec<&[u8]> = req
        .headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty())
        .collect();
    if req.headers.contains_key(TRANSFER_ENCODING) {
        assert!(
            lengths.is_empty(),
            "both Content-Length and Transfer-Encoding"
        );
        assert!(
            matches!(codings[..], [c] if c.eq_ignore_ascii_case(b"chunked")),
            "codings {codings:?}"
        );
    }
}

/// Origin-form (or `*` for OPTIONS) with exactly the one `Host` the backend
/// should see: the absolute-form target's `authority`, else the client's.
fn check_target_and_host(
    req: &RequestHeader,
    host_before: Option<&HeaderValue>,
    authority: Option<&[u8]>,
) {
    let target = req.raw_path();
    assert!(
        target.starts_with(b"/") || (target == b"*" && req.method == Method::OPTIONS),
        "target {:?}",
        target.escape_ascii().to_string()
    );
    let hosts = count(req, HOST.as_str());
    if req.version == Version::HTTP_11 {
        assert_eq!(hosts, 1, "HTTP/1.1 without exactly one Host");
    } else {
        assert!(hosts <= 1);
    }
    let host = req.headers.get(HOST);
    match authority {
        Some(authority) => assert_eq!(host.map(HeaderValue::as_bytes), Some(authority)),
        None => assert_eq!(host, host_before),
    }
}

/// One of each forwarded header; `X-Forwarded-For` ends with the client.
fn check_forwarded(req: &RequestHeader, client: Option<IpAddr>, id: &str) {
    for name in [X_FORWARDED_PROTO, X_REQUEST_ID] {
        assert_eq!(count(req, name), 1, "{name}");
    }
    assert_eq!(req.headers[X_FORWARDED_PROTO], "http");
    assert_eq!(req.headers[X_REQUEST_ID], id);
    assert!(count(req, X_FORWARDED_FOR) <= 1);
    if let Some(ip) = client {
        let xff = req.headers.get(X_FORWARDED_FOR).expect("X-Forwarded-For");
        let ip = ip.to_string();
        assert!(xff.as_bytes().ends_with(ip.as_bytes()), "{xff:?} for {ip}");
    }
    let forwarded_host = req
        .headers
        .get_all(X_FORWARDED_HOST)
        .iter()
        .collect::<Vec<_>>();
    match req.headers.get(HOST) {
        Some(host) => assert_eq!(forwarded_host, [host]),
        None => assert!(forwarded_host.is_empty()),
    }
}

/// The same entry point on random structured input, so `cargo test` covers
/// it without a nightly toolchain.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// The header names the proxy reads or writes, and a few others.
    const NAMES: &[&str] = &[
        "host",
        "Host",
        "content-length",
        "transfer-encoding",
        "x-request-id",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "connection",
        "idempotency-key",
        "x-other",
    ];

    fn method() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => prop::sample::select(vec!["GET", "POST", "OPTIONS", "PUT", "HEAD", "TRACE"])
                .prop_map(|m| m.as_bytes().to_vec()),
            1 => prop::collection::vec(any::<u8>(), 0..8),
        ]
    }

    fn target() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            5 => "/[a-z0-9/?=&%.]{0,80}".prop_map(String::into_bytes),
            3 => "(http|https|HTTP|ftp)://[a-z0-9.:@\\[\\]-]{0,20}(/[a-z?=]{0,10})?"
                .prop_map(String::into_bytes),
            1 => Just(b"*".to_vec()),
            1 => bytes(40),
        ]
    }

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), 0..max)
    }

    fn text(re: &'static str) -> BoxedStrategy<Vec<u8>> {
        re.prop_map(String::into_bytes).boxed()
    }

    /// One header line, or two where it takes two (a repeated length).
    fn header() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
        let one = |name: &'static str, value: BoxedStrategy<Vec<u8>>| {
            value.prop_map(move |v| vec![(name.to_string(), v)])
        };
        let codings = "(chunked|CHUNKED| , chunked|gzip, chunked|chunked, chunked|identity|,)";
        prop_oneof![
            one("content-length", text("[0-9]{1,4}(, ?[0-9]{1,4})?")),
            "[0-9]{1,3}".prop_map(|n| vec![
                ("Content-Length".to_string(), n.clone().into_bytes()),
                (
                    "content-length".to_string(),
                    format!("{n}, {n}").into_bytes()
                ),
            ]),
            one("transfer-encoding", text(codings)),
            one("x-request-id", text("[a-zA-Z0-9._:+/=-]{0,140}")),
            one("x-request-id", bytes(30).boxed()),
            one(
                "x-forwarded-for",
                text("[0-9.]{1,15}(, [0-9a-f:.]{1,20}){0,3}")
            ),
            one("x-forwarded-host", bytes(20).boxed()),
            one("x-forwarded-proto", text("https?")),
            one("host", text("[a-z0-9.-]{1,12}(:[0-9]{1,5})?")),
            (prop::sample::select(NAMES), bytes(30)).prop_map(|(n, v)| vec![(n.to_string(), v)]),
            (bytes(10), bytes(30))
                .prop_map(|(n, v)| vec![(String::from_utf8_lossy(&n).into_owned(), v)]),
        ]
    }

    fn encode(flags: u8, method: &[u8], target: &[u8], headers: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut out = vec![flags];
        out.extend_from_slice(method);
        out.push(b' ');
        out.extend_from_slice(target);
        for (name, value) in headers {
            out.push(b'\n');
            out.extend_from_slice(name.as_bytes());
            out.push(b':');
            out.extend_from_slice(value);
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn requests_keep_the_proxys_promises(
            flags in any::<u8>(),
            method in method(),
            target in target(),
            host in prop::option::weighted(0.8, "[a-z0-9.-]{1,12}(:[0-9]{1,5})?"),
            headers in prop::collection::vec(header(), 0..7),
        ) {
            // HTTP/1.1 needs one Host; most inputs have it, to get further.
            let mut headers: Vec<_> = headers.into_iter().flatten().collect();
            if let Some(host) = host {
                headers.insert(0, ("host".to_string(), host.into_bytes()));
            }
            request(&encode(flags, &method, &target, &headers));
        }

        #[test]
        fn any_bytes_are_handled(data in prop::collection::vec(any::<u8>(), 0..200)) {
            request(&data);
        }
    }

    #[test]
    fn an_ordinary_request_gets_through_to_the_checks() {
        let headers = [
            ("host".to_string(), b"a.test".to_vec()),
            ("x-forwarded-for".to_string(), b"10.0.0.1".to_vec()),
            ("content-length".to_string(), b"3, 3".to_vec()),
        ];
        let data = encode(0, b"POST", b"http://b.test/p", &headers);
        let mut req = build(0, &data[1..]).expect("builds");
        assert!(pingora_accepts(&mut req));
        assert!(framing::check(&req).is_ok());
        request(&data);
    }
}
