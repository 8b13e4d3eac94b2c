//! TLS for clients: the certificates (`certs.rs`), which one a handshake
//! gets by SNI (`resolver.rs`), and the handshake itself, with rustls
//! through Pingora's acceptor. The handshake runs in the connection's own
//! task, after the connection is counted against `max_connections`, and
//! must finish within `header_timeout`: a client that stalls mid-handshake
//! holds nothing for long.
//!
//! Certificates load with the config, and again with every reload and
//! whenever one of their files changes; new handshakes use the new set,
//! open connections keep theirs. A set that fails to load changes nothing:
//! the previous certificates keep serving and the error is kept for
//! `/status`.

pub(crate) mod certs;
mod resolver;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use pingora::listeners::tls::Acceptor;
use pingora::protocols::l4::stream::Stream as Socket;
use pingora::protocols::tls::server::handshake;
use pingora::protocols::Stream;
use rustls::ServerConfig;
use serde_json::{json, Value};

pub use certs::{load_all, Cert, CertError};
pub use resolver::{CertSet, Resolver};

use crate::config::{TlsConfig, TlsVersion};
use crate::metrics::Metrics;

/// Certificates expiring within this are warned about.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// The TLS side of the server: one per process.
pub struct Tls {
    listen: Vec<SocketAddr>,
    resolver: Arc<Resolver>,
    /// rustls' settings (the versions and ALPN of the serving config) in
    /// Pingora's acceptor.
    acceptor: ArcSwap<Acceptor>,
    /// The settings serving now.
    settings: Mutex<TlsConfig>,
    last_error: Mutex<Option<(SystemTime, String)>>,
    metrics: Arc<Metrics>,
}

impl Tls {
    /// Loads every certificate of `config`: an error names its file.
    pub fn new(config: &TlsConfig, metrics: Arc<Metrics>) -> Result<Tls, CertError> {
        let set = CertSet::new(load_all(&config.certificates)?, config.default_certificate);
        observe_expiry(&metrics, &set);
        let resolver = Arc::new(Resolver::new(set));
        Ok(Tls {
            listen: config.listen.clone(),
            acceptor: ArcSwap::from_pointee(acceptor(config, &resolver)),
            resolver,
            settings: Mutex::new(config.clone()),
            last_error: Mutex::new(None),
            metrics,
        })
    }

    /// Whether a connection accepted on local address `local` came in
    /// through one of the TLS listeners.
    pub fn is_tls_listener(&self, local: SocketAddr) -> bool {
        listens_on(&self.listen, local)
    }

    /// Loads `config`'s certificates again and, if any file or setting
    /// changed, installs them with its versions and ALPN; returns what
    /// changed (`None`: nothing). On an error the current ones keep
    /// serving, and the error is kept for `/status`.
    pub fn reload(&self, config: &TlsConfig) -> Result<Option<Vec<String>>, CertError> {
        let certs = match load_all(&config.certificates) {
            Ok(certs) => certs,
            Err(e) => {
                let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
                *last = Some((SystemTime::now(), e.to_string()));
                return Err(e);
            }
        };
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let current = self.resolver.current();
        let mut changed: Vec<String> = certs
            .iter()
            .filter(|c| {
                !current
                    .certs()
                    .iter()
                    .any(|o| o.files == c.files && o.fingerprint == c.fingerprint)
            })
            .map(|c| format!("certificate {}", c.label()))
            .collect();
        let removed = current
            .certs()
            .iter()
            .filter(|o| !certs.iter().any(|c| c.files == o.files));
        changed.extend(removed.map(|o| format!("certificate {} removed", o.label())));
        let mut settings = self.settings.lock().unwrap_or_else(|e| e.into_inner());
        // By file, not by place: reordering the list may change the default.
        let default = certs.get(config.default_certificate);
        if current.default().map(|c| &c.files) != default.map(|c| &c.files) {
            let label = default.map_or_else(String::new, Cert::label);
            changed.push(format!("default certificate {label}"));
        }
        if (settings.min_version, settings.h2) != (config.min_version, config.h2) {
            changed.push("min_version or h2".to_string());
        }
        if changed.is_empty() {
            return Ok(None);
        }
        // Unchanged certificates keep when they were loaded.
        let certs = certs
            .into_iter()
            .map(|c| {
                let same = current
                    .certs()
                    .iter()
                    .find(|o| o.files == c.files && o.fingerprint == c.fingerprint);
                same.cloned().unwrap_or(c)
            })
            .collect();
        let set = CertSet::new(certs, config.default_certificate);
        observe_expiry(&self.metrics, &set);
        self.resolver.swap(set);
        self.acceptor
            .store(Arc::new(acceptor(config, &self.resolver)));
        *settings = config.clone();
        Ok(Some(changed))
    }

    /// The TLS handshake of a new client connection, within `timeout`;
    /// `None` (counted, logged at debug) if it fails.
    pub async fn accept(&self, stream: Stream, timeout: Duration) -> Option<Stream> {
        // Listeners hand over plain sockets; the handshake needs the
        // concrete type.
        let Ok(socket) = stream.into_any().downcast::<Socket>() else {
            log::error!("TLS listener handed over a stream that is not a socket");
            return None;
        };
        let acceptor = self.acceptor.load_full();
        let result = match tokio::time::timeout(timeout, handshake(&acceptor, *socket)).await {
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "not complete within header_timeout ({})",
                humantime::format_duration(timeout)
            )),
        };
        self.metrics.observe_tls_handshake(result.is_ok());
        match result {
            Ok(tls) => Some(Box::new(tls)),
            Err(e) => {
                log::debug!("TLS handshake failed: {e}");
                None
            }
        }
    }

    /// What `/status` shows: each certificate, and the last failed load.
    pub fn status(&self) -> Value {
        let set = self.resolver.current();
        let now = SystemTime::now();
        let certs: Vec<Value> = set
            .certs()
            .iter()
            .map(|c| {
                json!({
                    "names": c.names,
                    "cert": c.files.cert.display().to_string(),
                    "key": c.files.key.display().to_string(),
                    "not_after": humantime::format_rfc3339(c.not_after).to_string(),
                    "expires_within_14_days": c.expires_within(EXPIRY_WARNING, now),
                    "loaded_at": humantime::format_rfc3339_millis(c.loaded_at).to_string(),
                })
            })
            .collect();
        let last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        json!({
            "listen": self.listen.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "certificates": certs,
            "last_error": last.as_ref().map(|(at, e)| json!({
                "at": humantime::format_rfc3339_millis(*at).to_string(),
                "error": e,
                "kept": "the previous certificates keep serving",
            })),
        })
    }
}

/// Whether a connection to `local` was accepted by one of `listen`: a
/// wildcard listener (`0.0.0.0:443`, `[::]:443`) accepts on its port at
/// any address. Plain and TLS listeners never share a port, so the port
/// of a wildcard decides.
fn listens_on(listen: &[SocketAddr], local: SocketAddr) -> bool {
    listen
        .iter()
        .any(|l| l.port() == local.port() && (l.ip().is_unspecified() || l.ip() == local.ip()))
}

/// rustls' server settings for `config`, with certificates from `resolver`.
fn acceptor(config: &TlsConfig, resolver: &Arc<Resolver>) -> Acceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = match config.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(resolver) as Arc<dyn rustls::server::ResolvesServerCert>);
    server.alpn_protocols = if config.h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Acceptor::from_server_config(Arc::new(server))
}

fn observe_expiry(metrics: &Metrics, set: &CertSet) {
    let expiries: Vec<(String, f64)> = set
        .certs()
        .iter()
        .map(|c| {
            let secs = c
                .not_after
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            (c.label(), secs)
        })
        .collect();
    metrics.observe_certificates(&expiries);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listener_owns_its_port_at_every_address() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        let wildcards = [at("0.0.0.0:8443"), at("[::]:9443")];
        assert!(listens_on(&wildcards, at("127.0.0.1:8443")));
        assert!(listens_on(&wildcards, at("10.1.2.3:8443")));
        assert!(listens_on(&wildcards, at("[::1]:9443")));
        assert!(listens_on(&wildcards, at("[::ffff:127.0.0.1]:9443")));
        assert!(!listens_on(&wildcards, at("127.0.0.1:8080")));
        let exact = [at("127.0.0.2:8443")];
        assert!(listens_on(&exact, at("127.0.0.2:8443")));
        assert!(!listens_on(&exact, at("127.0.0.1:8443")));
    }
}
