//! Cost of picking a backend and taking its lease, per algorithm and pool
//! size: the per-request work Switchyard adds before connecting.
//!
//! - `pick`: one selection, its lease kept (released outside the timing);
//! - `pick_release`: one selection and the release of its lease, as a
//!   request does;
//! - `contended`: `pick_release` on two threads at once over the same
//!   upstream, time per operation as each thread sees it.
//!
//! `cargo bench --bench select`; `-- select/pick_release` for one group.

use std::hint::black_box;
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use switchyard::pool::{Pool, Upstream};

const SIZES: [usize; 5] = [3, 10, 100, 1_000, 10_000];

fn pool(balance: &str, weights: &[u32]) -> Pool {
    let backends: Vec<String> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| format!("{{ address = \"127.0.0.1:{}\", weight = {w} }}", 1024 + i))
        .collect();
    let text = format!(
        "[upstreams.app]\nbalance = \"{balance}\"\nbackends = [{}]\n",
        backends.join(", ")
    );
    let config = switchyard::config::parse(Path::new("bench.toml"), &text).expect("valid");
    Pool::new(config)
}

/// Every algorithm and weighting at every size.
fn cases() -> Vec<(String, usize, Pool)> {
    let mut cases = Vec::new();
    for n in SIZES {
        let equal = vec![1; n];
        let mixed: Vec<u32> = (0..n as u32).map(|i| 1 + i % 5).collect();
        for balance in ["round_robin", "least_connections"] {
            cases.push((format!("{balance}/equal"), n, pool(balance, &equal)));
            cases.push((format!("{balance}/weighted"), n, pool(balance, &mixed)));
        }
    }
    cases
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("select/pick");
    for (name, n, pool) in cases() {
        let snapshot = pool.snapshot();
        let upstream = snapshot.default_upstream().unwrap();
        group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut leases = Vec::with_capacity(iters as usize);
                let start = Instant::now();
                for _ in 0..iters {
                    leases.push(black_box(upstream.select(black_box(&[]))));
                }
                let elapsed = start.elapsed();
                drop(leases);
                elapsed
            })
        });
    }
    group.finish();
}

fn pick_release(c: &mut Criterion) {
    let mut group = c.benchmark_group("select/pick_release");
    for (name, n, pool) in cases() {
        let snapshot = pool.snapshot();
        let upstream = snapshot.default_upstream().unwrap();
        group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
            b.iter(|| black_box(upstream.select(black_box(&[]))))
        });
    }
    group.finish();
}

/// `iters` pick-and-release operations on each of two threads at once;
/// returns the longer thread's time.
fn two_threads(upstream: &Upstream, iters: u64) -> Duration {
    let barrier = Barrier::new(2);
    std::thread::scope(|scope| {
        let run = || {
            barrier.wait();
            let start = Instant::now();
            for _ in 0..iters {
                black_box(upstream.select(black_box(&[])));
            }
            start.elapsed()
        };
        let other = scope.spawn(run);
        let mine = run();
        mine.max(other.join().expect("bench thread"))
    })
}

fn contended(c: &mut Criterion) {
    let mut group = c.benchmark_group("select/contended");
    for (name, n, pool) in cases() {
        let snapshot = pool.snapshot();
        let upstream = snapshot.default_upstream().unwrap();
        group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
            b.iter_custom(|iters| two_threads(upstream, iters))
        });
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

criterion_group!(benches, pick, pick_release, contended, clock, snapshot_load);
criterion_main!(benches);
