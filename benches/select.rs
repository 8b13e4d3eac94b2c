//! Cost of picking a backend and taking its lease, per algorithm and pool
//! size: the per-request work Switchyard adds before connecting.
//!
//! - `pick`: one selection, its lease kept (released outside the timing);
//! - `pick_release`: one selection and the release of its lease, as a
//!   request does;
//! - `contended`: `pick_release` on two threads at once over the same
//!   upstream, time per operation as each thread sees it;
//! - `ring_build`: building consistent_hash's ring, against
//!   pingora-ketama's (and its lookup).
//!
//! consistent_hash picks with a new key each time, as many clients do.
//!
//! `cargo bench --bench select`; `-- select/pick_release` for one group.

use std::hint::black_box;
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use switchyard::pool::{Hint, Pool, Ring, Upstream};

const SIZES: [usize; 5] = [3, 10, 100, 1_000, 10_000];

/// `balance` is the name, with any settings after it on their own lines.
fn pool(balance: &str, weights: &[u32]) -> Pool {
    let backends: Vec<String> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| format!("{{ address = \"127.0.0.1:{}\", weight = {w} }}", 1024 + i))
        .collect();
    let (name, settings) = balance.split_once('\n').unwrap_or((balance, ""));
    let text = format!(
        "[upstreams.app]\nbalance = \"{name}\"\n{settings}\nbackends = [{}]\n",
        backends.join(", ")
    );
    let config = switchyard::config::parse(Path::new("bench.toml"), &text).expect("valid");
    Pool::new(config)
}

/// consistent_hash, with the default bound and without one.
const HASHED: &str = "consistent_hash\nhash_key = \"path\"";
const HASHED_UNBOUNDED: &str = "consistent_hash\nhash_key = \"path\"\nhash_balance_factor = 0";

/// Every algorithm and weighting at every size, and its name.
fn cases() -> Vec<(String, usize, Pool)> {
    let mut cases = Vec::new();
    for n in SIZES {
        let equal = vec![1; n];
        let mixed: Vec<u32> = (0..n as u32).map(|i| 1 + i % 5).collect();
        for (name, balance) in [
            ("round_robin", "round_robin"),
            ("least_connections", "least_connections"),
            ("consistent_hash", HASHED),
            ("consistent_hash_unbounded", HASHED_UNBOUNDED),
            ("least_latency", "least_latency"),
        ] {
            cases.push((format!("{name}/equal"), n, pool(balance, &equal)));
            cases.push((format!("{name}/weighted"), n, pool(balance, &mixed)));
        }
    }
    cases
}

/// A different key for each pick, as many clients' requests have.
fn hint() -> Hint {
    thread_local! {
        static NEXT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    let k = NEXT.with(|n| {
        n.set(n.get().wrapping_add(0x9e37_79b9_7f4a_7c15));
        n.get()
    });
    Hint {
        key: Some(switchyard::pool::key_hash(&k.to_le_bytes())),
        pinned: None,
    }
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
                    leases.push(black_box(upstream.select(black_box(&[]), hint())));
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
            b.iter(|| black_box(upstream.select(black_box(&[]), hint())))
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
                black_box(upstream.select(black_box(&[]), hint()));
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

/// Building consistent_hash's ring (once per config or DNS change), and
/// for comparison the ketama ring of pingora-ketama (nginx's algorithm),
/// with equal weights.
fn ring_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_build");
    for n in [10, 100, 1_000] {
        let ids: Vec<u64> = (0..n)
            .map(|i| {
                switchyard::pool::key_hash(
                    format!("app/10.0.{}.{}:80", i / 256, i % 256).as_bytes(),
                )
            })
            .collect();
        let weights = vec![1; n];
        group.bench_with_input(BenchmarkId::new("switchyard", n), &n, |b, _| {
            b.iter(|| black_box(Ring::new(&ids, &weights)))
        });
        let buckets: Vec<pingora_ketama::Bucket> = (0..n)
            .map(|i| {
                let addr = format!("10.0.{}.{}:80", i / 256, i % 256).parse().unwrap();
                pingora_ketama::Bucket::new(addr, 1)
            })
            .collect();
        group.bench_with_input(BenchmarkId::new("pingora_ketama", n), &n, |b, _| {
            b.iter(|| black_box(pingora_ketama::Continuum::new(&buckets)))
        });
        let ketama = pingora_ketama::Continuum::new(&buckets);
        let mut k = 0u64;
        group.bench_with_input(BenchmarkId::new("pingora_ketama_lookup", n), &n, |b, _| {
            b.iter(|| {
                k = k.wrapping_add(0x9e37_79b9_7f4a_7c15);
                black_box(ketama.node(&k.to_le_bytes()))
            })
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

criterion_group!(
    benches,
    pick,
    pick_release,
    contended,
    ring_build,
    clock,
    snapshot_load
);
criterion_main!(benches);
