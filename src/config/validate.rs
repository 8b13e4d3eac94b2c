//! Turns the file mirror into a [`Config`], checking everything once. Each
//! check that fails names the place in the file and the fix.

use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};
use toml::Spanned;

use super::file::{BackendEntry, FileConfig, ServerSection, UpstreamSection};
use super::*;

/// The file being validated: what errors need to place themselves.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

pub(super) fn validate(path: &Path, text: &str) -> Result<Config, Box<ConfigError>> {
    let src = Source { path, text };
    let file: FileConfig = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
    let (server, default_name) = src.server(file.server.unwrap_or_default())?;
    let admin = src.admin(file.admin.unwrap_or_default().listen, &server.listen)?;
    if file.upstreams.is_empty() {
        return Err(src.error(0..0, ErrorKind::NoUpstreams));
    }
    let upstreams = file
        .upstreams
        .into_iter()
        .map(|(name, section)| src.upstream(name.into_inner(), section))
        .collect::<Result<Vec<_>, _>>()?;
    let default_upstream = src.default_upstream(&upstreams, default_name)?;
    Ok(Config {
        path: path.to_path_buf(),
        hash: sha256_hex(text.as_bytes()),
        server,
        admin,
        upstreams,
        default_upstream,
    })
}

impl Source<'_> {
    fn error(&self, span: Range<usize>, kind: ErrorKind) -> Box<ConfigError> {
        Box::new(ConfigError::at(self.path, self.text, span, kind))
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
        section: ServerSection,
    ) -> Result<(ServerConfig, Option<Spanned<String>>), Box<ConfigError>> {
        let listen = match section.listen {
            None => vec![DEFAULT_LISTEN
                .parse()
                .expect("the default listen address parses")],
            Some(list) => self.listeners(list)?,
        };
        let threads = match section.threads {
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
            Some(t) => self.in_range(&t, "threads", 1, MAX_THREADS as i64)? as usize,
        };
        let grace_period = match section.grace_period {
            None => DEFAULT_GRACE_PERIOD,
            Some(d) => self.duration(&d, true)?,
        };
        let server = ServerConfig {
            listen,
            threads,
            grace_period,
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

    fn admin(
        &self,
        listen: Option<Spanned<String>>,
        data: &[SocketAddr],
    ) -> Result<AdminConfig, Box<ConfigError>> {
        let (addr, span) = match &listen {
            None => (DEFAULT_ADMIN_LISTEN.parse().expect("parses"), 0..0),
            Some(l) => (self.listen_address(l)?, l.span()),
        };
        if data.iter().any(|d| overlaps(*d, addr)) {
            return Err(self.error(span, ErrorKind::AdminOnDataAddress(addr.to_string())));
        }
        Ok(AdminConfig { listen: addr })
    }

    fn upstream(
        &self,
        name: String,
        section: Spanned<UpstreamSection>,
    ) -> Result<UpstreamConfig, Box<ConfigError>> {
        let span = section.span();
        let u = section.into_inner();
        if let Some(hc) = &u.health_check {
            let what = format!("[upstreams.{name}.health_check] (active health checks)");
            return Err(self.error(hc.span(), ErrorKind::NotSupported(what)));
        }
        let balance = match &u.balance {
            None => Balance::RoundRobin,
            Some(b) => self.balance(b)?,
        };
        let timeouts = Timeouts {
            connect: self.duration_or(&u.connect_timeout, DEFAULT_CONNECT_TIMEOUT)?,
            read: self.duration_or(&u.read_timeout, DEFAULT_READ_TIMEOUT)?,
            write: self.duration_or(&u.write_timeout, DEFAULT_WRITE_TIMEOUT)?,
            idle: self.duration_or(&u.idle_timeout, DEFAULT_IDLE_TIMEOUT)?,
        };
        let retries = match &u.retries {
            None => DEFAULT_RETRIES,
            Some(r) => self.in_range(r, "retries", 0, MAX_RETRIES as i64)? as usize,
        };
        let backends = match u.backends {
            Some(list) if !list.get_ref().is_empty() => self.backends(&name, list.into_inner())?,
            Some(list) => return Err(self.error(list.span(), ErrorKind::EmptyBackends(name))),
            None => return Err(self.error(span, ErrorKind::EmptyBackends(name))),
        };
        Ok(UpstreamConfig {
            name,
            balance,
            timeouts,
            retries,
            backends,
        })
    }

    fn balance(&self, value: &Spanned<String>) -> Result<Balance, Box<ConfigError>> {
        let v = value.get_ref().as_str();
        match v {
            "round_robin" => Ok(Balance::RoundRobin),
            "least_connections" => Ok(Balance::LeastConnections),
            _ => {
                let suggestion = balance_alias(v)
                    .map(str::to_string)
                    .or_else(|| nearest(v, Balance::NAMES.into_iter()));
                let kind = ErrorKind::UnknownBalance {
                    value: v.to_string(),
                    suggestion,
                };
                Err(self.error(value.span(), kind))
            }
        }
    }

    fn backends(
        &self,
        upstream: &str,
        entries: Vec<Spanned<BackendEntry>>,
    ) -> Result<Vec<BackendConfig>, Box<ConfigError>> {
        let mut out: Vec<(BackendConfig, Range<usize>)> = Vec::with_capacity(entries.len());
        for entry in entries {
            let (backend, span) = self.backend(entry)?;
            if let Some((_, first)) = out
                .iter()
                .find(|(b, _)| b.socket_addr == backend.socket_addr)
            {
                let kind = ErrorKind::DuplicateBackend {
                    upstream: upstream.to_string(),
                    address: backend.address,
                    first_line: Position::locate(self.text, first.clone()).line,
                };
                return Err(self.error(span, kind));
            }
            out.push((backend, span));
        }
        Ok(out.into_iter().map(|(b, _)| b).collect())
    }

    fn backend(
        &self,
        entry: Spanned<BackendEntry>,
    ) -> Result<(BackendConfig, Range<usize>), Box<ConfigError>> {
        let entry_span = entry.span();
        let (address, address_span, weight) = match entry.into_inner() {
            BackendEntry::Short(a) => (a, entry_span.clone(), 1),
            BackendEntry::Long {
                unknown: Some(key), ..
            } => {
                let kind = unknown_key(key.get_ref(), super::file::BACKEND_FIELDS);
                return Err(self.error(key.span(), kind));
            }
            BackendEntry::Long {
                address, weight, ..
            } => {
                let w = match &weight {
                    None => 1,
                    Some(w) => self.weight(w)?,
                };
                let span = address.span();
                (address.into_inner(), span, w)
            }
        };
        let socket_addr = resolve_backend(&address).map_err(|reason| {
            let kind = ErrorKind::BadAddress {
                value: address.clone(),
                reason,
            };
            self.error(address_span.clone(), kind)
        })?;
        let backend = BackendConfig {
            address,
            socket_addr,
            weight,
        };
        Ok((backend, address_span))
    }

    fn weight(&self, w: &Spanned<i64>) -> Result<u32, Box<ConfigError>> {
        if *w.get_ref() == 0 {
            return Err(self.error(w.span(), ErrorKind::ZeroWeight));
        }
        Ok(self.in_range(w, "weight", 1, MAX_WEIGHT as i64)? as u32)
    }

    fn default_upstream(
        &self,
        upstreams: &[UpstreamConfig],
        name: Option<Spanned<String>>,
    ) -> Result<usize, Box<ConfigError>> {
        let names = || {
            let n: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
            n.join(", ")
        };
        match name {
            None if upstreams.len() == 1 => Ok(0),
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

/// Parses `ip:port`, or resolves `host:port` once, now.
fn resolve_backend(s: &str) -> Result<SocketAddr, String> {
    let addr = match s.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            let (host, port) = s.rsplit_once(':').ok_or("it has no port")?;
            if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
                return Err(format!("`{host}` is not a host name or IP address"));
            }
            let port: u16 = port
                .parse()
                .map_err(|_| format!("`{port}` is not a port number (1 to 65535)"))?;
            (host, port)
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
                .next()
                .ok_or_else(|| format!("`{host}` resolves to no address"))?
        }
    };
    if addr.port() == 0 {
        return Err("port 0 cannot be connected to".into());
    }
    Ok(addr)
}

/// What other load balancers call the same algorithms.
fn balance_alias(v: &str) -> Option<&'static str> {
    match v.to_ascii_lowercase().replace('-', "_").as_str() {
        "roundrobin" | "rr" | "round_robin" | "wrr" => Some("round_robin"),
        "leastconn" | "least_conn" | "leastconnections" | "least_connections" | "lc" => {
            Some("least_connections")
        }
        _ => None,
    }
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
