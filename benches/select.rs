//! Cost of picking a backend and taking its lease, per algorithm and pool
//! size: the per-request work Switchyard adds before connecting.
//!
//! `cargo bench --bench select`

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use switchyard::pool::Pool;

fn pool(balance: &str, weights: &[u32]) -> Pool {
    let backends: Vec<String> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| format!("{{ address = \"127.0.0.1:{}\", weight = {w} }}", 3000 + i))
        .collect();
    let text = format!(
        "[upstreams.app]\nbalance = \"{balance}\"\nbackends = [{}]\n",
        backends.join(", ")
    );
    let config = switchyard::config::parse(Path::new("bench.toml"), &text).expect("valid");
    Pool::new(config)
}

fn select(c: &mut Criterion) {
    let mut group = c.benchmark_group("select");
    for n in [3usize, 16, 64] {
        let equal = vec![1; n];
        let mixed: Vec<u32> = (0..n as u32).map(|i| 1 + i % 5).collect();
        let cases = [
            ("round_robin/equal", pool("round_robin", &equal)),
            ("round_robin/weighted", pool("round_robin", &mixed)),
            ("least_connections/equal", pool("least_connections", &equal)),
            (
                "least_connections/weighted",
                pool("least_connections", &mixed),
            ),
        ];
        for (name, pool) in cases {
            let snapshot = pool.snapshot();
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| black_box(snapshot.route().select(black_box(&[]))))
            });
        }
    }
    group.finish();
}

/// The monotonic clock selection reads for ejection and slow start.
fn clock(c: &mut Criterion) {
    c.bench_function("clock", |b| b.iter(switchyard::pool::health::now));
}

fn snapshot_load(c: &mut Criterion) {
    let pool = pool("round_robin", &[1, 1, 1]);
    c.bench_function("snapshot_load", |b| b.iter(|| black_box(pool.snapshot())));
}

criterion_group!(benches, select, clock, snapshot_load);
criterion_main!(benches);
