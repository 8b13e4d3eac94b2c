//! What TLS changes for a request: its backend is told `X-Forwarded-Proto:
//! https`, its responses may carry `Strict-Transport-Security`, and with
//! `redirect_https` a plain request is sent to the same URL over HTTPS with
//! a `308` (which, unlike a `301`, keeps the method and body).

use pingora::proxy::Session;

/// Whether the request came over TLS.
pub fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// The HTTPS URL for a request that named `host` (as `Host` or the
/// authority gives it, port and all) and `target` (origin form, as the
/// bytes it came in), served on `port`; `None` when the request names no
/// usable host. Bytes of the target that a URL may not hold as they are
/// are percent-encoded, so the redirect names the very same path.
pub fn location(host: &[u8], target: &[u8], port: u16) -> Option<String> {
    let name = host_name(std::str::from_utf8(host).ok()?)?;
    let mut url = if port == 443 {
        format!("https://{name}")
    } else {
        format!("https://{name}:{port}")
    };
    if !target.starts_with(b"/") {
        url.push('/');
        return Some(url);
    }
    for &b in target {
        if b.is_ascii_graphic() {
            url.push(char::from(b));
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    Some(url)
}

/// `host` without its port: `example.com:8080` and `[::1]:8080` give
/// `example.com` and `[::1]`.
fn host_name(host: &str) -> Option<&str> {
    let name = if host.starts_with('[') {
        &host[..=host.find(']')?]
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return None,
            None => host,
        }
    };
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b);
    (!name.is_empty() && name.bytes().all(allowed)).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(host: &str, target: &[u8], port: u16) -> Option<String> {
        location(host.as_bytes(), target, port)
    }

    #[test]
    fn keeps_host_and_target_and_swaps_the_port() {
        assert_eq!(
            at("example.com:8080", b"/a/b?c=d", 8443).as_deref(),
            Some("https://example.com:8443/a/b?c=d")
        );
        assert_eq!(
            at("example.com", b"/", 443).as_deref(),
            Some("https://example.com/")
        );
        assert_eq!(
            at("[::1]:80", b"/x", 8443).as_deref(),
            Some("https://[::1]:8443/x")
        );
    }

    #[test]
    fn bytes_a_url_cannot_hold_are_percent_encoded_not_replaced() {
        assert_eq!(
            at("a.test", b"/caf\xc3\xa9/\xff?q=%20", 443).as_deref(),
            Some("https://a.test/caf%C3%A9/%FF?q=%20")
        );
    }

    #[test]
    fn a_target_not_in_origin_form_goes_to_the_root() {
        assert_eq!(at("a.test", b"*", 443).as_deref(), Some("https://a.test/"));
    }

    #[test]
    fn refuses_hosts_it_cannot_put_in_a_url() {
        assert_eq!(at("", b"/", 443), None);
        assert_eq!(at("a.test:port", b"/", 443), None);
        assert_eq!(at("a test", b"/", 443), None);
        assert_eq!(at("user@a.test", b"/", 443), None);
        assert_eq!(at("[::1", b"/", 443), None);
        assert_eq!(location(b"caf\xc3\xa9.test", b"/", 443), None);
    }
}
