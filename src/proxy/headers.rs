//! The headers the proxy adds on the way to a backend: `X-Forwarded-*`
//! (`-Prefix` for a stripped route prefix) and `X-Request-Id`.

use std::fmt::Write;
use std::net::IpAddr;

use http::header::HOST;
use http::HeaderValue;
use pingora::http::RequestHeader;
use pingora::{ErrorType::InvalidHTTPHeader, OrErr};

pub const X_REQUEST_ID: &str = "x-request-id";
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";
pub const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
pub const X_FORWARDED_HOST: &str = "x-forwarded-host";
pub const X_FORWARDED_PREFIX: &str = "x-forwarded-prefix";

/// Longest client-sent request id that is kept.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The client's `X-Request-Id` if it is a sane token (1 to 128 characters of
/// letters, digits and `-_.:+/=`), else a new random UUID.
pub fn request_id(req: &RequestHeader) -> String {
    req.headers
        .get(X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_valid_request_id(v))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

pub(super) fn is_valid_request_id(v: &str) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=".contains(&b))
}

/// `X-Forwarded-Prefix`: the prefix a route stripped (so that an app can
/// build its own URLs), or none; one the client sent never passes, since
/// this proxy is where the path was decided.
pub fn set_forwarded_prefix(req: &mut RequestHeader, prefix: Option<&str>) -> pingora::Result<()> {
    match prefix {
        Some(p) => req.insert_header(X_FORWARDED_PREFIX, p)?,
        None => {
            if req.headers.contains_key(X_FORWARDED_PREFIX) {
                req.remove_header(X_FORWARDED_PREFIX);
            }
        }
    }
    Ok(())
}

/// Whether the client accepts trailers: a `TE` that lists `trailers`.
/// Read before the hop-by-hop fields are dropped on the way to the
/// backend, `TE` among them.
pub fn asks_trailers(req: &RequestHeader) -> bool {
    req.headers.get_all(http::header::TE).iter().any(|v| {
        v.as_bytes().split(|&b| b == b',').any(|t| {
            let name = t.split(|&b| b == b';').next().unwrap_or_default();
            name.trim_ascii().eq_ignore_ascii_case(b"trailers")
        })
    })
}

/// `TE` for an HTTP/2 backend, where it may only say `trailers` (RFC
/// 9113, 8.2.2): `trailers` when the client accepts them (gRPC servers
/// require it), else none.
pub fn te_for_http2(req: &mut RequestHeader, trailers: bool) -> pingora::Result<()> {
    req.remove_header(&http::header::TE);
    if trailers {
        req.insert_header(http::header::TE, HeaderValue::from_static("trailers"))?;
    }
    Ok(())
}

/// Adds the forwarding headers to a request bound for a backend.
///
/// `X-Forwarded-For` keeps what the client sent and appends the client's IP;
/// `X-Forwarded-Proto` (`https` if `tls`) and `X-Forwarded-Host` are
/// replaced, since this proxy is where the client connected. `Host` is left
/// as the client sent it.
pub fn add_forwarded(
    req: &mut RequestHeader,
    client_ip: Option<IpAddr>,
    tls: bool,
    request_id: &str,
) -> pingora::Result<()> {
    let mut ip = IpText::default();
    if let Some(addr) = client_ip {
        // An address always fits: at most 45 bytes, for IPv6 written with
        // an IPv4 tail.
        let _ = write!(ip, "{addr}");
    }
    let mut prior = req.headers.get_all(X_FORWARDED_FOR).iter().peekable();
    let xff = if prior.peek().is_none() {
        // The common case: the client sent none, so the value is the address.
        (!ip.as_bytes().is_empty()).then(|| HeaderValue::from_bytes(ip.as_bytes()))
    } else {
        let mut list: Vec<u8> = Vec::new();
        for value in prior {
            if !list.is_empty() {
                list.extend_from_slice(b", ");
            }
            list.extend_from_slice(value.as_bytes());
        }
        if !ip.as_bytes().is_empty() {
            if !list.is_empty() {
                list.extend_from_slice(b", ");
            }
            list.extend_from_slice(ip.as_bytes());
        }
        (!list.is_empty()).then(|| HeaderValue::from_bytes(&list))
    };
    if let Some(xff) = xff {
        let xff = xff.or_err(InvalidHTTPHeader, "invalid X-Forwarded-For")?;
        req.insert_header(X_FORWARDED_FOR, xff)?;
    }
    let proto = if tls { "https" } else { "http" };
    req.insert_header(X_FORWARDED_PROTO, HeaderValue::from_static(proto))?;
    // Values are shared buffers: these clones copy no bytes.
    let host = req.headers.get(HOST).cloned().or_else(|| {
        let authority = req.uri.authority()?;
        HeaderValue::from_str(authority.as_str()).ok()
    });
    match host {
        Some(h) => req.insert_header(X_FORWARDED_HOST, h)?,
        None => {
            req.remove_header(X_FORWARDED_HOST);
        }
    }
    req.insert_header(X_REQUEST_ID, request_id)?;
    Ok(())
}

/// A client address as text, on the stack.
struct IpText {
    bytes: [u8; 48],
    len: usize,
}

impl Default for IpText {
    fn default() -> Self {
        IpText {
            bytes: [0; 48],
            len: 0,
        }
    }
}

impl IpText {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let room = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        room.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).unwrap();
        }
        req
    }

    #[test]
    fn te_reaches_an_http2_backend_only_as_trailers() {
        let te = |values: &[&str]| {
            let headers: Vec<(&str, &str)> = values.iter().map(|v| ("te", *v)).collect();
            let mut req = request(&headers);
            let trailers = asks_trailers(&req);
            te_for_http2(&mut req, trailers).unwrap();
            let out: Vec<_> = req.headers.get_all("te").iter().cloned().collect();
            out
        };
        assert_eq!(te(&["trailers"]), ["trailers"]);
        assert_eq!(te(&["gzip, Trailers"]), ["trailers"]);
        assert_eq!(te(&["gzip", "trailers;q=1"]), ["trailers"]);
        assert!(te(&["gzip"]).is_empty());
        assert!(te(&["trailersx"]).is_empty());
        assert!(te(&[]).is_empty());
    }

    #[test]
    fn keeps_a_valid_request_id_and_replaces_others() {
        assert_eq!(
            request_id(&request(&[("x-request-id", "abc-123")])),
            "abc-123"
        );
        for bad in ["", "has space", &"x".repeat(129), "semi;colon"] {
            let id = request_id(&request(&[("x-request-id", bad)]));
            assert_ne!(id, bad);
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        }
    }

    #[test]
    fn appends_client_ip_to_forwarded_for() {
        let mut req = request(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("host", "example.test"),
            ("x-forwarded-proto", "https"),
        ]);
        let mut over_tls = req.clone();
        add_forwarded(&mut req, Some("192.0.2.7".parse().unwrap()), false, "rid").unwrap();
        add_forwarded(&mut over_tls, None, true, "rid").unwrap();
        let get = |k: &str| req.headers.get(k).unwrap().to_str().unwrap().to_string();
        assert_eq!(get("x-forwarded-for"), "10.0.0.1, 10.0.0.2, 192.0.2.7");
        // What the client claimed is replaced by what this proxy saw.
        assert_eq!(get("x-forwarded-proto"), "http");
        assert_eq!(over_tls.headers.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(get("x-forwarded-host"), "example.test");
        assert_eq!(get("x-request-id"), "rid");
        assert_eq!(get("host"), "example.test");
    }

    #[test]
    fn forwarded_for_without_prior_values_or_with_empty_ones() {
        let xff = |headers: &[(&str, &str)], ip: Option<&str>| {
            let mut req = request(headers);
            add_forwarded(&mut req, ip.map(|ip| ip.parse().unwrap()), false, "rid").unwrap();
            let values = req.headers.get_all("x-forwarded-for").iter();
            values
                .map(|v| v.to_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(xff(&[], Some("192.0.2.7")), ["192.0.2.7"]);
        assert_eq!(xff(&[], Some("2001:db8::1")), ["2001:db8::1"]);
        let widest = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
        let mapped: std::net::Ipv6Addr = widest.parse().unwrap();
        assert_eq!(xff(&[], Some(&mapped.to_string())), [mapped.to_string()]);
        assert_eq!(xff(&[], None), Vec::<String>::new());
        // An empty value sent by the client adds no empty entry.
        let empty = [("x-forwarded-for", "")];
        assert_eq!(xff(&empty, Some("192.0.2.7")), ["192.0.2.7"]);
        assert_eq!(xff(&empty, None), [""], "left as the client sent it");
    }
}
