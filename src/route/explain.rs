//! What people ask of a route table: the routes in precedence order, why a
//! request took the route it took (and why each route before it did not),
//! and which routes can never match.

use super::{HostPattern, Request, Route, Table};

/// What one route makes of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// This is the route the request takes.
    Taken,
    /// It matches, but the taken route comes first.
    Outranked,
    /// It does not match, for this reason.
    NoMatch(String),
}

/// A route that can never match: every request it matches, an earlier
/// route with the same or wider conditions takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadow {
    /// Positions in the file (1-based).
    pub route: usize,
    pub by: usize,
}

impl Table {
    /// The routes as `/status` and `switchyard check` list them: by
    /// precedence (each at its most specific host pattern), then file
    /// order.
    pub fn by_precedence(&self) -> Vec<&Route> {
        let mut order: Vec<&Route> = self.routes.iter().collect();
        order.sort_by_key(|r| {
            (
                std::cmp::Reverse(r.host_rank()),
                std::cmp::Reverse(r.path_prefix.len()),
                r.headers.is_empty(),
                r.position,
            )
        });
        order
    }

    /// Each route in precedence order with what it makes of `req`.
    pub fn explain(&self, req: &Request<'_>) -> Vec<(&Route, Verdict)> {
        let taken = self.lookup(req).map(|r| r.position);
        self.by_precedence()
            .into_iter()
            .map(|route| {
                let verdict = if Some(route.position) == taken {
                    Verdict::Taken
                } else {
                    match mismatch(route, req) {
                        Some(why) => Verdict::NoMatch(why),
                        None => Verdict::Outranked,
                    }
                };
                (route, verdict)
            })
            .collect()
    }

    /// The routes that can never match, each with one route that takes
    /// its requests.
    pub fn shadows(&self) -> Vec<Shadow> {
        self.routes
            .iter()
            .filter_map(|r| {
                let by = self.routes.iter().find(|s| shadows(s, r))?;
                Some(Shadow {
                    route: r.position,
                    by: by.position,
                })
            })
            .collect()
    }
}

/// Why `route` does not match `req`; `None` if it does.
fn mismatch(route: &Route, req: &Request<'_>) -> Option<String> {
    if !route.hosts.is_empty() && !route.hosts.iter().any(|h| h.matches(req.host)) {
        let hosts: Vec<String> = route.hosts.iter().map(ToString::to_string).collect();
        let host = if req.host.is_empty() {
            "(none)"
        } else {
            req.host
        };
        return Some(format!("host {host} is not {}", hosts.join(" or ")));
    }
    if !route.path_matches(req.path) {
        return Some(format!(
            "path {} is not under {}",
            req.path, route.path_prefix
        ));
    }
    for (name, want) in &route.headers {
        let sent: Vec<&str> = req
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("(not text)"))
            .collect();
        let want = want.to_str().unwrap_or("(not text)");
        if sent.is_empty() {
            return Some(format!("header {name} is missing (wanted {want:?})"));
        }
        if !sent.contains(&want) {
            return Some(format!(
                "header {name} is {:?}, not {want:?}",
                sent.join(", ")
            ));
        }
    }
    None
}

/// Whether `s` takes every request `r` matches: `r`'s host patterns are
/// among `s`'s (both none, or each of `r`'s also in `s`), the same prefix,
/// `s`'s header conditions a subset of `r`'s, and `s` first in the order
/// within a prefix. A longer prefix or a more specific host of `r` would
/// win over `s`, so nothing else shadows.
fn shadows(s: &Route, r: &Route) -> bool {
    if s.position == r.position || s.path_prefix != r.path_prefix {
        return false;
    }
    let hosts_covered = if r.hosts.is_empty() {
        s.hosts.is_empty()
    } else {
        r.hosts.iter().all(|h: &HostPattern| s.hosts.contains(h))
    };
    let headers_covered = s.headers.iter().all(|h| r.headers.contains(h));
    let first = s.headers.is_empty() == r.headers.is_empty() && s.position < r.position;
    hosts_covered && headers_covered && first
}
