//! Checks of how an upstream's backends are spoken to: `protocol`,
//! `max_streams_per_connection`, and `[upstreams.NAME.tls]`, whose CA
//! bundle and client certificate are read here, so that a bad file is an
//! error at its key, and a reload with one keeps the previous config.

use toml::Spanned;

use super::super::file::UpstreamTlsSection;
use super::super::*;
use super::Source;
use crate::tls::certs;

impl Source<'_> {
    /// `protocol` and `max_streams_per_connection`, which needs HTTP/2.
    pub(super) fn protocol(
        &self,
        protocol: &Option<Spanned<String>>,
        max_streams: &Option<Spanned<i64>>,
    ) -> Result<(Protocol, u32), Box<ConfigError>> {
        let protocol = match protocol {
            None => Protocol::Http1,
            Some(p) if self.choice(p, "protocol", &Protocol::NAMES)? == "http2" => Protocol::Http2,
            Some(_) => Protocol::Http1,
        };
        let streams = match max_streams {
            None => DEFAULT_MAX_STREAMS_PER_CONNECTION,
            Some(n) if protocol == Protocol::Http1 => {
                let kind = ErrorKind::OnlyWith {
                    key: "max_streams_per_connection",
                    only: "protocol = \"http2\"",
                };
                return Err(self.error(n.span(), kind));
            }
            Some(n) => self.in_range(
                n,
                "max_streams_per_connection",
                1,
                i64::from(MAX_STREAMS_PER_CONNECTION),
            )? as u32,
        };
        Ok((protocol, streams))
    }

    /// `[upstreams.NAME.tls]`, with its files read.
    pub(super) fn upstream_tls(
        &self,
        upstream: &str,
        section: Spanned<UpstreamTlsSection>,
    ) -> Result<UpstreamTls, Box<ConfigError>> {
        let span = section.span();
        let t = section.into_inner();
        let sni = match &t.sni {
            None => None,
            Some(s) if valid_sni(s.get_ref()) => Some(s.get_ref().to_ascii_lowercase()),
            Some(s) => {
                let fix = "write the host name the backends' certificate names, like \
                           \"orders.internal\""
                    .to_string();
                return Err(self.bad_value(s, "sni", fix));
            }
        };
        let verify = t.verify.as_ref().is_none_or(|v| *v.get_ref());
        if let Some(v) = t.verify.as_ref().filter(|v| !*v.get_ref()) {
            let message = format!(
                "upstream {upstream}: verify = false: backend certificates are not checked, \
                 so anyone on the path can pose as a backend; give its CA in `ca` instead"
            );
            self.warnings
                .borrow_mut()
                .push(self.warning(v.span(), message));
        }
        let ca = match &t.ca {
            None => None,
            Some(p) => {
                let path = self.file_key(p, "ca")?;
                let (found, _) = certs::read_certs(&path).map_err(|e| self.cert_error(p, e))?;
                let mut roots = rustls::RootCertStore::empty();
                for der in &found {
                    roots.add(der.clone()).map_err(|e| {
                        let why = format!(
                            "{}: a certificate rustls does not take as a root: {e}",
                            path.display()
                        );
                        self.error(p.span(), ErrorKind::Certificate(why))
                    })?;
                }
                let certs = found.iter().map(|c| c.as_ref().to_vec()).collect();
                Some(CaBundle { path, certs })
            }
        };
        let client = match (&t.cert, &t.key) {
            (None, None) => None,
            (Some(c), Some(k)) => {
                let files = CertFiles {
                    cert: self.file_key(c, "cert")?,
                    key: self.file_key(k, "key")?,
                };
                let (chain, key_der) = certs::read_identity(&files).map_err(|e| match e {
                    certs::CertError::NoKey { .. }
                    | certs::CertError::BadKey { .. }
                    | certs::CertError::Mismatch { .. } => self.cert_error(k, e),
                    _ => self.cert_error(c, e),
                })?;
                Some(ClientIdentity {
                    cert: files.cert,
                    key: files.key,
                    chain,
                    key_der,
                })
            }
            (Some(c), None) => {
                return Err(self.error(c.span(), ErrorKind::MissingKey("key".into())));
            }
            (None, Some(_)) => return Err(self.error(span, ErrorKind::MissingKey("cert".into()))),
        };
        Ok(UpstreamTls {
            sni,
            verify,
            ca,
            client,
        })
    }

    /// The path a file key names, against the config's directory.
    fn file_key(
        &self,
        p: &Spanned<String>,
        key: &'static str,
    ) -> Result<std::path::PathBuf, Box<ConfigError>> {
        if p.get_ref().is_empty() {
            return Err(self.bad_value(p, key, "write the path of a PEM file".into()));
        }
        Ok(self.relative(p.get_ref()))
    }

    fn cert_error(&self, at: &Spanned<String>, e: certs::CertError) -> Box<ConfigError> {
        self.error(at.span(), ErrorKind::Certificate(e.to_string()))
    }
}

/// A DNS name (letters, digits, `-`, `_`, dots between labels) or an IP
/// address.
fn valid_sni(s: &str) -> bool {
    if s.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}
