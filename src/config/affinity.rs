//! Affinity settings: what consistent hashing hashes and how much load it
//! lets one backend take, the sticky cookie, and least_latency's decay.

use std::fmt;
use std::time::Duration;

use http::HeaderName;

/// Default `hash_balance_factor`: no backend takes more than 1.25 times the
/// mean in-flight (as Envoy's and HAProxy's bounded load suggest).
pub const DEFAULT_HASH_BALANCE_FACTOR: f64 = 1.25;
/// Largest `hash_balance_factor`.
pub const MAX_HASH_BALANCE_FACTOR: f64 = 100.0;
/// Default `latency_decay`: how long least_latency remembers a latency
/// (Finagle's and linkerd's default).
pub const DEFAULT_LATENCY_DECAY: Duration = Duration::from_secs(10);
/// Default `[upstreams.NAME.sticky] cookie`.
pub const DEFAULT_STICKY_COOKIE: &str = "sy_affinity";

/// `hash_key`: what consistent hashing places a request by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// `header:NAME`: the header's value (the first, if several).
    Header(HeaderName),
    /// `cookie:NAME`: the cookie's value.
    Cookie(String),
    /// `query:NAME`: the query parameter's value, as sent.
    Query(String),
    /// `client_ip`: the client's address, without the port.
    ClientIp,
    /// `path`: the normalised path, without the query.
    Path,
}

impl HashKey {
    pub const FORMS: [&'static str; 5] = [
        "header:NAME",
        "cookie:NAME",
        "query:NAME",
        "client_ip",
        "path",
    ];

    /// Parses `hash_key`; the error says what to write.
    pub fn parse(text: &str) -> Result<HashKey, String> {
        match text {
            "client_ip" => return Ok(HashKey::ClientIp),
            "path" => return Ok(HashKey::Path),
            _ => {}
        }
        let Some((kind, name)) = text.split_once(':') else {
            return Err(format!("write one of {}", Self::FORMS.join(", ")));
        };
        if name.is_empty() {
            return Err(format!("`{kind}:` needs a name after the colon"));
        }
        match kind {
            "header" => HeaderName::from_bytes(name.as_bytes())
                .map(HashKey::Header)
                .map_err(|_| format!("`{name}` is not a header name")),
            "cookie" if is_token(name) => Ok(HashKey::Cookie(name.to_string())),
            "cookie" => Err(format!("`{name}` is not a cookie name")),
            "query" => Ok(HashKey::Query(name.to_string())),
            _ => Err(format!(
                "`{kind}` is not a key kind; write one of {}",
                Self::FORMS.join(", ")
            )),
        }
    }
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashKey::Header(n) => write!(f, "header:{n}"),
            HashKey::Cookie(n) => write!(f, "cookie:{n}"),
            HashKey::Query(n) => write!(f, "query:{n}"),
            HashKey::ClientIp => f.write_str("client_ip"),
            HashKey::Path => f.write_str("path"),
        }
    }
}

/// An RFC 7230 token: what a cookie or header name may be.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `[upstreams.NAME.sticky]`: the first response names its backend in a
/// cookie; later requests carrying it go back to that backend while it is
/// usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sticky {
    /// Default [`DEFAULT_STICKY_COOKIE`].
    pub cookie: String,
    /// `None`: a session cookie (no `Max-Age`).
    pub max_age: Option<Duration>,
    /// Default `/`.
    pub path: String,
    /// `None`: on for requests that came over TLS, off otherwise.
    pub secure: Option<bool>,
    /// Default true.
    pub http_only: bool,
    /// Default `Lax`.
    pub same_site: SameSite,
    /// Mixed into the backend ids, so that nobody can find a backend's
    /// address from its id by trying candidates. `None`: the ids are a
    /// hash of the upstream's name and the backend's address alone.
    pub secret: Option<String>,
}

/// The cookie's `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
    None,
}

impl SameSite {
    pub const NAMES: [&'static str; 3] = ["lax", "strict", "none"];

    pub fn attribute(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_keys_parse_and_print_back() {
        for text in [
            "header:x-user",
            "cookie:sid",
            "query:tenant",
            "client_ip",
            "path",
        ] {
            assert_eq!(HashKey::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            HashKey::parse("header:X-User").unwrap(),
            HashKey::Header(HeaderName::from_static("x-user"))
        );
        for bad in [
            "cookie",
            "cookie:",
            "header:a b",
            "cookie:a;b",
            "ip",
            "body:x",
        ] {
            assert!(HashKey::parse(bad).is_err(), "{bad}");
        }
    }
}
