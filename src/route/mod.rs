//! Routing: which upstream a request goes to, by the host it names, its
//! path and its headers. Plain Rust over request facts, independent of the
//! HTTP engine: the proxy asks once per request and gets a decision.
//!
//! Precedence, so that people can predict it:
//! 1. a route naming the request's host exactly, then one whose wildcard
//!    (`*.example.com`) matches it, the longest wildcard first, then a
//!    route with no `hosts`;
//! 2. within those, the longest path prefix;
//! 3. then routes with header conditions before those without;
//! 4. then file order.
//!
//! The table is built once per config, in the snapshot, with an index
//! (`index.rs`) that finds the match in a few hash lookups whatever the
//! number of routes. Paths are normalised first (`path.rs`).

mod explain;
pub mod host;
mod index;
pub mod path;

use http::{HeaderMap, HeaderName, HeaderValue};

pub use explain::{Shadow, Verdict};
pub use host::HostPattern;
pub use path::PathError;

use index::Index;

/// One route, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// From the config, or `POSITION-UPSTREAM` for an unnamed route
    /// (`2-api`); unique. Labels its metrics.
    pub name: String,
    /// 1 for the first `[[routes]]` of the file, and so on.
    pub position: usize,
    /// Empty: any host.
    pub hosts: Vec<HostPattern>,
    /// Starts with `/`; `/` when the route gives none. Segment-aware:
    /// `/api` matches `/api` and `/api/x`, never `/apix`.
    pub path_prefix: String,
    /// Whether the backend gets the path without `path_prefix`.
    pub strip_prefix: bool,
    /// Each must be present with exactly this value (names lowercase).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Index of the upstream in the config's (and the snapshot's) list.
    pub upstream: usize,
}

impl Route {
    /// Whether `path` (normalised) lies under this route's prefix.
    pub fn path_matches(&self, path: &str) -> bool {
        prefix_matches(&self.path_prefix, path)
    }

    /// Whether every header condition holds; a header sent several times
    /// matches if one of its values does.
    pub fn headers_match(&self, headers: &HeaderMap) -> bool {
        self.headers
            .iter()
            .all(|(name, value)| headers.get_all(name).iter().any(|v| v == value))
    }

    /// The path its backend gets for `path` (normalised, and matched by
    /// this route): without the prefix if `strip_prefix`, always starting
    /// with `/`.
    pub fn backend_path<'a>(&self, path: &'a str) -> std::borrow::Cow<'a, str> {
        if !self.strip_prefix || self.path_prefix == "/" {
            return path.into();
        }
        let rest = path.get(self.path_prefix.len()..).unwrap_or("");
        if rest.starts_with('/') {
            rest.into()
        } else {
            format!("/{rest}").into()
        }
    }

    /// `X-Forwarded-Prefix` for its backend: the stripped prefix without a
    /// trailing slash, so that an app can put it before its own paths.
    pub fn forwarded_prefix(&self) -> Option<&str> {
        let prefix = self.path_prefix.trim_end_matches('/');
        (self.strip_prefix && !prefix.is_empty()).then_some(prefix)
    }

    /// The most specific kind of host pattern it has, for ordering.
    fn host_rank(&self) -> HostRank {
        self.hosts
            .iter()
            .map(|h| match h {
                HostPattern::Exact(_) => HostRank::Exact,
                HostPattern::Suffix(s) => HostRank::Wildcard(s.len()),
            })
            .max()
            .unwrap_or(HostRank::Any)
    }
}

/// How a route's hosts rank: exact names above wildcards (the longest
/// first), wildcards above no hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum HostRank {
    Any,
    Wildcard(usize),
    Exact,
}

/// Segment-aware prefix match: `/api` matches `/api` and `/api/x`, never
/// `/apix`; `/api/` matches `/api/` and below; `/` matches everything.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// What routing needs to know of a request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// As [`host::request_host`] gives it; empty if the request names none.
    pub host: &'a str,
    /// As [`path::normalise`] gives it.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
}

/// Every route of a config, indexed, with the upstream unmatched requests
/// go to.
#[derive(Debug)]
pub struct Table {
    routes: Vec<Route>,
    index: Index,
    /// `None`: an unmatched request is answered `404`.
    default_upstream: Option<usize>,
}

impl Table {
    /// Indexes `routes` (in file order).
    pub fn new(routes: Vec<Route>, default_upstream: Option<usize>) -> Table {
        Table {
            index: Index::new(&routes),
            routes,
            default_upstream,
        }
    }

    /// The routes in file order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn default_upstream(&self) -> Option<usize> {
        self.default_upstream
    }

    /// The route `req` takes, by the precedence above; `None` if none
    /// matches (then the default upstream, if any, takes it).
    pub fn lookup(&self, req: &Request<'_>) -> Option<&Route> {
        self.index
            .lookup(&self.routes, req)
            .map(|i| &self.routes[i])
    }

    /// The upstream for `req`, and the route that chose it (`None` when
    /// the default upstream takes an unmatched request). `None` in all:
    /// nothing takes it.
    pub fn upstream_for(&self, req: &Request<'_>) -> Option<(usize, Option<&Route>)> {
        match self.lookup(req) {
            Some(route) => Some((route.upstream, Some(route))),
            None => self.default_upstream.map(|u| (u, None)),
        }
    }
}

/// Where a request goes.
#[derive(Debug)]
pub struct Decision<'t> {
    /// The route that matched; `None` when the default upstream takes a
    /// request no route matches.
    pub route: Option<&'t Route>,
    /// Index of the upstream in the snapshot's list.
    pub upstream: usize,
    /// The path and query its backend gets, when they differ from the
    /// request's own (a normalised path, a stripped prefix).
    pub rewrite: Option<String>,
}

/// Why a request goes nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The path cannot be routed safely: `400`.
    BadPath(PathError),
    /// No route matches and there is no default upstream: `404`.
    NoRoute,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::BadPath(_) => 400,
            Refusal::NoRoute => 404,
        }
    }

    pub fn why(self) -> &'static str {
        match self {
            Refusal::BadPath(e) => e.why(),
            Refusal::NoRoute => "no route matches the request",
        }
    }
}

impl Table {
    /// Routes a request: `host` as it named it (the `Host` header or the
    /// absolute-form authority, port and all; empty if none), `target`
    /// its path and query in origin form (or `*`), and its headers.
    pub fn decide<'t>(
        &'t self,
        host: &str,
        target: &str,
        headers: &HeaderMap,
    ) -> Result<Decision<'t>, Refusal> {
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        let path = if path.is_empty() { "/" } else { path };
        let normal = path::normalise(path).map_err(Refusal::BadPath)?;
        if self.routes.is_empty() {
            // No routes: the default upstream, and the path as normalised.
            let upstream = self.default_upstream.ok_or(Refusal::NoRoute)?;
            let rewrite = (normal != path).then(|| match query {
                Some(q) => format!("{normal}?{q}"),
                None => normal.into_owned(),
            });
            return Ok(Decision {
                route: None,
                upstream,
                rewrite,
            });
        }
        let host = host::request_host(host);
        let req = Request {
            host: &host,
            path: &normal,
            headers,
        };
        let (upstream, route) = self.upstream_for(&req).ok_or(Refusal::NoRoute)?;
        let forwarded = match route {
            Some(r) => r.backend_path(&normal),
            None => std::borrow::Cow::Borrowed(&*normal),
        };
        let rewrite = (forwarded != path).then(|| match query {
            Some(q) => format!("{forwarded}?{q}"),
            None => forwarded.into_owned(),
        });
        Ok(Decision {
            route,
            upstream,
            rewrite,
        })
    }
}

#[cfg(test)]
mod tests;
