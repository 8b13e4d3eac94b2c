//! Checks of `[[routes]]`: each route's hosts, path prefix, headers and
//! upstream, and the table as a whole (names, identical conditions,
//! routes that can never match, upstreams nothing reaches).

use std::collections::BTreeMap;
use std::ops::Range;

use http::{HeaderName, HeaderValue};
use toml::Spanned;

use super::super::file::RouteSection;
use super::super::*;
use super::{nearest, Source};
use crate::route::{self, HostPattern, Route};

/// A route as validated, with where it stands in the file.
struct Placed {
    route: Route,
    span: Range<usize>,
}

impl Source<'_> {
    /// The routes in file order, and what is worth a warning about them.
    pub(super) fn routes(
        &self,
        sections: Vec<Spanned<RouteSection>>,
        upstreams: &[UpstreamConfig],
        upstream_spans: &[Range<usize>],
        default_upstream: Option<usize>,
    ) -> Result<(Vec<Route>, Vec<Warning>), Box<ConfigError>> {
        let mut placed: Vec<Placed> = Vec::with_capacity(sections.len());
        for (i, section) in sections.into_iter().enumerate() {
            let span = section.span();
            let route = self.route(i + 1, section.into_inner(), span.clone(), upstreams)?;
            if let Some(first) = placed.iter().find(|p| p.route.name == route.name) {
                let kind = ErrorKind::DuplicateRouteName {
                    name: route.name.clone(),
                    first_line: self.line(&first.span),
                };
                return Err(self.error(span, kind));
            }
            if let Some(first) = placed.iter().find(|p| same_conditions(&p.route, &route)) {
                let kind = ErrorKind::DuplicateRoute {
                    first_line: self.line(&first.span),
                };
                return Err(self.error(span, kind));
            }
            placed.push(Placed { route, span });
        }
        let warnings = self.route_warnings(&placed, upstreams, upstream_spans, default_upstream);
        Ok((placed.into_iter().map(|p| p.route).collect(), warnings))
    }

    fn route(
        &self,
        position: usize,
        r: RouteSection,
        span: Range<usize>,
        upstreams: &[UpstreamConfig],
    ) -> Result<Route, Box<ConfigError>> {
        let upstream = match &r.upstream {
            None => return Err(self.error(span, ErrorKind::MissingKey("upstream".into()))),
            Some(name) => self.route_upstream(name, upstreams)?,
        };
        let mut hosts = Vec::new();
        for h in r.hosts.map(Spanned::into_inner).unwrap_or_default() {
            let pattern = HostPattern::parse(h.get_ref()).map_err(|reason| {
                let kind = ErrorKind::BadHostPattern {
                    value: h.get_ref().clone(),
                    reason,
                };
                self.error(h.span(), kind)
            })?;
            if !hosts.contains(&pattern) {
                hosts.push(pattern);
            }
        }
        let path_prefix = match &r.path_prefix {
            None => "/".to_string(),
            Some(p) => self.path_prefix(p)?,
        };
        let strip_prefix = match &r.strip_prefix {
            Some(s) if *s.get_ref() && r.path_prefix.is_none() => {
                return Err(self.error(s.span(), ErrorKind::StripWithoutPrefix));
            }
            Some(s) => *s.get_ref(),
            None => false,
        };
        let headers = match r.headers {
            None => Vec::new(),
            Some(map) => self.route_headers(map.into_inner())?,
        };
        let name = match r.name {
            Some(n) if n.get_ref().trim().is_empty() => {
                let fix = "give the route a name, or leave `name` out".to_string();
                return Err(self.bad_value(&n, "name", fix));
            }
            Some(n) => n.into_inner(),
            None => format!("{position}-{}", upstreams[upstream].name),
        };
        Ok(Route {
            name,
            position,
            hosts,
            path_prefix,
            strip_prefix,
            headers,
            upstream,
        })
    }

    fn route_upstream(
        &self,
        name: &Spanned<String>,
        upstreams: &[UpstreamConfig],
    ) -> Result<usize, Box<ConfigError>> {
        if let Some(i) = upstreams.iter().position(|u| &u.name == name.get_ref()) {
            return Ok(i);
        }
        let names = upstreams.iter().map(|u| u.name.as_str());
        let kind = ErrorKind::UnknownRouteUpstream {
            value: name.get_ref().clone(),
            suggestion: nearest(name.get_ref(), names.clone()),
            names: names.collect::<Vec<_>>().join(", "),
        };
        Err(self.error(name.span(), kind))
    }

    /// A prefix must be a path as routing sees one: starting with `/`, and
    /// already normalised, or no request could ever match it.
    fn path_prefix(&self, p: &Spanned<String>) -> Result<String, Box<ConfigError>> {
        let text = p.get_ref();
        if !text.starts_with('/') {
            let fix = format!("a path prefix starts with `/`; write \"/{text}\"");
            return Err(self.bad_value(p, "path_prefix", fix));
        }
        if text.contains('?') || text.contains('#') {
            let fix = "a path prefix is matched against the path only; remove the query".into();
            return Err(self.bad_value(p, "path_prefix", fix));
        }
        match route::path::normalise(text) {
            Ok(normal) if normal == *text => Ok(text.clone()),
            Ok(normal) => {
                let fix = format!(
                    "requests are routed on normalised paths, so it could never match; \
                     write \"{normal}\""
                );
                Err(self.bad_value(p, "path_prefix", fix))
            }
            Err(e) => Err(self.bad_value(p, "path_prefix", e.why().to_string())),
        }
    }

    fn route_headers(
        &self,
        map: BTreeMap<Spanned<String>, Spanned<String>>,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, Box<ConfigError>> {
        let mut out = Vec::with_capacity(map.len());
        for (name, value) in map {
            let header = HeaderName::from_bytes(name.get_ref().as_bytes()).map_err(|_| {
                self.error(
                    name.span(),
                    ErrorKind::BadHeaderName(name.get_ref().clone()),
                )
            })?;
            let v = HeaderValue::from_str(value.get_ref()).map_err(|_| {
                let fix = "a header value is visible text: no control characters".into();
                self.bad_value(&value, "headers", fix)
            })?;
            out.push((header, v));
        }
        out.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        Ok(out)
    }

    fn route_warnings(
        &self,
        placed: &[Placed],
        upstreams: &[UpstreamConfig],
        upstream_spans: &[Range<usize>],
        default_upstream: Option<usize>,
    ) -> Vec<Warning> {
        let mut warnings = Vec::new();
        let table = route::Table::new(placed.iter().map(|p| p.route.clone()).collect(), None);
        for shadow in table.shadows() {
            let (route, by) = (&placed[shadow.route - 1], &placed[shadow.by - 1]);
            let message = format!(
                "route `{}` can never match: route `{}` (line {}) takes every request it \
                 matches; give it a longer path_prefix, a host or a header of its own, or \
                 remove it",
                route.route.name,
                by.route.name,
                self.line(&by.span)
            );
            warnings.push(self.warning(route.span.clone(), message));
        }
        for (i, u) in upstreams.iter().enumerate() {
            let reached =
                default_upstream == Some(i) || placed.iter().any(|p| p.route.upstream == i);
            if !reached {
                let message = format!(
                    "upstream `{}` gets no traffic: no route names it and it is not \
                     default_upstream",
                    u.name
                );
                let span = upstream_spans.get(i).cloned().unwrap_or(0..0);
                warnings.push(self.warning(span, message));
            }
        }
        warnings
    }
}

/// Same hosts (in any order), same prefix, same headers: the later route
/// could never match.
fn same_conditions(a: &Route, b: &Route) -> bool {
    let mut ha = a.hosts.clone();
    let mut hb = b.hosts.clone();
    ha.sort();
    hb.sort();
    ha == hb && a.path_prefix == b.path_prefix && a.headers == b.headers
}
