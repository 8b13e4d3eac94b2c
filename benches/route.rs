//! Cost of routing one request, by the size of the route table: the index
//! must keep a lookup near constant however many routes there are.
//!
//! Tables of 10, 1,000 and 10,000 routes: a third with exact hosts, a third
//! with wildcard hosts, a third without hosts, each with its own path
//! prefix, some with a header condition. The requests cycle through hits of
//! each kind and misses that fall through to a catch-all.
//!
//! - `route/lookup`: the index alone, on a normalised path;
//! - `route/decide`: what the proxy calls per request: normalising the
//!   path, the lookup, and the path its backend gets.
//!
//! `cargo bench --bench route`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::HeaderMap;
use switchyard::route::{HostPattern, Request, Route, Table};

const SIZES: [usize; 3] = [10, 1_000, 10_000];

fn route(i: usize, n: usize) -> Route {
    let hosts = match i % 3 {
        0 => vec![HostPattern::parse(&format!("svc{i}.example.com")).unwrap()],
        1 => vec![HostPattern::parse(&format!("*.t{i}.example.com")).unwrap()],
        _ => Vec::new(),
    };
    let headers = if i.is_multiple_of(7) {
        vec![("x-canary".parse().unwrap(), "1".parse().unwrap())]
    } else {
        Vec::new()
    };
    Route {
        name: format!("r{i}"),
        position: i + 1,
        hosts,
        // The last route is the catch-all; the others each have a prefix.
        path_prefix: if i + 1 == n {
            "/".into()
        } else {
            format!("/api/v{}/s{i}", i % 4)
        },
        strip_prefix: i.is_multiple_of(2),
        headers,
        upstream: 0,
    }
}

fn table(n: usize) -> Table {
    Table::new((0..n).map(|i| route(i, n)).collect(), Some(0))
}

/// (host, target) pairs: hits on an exact, a wildcard and a host-less
/// route, and misses, for a table of `n` routes.
fn requests(n: usize) -> Vec<(String, String)> {
    let (e, w, p) = (3 * (n / 6), 3 * (n / 6) + 1, 3 * (n / 6) + 2);
    vec![
        (
            format!("svc{e}.example.com"),
            format!("/api/v{}/s{e}/users/42?x=1", e % 4),
        ),
        (
            format!("a.b.t{w}.example.com:8080"),
            format!("/api/v{}/s{w}/items", w % 4),
        ),
        ("www.example.org".into(), format!("/api/v{}/s{p}", p % 4)),
        ("unknown.example.net".into(), "/static/js/app.js".into()),
        ("svc0.example.com".into(), "/nothing/here/at/all".into()),
    ]
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route/lookup");
    let headers = HeaderMap::new();
    for n in SIZES {
        let table = table(n);
        let reqs: Vec<(String, String)> = requests(n)
            .into_iter()
            .map(|(h, t)| {
                let host = switchyard::route::host::request_host(&h).into_owned();
                let path = t.split('?').next().unwrap().to_string();
                (host, path)
            })
            .collect();
        let mut k = 0;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let (host, path) = &reqs[k % reqs.len()];
                k += 1;
                let req = Request {
                    host,
                    path,
                    headers: &headers,
                };
                black_box(table.lookup(&req).map(|r| r.position))
            })
        });
    }
    group.finish();
}

fn decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("route/decide");
    let headers = HeaderMap::new();
    for n in SIZES {
        let table = table(n);
        let reqs = requests(n);
        let mut k = 0;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let (host, target) = &reqs[k % reqs.len()];
                k += 1;
                let d = table.decide(host, target, &headers).expect("routed");
                black_box((d.upstream, d.rewrite.map(|r| r.len())))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, lookup, decide);
criterion_main!(benches);
