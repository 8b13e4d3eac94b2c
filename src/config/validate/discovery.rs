//! Checks of what service discovery by DNS reads: `[resolver]`, the
//! backends that follow a name (`resolve = true`, `srv`), and an upstream's
//! `min_refresh`, `max_refresh` and `hold_empty`. Nothing here asks DNS:
//! a name that does not resolve now may well resolve later.

use std::net::{IpAddr, SocketAddr};

use toml::Spanned;

use super::super::file::{LongEntry, ResolverSection, UpstreamSection};
use super::super::*;
use super::upstream::{split_host_port, Entry};
use super::Source;

/// DNS names are at most 253 characters, labels at most 63 (RFC 1035).
const MAX_NAME: usize = 253;
const MAX_LABEL: usize = 63;

impl Source<'_> {
    pub(super) fn resolver(
        &self,
        section: Option<Spanned<ResolverSection>>,
    ) -> Result<Resolver, Box<ConfigError>> {
        let Some(section) = section.map(Spanned::into_inner) else {
            return Ok(Resolver::default());
        };
        let mut nameservers = Vec::new();
        for ns in section
            .nameservers
            .into_iter()
            .flat_map(Spanned::into_inner)
        {
            let v = ns.get_ref();
            let addr = v
                .parse::<SocketAddr>()
                .or_else(|_| v.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)));
            match addr {
                Ok(a) if a.port() != 0 && !nameservers.contains(&a) => nameservers.push(a),
                _ => {
                    let fix = "write each nameserver once, as an IP address and port like \
                               \"127.0.0.1:53\" (port 53 if left out)"
                        .to_string();
                    return Err(self.bad_value(&ns, "nameservers", fix));
                }
            }
        }
        Ok(Resolver {
            nameservers,
            timeout: self.duration_or(&section.timeout, DEFAULT_RESOLVER_TIMEOUT)?,
        })
    }

    /// An upstream's refresh settings; warns of any that has no name to
    /// apply to.
    pub(super) fn refresh(
        &self,
        u: &UpstreamSection,
        has_dns: bool,
    ) -> Result<Refresh, Box<ConfigError>> {
        let refresh = Refresh {
            min: self.duration_or(&u.min_refresh, DEFAULT_MIN_REFRESH)?,
            max: self.duration_or(&u.max_refresh, DEFAULT_MAX_REFRESH)?,
            hold_empty: match &u.hold_empty {
                None => DEFAULT_HOLD_EMPTY,
                Some(d) => self.duration(d, true)?,
            },
        };
        if refresh.min > refresh.max {
            let span = u.min_refresh.as_ref().or(u.max_refresh.as_ref());
            let kind = ErrorKind::RefreshOrder {
                min: humantime::format_duration(refresh.min).to_string(),
                max: humantime::format_duration(refresh.max).to_string(),
            };
            return Err(self.error(span.map_or(0..0, |s| s.span()), kind));
        }
        if !has_dns {
            let keys = [
                ("min_refresh", &u.min_refresh),
                ("max_refresh", &u.max_refresh),
                ("hold_empty", &u.hold_empty),
            ];
            for (key, value) in keys {
                if let Some(v) = value {
                    let message = format!(
                        "`{key}` has no effect: no backend of this upstream follows DNS \
                         (add `resolve = true` or `srv`, or remove `{key}`)"
                    );
                    self.warnings
                        .borrow_mut()
                        .push(self.warning(v.span(), message));
                }
            }
        }
        Ok(refresh)
    }

    /// A backend written `{ address = "name:port", resolve = true }` or
    /// `{ srv = "name" }`; `weight` is the entry's, already checked.
    pub(super) fn dns_backend(
        &self,
        long: LongEntry,
        weight: u32,
    ) -> Result<Entry, Box<ConfigError>> {
        let Some(srv) = long.srv else {
            let address = long.address.expect("resolve without srv has an address");
            let (host, port) = split_host_port(address.get_ref())
                .map_err(|reason| self.bad_dns_name(&address, reason))?;
            if host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok() {
                let kind = ErrorKind::NothingToResolve(host.to_string());
                return Err(self.error(address.span(), kind));
            }
            let name = self.dns_name(&address, host)?;
            let lookup = Lookup::Ip { port };
            let dns = DnsBackend {
                name,
                lookup,
                weight,
            };
            return Ok(Entry::Dns(dns, address.span()));
        };
        let conflicts = [
            (
                "address",
                long.address.as_ref().map(Spanned::span),
                "SRV records give the addresses and ports",
            ),
            (
                "weight",
                long.weight.as_ref().map(Spanned::span),
                "SRV records give each target its weight",
            ),
            (
                "resolve",
                long.resolve.as_ref().map(Spanned::span),
                "an SRV name is always followed",
            ),
        ];
        if let Some((key, Some(at), why)) = conflicts.into_iter().find(|(_, at, _)| at.is_some()) {
            return Err(self.error(at, ErrorKind::NotWithSrv { key, why }));
        }
        if srv.get_ref().contains(':') {
            let reason = "an SRV name has no port: its records give the ports".to_string();
            return Err(self.bad_dns_name(&srv, reason));
        }
        let name = self.dns_name(&srv, srv.get_ref())?;
        Ok(Entry::Dns(
            DnsBackend {
                name,
                lookup: Lookup::Srv,
                weight: 1,
            },
            srv.span(),
        ))
    }

    /// `name` (part of `value`) if it is a DNS name that can be asked for.
    fn dns_name(&self, value: &Spanned<String>, name: &str) -> Result<String, Box<ConfigError>> {
        let bare = name.strip_suffix('.').unwrap_or(name);
        let reason = if bare.is_empty() {
            Some("the name is empty".to_string())
        } else if bare.len() > MAX_NAME {
            Some(format!("it is longer than {MAX_NAME} characters"))
        } else {
            bare.split('.').find_map(label_problem)
        };
        match reason {
            Some(reason) => Err(self.bad_dns_name(value, reason)),
            None => Ok(name.to_string()),
        }
    }

    fn bad_dns_name(&self, value: &Spanned<String>, reason: String) -> Box<ConfigError> {
        let kind = ErrorKind::BadDnsName {
            value: value.get_ref().clone(),
            reason,
        };
        self.error(value.span(), kind)
    }
}

/// What is wrong with one label of a DNS name, if anything. Underscores
/// are allowed: SRV names start with them, and some internal zones use them.
fn label_problem(label: &str) -> Option<String> {
    if label.is_empty() {
        return Some("it has an empty label (two dots in a row, or a leading dot)".into());
    }
    if label.len() > MAX_LABEL {
        return Some(format!(
            "label `{label}` is longer than {MAX_LABEL} characters"
        ));
    }
    let bad = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'));
    bad.map(|c| format!("`{c}` is not allowed in a name (letters, digits, `-` and `_` only)"))
}
