//! Cost of the access log per request, apart from the load benchmark's
//! noise:
//!
//! - `access_log/format`: one JSON or combined line, in the writer thread;
//! - `access_log/send`: what the request path pays, a copy of the
//!   record's strings (as the logging hook makes them) and the try into
//!   the queue, with the writer thread formatting and writing to
//!   `/dev/null` meanwhile.
//!
//! `cargo bench --bench access_log`.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use prometheus::IntCounter;
use switchyard::access_log::{AccessLog, Format, Record};
use switchyard::config::{AccessTarget, LogConfig};

/// A typical line: a routed GET answered by its backend.
fn record() -> Record {
    Record {
        time: SystemTime::now(),
        request_id: "6a1f0c2e-8a4b-4d0e-9c8e-1f2a3b4c5d6e".into(),
        client: Some("192.0.2.7".parse().unwrap()),
        method: http::Method::GET,
        host: "api.example.com".into(),
        path: "/api/users/12345/orders".into(),
        version: http::Version::HTTP_11,
        status: 200,
        bytes_in: 0,
        bytes_out: 512,
        duration: Duration::from_micros(1_873),
        upstream_time: Some(Duration::from_micros(1_204)),
        route: Some("api".into()),
        upstream: Some("api".into()),
        backend: Some("10.0.0.5:3000".into()),
        attempts: 1,
        local_reason: None,
        referer: Some("https://example.com/".into()),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0".into()),
    }
}

fn format(c: &mut Criterion) {
    let r = record();
    let mut buf = Vec::with_capacity(64 * 1024);
    for format in [Format::Json, Format::Combined] {
        c.bench_function(&format!("access_log/format/{}", format.as_str()), |b| {
            b.iter(|| {
                buf.clear();
                format.write(black_box(&r), &mut buf);
                black_box(buf.len())
            })
        });
    }
}

fn send(c: &mut Criterion) {
    let dropped = IntCounter::new("dropped", "bench").unwrap();
    let settings = LogConfig {
        access: Some(AccessTarget::File(PathBuf::from("/dev/null"))),
        ..LogConfig::default()
    };
    let log = AccessLog::start(&settings, dropped.clone()).unwrap();
    let sink = log.sink().unwrap();
    let r = record();
    c.bench_function("access_log/send", |b| {
        b.iter(|| sink.send(black_box(r.clone())))
    });
    log.flush(Duration::from_secs(5));
    eprintln!(
        "access_log/send: {} lines dropped (queue full)",
        dropped.get()
    );
}

criterion_group!(benches, format, send);
criterion_main!(benches);
