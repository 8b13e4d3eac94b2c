//! Checks of TLS and HTTP/2 for clients: `[server.tls]` (listeners that
//! neither repeat nor collide with the plain ones, certificate files,
//! `min_version`), `h2c`, `h2_max_streams` and `redirect_https`. The
//! certificates themselves are read and checked by `tls::load`, which
//! needs the files.

use std::net::SocketAddr;
use std::path::PathBuf;

use toml::Spanned;

use super::super::file::{CertSection, ServerSection, TlsSection};
use super::super::*;
use super::{overlaps, Source};

impl Source<'_> {
    /// `[server.tls]`, `h2c`, `h2_max_streams` and `redirect_https`.
    pub(super) fn client_protocols(
        &self,
        section: &mut ServerSection,
        plain: &[SocketAddr],
    ) -> Result<(Option<TlsConfig>, H2Config, bool), Box<ConfigError>> {
        let tls = match section.tls.take() {
            None => None,
            Some(t) => Some(self.tls(t, plain)?),
        };
        let h2 = H2Config {
            h2c: section.h2c.as_ref().is_some_and(|b| *b.get_ref()),
            max_streams: match &section.h2_max_streams {
                None => DEFAULT_H2_MAX_STREAMS,
                Some(n) => self.in_range(n, "h2_max_streams", 1, i64::from(MAX_H2_STREAMS))? as u32,
            },
        };
        let redirect_https = match &section.redirect_https {
            Some(r) if *r.get_ref() && tls.is_none() => {
                let kind = ErrorKind::BadValue {
                    key: "redirect_https",
                    value: "true".into(),
                    fix: "it redirects to the TLS listeners: add [server.tls], or remove it".into(),
                };
                return Err(self.error(r.span(), kind));
            }
            Some(r) => *r.get_ref(),
            None => false,
        };
        Ok((tls, h2, redirect_https))
    }

    fn tls(
        &self,
        section: Spanned<TlsSection>,
        plain: &[SocketAddr],
    ) -> Result<TlsConfig, Box<ConfigError>> {
        let span = section.span();
        let t = section.into_inner();
        let listen = match t.listen {
            None => return Err(self.error(span, ErrorKind::MissingKey("listen".into()))),
            Some(list) => self.listeners(list)?,
        };
        for addr in &listen {
            if let Some(p) = plain.iter().find(|p| overlaps(**p, *addr)) {
                let kind = ErrorKind::BadListen {
                    value: addr.to_string(),
                    reason: format!(
                        "[server] listen has {p} already; a port is plain or TLS, not both"
                    ),
                };
                return Err(self.error(span.clone(), kind));
            }
        }
        let certificates = match t.certificates {
            Some(list) if !list.get_ref().is_empty() => list
                .into_inner()
                .into_iter()
                .map(|c| self.cert_files(c))
                .collect::<Result<Vec<_>, _>>()?,
            Some(list) => {
                let kind = ErrorKind::BadValue {
                    key: "certificates",
                    value: "[]".into(),
                    fix: "list at least one, like [{ cert = \"example.com.pem\", key = \"example.com.key\" }]"
                        .into(),
                };
                return Err(self.error(list.span(), kind));
            }
            None => return Err(self.error(span, ErrorKind::MissingKey("certificates".into()))),
        };
        let default_certificate = match &t.default_certificate {
            None => 0,
            Some(d) => {
                let wanted = self.relative(d.get_ref());
                certificates
                    .iter()
                    .position(|c| c.cert == wanted)
                    .ok_or_else(|| {
                        let fix = "name the `cert` of one of the certificates listed".to_string();
                        self.bad_value(d, "default_certificate", fix)
                    })?
            }
        };
        let min_version = match &t.min_version {
            None => TlsVersion::V1_2,
            Some(v) => match self.choice(v, "min_version", &TlsVersion::NAMES)? {
                "1.3" => TlsVersion::V1_3,
                _ => TlsVersion::V1_2,
            },
        };
        let hsts = match t.hsts {
            Some(h)
                if h.get_ref().trim().is_empty()
                    || http::HeaderValue::from_str(h.get_ref()).is_err() =>
            {
                let fix =
                    "write a header value like \"max-age=31536000; includeSubDomains\"".into();
                return Err(self.bad_value(&h, "hsts", fix));
            }
            other => other.map(Spanned::into_inner),
        };
        Ok(TlsConfig {
            listen,
            certificates,
            default_certificate,
            min_version,
            h2: t.h2.is_none_or(|b| *b.get_ref()),
            hsts,
        })
    }

    fn cert_files(&self, c: Spanned<CertSection>) -> Result<CertFiles, Box<ConfigError>> {
        let span = c.span();
        let c = c.into_inner();
        let file = |v: &Option<Spanned<String>>, key: &'static str| match v {
            None => Err(self.error(span.clone(), ErrorKind::MissingKey(key.into()))),
            Some(p) if p.get_ref().is_empty() => {
                Err(self.bad_value(p, key, "write the path of a PEM file".into()))
            }
            Some(p) => Ok(self.relative(p.get_ref())),
        };
        Ok(CertFiles {
            cert: file(&c.cert, "cert")?,
            key: file(&c.key, "key")?,
        })
    }

    /// `path` as written, against the config file's directory if relative.
    pub(super) fn relative(&self, path: &str) -> PathBuf {
        let p = PathBuf::from(path);
        if p.is_absolute() {
            return p;
        }
        self.path.parent().map_or(p.clone(), |dir| dir.join(&p))
    }
}
