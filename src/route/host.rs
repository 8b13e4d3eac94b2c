//! Host names as routes match them: patterns from the config (exact names
//! and leading `*.` wildcards) and the host a request names, both in
//! lowercase, without a port or a trailing dot.

use std::borrow::Cow;
use std::fmt;

/// One entry of a route's `hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// `api.example.com`: that name only.
    Exact(String),
    /// `*.example.com`, kept as `example.com`: any name that ends in
    /// `.example.com`, however many labels come before (as in nginx and
    /// Envoy), but not `example.com` itself.
    Suffix(String),
}

impl HostPattern {
    /// Parses a pattern as written in the config; the error says what is
    /// wrong with it.
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        if text.is_empty() {
            return Err("it is empty".into());
        }
        if text.contains(char::is_whitespace) {
            return Err("it holds a space".into());
        }
        let lower = text.to_ascii_lowercase();
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        if name.contains('*') {
            return Err("a `*` may only stand first, as a whole label: `*.example.com`".into());
        }
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() {
            return Err("it names no host".into());
        }
        if !wild && name.starts_with('[') && name.ends_with(']') {
            // An IPv6 literal, as a Host header writes it.
            if name[1..name.len() - 1]
                .parse::<std::net::Ipv6Addr>()
                .is_err()
            {
                return Err("it is not an IPv6 address in brackets".into());
            }
            return Ok(HostPattern::Exact(name.to_string()));
        }
        if name.contains(':') {
            return Err(
                "it has a port; hosts match whatever port the client used, so leave it out".into(),
            );
        }
        for label in name.split('.') {
            if label.is_empty() {
                return Err("it has an empty label (`..`, or a leading dot)".into());
            }
            let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
            if let Some(bad) = label.chars().find(|&c| !valid(c)) {
                return Err(format!("`{bad}` is not allowed in a host name"));
            }
        }
        Ok(if wild {
            HostPattern::Suffix(name.to_string())
        } else {
            HostPattern::Exact(name.to_string())
        })
    }

    /// Whether `host` (as [`request_host`] gives it) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host == name,
            HostPattern::Suffix(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Suffix(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

/// The host a request names (its `Host` header, or the authority of an
/// absolute-form target), as routes match it: lowercase, without the
/// port or a trailing dot. Borrows when nothing changes.
pub fn request_host(raw: &str) -> Cow<'_, str> {
    let without_port = if raw.starts_with('[') {
        // `[::1]:8080`: the port follows the bracket.
        raw.find(']').map_or(raw, |end| &raw[..=end])
    } else {
        raw.rsplit_once(':').map_or(raw, |(host, _)| host)
    };
    let name = without_port.strip_suffix('.').unwrap_or(without_port);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_to_exact_names_and_suffixes() {
        let exact = |s: &str| HostPattern::Exact(s.into());
        let suffix = |s: &str| HostPattern::Suffix(s.into());
        assert_eq!(
            HostPattern::parse("API.Example.com"),
            Ok(exact("api.example.com"))
        );
        assert_eq!(HostPattern::parse("example.com."), Ok(exact("example.com")));
        assert_eq!(
            HostPattern::parse("*.example.org"),
            Ok(suffix("example.org"))
        );
        assert_eq!(HostPattern::parse("localhost"), Ok(exact("localhost")));
        assert_eq!(HostPattern::parse("10.0.0.7"), Ok(exact("10.0.0.7")));
        assert_eq!(HostPattern::parse("[::1]"), Ok(exact("[::1]")));
        assert_eq!(
            HostPattern::parse("*.example.org").unwrap().to_string(),
            "*.example.org"
        );
    }

    #[test]
    fn malformed_patterns_say_why() {
        for (bad, why) in [
            ("", "empty"),
            ("a.*.com", "only stand first"),
            ("*example.com", "only stand first"),
            ("*", "only stand first"),
            ("*.", "names no host"),
            ("api example.com", "space"),
            ("api.example.com:8080", "port"),
            ("a..b", "empty label"),
            (".example.com", "empty label"),
            ("ex/ample.com", "`/` is not allowed"),
            ("[::zz]", "IPv6"),
        ] {
            let err = HostPattern::parse(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn wildcards_match_any_depth_below_but_not_the_name_itself() {
        let p = HostPattern::parse("*.example.com").unwrap();
        assert!(p.matches("a.example.com"));
        assert!(p.matches("a.b.example.com"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("badexample.com"));
        assert!(!p.matches(".example.com"));
        let e = HostPattern::parse("api.example.com").unwrap();
        assert!(e.matches("api.example.com") && !e.matches("x.api.example.com"));
    }

    #[test]
    fn request_hosts_lose_port_case_and_trailing_dot() {
        assert_eq!(request_host("API.example.com:8080"), "api.example.com");
        assert_eq!(request_host("example.com."), "example.com");
        assert_eq!(request_host("example.com.:80"), "example.com");
        assert_eq!(request_host("[::1]:8080"), "[::1]");
        assert_eq!(request_host("[::1]"), "[::1]");
        assert!(matches!(request_host("plain"), Cow::Borrowed("plain")));
    }
}
