//! The validated settings of one upstream: balancing, timeouts, backends,
//! active and passive health checks, the retry budget, and their defaults.

use std::net::SocketAddr;
use std::time::Duration;

/// Time allowed to establish a TCP connection to a backend.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Time allowed between reads from a backend (response header and each body read).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for each write to a backend.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an unused keep-alive connection to a backend stays in the pool.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an upgraded connection (a WebSocket) may carry no byte either
/// way before it is closed: long, since a quiet WebSocket is a normal one.
pub const DEFAULT_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Extra attempts after a connect failure, each on a different backend.
pub const DEFAULT_RETRIES: usize = 2;
/// Share of an upstream's requests over [`RETRY_BUDGET_WINDOW`] that may
/// be retries (Envoy's default retry budget is 20%).
pub const DEFAULT_RETRY_RATIO: f64 = 0.2;
/// Retries an upstream may make per second whatever its traffic, so that a
/// quiet upstream can still retry (Envoy's default floor is 3).
pub const DEFAULT_MIN_RETRIES_PER_SECOND: u32 = 3;
/// Largest `min_retries_per_second`.
pub const MAX_MIN_RETRIES_PER_SECOND: u32 = 100_000;
/// The span of recent traffic the retry budget looks at.
pub const RETRY_BUDGET_WINDOW: Duration = Duration::from_secs(10);
/// Largest `retries`; the proxy's total attempts are bounded by this plus one.
pub const MAX_RETRIES: usize = 15;
/// Largest backend `weight`.
pub const MAX_WEIGHT: u32 = 10_000;
/// Time between active checks of one backend.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Time one active check may take.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// Passing checks in a row that mark a backend healthy.
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
/// Failing checks in a row that mark a backend unhealthy.
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;
/// Largest threshold or `consecutive_failures`.
pub const MAX_THRESHOLD: u32 = 1000;
/// Failed requests in a row that eject a backend.
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
/// First ejection's length; later ones in a row double it.
pub const DEFAULT_EJECTION_TIME: Duration = Duration::from_secs(10);
/// Longest ejection.
pub const DEFAULT_MAX_EJECTION_TIME: Duration = Duration::from_secs(300);
/// Most of an upstream's backends that may be ejected at once, in percent
/// (Envoy's default); at least one backend may be, whatever the share.
pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;

/// `[upstreams.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub name: String,
    pub balance: Balance,
    pub timeouts: Timeouts,
    /// Extra attempts on connect failure, each on a different backend. Default [`DEFAULT_RETRIES`].
    pub retries: usize,
    /// The backends the file lists by address; unique. Empty only when
    /// `dns` is not.
    pub backends: Vec<BackendConfig>,
    /// The backends that follow DNS, in file order; names are unique.
    pub dns: Vec<super::DnsBackend>,
    /// How often `dns` names are looked up again.
    pub refresh: super::Refresh,
    /// Active checks, if configured.
    pub health_check: Option<HealthCheck>,
    /// Ejection on failed requests (on by default).
    pub passive: Passive,
    /// Time over which a backend that became usable ramps up to its full
    /// weight. `None`: no ramp.
    pub slow_start: Option<Duration>,
    /// How many retries the upstream allows, whatever `retries` says.
    pub retry_budget: RetryBudget,
    /// What `consistent_hash` hashes; set exactly for that balance.
    pub hash_key: Option<super::HashKey>,
    /// Bounded load for `consistent_hash`: no backend above this times the
    /// mean in-flight. 0 turns it off. Default
    /// [`DEFAULT_HASH_BALANCE_FACTOR`](super::DEFAULT_HASH_BALANCE_FACTOR).
    pub hash_balance_factor: f64,
    /// How long `least_latency` remembers a latency. Default
    /// [`DEFAULT_LATENCY_DECAY`](super::DEFAULT_LATENCY_DECAY).
    pub latency_decay: Duration,
    /// The sticky cookie, if configured (any balance).
    pub sticky: Option<super::Sticky>,
    /// HTTP/1.1 or HTTP/2 to the backends. Default HTTP/1.1.
    pub protocol: super::Protocol,
    /// Concurrent requests on one HTTP/2 connection to a backend. Default
    /// [`DEFAULT_MAX_STREAMS_PER_CONNECTION`](super::DEFAULT_MAX_STREAMS_PER_CONNECTION).
    pub max_streams_per_connection: u32,
    /// TLS to the backends, if configured.
    pub tls: Option<super::UpstreamTls>,
}

/// `[upstreams.NAME.retry_budget]`: over the last [`RETRY_BUDGET_WINDOW`],
/// retries may be `ratio` of the requests or `min_retries_per_second` per
/// second of the window, whichever allows more (like Envoy's retry budget).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    /// 0.0 to 1.0. Default [`DEFAULT_RETRY_RATIO`].
    pub ratio: f64,
    /// 0 to [`MAX_MIN_RETRIES_PER_SECOND`]. Default [`DEFAULT_MIN_RETRIES_PER_SECOND`].
    pub min_retries_per_second: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            ratio: DEFAULT_RETRY_RATIO,
            min_retries_per_second: DEFAULT_MIN_RETRIES_PER_SECOND,
        }
    }
}

/// `[upstreams.NAME.health_check]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    /// 1 to [`MAX_THRESHOLD`].
    pub healthy_threshold: u32,
    /// 1 to [`MAX_THRESHOLD`].
    pub unhealthy_threshold: u32,
    /// Whether a backend that no check has passed yet takes traffic.
    pub initial_healthy: bool,
}

/// What an active check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Connect, and succeed if the connection is accepted.
    Tcp,
    /// `GET path` with `Host: host` (default: the backend's address); pass
    /// if the status matches one of `expect`.
    Http {
        path: String,
        host: Option<String>,
        expect: Vec<StatusMatch>,
    },
    /// `grpc.health.v1.Health/Check` for `service` (`""`: the whole
    /// server) over HTTP/2; pass on `SERVING`.
    Grpc { service: String },
}

impl Probe {
    pub const NAMES: [&'static str; 3] = ["grpc", "http", "tcp"];
}

/// One entry of `expect_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatch {
    /// `"2xx"`: the hundreds digit.
    Class(u16),
    /// `200` or `"200"`.
    Code(u16),
}

impl StatusMatch {
    pub fn matches(self, status: u16) -> bool {
        match self {
            StatusMatch::Class(c) => status / 100 == c,
            StatusMatch::Code(c) => status == c,
        }
    }
}

impl std::fmt::Display for StatusMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatusMatch::Class(c) => write!(f, "{c}xx"),
            StatusMatch::Code(c) => write!(f, "{c}"),
        }
    }
}

/// `[upstreams.NAME.passive_health_check]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Passive {
    /// Counted failures in a row that eject a backend; 0 turns ejection off.
    pub consecutive_failures: u32,
    /// Which outcomes count.
    pub counts: Outcomes,
    /// Length of a first ejection; each ejection in a row doubles it.
    pub ejection_time: Duration,
    /// Cap on the length of an ejection; at least `ejection_time`.
    pub max_ejection_time: Duration,
    /// 0 to 100: the most of the upstream's backends ejected at once, in
    /// percent, rounded down, but never fewer than one backend. Default
    /// [`DEFAULT_MAX_EJECTION_PERCENT`].
    pub max_ejection_percent: u32,
}

impl Passive {
    /// How many of `backends` may be ejected at once.
    pub fn max_ejected(&self, backends: usize) -> usize {
        (backends * self.max_ejection_percent as usize / 100).max(1)
    }
}

impl Default for Passive {
    fn default() -> Self {
        Passive {
            consecutive_failures: DEFAULT_CONSECUTIVE_FAILURES,
            counts: Outcomes::DEFAULT,
            ejection_time: DEFAULT_EJECTION_TIME,
            max_ejection_time: DEFAULT_MAX_EJECTION_TIME,
            max_ejection_percent: DEFAULT_MAX_EJECTION_PERCENT,
        }
    }
}

/// What a request to a backend can end in, as far as ejection cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The connection could not be established.
    Connect,
    /// No answer within the read or write timeout.
    Timeout,
    /// The connection broke after it was established.
    Reset,
    /// The backend spoke invalid HTTP.
    Protocol,
    /// The backend answered with a 5xx status.
    ServerError,
    /// The TLS handshake with the backend failed (its certificate, most
    /// often).
    Tls,
    /// A gRPC response with `grpc-status` 14, UNAVAILABLE.
    GrpcUnavailable,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Connect,
        Outcome::Timeout,
        Outcome::Reset,
        Outcome::Protocol,
        Outcome::ServerError,
        Outcome::Tls,
        Outcome::GrpcUnavailable,
    ];
    pub const NAMES: [&'static str; 7] = [
        "connect",
        "timeout",
        "reset",
        "protocol",
        "5xx",
        "tls",
        "grpc_unavailable",
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// A set of [`Outcome`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcomes(u8);

impl Outcomes {
    /// Every failure to get a response counts; a 5xx or a gRPC
    /// UNAVAILABLE does not, since an app answering 500 to one bad request
    /// is not down (as in nginx).
    pub const DEFAULT: Outcomes = Outcomes(0b010_1111);

    pub fn empty() -> Self {
        Outcomes(0)
    }

    pub fn insert(&mut self, o: Outcome) {
        self.0 |= 1 << o as u8;
    }

    pub fn contains(self, o: Outcome) -> bool {
        self.0 & (1 << o as u8) != 0
    }

    pub fn names(self) -> Vec<&'static str> {
        Outcome::ALL
            .into_iter()
            .filter(|&o| self.contains(o))
            .map(Outcome::name)
            .collect()
    }
}

/// How an upstream picks a backend for each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Smooth weighted round-robin (the default).
    RoundRobin,
    /// Fewest in-flight requests per unit of weight; ties by round-robin.
    LeastConnections,
    /// A ring of backends placed by hash: the same key reaches the same
    /// backend, with bounded load.
    ConsistentHash,
    /// Two random backends, the one with the lower decaying peak latency
    /// times (in-flight + 1).
    LeastLatency,
}

impl Balance {
    pub const NAMES: [&'static str; 4] = [
        "round_robin",
        "least_connections",
        "consistent_hash",
        "least_latency",
    ];

    pub fn name(self) -> &'static str {
        match self {
            Balance::RoundRobin => Self::NAMES[0],
            Balance::LeastConnections => Self::NAMES[1],
            Balance::ConsistentHash => Self::NAMES[2],
            Balance::LeastLatency => Self::NAMES[3],
        }
    }
}

/// Per-upstream timeouts; see the `DEFAULT_*_TIMEOUT` constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    pub idle: Duration,
    /// After a `101`: no byte either way for this long closes the tunnel
    /// (`read` and `write` no longer apply).
    pub tunnel_idle: Duration,
}

/// One backend of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// As written in the file (a DNS answer's `ip:port` for a discovered
    /// backend); the key for its state and its metric label.
    pub address: String,
    /// Where to connect (resolved once, at load, for a name without
    /// `resolve`).
    pub socket_addr: SocketAddr,
    /// 1 to [`MAX_WEIGHT`]; default 1.
    pub weight: u32,
}
