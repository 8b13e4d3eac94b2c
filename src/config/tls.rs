//! The validated settings of TLS and HTTP/2 for clients: `[server.tls]`
//! and the HTTP/2 keys of `[server]`.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Default `[server] h2_max_streams`: concurrent streams one HTTP/2 client
/// connection may have open (what nginx, Envoy and Pingora allow).
pub const DEFAULT_H2_MAX_STREAMS: u32 = 100;
/// Largest `h2_max_streams`.
pub const MAX_H2_STREAMS: u32 = 10_000;

/// `[server.tls]`: listeners that speak TLS, and their certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Never empty; none is also a plain listener or the admin address.
    pub listen: Vec<SocketAddr>,
    /// Never empty; paths made absolute against the config's directory.
    pub certificates: Vec<CertFiles>,
    /// Index into `certificates` of the one for clients without SNI or
    /// with a name no certificate has. Default: the first.
    pub default_certificate: usize,
    pub min_version: TlsVersion,
    /// Offer `h2` by ALPN (with `http/1.1`). Default true.
    pub h2: bool,
    /// `Strict-Transport-Security` on responses to HTTPS requests, if set.
    pub hsts: Option<String>,
}

/// One certificate: a PEM chain and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The oldest TLS version accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

impl TlsVersion {
    pub const NAMES: [&'static str; 2] = ["1.2", "1.3"];

    pub fn name(self) -> &'static str {
        match self {
            TlsVersion::V1_2 => Self::NAMES[0],
            TlsVersion::V1_3 => Self::NAMES[1],
        }
    }
}

/// HTTP/2 for clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2Config {
    /// Accept HTTP/2 with prior knowledge on the plain listeners, next to
    /// HTTP/1.1. Default false.
    pub h2c: bool,
    /// Concurrent streams per connection. Default [`DEFAULT_H2_MAX_STREAMS`].
    pub max_streams: u32,
}
