//! The route index: finds the route a request takes without looking at
//! every route.
//!
//! Routes are grouped by host pattern: a hash map of exact names, a hash
//! map of wildcard suffixes, and the group of routes without hosts. A
//! request's host is looked up exactly, then as each of its suffixes at a
//! label boundary, the longest first (`a.b.example.com` tries
//! `b.example.com`, `example.com`, `com`), then the group without hosts.
//! Within a group, routes are keyed by prefix, and the path's own prefixes
//! at segment boundaries are looked up from the longest down
//! (`/api/users` tries `/api/users`, `/api/`, `/api`, `/`), skipping any
//! longer than the group's longest. Each prefix's routes are kept in their
//! precedence order, header conditions first, so the first whose headers
//! hold is the match.
//!
//! Cost: one hash lookup per label of the host and per segment of the
//! path (twice, with and without its slash), whatever the number of
//! routes; the number of routes sharing a host and prefix bounds the rest.

use std::collections::HashMap;

use foldhash::fast::RandomState;

use super::{HostPattern, Request, Route};

/// Hash maps keyed by config strings and probed with request strings:
/// foldhash, several times quicker than the standard SipHash on short
/// keys. Only the config inserts keys, so a client cannot build the
/// collisions that SipHash's resistance guards against.
type Map<V> = HashMap<String, V, RandomState>;

#[derive(Debug, Default)]
pub(super) struct Index {
    exact: Map<Group>,
    suffix: Map<Group>,
    any: Group,
}

/// The routes of one host pattern, by prefix.
#[derive(Debug, Default)]
struct Group {
    /// Route indices, in precedence order within each prefix.
    by_prefix: Map<Vec<usize>>,
    /// The longest prefix in `by_prefix`, in bytes.
    longest: usize,
}

impl Group {
    fn add(&mut self, prefix: &str, route: usize) {
        self.by_prefix
            .entry(prefix.to_string())
            .or_default()
            .push(route);
        self.longest = self.longest.max(prefix.len());
    }

    /// The first route of this group, by precedence, that `req` matches.
    fn lookup(&self, routes: &[Route], req: &Request<'_>) -> Option<usize> {
        if self.by_prefix.is_empty() {
            return None;
        }
        let path = req.path;
        let take = |prefix: &str| {
            let candidates = self.by_prefix.get(prefix)?;
            candidates
                .iter()
                .copied()
                .find(|&i| routes[i].headers_match(req.headers))
        };
        if path.len() <= self.longest {
            if let Some(i) = take(path) {
                return Some(i);
            }
        }
        // Each slash but the first, from the last: the prefix through it,
        // then the one before it.
        for (at, _) in path.rmatch_indices('/').filter(|&(at, _)| at > 0) {
            if at + 1 < path.len() && at < self.longest {
                if let Some(i) = take(&path[..=at]) {
                    return Some(i);
                }
            }
            if at <= self.longest {
                if let Some(i) = take(&path[..at]) {
                    return Some(i);
                }
            }
        }
        // `/`, which matches every path, `*` included.
        if path == "/" {
            return None;
        }
        take("/")
    }
}

impl Index {
    pub(super) fn new(routes: &[Route]) -> Index {
        let mut index = Index::default();
        // Within a prefix, header routes first, each kind in file order.
        let mut order: Vec<usize> = (0..routes.len()).collect();
        order.sort_by_key(|&i| (routes[i].headers.is_empty(), routes[i].position));
        for i in order {
            let route = &routes[i];
            if route.hosts.is_empty() {
                index.any.add(&route.path_prefix, i);
            }
            for host in &route.hosts {
                let group = match host {
                    HostPattern::Exact(name) => index.exact.entry(name.clone()),
                    HostPattern::Suffix(suffix) => index.suffix.entry(suffix.clone()),
                };
                group.or_default().add(&route.path_prefix, i);
            }
        }
        index
    }

    /// The index of the route `req` takes, if any.
    pub(super) fn lookup(&self, routes: &[Route], req: &Request<'_>) -> Option<usize> {
        let host = req.host;
        if !self.exact.is_empty() {
            if let Some(i) = self.exact.get(host).and_then(|g| g.lookup(routes, req)) {
                return Some(i);
            }
        }
        if !self.suffix.is_empty() {
            // Every proper suffix after a dot, the longest first.
            let mut rest = host;
            while let Some(dot) = rest.find('.') {
                rest = &rest[dot + 1..];
                if let Some(i) = self.suffix.get(rest).and_then(|g| g.lookup(routes, req)) {
                    return Some(i);
                }
            }
        }
        self.any.lookup(routes, req)
    }
}
