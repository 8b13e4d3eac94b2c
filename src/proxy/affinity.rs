//! Affinity from request facts: the consistent_hash key of a request, the
//! backend its sticky cookie names, and the cookie that pins a client to
//! the backend that served it. Plain functions over headers, the target
//! and the client's address; the `ProxyHttp` adapter calls them.

use std::net::IpAddr;

use http::header::COOKIE;
use http::HeaderMap;

use crate::config::{HashKey, Sticky};
use crate::pool::{Hint, Upstream};
use crate::route;

/// What a request to `upstream` brings to backend selection: its key's
/// hash, if the upstream hashes and the request has the key, and the
/// backend its sticky cookie names, if valid. `target` is its path and
/// query in origin form.
pub fn hint(
    upstream: &Upstream,
    headers: &HeaderMap,
    target: &str,
    client: Option<IpAddr>,
) -> Hint {
    let key = upstream.hashed().and_then(|h| {
        key_of(&h.key, headers, target, client).map(|k| crate::pool::key_hash(k.as_bytes()))
    });
    let pinned = upstream.sticky().and_then(|s| {
        let id = cookie(headers, &s.config.cookie)?;
        s.backend(id)
    });
    Hint { key, pinned }
}

/// The value `key` names in the request, if it has one (an empty value
/// counts as none).
pub fn key_of(
    key: &HashKey,
    headers: &HeaderMap,
    target: &str,
    client: Option<IpAddr>,
) -> Option<String> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let value = match key {
        HashKey::Header(name) => headers.get(name)?.to_str().ok()?.to_string(),
        HashKey::Cookie(name) => cookie(headers, name)?.to_string(),
        HashKey::Query(name) => query
            .split('&')
            .find_map(|pair| match pair.split_once('=') {
                Some((k, v)) if k == name => Some(v),
                None if pair == name => Some(""),
                _ => None,
            })?
            .to_string(),
        HashKey::ClientIp => client?.to_string(),
        HashKey::Path => route::path::normalise(if path.is_empty() { "/" } else { path })
            .ok()?
            .into_owned(),
    };
    (!value.is_empty()).then_some(value)
}

/// The value of cookie `name` in the request's `Cookie` headers; the
/// first if it is there several times.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"'))
        })
}

/// The `Set-Cookie` value that pins a client to the backend with `id`;
/// `tls`: the request came over TLS (then `Secure` unless turned off).
pub fn set_cookie(sticky: &Sticky, id: &str, tls: bool) -> String {
    let mut c = format!("{}={id}; Path={}", sticky.cookie, sticky.path);
    if let Some(age) = sticky.max_age {
        c += &format!("; Max-Age={}", age.as_secs().max(1));
    }
    if sticky.secure.unwrap_or(tls) {
        c += "; Secure";
    }
    if sticky.http_only {
        c += "; HttpOnly";
    }
    c += "; SameSite=";
    c += sticky.same_site.attribute();
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SameSite;
    use std::time::Duration;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn keys_come_from_where_hash_key_says() {
        let h = headers(&[("x-user", "u7"), ("cookie", "a=1; sid=s42; b=2")]);
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let key = |k: &str, target: &str| key_of(&HashKey::parse(k).unwrap(), &h, target, Some(ip));
        assert_eq!(key("header:x-user", "/").as_deref(), Some("u7"));
        assert_eq!(key("cookie:sid", "/").as_deref(), Some("s42"));
        assert_eq!(key("cookie:none", "/"), None);
        assert_eq!(
            key("query:tenant", "/x?a=1&tenant=acme").as_deref(),
            Some("acme")
        );
        assert_eq!(key("query:tenant", "/x?tenant="), None, "empty is none");
        assert_eq!(key("query:tenant", "/x"), None);
        assert_eq!(key("client_ip", "/").as_deref(), Some("10.1.2.3"));
        assert_eq!(key("path", "/a/../b?q=1").as_deref(), Some("/b"));
    }

    #[test]
    fn cookies_are_found_among_others_and_headers() {
        let h = headers(&[
            ("cookie", "x=1"),
            ("cookie", " sy_affinity = \"ab12\" ;y=2"),
        ]);
        assert_eq!(cookie(&h, "sy_affinity"), Some("ab12"));
        assert_eq!(cookie(&h, "y"), Some("2"));
        assert_eq!(cookie(&h, "sy"), None);
    }

    #[test]
    fn the_pinning_cookie_carries_its_attributes() {
        let mut s = Sticky {
            cookie: "sy_affinity".into(),
            max_age: Some(Duration::from_secs(3600)),
            path: "/".into(),
            secure: None,
            http_only: true,
            same_site: SameSite::Lax,
            secret: None,
        };
        assert_eq!(
            set_cookie(&s, "0123abcd", false),
            "sy_affinity=0123abcd; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax"
        );
        assert!(set_cookie(&s, "x", true).contains("; Secure"));
        s.max_age = None;
        s.secure = Some(true);
        s.http_only = false;
        s.same_site = SameSite::None;
        assert_eq!(
            set_cookie(&s, "x", false),
            "sy_affinity=x; Path=/; Secure; SameSite=None"
        );
    }
}
