//! The validated settings of service discovery by DNS: which backends
//! follow a name (`resolve = true` for A/AAAA, `srv` for SRV), how often
//! they are looked up again, and the `[resolver]` that answers.

use std::net::SocketAddr;
use std::time::Duration;

/// Shortest time between two lookups of one name, whatever its TTL says:
/// Consul answers with TTL 0, which would otherwise be a query storm.
pub const DEFAULT_MIN_REFRESH: Duration = Duration::from_secs(1);
/// Longest time between two lookups of one name, whatever its TTL says.
pub const DEFAULT_MAX_REFRESH: Duration = Duration::from_secs(5 * 60);
/// How long a name must answer "no such name" or "no records" before its
/// backends are taken out: a Kubernetes headless Service with no ready pod
/// answers NXDOMAIN, and so may a resolver having a bad moment.
pub const DEFAULT_HOLD_EMPTY: Duration = Duration::from_secs(30);
/// How long one query to one nameserver may take.
pub const DEFAULT_RESOLVER_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait between two tries of a name whose lookups fail; the
/// first retry comes after `min_refresh`, each next one twice as late.
pub const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(30);

/// `[resolver]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Resolver {
    /// Asked in order. Empty: the system's (`/etc/resolv.conf`), with its
    /// search domains and `ndots`.
    pub nameservers: Vec<SocketAddr>,
    /// Per query to one nameserver. Default [`DEFAULT_RESOLVER_TIMEOUT`].
    pub timeout: Duration,
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver {
            nameservers: Vec::new(),
            timeout: DEFAULT_RESOLVER_TIMEOUT,
        }
    }
}

/// An upstream's `min_refresh`, `max_refresh` and `hold_empty`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Refresh {
    /// Default [`DEFAULT_MIN_REFRESH`]; at most `max`.
    pub min: Duration,
    /// Default [`DEFAULT_MAX_REFRESH`].
    pub max: Duration,
    /// Default [`DEFAULT_HOLD_EMPTY`]; zero empties at the first empty answer.
    pub hold_empty: Duration,
}

impl Default for Refresh {
    fn default() -> Self {
        Refresh {
            min: DEFAULT_MIN_REFRESH,
            max: DEFAULT_MAX_REFRESH,
            hold_empty: DEFAULT_HOLD_EMPTY,
        }
    }
}

/// What a name is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lookup {
    /// A records (AAAA where the name has none); every address is a
    /// backend on `port`.
    Ip { port: u16 },
    /// SRV records: each target's addresses, on the record's port, with
    /// the record's weight.
    Srv,
}

/// One entry of `backends` that follows DNS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DnsBackend {
    /// The name looked up, as written (without the port): the `name` label
    /// of the DNS metrics and the source `/status` gives its backends.
    pub name: String,
    pub lookup: Lookup,
    /// The weight of every address an A/AAAA lookup gives (SRV records
    /// carry their own). 1 to [`MAX_WEIGHT`](super::MAX_WEIGHT).
    pub weight: u32,
}

impl DnsBackend {
    /// How the config names it: `name:port` with `resolve`, or `srv name`.
    pub fn describe(&self) -> String {
        match self.lookup {
            Lookup::Ip { port } => format!("{}:{port} (resolve)", self.name),
            Lookup::Srv => format!("srv {}", self.name),
        }
    }

    /// The record type asked for, as DNS spells it.
    pub fn record_type(&self) -> &'static str {
        match self.lookup {
            Lookup::Ip { .. } => "A/AAAA",
            Lookup::Srv => "SRV",
        }
    }
}
