//! Configuration: `proxy.toml` is read into the serde mirror in `file.rs`,
//! checked once in `validate.rs`, and comes out as [`Config`], a type the data
//! plane can use without checking anything again.

mod access;
mod affinity;
mod discovery;
mod error;
mod file;
mod protocol;
mod tls;
mod upstream;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use access::*;
pub use affinity::*;
pub use discovery::*;
pub use error::{ConfigError, ErrorKind, LoadError, Position, Warning};
pub use protocol::*;
pub use tls::*;
pub use upstream::*;

/// Data-plane address used when `[server] listen` is absent (all interfaces, like nginx's `listen 80`).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Admin address used when `[admin] listen` is absent: loopback only.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
/// How long SIGTERM waits for in-flight requests before exiting.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);
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
/// Default `[server] server_header`.
pub const DEFAULT_SERVER_HEADER: &str = "switchyard";

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
    /// `[resolver]`: who answers the names that backends follow.
    pub resolver: Resolver,
    /// `[log]`: the access log.
    pub log: LogConfig,
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
    /// Plain data-plane listeners. Default [`DEFAULT_LISTEN`]; empty only
    /// with TLS listeners.
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
    /// `[server.tls]`, if configured.
    pub tls: Option<TlsConfig>,
    pub h2: H2Config,
    /// Answer plain requests with `308` to the same URL on HTTPS (the
    /// first TLS listener's port). Default false; needs `[server.tls]`.
    pub redirect_https: bool,
    /// The `Server` header of every response the proxy makes itself
    /// (never of a backend's). Default [`DEFAULT_SERVER_HEADER`]; `None`
    /// (`server_header = ""`): no `Server` header.
    pub server_header: Option<http::HeaderValue>,
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
    /// The bearer token `/reload` and the drain endpoints ask for, if set.
    pub token: Option<String>,
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
