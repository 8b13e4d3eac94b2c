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
/// authority gives it, port and all) and `target` (origin form), served on
/// `port`; `None` when the request names no usable host.
pub fn location(host: &str, target: &str, port: u16) -> Option<String> {
    let name = host_name(host)?;
    let path = if target.starts_with('/') { target } else { "/" };
    Some(if port == 443 {
        format!("https://{name}{path}")
    } else {
        format!("https://{name}:{port}{path}")
    })
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

    #[test]
    fn keeps_host_and_target_and_swaps_the_port() {
        assert_eq!(
            location("example.com:8080", "/a/b?c=d", 8443).as_deref(),
            Some("https://example.com:8443/a/b?c=d")
        );
        assert_eq!(
            location("example.com", "/", 443).as_deref(),
            Some("https://example.com/")
        );
        assert_eq!(
            location("[::1]:80", "/x", 8443).as_deref(),
            Some("https://[::1]:8443/x")
        );
    }

    #[test]
    fn a_target_not_in_origin_form_goes_to_the_root() {
        assert_eq!(
            location("a.test", "*", 443).as_deref(),
            Some("https://a.test/")
        );
    }

    #[test]
    fn refuses_hosts_it_cannot_put_in_a_url() {
        assert_eq!(location("", "/", 443), None);
        assert_eq!(location("a.test:port", "/", 443), None);
        assert_eq!(location("a test", "/", 443), None);
        assert_eq!(location("user@a.test", "/", 443), None);
        assert_eq!(location("[::1", "/", 443), None);
    }
}
