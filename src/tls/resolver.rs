//! Which certificate a TLS client gets: the one naming its SNI exactly,
//! else one whose wildcard covers it (one label: `*.example.com` serves
//! `a.example.com`, not `a.b.example.com` or `example.com`), else the
//! default. The set is swapped whole on reload; a handshake reads it once.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certs::Cert;

/// The certificates serving now, indexed by name.
#[derive(Debug)]
pub struct CertSet {
    certs: Vec<Cert>,
    exact: HashMap<String, usize>,
    /// `example.com` for `*.example.com`.
    wildcard: HashMap<String, usize>,
    default: usize,
}

impl CertSet {
    /// `certs` has at least one entry, and `default` is one of them.
    pub fn new(certs: Vec<Cert>, default: usize) -> CertSet {
        let (mut exact, mut wildcard) = (HashMap::new(), HashMap::new());
        for (i, c) in certs.iter().enumerate() {
            for name in &c.names {
                match name.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_string()).or_insert(i),
                    None => exact.entry(name.clone()).or_insert(i),
                };
            }
        }
        let default = default.min(certs.len().saturating_sub(1));
        CertSet {
            certs,
            exact,
            wildcard,
            default,
        }
    }

    pub fn certs(&self) -> &[Cert] {
        &self.certs
    }

    /// The certificate for clients without SNI or with an unknown name.
    pub fn default(&self) -> Option<&Cert> {
        self.certs.get(self.default)
    }

    /// The certificate for a client that sent `sni`, by index.
    pub fn pick(&self, sni: Option<&str>) -> usize {
        let Some(name) = sni.map(|s| s.trim_end_matches('.').to_ascii_lowercase()) else {
            return self.default;
        };
        if let Some(&i) = self.exact.get(&name) {
            return i;
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent).copied())
            .unwrap_or(self.default)
    }
}

/// rustls' hook: each handshake asks it for a certificate.
#[derive(Debug)]
pub struct Resolver {
    set: ArcSwap<CertSet>,
}

impl Resolver {
    pub fn new(set: CertSet) -> Resolver {
        Resolver {
            set: ArcSwap::from_pointee(set),
        }
    }

    /// Installs new certificates: handshakes from now on use them,
    /// connections already open keep theirs.
    pub fn swap(&self, set: CertSet) {
        self.set.store(Arc::new(set));
    }

    pub fn current(&self) -> Arc<CertSet> {
        self.set.load_full()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.set.load();
        let i = set.pick(hello.server_name());
        set.certs.get(i).map(|c| Arc::clone(&c.key))
    }
}
