//! Turns the file mirror into a [`Config`], checking everything once. Each
//! check that fails names the place in the file and the fix. The server
//! section and the shared checks are here; the admin section in
//! `admin.rs`, upstreams in `upstream.rs`, routes in `routes.rs`.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};
use toml::Spanned;

use super::file::{FileConfig, ServerSection};
use super::*;

mod access;
mod admin;
mod affinity;
mod discovery;
mod health;
mod protocol;
mod responses;
mod routes;
mod tls;
mod upstream;

/// The file being validated: what errors need to place themselves.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
    resolve: Resolve,
    /// Warnings found by checks that return something else.
    warnings: std::cell::RefCell<Vec<Warning>>,
}

/// How a `host:port` backend becomes an address.
#[derive(Clone, Copy)]
pub(super) enum Resolve {
    /// Ask the system resolver, once, now.
    System,
    /// Refuse every name that is not an IP address: nothing leaves the
    /// machine (fuzzing, property tests).
    Offline,
}

pub(super) fn validate(
    path: &Path,
    text: &str,
    resolve: Resolve,
) -> Result<Config, Box<ConfigError>> {
    let src = Source {
        path,
        text,
        resolve,
        warnings: Default::default(),
    };
    let file: FileConfig = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
    let (server, default_name) = src.server(file.server.unwrap_or_default())?;
    let mut data = server.listen.clone();
    data.extend(server.tls.iter().flat_map(|t| t.listen.iter().copied()));
    let admin = src.admin(file.admin.unwrap_or_default(), &data)?;
    let resolver = src.resolver(file.resolver)?;
    if file.upstreams.is_empty() {
        return Err(src.error(0..0, ErrorKind::NoUpstreams));
    }
    let upstream_spans: Vec<Range<usize>> = file.upstreams.keys().map(|k| k.span()).collect();
    let upstreams = file
        .upstreams
        .into_iter()
        .map(|(name, section)| src.upstream(name.into_inner(), section))
        .collect::<Result<Vec<_>, _>>()?;
    let routed = !file.routes.is_empty();
    let default_upstream = src.default_upstream(&upstreams, default_name, routed)?;
    let (routes, mut warnings) =
        src.routes(file.routes, &upstreams, &upstream_spans, default_upstream)?;
    warnings.extend(src.warnings.take());
    Ok(Config {
        path: path.to_path_buf(),
        hash: sha256_hex(text.as_bytes()),
        server,
        admin,
        upstreams,
        resolver,
        log: src.log(file.log)?,
        routes,
        default_upstream,
        warnings,
    })
}

impl Source<'_> {
    fn error(&self, span: Range<usize>, kind: ErrorKind) -> Box<ConfigError> {
        Box::new(ConfigError::at(self.path, self.text, span, kind))
    }

    fn warning(&self, span: Range<usize>, message: String) -> Warning {
        Warning::at(self.path, self.text, span, message)
    }

    /// The 1-based line where `span` starts.
    fn line(&self, span: &Range<usize>) -> usize {
        Position::locate(self.text, span.clone()).line
    }

    fn toml_error(&self, e: &toml::de::Error) -> Box<ConfigError> {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim_end().to_string();
        let quoted: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
        let kind = if message.starts_with("unknown field") && !quoted.is_empty() {
            unknown_key(quoted[0], &quoted[1..])
        } else if message.starts_with("missing field") && !quoted.is_empty() {
            ErrorKind::MissingKey(quoted[0].to_string())
        } else if message.starts_with("invalid type") {
            ErrorKind::WrongType { message }
        } else {
            ErrorKind::Syntax(message)
        };
        self.error(span, kind)
    }

    /// Returns the server settings and the `default_upstream` name, if given.
    fn server(
        &self,
        mut section: ServerSection,
    ) -> Result<(ServerConfig, Option<Spanned<String>>), Box<ConfigError>> {
        let listen = match section.listen.take() {
            None => vec![DEFAULT_LISTEN
                .parse()
                .expect("the default listen address parses")],
            // An HTTPS-only server: no plain listener.
            Some(list) if list.get_ref().is_empty() && section.tls.is_some() => Vec::new(),
            Some(list) => self.listeners(list)?,
        };
        let (tls, h2, redirect_https) = self.client_protocols(&mut section, &listen)?;
        let threads = match section.threads {
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
            Some(t) => self.in_range(&t, "threads", 1, MAX_THREADS as i64)? as usize,
        };
        let grace_period = match section.grace_period {
            None => DEFAULT_GRACE_PERIOD,
            Some(d) => self.duration(&d, true)?,
        };
        let limit = |v: &Option<Spanned<i64>>, key, min, max, default: usize| match v {
            None => Ok(default),
            Some(n) => self.in_range(n, key, min, max as i64).map(|n| n as usize),
        };
        let limits = Limits {
            header_bytes: limit(
                &section.max_header_bytes,
                "max_header_bytes",
                1024,
                Limits::MAX_HEADER_BYTES,
                Limits::HEADER_BYTES,
            )?,
            headers: limit(
                &section.max_headers,
                "max_headers",
                1,
                Limits::MAX_HEADERS,
                Limits::HEADERS,
            )?,
            uri_bytes: limit(
                &section.max_uri_bytes,
                "max_uri_bytes",
                64,
                Limits::MAX_HEADER_BYTES,
                Limits::URI_BYTES,
            )?,
            body_bytes: match &section.max_body_bytes {
                None => None,
                Some(n) => {
                    Some(self.in_range(n, "max_body_bytes", 0, i64::MAX)? as u64).filter(|&n| n > 0)
                }
            },
        };
        let client_timeouts = ClientTimeouts {
            header: self.duration_or(&section.header_timeout, DEFAULT_HEADER_TIMEOUT)?,
            body: self.duration_or(&section.body_timeout, DEFAULT_BODY_TIMEOUT)?,
            keepalive: match &section.keepalive_timeout {
                None => Some(DEFAULT_KEEPALIVE_TIMEOUT),
                Some(d) => Some(self.duration(d, true)?).filter(|d| !d.is_zero()),
            },
            send: self.duration_or(&section.send_timeout, DEFAULT_SEND_TIMEOUT)?,
        };
        let max_connections = limit(
            &section.max_connections,
            "max_connections",
            1,
            MAX_CONNECTIONS,
            DEFAULT_MAX_CONNECTIONS,
        )?;
        let server = ServerConfig {
            tls,
            h2,
            redirect_https,
            server_header: self.server_header(section.server_header)?,
            listen,
            threads,
            grace_period,
            watch_config: section.watch_config.is_none_or(|w| *w.get_ref()),
            limits,
            client_timeouts,
            max_connections,
        };
        Ok((server, section.default_upstream))
    }

    fn listeners(
        &self,
        list: Spanned<Vec<Spanned<String>>>,
    ) -> Result<Vec<SocketAddr>, Box<ConfigError>> {
        if list.get_ref().is_empty() {
            let reason = "the list is empty".to_string();
            let value = String::new();
            return Err(self.error(list.span(), ErrorKind::BadListen { value, reason }));
        }
        let mut out: Vec<SocketAddr> = Vec::new();
        for item in list.into_inner() {
            let addr = self.listen_address(&item)?;
            if out.contains(&addr) {
                let kind = ErrorKind::DuplicateListen(addr.to_string());
                return Err(self.error(item.span(), kind));
            }
            out.push(addr);
        }
        Ok(out)
    }

    fn listen_address(&self, value: &Spanned<String>) -> Result<SocketAddr, Box<ConfigError>> {
        value.get_ref().parse().map_err(|_| {
            let kind = ErrorKind::BadListen {
                value: value.get_ref().clone(),
                reason: "not an IP address and port".into(),
            };
            self.error(value.span(), kind)
        })
    }

    /// `value` must be one of `valid`; returns it.
    fn choice(
        &self,
        value: &Spanned<String>,
        key: &'static str,
        valid: &[&'static str],
    ) -> Result<&'static str, Box<ConfigError>> {
        let v = value.get_ref().as_str();
        if let Some(found) = valid.iter().find(|c| **c == v) {
            return Ok(found);
        }
        let kind = ErrorKind::UnknownChoice {
            key,
            value: v.to_string(),
            suggestion: nearest(&v.to_ascii_lowercase(), valid.iter().copied()),
            valid: valid.to_vec(),
        };
        Err(self.error(value.span(), kind))
    }

    fn bad_value(&self, v: &Spanned<String>, key: &'static str, fix: String) -> Box<ConfigError> {
        let kind = ErrorKind::BadValue {
            key,
            value: v.get_ref().clone(),
            fix,
        };
        self.error(v.span(), kind)
    }
    /// `default_upstream`: as named; without a name, the only upstream of
    /// a file without routes. A file with routes may leave it out: then
    /// requests no route matches get `404`.
    fn default_upstream(
        &self,
        upstreams: &[UpstreamConfig],
        name: Option<Spanned<String>>,
        routed: bool,
    ) -> Result<Option<usize>, Box<ConfigError>> {
        let names = || {
            let n: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
            n.join(", ")
        };
        match name {
            None if routed => Ok(None),
            None if upstreams.len() == 1 => Ok(Some(0)),
            None => {
                let kind = ErrorKind::NoDefaultUpstream {
                    count: upstreams.len(),
                    names: names(),
                };
                Err(self.error(0..0, kind))
            }
            Some(n) => upstreams
                .iter()
                .position(|u| &u.name == n.get_ref())
                .map(Some)
                .ok_or_else(|| {
                    let kind = ErrorKind::UnknownUpstream {
                        value: n.get_ref().clone(),
                        names: names(),
                    };
                    self.error(n.span(), kind)
                }),
        }
    }

    fn in_range(
        &self,
        v: &Spanned<i64>,
        key: &'static str,
        min: i64,
        max: i64,
    ) -> Result<i64, Box<ConfigError>> {
        let value = *v.get_ref();
        if (min..=max).contains(&value) {
            return Ok(value);
        }
        let kind = ErrorKind::OutOfRange {
            key,
            value,
            min,
            max,
        };
        Err(self.error(v.span(), kind))
    }

    fn duration_or(
        &self,
        value: &Option<Spanned<String>>,
        default: Duration,
    ) -> Result<Duration, Box<ConfigError>> {
        value
            .as_ref()
            .map_or(Ok(default), |v| self.duration(v, false))
    }

    fn duration(
        &self,
        value: &Spanned<String>,
        zero_ok: bool,
    ) -> Result<Duration, Box<ConfigError>> {
        let bad = |reason: String| {
            let kind = ErrorKind::BadDuration {
                value: value.get_ref().clone(),
                reason,
            };
            self.error(value.span(), kind)
        };
        let d = humantime::parse_duration(value.get_ref()).map_err(|e| bad(e.to_string()))?;
        if d.is_zero() && !zero_ok {
            return Err(bad("it must be more than zero".into()));
        }
        if d > MAX_DURATION {
            return Err(bad("it must be at most 24h".into()));
        }
        Ok(d)
    }
}

/// Two listen addresses collide if they share a port and either is a
/// wildcard or they are the same IP.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// `key` is not one of `valid`; suggest the nearest if it looks like a typo.
fn unknown_key(key: &str, valid: &[&str]) -> ErrorKind {
    ErrorKind::UnknownKey {
        key: key.to_string(),
        suggestion: nearest(key, valid.iter().copied()),
        valid: valid.iter().map(|s| s.to_string()).collect(),
    }
}

/// The candidate closest to `word` by edit distance, if it is close enough
/// to be a likely typo.
fn nearest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    let limit = (word.len() / 3).max(2);
    candidates
        .map(|c| (strsim::levenshtein(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
