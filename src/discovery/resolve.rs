//! Asking DNS: the resolver built from `[resolver]`, and one lookup of a
//! name turned into backends, an authoritative "nothing", or a failure
//! that says nothing about the backends.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{Name, RData, Record};
use hickory_resolver::{Resolver as Hickory, TokioResolver};

use crate::config::{BackendConfig, DnsBackend, Lookup, Resolver, MAX_WEIGHT};

/// What one lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// These backends, valid for `ttl` (the shortest TTL of the records
    /// used).
    Found {
        backends: Vec<BackendConfig>,
        ttl: Duration,
    },
    /// An authoritative empty answer: `NXDOMAIN`, or the name has no
    /// records of the type (`NODATA`, or an SRV "." target).
    Empty(String),
    /// Timeout, SERVFAIL, REFUSED, a network error: nothing is known.
    Failed(String),
}

/// A resolver asking `config`'s nameservers, or the system's. It keeps no
/// cache of its own worth having: each task clears it before a lookup, so
/// every refresh asks the nameserver and sees the TTL it gives now.
pub fn resolver(config: &Resolver) -> Result<TokioResolver, String> {
    let mut builder = if config.nameservers.is_empty() {
        Hickory::builder_tokio().map_err(|e| format!("cannot read the system's resolver: {e}"))?
    } else {
        let servers = config
            .nameservers
            .iter()
            .map(|addr| {
                let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                    .map(|mut c| {
                        c.port = addr.port();
                        c
                    })
                    .to_vec();
                NameServerConfig::new(addr.ip(), true, connections)
            })
            .collect();
        let config = ResolverConfig::from_name_servers(servers);
        Hickory::builder_with_config(config, TokioRuntimeProvider::default())
    };
    let options = builder.options_mut();
    options.timeout = config.timeout;
    // The task retries with backoff; the resolver itself asks once.
    options.attempts = 1;
    builder
        .build()
        .map_err(|e| format!("cannot build the resolver: {e}"))
}

/// Looks `dns` up once, through `resolver`, within `limit`.
pub async fn lookup(resolver: &TokioResolver, dns: &DnsBackend, limit: Duration) -> Outcome {
    resolver.clear_cache();
    let found = tokio::time::timeout(limit, async {
        match dns.lookup {
            Lookup::Ip { port } => ip_lookup(resolver, dns, port).await,
            Lookup::Srv => srv_lookup(resolver, &dns.name).await,
        }
    })
    .await;
    match found {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => classify(&e),
        Err(_) => Outcome::Failed(format!(
            "no answer within {}",
            humantime::format_duration(limit)
        )),
    }
}

async fn ip_lookup(
    resolver: &TokioResolver,
    dns: &DnsBackend,
    port: u16,
) -> Result<Outcome, NetError> {
    let found = resolver.lookup_ip(dns.name.as_str()).await?;
    let records = found.as_lookup().answers();
    let ips: Vec<IpAddr> = found.iter().collect();
    let backends = ips
        .into_iter()
        .filter_map(|ip| backend(SocketAddr::new(ip, port), dns.weight))
        .collect();
    Ok(found_or_empty(backends, ttl(records), None))
}

/// SRV records of the lowest priority (the others are for when those
/// fail, which the backends' health decides here), each target's
/// addresses from the answer's additional section, or asked for.
async fn srv_lookup(resolver: &TokioResolver, name: &str) -> Result<Outcome, NetError> {
    let found = resolver.srv_lookup(name).await?;
    let srvs: Vec<(&Record, _)> = found
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some((r, srv)),
            _ => None,
        })
        .collect();
    let Some(best) = srvs.iter().map(|(_, s)| s.priority).min() else {
        return Ok(Outcome::Empty("no SRV records".into()));
    };
    let mut known: HashMap<&Name, Vec<(IpAddr, u32)>> = HashMap::new();
    for r in found.additionals() {
        let ip = match &r.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0),
            _ => continue,
        };
        known.entry(&r.name).or_default().push((ip, r.ttl));
    }
    let mut ttl_secs = srvs.iter().map(|(r, _)| r.ttl).min().unwrap_or(0);
    let mut backends = Vec::new();
    // A target that cannot be resolved now leaves out only itself.
    let mut failed = None;
    for (_, srv) in srvs.iter().filter(|(_, s)| s.priority == best) {
        // "." as the target: the service is decidedly not available there.
        if srv.target.is_root() {
            continue;
        }
        let weight = u32::from(srv.weight).clamp(1, MAX_WEIGHT);
        let ips = match known.get(&srv.target) {
            Some(ips) => ips.clone(),
            None => match resolver.lookup_ip(srv.target.clone()).await {
                Ok(asked) => {
                    let t = ttl(asked.as_lookup().answers()).as_secs() as u32;
                    asked.iter().map(|ip| (ip, t)).collect()
                }
                Err(e) => {
                    log::debug!("SRV {name}: target {}: {e}", srv.target);
                    if !matches!(classify(&e), Outcome::Empty(_)) {
                        failed = Some(format!("target {}: {e}", srv.target));
                    }
                    continue;
                }
            },
        };
        for (ip, t) in ips {
            if let Some(b) = backend(SocketAddr::new(ip, srv.port), weight) {
                ttl_secs = ttl_secs.min(t);
                backends.push(b);
            }
        }
    }
    Ok(found_or_empty(
        backends,
        Duration::from_secs(u64::from(ttl_secs)),
        failed,
    ))
}

/// Most backends one name may give; more are left out (and logged), so
/// that no answer can blow up the pool, its ring and its checks.
pub const MAX_BACKENDS_PER_NAME: usize = 512;

/// `backends` as the outcome of a lookup: empty is an authoritative
/// empty answer unless a part of the lookup `failed`, which makes it a
/// failure (the last good set stays).
fn found_or_empty(
    mut backends: Vec<BackendConfig>,
    ttl: Duration,
    failed: Option<String>,
) -> Outcome {
    if backends.is_empty() {
        return match failed {
            Some(why) => Outcome::Failed(why),
            None => Outcome::Empty("no addresses".into()),
        };
    }
    if backends.len() > MAX_BACKENDS_PER_NAME {
        log::warn!(
            "a DNS answer gave {} backends; the first {MAX_BACKENDS_PER_NAME} are used",
            backends.len()
        );
        backends.truncate(MAX_BACKENDS_PER_NAME);
    }
    Outcome::Found { backends, ttl }
}

/// The backend at `socket_addr`, unless no connection could reach it: port
/// 0, or an unspecified, multicast or broadcast address (a service
/// registered without a port, or a bad record).
fn backend(socket_addr: SocketAddr, weight: u32) -> Option<BackendConfig> {
    let ip = socket_addr.ip();
    let unusable = socket_addr.port() == 0
        || ip.is_unspecified()
        || ip.is_multicast()
        || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if unusable {
        log::debug!("DNS gave {socket_addr}, which cannot be connected to; left out");
        return None;
    }
    Some(BackendConfig {
        address: socket_addr.to_string(),
        socket_addr,
        weight,
    })
}

/// The shortest TTL among `records`; zero if there are none.
fn ttl(records: &[Record]) -> Duration {
    let secs = records.iter().map(|r| r.ttl).min().unwrap_or(0);
    Duration::from_secs(u64::from(secs))
}

/// A lookup error: an authoritative empty answer, or a failure.
fn classify(e: &NetError) -> Outcome {
    if e.is_nx_domain() {
        Outcome::Empty("no such name (NXDOMAIN)".into())
    } else if e.is_no_records_found() {
        Outcome::Empty("no records of that type".into())
    } else {
        Outcome::Failed(e.to_string())
    }
}
