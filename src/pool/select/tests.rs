//! Unit tests of choosing a backend for an attempt: the tiers, retries,
//! panic mode, stickiness and hashing.

use super::*;
use crate::config::Balance;
use crate::config::Config;
use crate::config::Passive;
use crate::pool::latency;
use crate::pool::least::LoadTree;
use crate::pool::Pool;
use std::path::Path;
use std::time::Duration;

fn config(backends: &str) -> Config {
    let text = format!("[upstreams.app]\nbackends = [{backends}]\n");
    crate::config::parse(Path::new("test.toml"), &text).unwrap()
}

/// A pool of `n` least-connections backends on 127.0.0.1:3001 and on.
fn least_connections_pool(n: usize) -> Pool {
    let list: Vec<String> = (0..n)
        .map(|i| format!("\"127.0.0.1:{}\"", 3001 + i))
        .collect();
    let text = format!(
        "[upstreams.app]\nbalance = \"least_connections\"\nbackends = [{}]\n",
        list.join(", ")
    );
    Pool::new(crate::config::parse(Path::new("t.toml"), &text).unwrap())
}

#[test]
fn least_connections_takes_back_a_backend_when_its_ejection_ends() {
    // Enough backends for the tree rather than the scan.
    let n = LoadTree::MIN_BACKENDS + 4;
    let pool = least_connections_pool(n);
    let snapshot = pool.snapshot();
    let up = snapshot.default_upstream().unwrap();
    assert!(up.least.is_some());
    let eject = Passive {
        consecutive_failures: 1,
        ejection_time: Duration::from_millis(50),
        ..Passive::default()
    };
    let now = health::now();
    let ejected = up.backends()[0].state.health();
    assert!(ejected
        .record_failure(&eject, crate::config::Outcome::Connect, now, now)
        .is_some());
    // The others take everything meanwhile, and stay busy.
    let mut held = Vec::new();
    for _ in 1..n {
        let (i, lease) = up.select(&[], Default::default()).unwrap();
        assert_ne!(i, 0);
        held.push(lease);
    }
    // Nothing happens to backend 0 but time: the tree must notice, and
    // then backend 0 is the only one with nothing in flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while up.select(&[], Default::default()).unwrap().0 != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "backend 0 never came back"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!ejected.ejected(health::now()));
}

/// Least-connections holds back a backend answering in 20 ms among
/// backends that answer at once, however busy they are, but for a
/// probe a second: by scan (3 backends) and through the tree (20).
#[test]
fn least_connections_holds_back_a_slow_backend() {
    for n in [3, LoadTree::MIN_BACKENDS + 4] {
        let pool = least_connections_pool(n);
        let snapshot = pool.snapshot();
        let up = snapshot.default_upstream().unwrap();
        assert_eq!(up.least.is_some(), n > LoadTree::MIN_BACKENDS);
        // As the proxy does: responses come in while their leases are
        // held, and the leases end after.
        for (i, b) in up.backends().iter().enumerate() {
            let lease = up.lease(i, &LazyNow::new());
            let took = if i == 0 { 20_000_000 } else { 200_000 };
            for _ in 0..40 {
                b.state.latency().record(took, health::now());
            }
            drop(lease);
        }
        let fastest = up.fastest_latency();
        assert!(up.backends()[0].state.latency().held_back(fastest));
        assert!(!up.backends()[1].state.latency().held_back(fastest));
        // Enough picks for the tree's periodic look at latencies.
        for _ in 0..1024 {
            up.select(&[], Default::default()).unwrap();
        }
        let mut held = Vec::new();
        for _ in 0..8 * (n - 1) {
            let (i, lease) = up.select(&[], Default::default()).unwrap();
            assert_ne!(i, 0, "n = {n}: picked the slow backend");
            held.push(lease);
        }
        if up.least.is_none() {
            continue;
        }
        // The tree's probe (the scan's is in the end-to-end tests): one
        // request, once a second has passed, and only one.
        std::thread::sleep(Duration::from_nanos(latency::PROBE_EVERY + 50_000_000));
        let (i, probe) = up.select(&[], Default::default()).unwrap();
        assert_eq!(i, 0, "n = {n}: no probe");
        for _ in 0..n {
            assert_ne!(
                up.select(&[], Default::default()).unwrap().0,
                0,
                "n = {n}: a second probe"
            );
        }
        drop(probe);
    }
}

#[test]
fn select_skips_tried_and_unhealthy() {
    let pool = Pool::new(config(
        r#""127.0.0.1:3001", "127.0.0.1:3002", "127.0.0.1:3003""#,
    ));
    let snap = pool.snapshot();
    let up = snap.default_upstream().unwrap();
    let down = up.backends()[1].state.health();
    down.record_check(false, "test".into(), (1, 1), health::now());
    for _ in 0..4 {
        let (i, _) = up.select(&[0], Default::default()).unwrap();
        assert_eq!(i, 2);
    }
    // Every usable backend tried: a retry goes on to the least bad of
    // the rest rather than give up.
    assert_eq!(up.select(&[0, 2], Default::default()).unwrap().0, 1);
    assert!(up.has_untried(&[0, 2]));
    assert!(up.select(&[0, 1, 2], Default::default()).is_none());
    assert!(!up.has_untried(&[0, 1, 2]));
}

/// A backend that refused a connection is down (or restarting): it
/// has nothing in flight, so least-connections would send it nearly
/// everything, each a failure and a retry; round-robin its share. Both
/// pass it over while another backend has no such failure, by scan
/// (3 backends) and through the tree (20), and take it back once it
/// answers.
/// The lines that pick `balance` (and what it needs).
fn balance_lines(balance: &str) -> String {
    let key = if balance == "consistent_hash" {
        "hash_key = \"path\"\n"
    } else {
        ""
    };
    format!("balance = \"{balance}\"\n{key}")
}

/// A hint with the `k`-th of many keys.
fn hint(k: usize) -> Hint {
    Hint {
        key: Some(crate::pool::ring::mix(k as u64)),
        pinned: None,
    }
}

#[test]
fn a_backend_that_refused_a_connection_is_passed_over() {
    for balance in Balance::NAMES {
        for n in [3, LoadTree::MIN_BACKENDS + 4] {
            let list: Vec<String> = (0..n)
                .map(|i| format!("\"127.0.0.1:{}\"", 3001 + i))
                .collect();
            let text = format!(
                "[upstreams.app]\n{}backends = [{}]\n",
                balance_lines(balance),
                list.join(", ")
            );
            let pool = Pool::new(crate::config::parse(Path::new("t.toml"), &text).unwrap());
            let snapshot = pool.snapshot();
            let up = snapshot.default_upstream().unwrap();
            let refused = &up.backends()[0].state;
            up.record_outcome(refused, 0, Some(crate::config::Outcome::Connect));
            assert!(up.is_ready(), "{balance}: a refusal is not an outage");
            for k in 0..4 * n {
                let (i, lease) = up.select(&[], hint(k)).unwrap();
                assert_ne!(i, 0, "{balance}, {n} backends: picked the refusing backend");
                drop(lease);
            }
            // With every other backend tried, a retry still takes it.
            let others: Vec<usize> = (1..n).collect();
            assert_eq!(up.select(&others, hint(0)).unwrap().0, 0);
            // An answer on an attempt chosen after the refusal ends it.
            up.record_outcome(refused, health::now(), None);
            let picked = (0..40 * n).any(|k| up.select(&[], hint(k)).unwrap().0 == 0);
            assert!(picked, "{balance}, {n} backends: never taken back");
        }
    }
}

/// With every backend refusing, they are all still candidates: the
/// pass-over ranks backends, it never empties the pool.
#[test]
fn when_every_backend_refused_each_is_still_picked() {
    let pool = Pool::new(config(r#""127.0.0.1:3001", "127.0.0.1:3002""#));
    let snapshot = pool.snapshot();
    let up = snapshot.default_upstream().unwrap();
    for b in up.backends() {
        up.record_outcome(&b.state, 0, Some(crate::config::Outcome::Connect));
    }
    let mut picks = [0; 2];
    for _ in 0..10 {
        picks[up.select(&[], Default::default()).unwrap().0] += 1;
    }
    assert_eq!(picks, [5, 5]);
}

#[test]
fn a_recovered_backend_starts_at_a_tenth_of_its_weight() {
    for balance in Balance::NAMES {
        let text = format!(
            "[upstreams.app]\n{}slow_start = \"30s\"\n\
             backends = [\"127.0.0.1:3001\", \"127.0.0.1:3002\"]\n\
             [upstreams.app.health_check]\n",
            balance_lines(balance)
        );
        let pool = Pool::new(crate::config::parse(Path::new("t.toml"), &text).unwrap());
        let snap = pool.snapshot();
        let up = snap.default_upstream().unwrap();
        let h = up.backends()[1].state.health();
        h.record_check(false, "x".into(), (1, 1), health::now());
        h.record_check(true, "x".into(), (1, 1), health::now());
        let mut picks = [0; 2];
        for k in 0..1100 {
            picks[up.select(&[], hint(k)).unwrap().0] += 1;
        }
        if balance == "round_robin" || balance == "least_connections" {
            assert_eq!(picks, [1000, 100], "{balance}");
        } else {
            // Keys and random pairs: about a tenth of its share.
            assert!(picks[1] < 1100 / 5, "{balance}: {picks:?}");
            assert!(picks[1] > 0, "{balance}: {picks:?}");
        }
        assert_eq!(up.effective_weight(0, health::now()), 1.0);
        assert!(up.effective_weight(1, health::now()) < 0.2);
    }
}
