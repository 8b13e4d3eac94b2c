//! The validated settings of how Switchyard speaks to an upstream's
//! backends: HTTP/1.1 or HTTP/2 (`protocol`, `max_streams_per_connection`)
//! and TLS (`[upstreams.NAME.tls]`), with the certificates already read.

use std::path::PathBuf;

/// Default `max_streams_per_connection`: concurrent requests on one
/// HTTP/2 connection to a backend (what nginx and Envoy allow a client).
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: u32 = 100;
/// Largest `max_streams_per_connection`.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 10_000;

/// What an upstream's backends speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// HTTP/1.1 (the default): one request at a time per connection.
    #[default]
    Http1,
    /// HTTP/2: with TLS chosen by ALPN, without it h2c by prior knowledge.
    Http2,
}

impl Protocol {
    pub const NAMES: [&'static str; 2] = ["http1", "http2"];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http1 => Self::NAMES[0],
            Protocol::Http2 => Self::NAMES[1],
        }
    }
}

/// `[upstreams.NAME.tls]`: TLS to the backends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamTls {
    /// The name sent as SNI and checked against the certificate. `None`:
    /// each backend's host as written in `backends`.
    pub sni: Option<String>,
    /// Check the backend's certificate. Default true.
    pub verify: bool,
    /// The roots to check against. `None`: the system's.
    pub ca: Option<CaBundle>,
    /// A certificate to present, for backends that ask for one (mTLS).
    pub client: Option<ClientIdentity>,
}

/// A PEM bundle of CA certificates, read when the config loads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CaBundle {
    pub path: PathBuf,
    /// Each certificate, DER.
    pub certs: Vec<Vec<u8>>,
}

/// A client certificate chain and its key, read when the config loads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientIdentity {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The chain, leaf first, DER.
    pub chain: Vec<Vec<u8>>,
    /// The private key, DER (PKCS#8, PKCS#1 or SEC1).
    pub key_der: Vec<u8>,
}
