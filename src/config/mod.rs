//! Configuration: `proxy.toml` is read into the serde mirror in `file.rs`,
//! checked once in `validate.rs`, and comes out as [`Config`], a type the data
//! plane can use without checking anything again.

mod error;
mod file;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::{ConfigError, ErrorKind, LoadError, Position, Warning};

/// Data-plane address used when `[server] listen` is absent (all interfaces, like nginx's `listen 80`).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Admin address used when `[admin] listen` is absent: loopback only.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
/// How long SIGTERM waits for in-flight requests before exiting.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);
/// Time allowed to establish a TCP connection to a backend.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Time allowed between reads from a backend (response header and each body read).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for each write to a backend.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an unused keep-alive connection to a backend stays in the pool.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
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
/// Longest duration any setting accepts; keeps deadline arithmetic far
/// from overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// Largest `threads`.
pub const MAX_THREADS: usize = 1024;
/// Time a client has to send a whole request head.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client may leave between two reads of its request body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an idle keep-alive client connection stays open.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Time a write to a client that is not reading may wait without progress.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Client connections open at once; each can also hold one to a backend.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Largest `max_connections`.
pub const MAX_CONNECTIONS: usize = 1 << 20;
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

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// SHA-256 of the file's bytes, in hex (matches `sha256sum proxy.toml`).
    pub hash: String,
    pub server: ServerConfig,
    pub admin: AdminConfig,
    /// In name order; never empty.
    pub upstreams: Vec<UpstreamConfig>,
    /// `[[routes]]` in file order; empty when the file has none.
    pub routes: Vec<crate::route::Route>,
    /// Index into `upstreams` of the upstream that takes the requests no
    /// route matches: `default_upstream`, or the only upstream of a file
    /// without routes. `None` (only with routes): they get `404`.
    pub default_upstream: Option<usize>,
    /// What is worth telling about a config that loads.
    pub warnings: Vec<Warning>,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Data-plane listeners; never empty. Default [`DEFAULT_LISTEN`].
    pub listen: Vec<SocketAddr>,
    /// Worker threads. Default: the number of CPUs.
    pub threads: usize,
    /// Default [`DEFAULT_GRACE_PERIOD`].
    pub grace_period: Duration,
    /// Reload when the file changes. Default true.
    pub watch_config: bool,
    /// What a client request may be; see [`Limits`].
    pub limits: Limits,
    /// How long a client may take; see [`ClientTimeouts`].
    pub client_timeouts: ClientTimeouts,
    /// Open client connections; one more is answered 503 and closed.
    /// Default [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
}

/// How long a client may take over each part of an exchange before its
/// connection is closed, so slow or silent clients cannot hold connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// From a new connection, or from the first byte of a request on a
    /// kept-alive one, until the whole request head has arrived.
    pub header: Duration,
    /// Between two reads of a request body (408 if the body stalls).
    pub body: Duration,
    /// A kept-alive connection with no request on it. `None`: keep-alive
    /// is off and every response closes its connection.
    pub keepalive: Option<Duration>,
    /// How long a write to a client that has stopped reading may wait
    /// without progress.
    pub send: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        ClientTimeouts {
            header: DEFAULT_HEADER_TIMEOUT,
            body: DEFAULT_BODY_TIMEOUT,
            keepalive: Some(DEFAULT_KEEPALIVE_TIMEOUT),
            send: DEFAULT_SEND_TIMEOUT,
        }
    }
}

/// Bounds on a client's request, past which it is answered locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus headers, in bytes: 431 beyond.
    pub header_bytes: usize,
    /// Header fields: 431 beyond.
    pub headers: usize,
    /// Request target, in bytes: 414 beyond.
    pub uri_bytes: usize,
    /// Body, in bytes: 413 beyond. `None`: no limit.
    pub body_bytes: Option<u64>,
}

impl Limits {
    /// Default [`Limits::header_bytes`]: nginx's four 8 KiB buffers.
    pub const HEADER_BYTES: usize = 32 * 1024;
    /// Default [`Limits::headers`], as HAProxy's `tune.http.maxhdr` (101).
    pub const HEADERS: usize = 100;
    /// Default [`Limits::uri_bytes`]: one nginx 8 KiB buffer.
    pub const URI_BYTES: usize = 8 * 1024;
    /// Largest `max_header_bytes`: Pingora reads no more than this.
    pub const MAX_HEADER_BYTES: usize = 1024 * 1024;
    /// Largest `max_headers`: Pingora parses no more than this.
    pub const MAX_HEADERS: usize = 256;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_bytes: Self::HEADER_BYTES,
            headers: Self::HEADERS,
            uri_bytes: Self::URI_BYTES,
            body_bytes: None,
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// Default [`DEFAULT_ADMIN_LISTEN`]; never equal to a data address.
    pub listen: SocketAddr,
}

/// `[upstreams.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub name: String,
    pub balance: Balance,
    pub timeouts: Timeouts,
    /// Extra attempts on connect failure, each on a different backend. Default [`DEFAULT_RETRIES`].
    pub retries: usize,
    /// Never empty; addresses are unique.
    pub backends: Vec<BackendConfig>,
    /// Active checks, if configured.
    pub health_check: Option<HealthCheck>,
    /// Ejection on failed requests (on by default).
    pub passive: Passive,
    /// Time over which a backend that became usable ramps up to its full
    /// weight. `None`: no ramp.
    pub slow_start: Option<Duration>,
    /// How many retries the upstream allows, whatever `retries` says.
    pub retry_budget: RetryBudget,
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
}

impl Probe {
    pub const NAMES: [&'static str; 2] = ["http", "tcp"];
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
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Connect,
        Outcome::Timeout,
        Outcome::Reset,
        Outcome::Protocol,
        Outcome::ServerError,
    ];
    pub const NAMES: [&'static str; 5] = ["connect", "timeout", "reset", "protocol", "5xx"];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// A set of [`Outcome`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcomes(u8);

impl Outcomes {
    /// Every failure to get a response counts; a 5xx does not, since an
    /// app answering 500 to one bad request is not down (as in nginx).
    pub const DEFAULT: Outcomes = Outcomes(0b01111);

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
}

impl Balance {
    pub const NAMES: [&'static str; 2] = ["round_robin", "least_connections"];

    pub fn name(self) -> &'static str {
        match self {
            Balance::RoundRobin => Self::NAMES[0],
            Balance::LeastConnections => Self::NAMES[1],
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
}

/// One backend of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// As written in the file; the key for its state and its metric label.
    pub address: String,
    /// Where to connect (resolved once, at load).
    pub socket_addr: SocketAddr,
    /// 1 to [`MAX_WEIGHT`]; default 1.
    pub weight: u32,
}

impl Config {
    /// The upstream that takes the requests no route matches, if any.
    pub fn default_upstream(&self) -> Option<&UpstreamConfig> {
        self.default_upstream.map(|i| &self.upstreams[i])
    }
}

/// Reads and validates the file at `path`.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let source = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(parse(path, &source)?)
}

/// Validates `source` as if read from `path` (which only names it in errors).
pub fn parse(path: &Path, source: &str) -> Result<Config, Box<ConfigError>> {
    validate::validate(path, source, validate::Resolve::System)
}

/// Like [`parse`], but a backend given by host name is an error rather than
/// a DNS query: for fuzzing and property tests, where input is random and
/// nothing may leave the machine.
pub fn parse_offline(path: &Path, source: &str) -> Result<Config, Box<ConfigError>> {
    validate::validate(path, source, validate::Resolve::Offline)
}
