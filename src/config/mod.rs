//! Configuration: `proxy.toml` is read into the serde mirror in `file.rs`,
//! checked once in `validate.rs`, and comes out as [`Config`], a type the data
//! plane can use without checking anything again.

mod error;
mod file;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::{ConfigError, ErrorKind, LoadError, Position};

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
/// Largest `retries`; the proxy's total attempts are bounded by this plus one.
pub const MAX_RETRIES: usize = 15;
/// Largest backend `weight`.
pub const MAX_WEIGHT: u32 = 10_000;
/// Longest duration any setting accepts; keeps deadline arithmetic far
/// from overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// Largest `threads`.
pub const MAX_THREADS: usize = 1024;

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
    /// Index into `upstreams` of the upstream that receives all traffic.
    pub default_upstream: usize,
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
    /// The upstream that receives all traffic.
    pub fn default_upstream(&self) -> &UpstreamConfig {
        &self.upstreams[self.default_upstream]
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
    validate::validate(path, source)
}
