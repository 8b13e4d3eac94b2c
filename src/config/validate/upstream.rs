//! Checks of `[upstreams.NAME]`: balance, timeouts, backends and their
//! addresses, the retry budget; health checks are in `health.rs`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;

use toml::Spanned;

use super::super::file::{BackendEntry, LongEntry, RetryBudgetSection, UpstreamSection};
use super::super::*;
use super::{nearest, unknown_key, Resolve, Source};

/// One entry of `backends`, checked, and where it stands in the file.
pub(super) enum Entry {
    Static(BackendConfig, Range<usize>),
    Dns(DnsBackend, Range<usize>),
}

impl Source<'_> {
    pub(super) fn upstream(
        &self,
        name: String,
        section: Spanned<UpstreamSection>,
    ) -> Result<UpstreamConfig, Box<ConfigError>> {
        let span = section.span();
        let mut u = section.into_inner();
        let balance = match &u.balance {
            None => Balance::RoundRobin,
            Some(b) => self.balance(b)?,
        };
        let affinity = self.affinity(balance, span.clone(), &u)?;
        let timeouts = Timeouts {
            connect: self.duration_or(&u.connect_timeout, DEFAULT_CONNECT_TIMEOUT)?,
            read: self.duration_or(&u.read_timeout, DEFAULT_READ_TIMEOUT)?,
            write: self.duration_or(&u.write_timeout, DEFAULT_WRITE_TIMEOUT)?,
            idle: self.duration_or(&u.idle_timeout, DEFAULT_IDLE_TIMEOUT)?,
            tunnel_idle: self.duration_or(&u.tunnel_idle_timeout, DEFAULT_TUNNEL_IDLE_TIMEOUT)?,
        };
        let retries = match &u.retries {
            None => DEFAULT_RETRIES,
            Some(r) => self.in_range(r, "retries", 0, MAX_RETRIES as i64)? as usize,
        };
        let (backends, dns) = match u.backends.take() {
            Some(list) if !list.get_ref().is_empty() => self.backends(&name, list.into_inner())?,
            Some(list) => return Err(self.error(list.span(), ErrorKind::EmptyBackends(name))),
            None => return Err(self.error(span, ErrorKind::EmptyBackends(name))),
        };
        let (protocol, max_streams_per_connection) =
            self.protocol(&u.protocol, &u.max_streams_per_connection)?;
        let grpc_check = u
            .health_check
            .as_ref()
            .and_then(|h| h.get_ref().kind.as_ref())
            .filter(|k| k.get_ref() == "grpc");
        if let (Some(k), Protocol::Http1) = (grpc_check, protocol) {
            let kind = ErrorKind::OnlyWith {
                key: "type = \"grpc\"",
                only: "protocol = \"http2\"",
            };
            return Err(self.error(k.span(), kind));
        }
        let refresh = self.refresh(&u, !dns.is_empty())?;
        let health_check = match u.health_check {
            None => None,
            Some(section) => Some(self.health_check(section.into_inner())?),
        };
        let passive = match u.passive_health_check {
            None => Passive::default(),
            Some(section) => self.passive(section)?,
        };
        let slow_start = match &u.slow_start {
            None => None,
            Some(d) => Some(self.duration(d, true)?).filter(|d| !d.is_zero()),
        };
        let retry_budget = match u.retry_budget {
            None => RetryBudget::default(),
            Some(section) => self.retry_budget(section)?,
        };
        let sticky = match u.sticky {
            None => None,
            Some(section) => Some(self.sticky(section.into_inner())?),
        };
        let tls = match u.tls {
            None => None,
            Some(section) => {
                let span = section.span();
                let tls = self.upstream_tls(&name, section)?;
                if tls.sni.is_none() && !dns.is_empty() {
                    // Its backends are known by address only: SNI and the
                    // certificate check would use the IP address.
                    let kind = ErrorKind::Needs(
                        "missing key `sni`: backends that follow DNS are reached by \
                         address, so name the host their certificates carry"
                            .into(),
                    );
                    return Err(self.error(span, kind));
                }
                Some(tls)
            }
        };
        Ok(UpstreamConfig {
            name,
            balance,
            timeouts,
            retries,
            backends,
            dns,
            refresh,
            health_check,
            passive,
            slow_start,
            retry_budget,
            hash_key: affinity.hash_key,
            hash_balance_factor: affinity.hash_balance_factor,
            latency_decay: affinity.latency_decay,
            sticky,
            protocol,
            max_streams_per_connection,
            tls,
        })
    }

    fn retry_budget(&self, b: RetryBudgetSection) -> Result<RetryBudget, Box<ConfigError>> {
        let ratio = match &b.ratio {
            None => DEFAULT_RETRY_RATIO,
            Some(r) if (0.0..=1.0).contains(r.get_ref()) => *r.get_ref(),
            Some(r) => {
                let kind = ErrorKind::BadValue {
                    key: "ratio",
                    value: r.get_ref().to_string(),
                    fix: "write a fraction from 0 to 1, like 0.2 for retries up to 20% of requests"
                        .into(),
                };
                return Err(self.error(r.span(), kind));
            }
        };
        let min_retries_per_second = match &b.min_retries_per_second {
            None => DEFAULT_MIN_RETRIES_PER_SECOND,
            Some(n) => self.in_range(
                n,
                "min_retries_per_second",
                0,
                i64::from(MAX_MIN_RETRIES_PER_SECOND),
            )? as u32,
        };
        Ok(RetryBudget {
            ratio,
            min_retries_per_second,
        })
    }

    fn balance(&self, value: &Spanned<String>) -> Result<Balance, Box<ConfigError>> {
        let v = value.get_ref().as_str();
        match v {
            "round_robin" => Ok(Balance::RoundRobin),
            "least_connections" => Ok(Balance::LeastConnections),
            "consistent_hash" => Ok(Balance::ConsistentHash),
            "least_latency" => Ok(Balance::LeastLatency),
            _ => {
                let suggestion = balance_alias(v)
                    .map(str::to_string)
                    .or_else(|| nearest(v, Balance::NAMES.into_iter()));
                let kind = ErrorKind::UnknownBalance {
                    value: v.to_string(),
                    suggestion,
                };
                Err(self.error(value.span(), kind))
            }
        }
    }

    /// The static backends and those that follow DNS, in file order.
    fn backends(
        &self,
        upstream: &str,
        entries: Vec<Spanned<BackendEntry>>,
    ) -> Result<(Vec<BackendConfig>, Vec<DnsBackend>), Box<ConfigError>> {
        let mut out: Vec<(BackendConfig, Range<usize>)> = Vec::with_capacity(entries.len());
        let mut dns: Vec<(DnsBackend, Range<usize>)> = Vec::new();
        for entry in entries {
            let backend = match self.backend(entry)? {
                Entry::Dns(d, span) => {
                    if let Some((_, first)) = dns.iter().find(|(o, _)| o.name == d.name) {
                        let kind = ErrorKind::DuplicateDnsName {
                            upstream: upstream.to_string(),
                            name: d.name,
                            first_line: self.line(first),
                        };
                        return Err(self.error(span, kind));
                    }
                    dns.push((d, span));
                    continue;
                }
                Entry::Static(b, span) => (b, span),
            };
            let (backend, span) = backend;
            if let Some((_, first)) = out
                .iter()
                .find(|(b, _)| b.socket_addr == backend.socket_addr)
            {
                let kind = ErrorKind::DuplicateBackend {
                    upstream: upstream.to_string(),
                    address: backend.address,
                    first_line: Position::locate(self.text, first.clone()).line,
                };
                return Err(self.error(span, kind));
            }
            out.push((backend, span));
        }
        Ok((
            out.into_iter().map(|(b, _)| b).collect(),
            dns.into_iter().map(|(d, _)| d).collect(),
        ))
    }

    fn backend(&self, entry: Spanned<BackendEntry>) -> Result<Entry, Box<ConfigError>> {
        let entry_span = entry.span();
        let (address, address_span, weight) = match entry.into_inner() {
            BackendEntry::Short(a) => (a, entry_span.clone(), 1),
            BackendEntry::Long(LongEntry {
                unknown: Some(key), ..
            }) => {
                let kind = unknown_key(key.get_ref(), super::super::file::BACKEND_FIELDS);
                return Err(self.error(key.span(), kind));
            }
            BackendEntry::Long(long) => {
                let w = match &long.weight {
                    None => 1,
                    Some(w) => self.weight(w)?,
                };
                if long.srv.is_some() || long.resolve.as_ref().is_some_and(|r| *r.get_ref()) {
                    return self.dns_backend(long, w);
                }
                let address = long.address.expect("an entry without srv has an address");
                let span = address.span();
                (address.into_inner(), span, w)
            }
        };
        let socket_addr = resolve_backend(&address, self.resolve).map_err(|reason| {
            let kind = ErrorKind::BadAddress {
                value: address.clone(),
                reason,
            };
            self.error(address_span.clone(), kind)
        })?;
        let backend = BackendConfig {
            address,
            socket_addr,
            weight,
        };
        Ok(Entry::Static(backend, address_span))
    }

    fn weight(&self, w: &Spanned<i64>) -> Result<u32, Box<ConfigError>> {
        if *w.get_ref() == 0 {
            return Err(self.error(w.span(), ErrorKind::ZeroWeight));
        }
        Ok(self.in_range(w, "weight", 1, MAX_WEIGHT as i64)? as u32)
    }
}

/// Parses `ip:port`, or resolves `host:port` once, now.
fn resolve_backend(s: &str, resolve: Resolve) -> Result<SocketAddr, String> {
    let addr = match s.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            let (host, port) = split_host_port(s)?;
            if let Resolve::Offline = resolve {
                return Err(format!("`{host}` is not resolved offline"));
            }
            (host, port)
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
                .next()
                .ok_or_else(|| format!("`{host}` resolves to no address"))?
        }
    };
    if addr.port() == 0 {
        return Err("port 0 cannot be connected to".into());
    }
    Ok(addr)
}

/// `host:port` split, the port checked (1 to 65535).
pub(super) fn split_host_port(s: &str) -> Result<(&str, u16), String> {
    let (host, port) = s.rsplit_once(':').ok_or("it has no port")?;
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(format!("`{host}` is not a host name or IP address"));
    }
    match port.parse::<u16>() {
        Ok(0) => Err("port 0 cannot be connected to".into()),
        Ok(port) => Ok((host, port)),
        Err(_) => Err(format!("`{port}` is not a port number (1 to 65535)")),
    }
}

/// What other load balancers call the same algorithms.
fn balance_alias(v: &str) -> Option<&'static str> {
    match v.to_ascii_lowercase().replace('-', "_").as_str() {
        "roundrobin" | "rr" | "round_robin" | "wrr" => Some("round_robin"),
        "leastconn" | "least_conn" | "leastconnections" | "least_connections" | "lc" => {
            Some("least_connections")
        }
        "hash" | "consistent" | "ketama" | "ring_hash" | "maglev" | "consistenthash" => {
            Some("consistent_hash")
        }
        "p2c" | "ewma" | "peak_ewma" | "least_time" | "leasttime" | "least_request" => {
            Some("least_latency")
        }
        _ => None,
    }
}
