//! How to reach an upstream's backends: the Pingora peer for one attempt
//! (or one active check) with the upstream's timeouts, its protocol
//! (HTTP/1.1, or HTTP/2 by ALPN or by prior knowledge for h2c) and its TLS
//! (SNI, roots, verification, client certificate). The certificates are
//! converted once per snapshot, here, not per connection.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pingora::prelude::HttpPeer;
use pingora::protocols::tls::CaType;
use pingora::protocols::ALPN;
use pingora::utils::tls::{parse_x509, CertKey, WrappedX509};

use crate::config::{Protocol, Timeouts, UpstreamConfig};
use crate::pool::{keepalive, BackendState};

/// What every peer of one upstream shares.
pub struct PeerTemplate {
    protocol: Protocol,
    max_streams: usize,
    tls: Option<TlsPeer>,
    /// Keeps the pooled connections of differently configured upstreams
    /// apart: a connection verified against one CA is never lent to an
    /// upstream that trusts another.
    group_key: u64,
    /// What `/status` says of it.
    description: serde_json::Value,
}

impl std::fmt::Debug for PeerTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTemplate")
            .field("protocol", &self.protocol)
            .field("max_streams", &self.max_streams)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

struct TlsPeer {
    /// `None`: each backend's host.
    sni: Option<String>,
    verify: bool,
    ca: Option<Arc<CaType>>,
    client: Option<Arc<CertKey>>,
}

impl PeerTemplate {
    /// The template of `config`, whose certificates validation has read
    /// and parsed.
    pub fn new(config: &UpstreamConfig) -> PeerTemplate {
        let tls = config.tls.as_ref().map(|t| TlsPeer {
            sni: t.sni.clone(),
            verify: t.verify,
            ca: t.ca.as_ref().map(|ca| {
                let certs: Vec<WrappedX509> = ca
                    .certs
                    .iter()
                    .map(|der| WrappedX509::new(der.clone(), parse_x509))
                    .collect();
                Arc::<CaType>::from(certs.into_boxed_slice())
            }),
            client: t
                .client
                .as_ref()
                .map(|c| Arc::new(CertKey::new(c.chain.clone(), c.key_der.clone()))),
        });
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        config.protocol.hash(&mut hasher);
        config.tls.hash(&mut hasher);
        PeerTemplate {
            protocol: config.protocol,
            max_streams: config.max_streams_per_connection as usize,
            tls,
            group_key: hasher.finish(),
            description: describe(config),
        }
    }

    /// For `/status`: protocol, streams, and the TLS settings (files by
    /// path, never their contents).
    pub fn description(&self) -> &serde_json::Value {
        &self.description
    }

    /// Equal for two templates that reach backends the same way.
    pub fn key(&self) -> u64 {
        self.group_key
    }

    /// Whether the backends speak HTTP/2.
    pub fn http2(&self) -> bool {
        self.protocol == Protocol::Http2
    }

    /// The peer for `backend`, with `timeouts`. Its pooled connections
    /// are its own: keyed by its connection group as well as by how it is
    /// reached, so those of a backend no snapshot lists any more are never
    /// lent to whoever has its address next. They idle for `idle_timeout`,
    /// or less if an HTTP/1.1 backend announced a shorter keep-alive (see
    /// [`keepalive`]); the group changes with the announcement, so the
    /// connections pooled under a longer timeout are never lent again.
    pub fn peer(&self, backend: &BackendState, timeouts: &Timeouts) -> HttpPeer {
        let pooling = backend.pooling();
        let mut peer = self.bare(backend.address(), backend.socket_addr());
        // Odd multiplier: distinct groups give distinct keys.
        peer.group_key = self
            .group_key
            .wrapping_add(pooling.group.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        // HTTP/2 has no Keep-Alive header: what the backend said while the
        // upstream spoke HTTP/1.1 (before a reload) does not apply.
        let announced = pooling.announced.filter(|_| !self.http2());
        let o = &mut peer.options;
        o.connection_timeout = Some(timeouts.connect);
        o.read_timeout = Some(timeouts.read);
        o.write_timeout = Some(timeouts.write);
        o.idle_timeout = Some(keepalive::pooled_idle_timeout(timeouts.idle, announced));
        peer
    }

    /// The peer for an active check, each step bounded by `limit`.
    pub fn check_peer(&self, address: &str, socket_addr: SocketAddr, limit: Duration) -> HttpPeer {
        let mut peer = self.bare(address, socket_addr);
        let o = &mut peer.options;
        o.connection_timeout = Some(limit);
        o.read_timeout = Some(limit);
        o.write_timeout = Some(limit);
        peer
    }

    fn bare(&self, address: &str, socket_addr: SocketAddr) -> HttpPeer {
        let sni = match &self.tls {
            None => String::new(),
            Some(t) => t
                .sni
                .clone()
                .unwrap_or_else(|| host_of(address).to_string()),
        };
        let mut peer = HttpPeer::new(socket_addr, self.tls.is_some(), sni);
        peer.group_key = self.group_key;
        let o = &mut peer.options;
        if self.http2() {
            o.alpn = ALPN::H2;
            o.max_h2_streams = self.max_streams;
        }
        if let Some(t) = &self.tls {
            o.verify_cert = t.verify;
            o.verify_hostname = t.verify;
            o.ca = t.ca.clone();
            peer.client_cert_key = t.client.clone();
        }
        peer
    }
}

fn describe(config: &UpstreamConfig) -> serde_json::Value {
    let tls = config.tls.as_ref().map(|t| {
        serde_json::json!({
            "sni": t.sni.as_deref().unwrap_or("(each backend's host)"),
            "verify": t.verify,
            "ca": t.ca.as_ref().map_or("(system roots)".to_string(), |c| c.path.display().to_string()),
            "client_certificate": t.client.as_ref().map(|c| c.cert.display().to_string()),
        })
    });
    serde_json::json!({
        "protocol": config.protocol.name(),
        "max_streams_per_connection": (config.protocol == Protocol::Http2)
            .then_some(config.max_streams_per_connection),
        "tls": tls,
    })
}

/// The host of `host:port` (`[v6]:port` loses its brackets).
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_of_an_address_is_its_sni() {
        assert_eq!(host_of("orders.internal:443"), "orders.internal");
        assert_eq!(host_of("10.0.0.7:8443"), "10.0.0.7");
        assert_eq!(host_of("[::1]:443"), "::1");
    }

    #[test]
    fn a_retired_backend_never_shares_pooled_connections_again() {
        use pingora::upstreams::peer::Peer;
        let text = "[upstreams.app]\nbackends = [\"127.0.0.1:3001\"]\n";
        let config = crate::config::parse_offline(std::path::Path::new("t.toml"), text).unwrap();
        let u = &config.upstreams[0];
        let template = PeerTemplate::new(u);
        let health = crate::pool::health::Health::new(true, 0);
        let b = BackendState::new("127.0.0.1:3001".into(), u.backends[0].socket_addr, health);
        let first = template.peer(&b, &u.timeouts).reuse_hash();
        assert_eq!(template.peer(&b, &u.timeouts).reuse_hash(), first);
        b.retire();
        assert_ne!(template.peer(&b, &u.timeouts).reuse_hash(), first);
        // Another state at the same address has connections of its own.
        let health = crate::pool::health::Health::new(true, 0);
        let other = BackendState::new("127.0.0.1:3001".into(), u.backends[0].socket_addr, health);
        assert_ne!(template.peer(&other, &u.timeouts).reuse_hash(), first);
    }

    /// A template for `protocol` and a backend of it.
    fn keepalive_case(protocol: &str) -> (PeerTemplate, BackendState, Timeouts) {
        let text = format!(
            "[upstreams.app]\nprotocol = \"{protocol}\"\nidle_timeout = \"30s\"\n\
             backends = [\"127.0.0.1:3001\"]\n"
        );
        let config = crate::config::parse_offline(std::path::Path::new("t.toml"), &text).unwrap();
        let u = &config.upstreams[0];
        let health = crate::pool::health::Health::new(true, 0);
        let b = BackendState::new("127.0.0.1:3001".into(), u.backends[0].socket_addr, health);
        (PeerTemplate::new(u), b, u.timeouts)
    }

    #[test]
    fn keepalive_a_shorter_announcement_shortens_idling_and_regroups() {
        use pingora::upstreams::peer::Peer;
        let (template, b, timeouts) = keepalive_case("http1");
        let before = template.peer(&b, &timeouts);
        assert_eq!(before.idle_timeout(), Some(Duration::from_secs(30)));
        b.announce_keepalive(5);
        let five = template.peer(&b, &timeouts);
        assert_eq!(five.idle_timeout(), Some(Duration::from_secs(4)));
        assert_ne!(five.reuse_hash(), before.reuse_hash(), "pooled at 30 s");
        b.announce_keepalive(60);
        let again = template.peer(&b, &timeouts);
        assert_eq!(again.idle_timeout(), Some(Duration::from_secs(4)));
        assert_eq!(again.reuse_hash(), five.reuse_hash());
    }

    #[test]
    fn keepalive_announcements_do_not_apply_to_http2() {
        use pingora::upstreams::peer::Peer;
        let (template, b, timeouts) = keepalive_case("http2");
        b.announce_keepalive(5);
        let peer = template.peer(&b, &timeouts);
        assert_eq!(peer.idle_timeout(), Some(Duration::from_secs(30)));
    }
}
