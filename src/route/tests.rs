//! The route table's precedence, by hand-traced cases and against a plain
//! scan for random tables and requests.

use super::*;
use proptest::prelude::*;

/// A route from short strings: `hosts` comma-separated (empty for none),
/// `headers` as `name=value` pairs comma-separated.
fn route(position: usize, hosts: &str, prefix: &str, headers: &str, upstream: usize) -> Route {
    Route {
        name: format!("r{position}"),
        position,
        hosts: hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| HostPattern::parse(h).unwrap())
            .collect(),
        path_prefix: prefix.to_string(),
        strip_prefix: false,
        headers: headers
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| {
                let (n, v) = h.split_once('=').unwrap();
                (n.parse().unwrap(), v.parse().unwrap())
            })
            .collect(),
        upstream,
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (n, v) in pairs {
        map.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    map
}

fn taken(table: &Table, host: &str, path: &str, hs: &[(&str, &str)]) -> Option<usize> {
    let headers = headers(hs);
    let req = Request {
        host,
        path,
        headers: &headers,
    };
    table.lookup(&req).map(|r| r.position)
}

#[test]
fn exact_host_beats_wildcard_beats_none() {
    let table = Table::new(
        vec![
            route(1, "", "/", "", 0),
            route(2, "*.example.com", "/", "", 0),
            route(3, "api.example.com", "/", "", 0),
            route(4, "*.api.example.com", "/", "", 0),
        ],
        None,
    );
    assert_eq!(taken(&table, "api.example.com", "/", &[]), Some(3));
    assert_eq!(taken(&table, "www.example.com", "/", &[]), Some(2));
    assert_eq!(
        taken(&table, "v1.api.example.com", "/", &[]),
        Some(4),
        "longest wildcard"
    );
    assert_eq!(taken(&table, "example.org", "/", &[]), Some(1));
    assert_eq!(taken(&table, "", "/", &[]), Some(1));
}

#[test]
fn a_more_specific_host_that_does_not_match_the_path_falls_through() {
    let table = Table::new(
        vec![
            route(1, "", "/", "", 0),
            route(2, "api.example.com", "/v2", "", 0),
        ],
        None,
    );
    assert_eq!(taken(&table, "api.example.com", "/v2/x", &[]), Some(2));
    assert_eq!(taken(&table, "api.example.com", "/v1", &[]), Some(1));
}

#[test]
fn the_longest_prefix_wins_and_prefixes_respect_segments() {
    let table = Table::new(
        vec![
            route(1, "", "/", "", 0),
            route(2, "", "/api", "", 0),
            route(3, "", "/api/v2/", "", 0),
            route(4, "", "/static/", "", 0),
        ],
        None,
    );
    assert_eq!(taken(&table, "h", "/api", &[]), Some(2));
    assert_eq!(taken(&table, "h", "/api/x", &[]), Some(2));
    assert_eq!(taken(&table, "h", "/apix", &[]), Some(1));
    assert_eq!(
        taken(&table, "h", "/api/v2", &[]),
        Some(2),
        "/api/v2/ wants the slash"
    );
    assert_eq!(taken(&table, "h", "/api/v2/", &[]), Some(3));
    assert_eq!(taken(&table, "h", "/api/v2/users/1", &[]), Some(3));
    assert_eq!(taken(&table, "h", "/static", &[]), Some(1));
    assert_eq!(taken(&table, "h", "/static/", &[]), Some(4));
    assert_eq!(taken(&table, "h", "*", &[]), Some(1));
}

#[test]
fn header_routes_come_before_plain_ones_then_file_order() {
    let table = Table::new(
        vec![
            route(1, "", "/", "", 0),
            route(2, "", "/", "x-canary=1", 1),
            route(3, "", "/", "x-canary=1,x-beta=1", 2),
            route(4, "", "/api", "", 3),
        ],
        None,
    );
    assert_eq!(taken(&table, "h", "/", &[("x-canary", "1")]), Some(2));
    assert_eq!(taken(&table, "h", "/", &[("x-canary", "2")]), Some(1));
    // 3 comes after 2 in the file: 2 takes its requests too.
    assert_eq!(
        taken(&table, "h", "/", &[("x-canary", "1"), ("x-beta", "1")]),
        Some(2)
    );
    // A longer prefix beats a header condition.
    assert_eq!(taken(&table, "h", "/api", &[("x-canary", "1")]), Some(4));
    // One of several values is enough.
    assert_eq!(
        taken(&table, "h", "/", &[("x-canary", "0"), ("x-canary", "1")]),
        Some(2)
    );
    assert_eq!(table.shadows(), vec![Shadow { route: 3, by: 2 }]);
}

#[test]
fn nothing_matches_without_a_catch_all() {
    let table = Table::new(vec![route(1, "api.example.com", "/", "", 0)], None);
    assert_eq!(taken(&table, "other.example.com", "/", &[]), None);
    let headers = HeaderMap::new();
    let req = Request {
        host: "other",
        path: "/",
        headers: &headers,
    };
    assert_eq!(table.upstream_for(&req), None);
    let with_default = Table::new(vec![route(1, "api.example.com", "/", "", 0)], Some(1));
    assert_eq!(
        with_default
            .upstream_for(&req)
            .map(|(u, r)| (u, r.is_none())),
        Some((1, true))
    );
}

#[test]
fn strip_prefix_keeps_a_leading_slash_and_forwards_the_prefix() {
    let mut r = route(1, "", "/api/", "", 0);
    r.strip_prefix = true;
    assert_eq!(r.backend_path("/api/users"), "/users");
    assert_eq!(r.backend_path("/api/"), "/");
    assert_eq!(r.forwarded_prefix(), Some("/api"));
    r.path_prefix = "/api".into();
    assert_eq!(r.backend_path("/api"), "/");
    assert_eq!(r.backend_path("/api/users/7"), "/users/7");
    assert_eq!(r.forwarded_prefix(), Some("/api"));
    r.strip_prefix = false;
    assert_eq!(r.backend_path("/api/users"), "/api/users");
    assert_eq!(r.forwarded_prefix(), None);
}

#[test]
fn explain_says_why_each_route_before_the_taken_one_did_not_match() {
    let table = Table::new(
        vec![
            route(1, "", "/", "", 0),
            route(2, "api.example.com", "/", "", 0),
            route(3, "", "/api", "x-canary=1", 0),
            route(4, "", "/api", "", 0),
        ],
        None,
    );
    let order: Vec<usize> = table.by_precedence().iter().map(|r| r.position).collect();
    assert_eq!(order, [2, 3, 4, 1]);
    let hs = headers(&[("x-canary", "0")]);
    let req = Request {
        host: "www.example.com",
        path: "/api/x",
        headers: &hs,
    };
    let verdicts: Vec<(usize, Verdict)> = table
        .explain(&req)
        .into_iter()
        .map(|(r, v)| (r.position, v))
        .collect();
    assert_eq!(
        verdicts[0],
        (
            2,
            Verdict::NoMatch("host www.example.com is not api.example.com".into())
        )
    );
    assert_eq!(
        verdicts[1],
        (
            3,
            Verdict::NoMatch("header x-canary is \"0\", not \"1\"".into())
        )
    );
    assert_eq!(verdicts[2], (4, Verdict::Taken));
    assert_eq!(verdicts[3], (1, Verdict::Outranked));
}

#[test]
fn routes_covered_by_an_earlier_one_are_shadowed() {
    let table = Table::new(
        vec![
            route(1, "a.com,b.com", "/x", "", 0),
            route(2, "a.com", "/x", "", 0),
            route(3, "a.com,c.com", "/x", "", 0),
            route(4, "a.com", "/x/", "", 0),
            route(5, "a.com", "/x", "k=v", 0),
        ],
        None,
    );
    // 2's only host is among 1's, same prefix: never matches. 3 still
    // takes c.com, 4 has a longer prefix, 5 has a header condition.
    assert_eq!(table.shadows(), vec![Shadow { route: 2, by: 1 }]);
}

/// The precedence rules applied by looking at every route: the reference
/// the index must agree with.
fn scan(routes: &[Route], req: &Request<'_>) -> Option<usize> {
    routes
        .iter()
        .filter(|r| r.path_matches(req.path) && r.headers_match(req.headers))
        .filter_map(|r| {
            let host = if r.hosts.is_empty() {
                Some(HostRank::Any)
            } else {
                r.hosts
                    .iter()
                    .filter(|h| h.matches(req.host))
                    .map(|h| match h {
                        HostPattern::Exact(_) => HostRank::Exact,
                        HostPattern::Suffix(s) => HostRank::Wildcard(s.len()),
                    })
                    .max()
            }?;
            let key = (
                host,
                r.path_prefix.len(),
                !r.headers.is_empty(),
                std::cmp::Reverse(r.position),
            );
            Some((key, r.position))
        })
        .max()
        .map(|(_, position)| position)
}

const HOSTS: [&str; 6] = [
    "a.com",
    "b.a.com",
    "*.a.com",
    "*.b.a.com",
    "*.com",
    "x.b.a.com",
];
const PREFIXES: [&str; 6] = ["/", "/api", "/api/", "/api/v1", "/s", "/api/v1/"];
const HEADERS: [&str; 4] = ["", "x-c=1", "x-c=2", "x-c=1,x-d=1"];
const REQ_HOSTS: [&str; 6] = [
    "a.com",
    "b.a.com",
    "x.b.a.com",
    "y.x.b.a.com",
    "c.com",
    "other",
];
const PATHS: [&str; 9] = [
    "/",
    "/api",
    "/api/",
    "/api/v1",
    "/api/v1/",
    "/api/v1/x",
    "/apix",
    "/s/1",
    "*",
];

proptest! {
    #[test]
    fn the_index_agrees_with_a_plain_scan(
        table in prop::collection::vec(
            (prop::collection::vec(0..HOSTS.len(), 0..3), 0..PREFIXES.len(), 0..HEADERS.len()),
            1..12,
        ),
        requests in prop::collection::vec(
            (0..REQ_HOSTS.len(), 0..PATHS.len(), any::<bool>(), any::<bool>(), any::<bool>()),
            1..20,
        ),
    ) {
        let routes: Vec<Route> = table
            .iter()
            .enumerate()
            .map(|(i, (hosts, p, h))| {
                let hosts: Vec<&str> = hosts.iter().map(|&k| HOSTS[k]).collect();
                route(i + 1, &hosts.join(","), PREFIXES[*p], HEADERS[*h], i)
            })
            .collect();
        let index = Table::new(routes.clone(), None);
        for (h, p, c1, c2, d1) in requests {
            let mut pairs = Vec::new();
            if c1 { pairs.push(("x-c", "1")); }
            if c2 { pairs.push(("x-c", "2")); }
            if d1 { pairs.push(("x-d", "1")); }
            let hs = headers(&pairs);
            let req = Request { host: REQ_HOSTS[h], path: PATHS[p], headers: &hs };
            let got = index.lookup(&req).map(|r| r.position);
            prop_assert_eq!(got, scan(&routes, &req), "{} {} {:?}", req.host, req.path, pairs);
            let explained = index.explain(&req);
            let taken: Vec<usize> = explained
                .iter()
                .filter(|(_, v)| *v == Verdict::Taken)
                .map(|(r, _)| r.position)
                .collect();
            prop_assert_eq!(taken, got.into_iter().collect::<Vec<_>>());
        }
    }
}
