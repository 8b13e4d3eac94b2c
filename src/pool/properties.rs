//! Properties of selection through the whole pool, for any mix of
//! health, weights, loads and reloads: never a backend that is down,
//! ejected or removed while a usable one exists, nor one that just refused
//! a connection while another did not, by every balancer (consistent_hash
//! with and without keys); a retry whenever an untried backend may take
//! traffic; and least-connections always a least loaded usable one.

use super::health::{self, LazyNow};
use crate::config::Config;
use crate::config::{Outcome, Passive};
use crate::pool::{Hint, Pool};
use proptest::prelude::*;
use std::path::Path;

fn config(ports: &[u16], balance: &str) -> Config {
    let list: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let key = if balance == "consistent_hash" {
        "hash_key = \"path\"\n"
    } else {
        ""
    };
    let text = format!(
        "[upstreams.app]\nbalance = \"{balance}\"\n{key}backends = [{}]\n\
         [upstreams.app.health_check]\n",
        list.join(", ")
    );
    crate::config::parse(Path::new("p.toml"), &text).unwrap()
}

proptest! {
    #[test]
    fn selection_avoids_down_ejected_refusing_and_removed_backends(
        // Per backend: 0 usable, 1 failing checks, 2 ejected, 3 usable but
        // refused a connect a moment ago. Over 16 picks through the tree.
        states in prop::collection::vec(0u8..4, 2..=24),
        removed in prop::collection::vec(any::<bool>(), 24),
        tried in prop::collection::vec(any::<bool>(), 24),
        balance in prop::sample::select(crate::config::Balance::NAMES.to_vec()),
        keys in prop::collection::vec(any::<u64>(), 1..4),
        pinned in prop::option::of(0usize..24),
    ) {
        let ports: Vec<u16> = (0..states.len() as u16).map(|i| 4000 + i).collect();
        let pool = Pool::new(config(&ports, balance));
        let now = health::now();
        let eject = Passive { consecutive_failures: 1, ..Passive::default() };
        {
            let snapshot = pool.snapshot();
            for (b, state) in snapshot.default_upstream().unwrap().backends().iter().zip(&states) {
                let h = b.state.health();
                match state {
                    1 => { h.record_check(false, "down".into(), (1, 1), now); }
                    2 => { h.record_failure(&eject, Outcome::Connect, now, now); }
                    3 => h.record_refusal(now),
                    _ => {}
                }
            }
        }
        // Remove some backends by reloading without them (keep one).
        let kept: Vec<u16> = ports
            .iter()
            .zip(&removed)
            .enumerate()
            .filter(|(i, (_, r))| *i == 0 || !**r)
            .map(|(_, (p, _))| *p)
            .collect();
        pool.install(config(&kept, balance));
        let snapshot = pool.snapshot();
        let up = snapshot.default_upstream().unwrap();
        let now = LazyNow::new();
        let usable = |i: usize| up.backends()[i].state.health().usable_lazy(&now);
        let preferred = |i: usize| usable(i) && !up.backends()[i].state.health().passed_over_lazy(&now);
        let n = up.backends().len();
        let any_usable = (0..n).any(usable);
        let any_preferred = (0..n).any(preferred);
        for k in 0..3 * states.len() {
            // consistent_hash with keys, and without (round-robin).
            // And a sticky cookie naming any backend, usable or not.
            let hint = Hint { key: keys.get(k % 4).copied(), pinned: pinned.filter(|&p| p < n) };
            let (i, _lease) = up.select(&[], hint).expect("panic mode still picks");
            let port = up.backends()[i].state.socket_addr().port();
            prop_assert!(kept.contains(&port), "picked removed backend {port}");
            if any_usable {
                prop_assert!(usable(i), "picked {port} while a usable one exists");
            }
            if any_preferred {
                prop_assert!(preferred(i), "picked {port}, which refused, over one that did not");
            }
        }
        // A retry takes an untried backend whenever one may take traffic.
        let tried: Vec<usize> = (0..n).filter(|&i| tried[i]).collect();
        let untried = |i: &usize| !tried.contains(i);
        let takeable = (0..n).filter(untried).any(|i| up.backends()[i].state.health().panic_tier().is_some());
        let hint = Hint { key: keys.first().copied(), pinned: None };
        match up.select(&tried, hint) {
            Some((i, _lease)) => {
                prop_assert!(untried(&i), "retried on {i}, already tried");
                if (0..n).filter(untried).any(usable) {
                    prop_assert!(usable(i), "retried on unusable {i} while a usable one was left");
                }
            }
            None => prop_assert!(!takeable, "no retry although an untried backend was left"),
        }
    }

    /// Pools over `LoadTree::MIN_BACKENDS` pick through the tree,
    /// smaller ones by scanning: both must always pick a least loaded
    /// usable backend.
    #[test]
    fn least_connections_tree_picks_a_least_loaded_usable_backend(
        weights in prop::collection::vec(1u32..6, 1..60),
        down in prop::collection::vec(any::<bool>(), 60),
        // Per step: which backend to lease directly (as a retry or an
        // older snapshot would), and whether to end the oldest lease.
        steps in prop::collection::vec((0usize..60, any::<bool>(), any::<bool>()), 1..120),
    ) {
        let list: Vec<String> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| format!("{{ address = \"127.0.0.1:{}\", weight = {w} }}", 5000 + i))
            .collect();
        let text = format!(
            "[upstreams.app]\nbalance = \"least_connections\"\nbackends = [{}]\n\
             [upstreams.app.health_check]\n",
            list.join(", ")
        );
        let pool = Pool::new(crate::config::parse(Path::new("p.toml"), &text).unwrap());
        let snapshot = pool.snapshot();
        let up = snapshot.default_upstream().unwrap();
        let n = weights.len();
        let now = health::now();
        for (b, &d) in up.backends().iter().zip(&down) {
            if d {
                b.state.health().record_check(false, "down".into(), (1, 1), now);
            }
        }
        let usable: Vec<usize> = (0..n).filter(|&i| !down[i]).collect();
        let mut held = std::collections::VecDeque::new();
        for (target, direct, release) in steps {
            if release {
                held.pop_front();
            }
            if direct {
                held.push_back((target % n, up.lease(target % n, &LazyNow::new())));
                continue;
            }
            let (i, lease) = up.select(&[], Default::default()).expect("something is picked");
            let load = |j: usize| up.backends()[j].state.in_flight() as u64 - u64::from(j == i);
            let w = |j: usize| u64::from(weights[j]);
            if !usable.is_empty() {
                prop_assert!(usable.contains(&i), "picked {i}, which is down");
                for &j in &usable {
                    prop_assert!(
                        load(i) * w(j) <= load(j) * w(i),
                        "picked {i} ({}/{}) over {j} ({}/{})", load(i), w(i), load(j), w(j)
                    );
                }
            }
            held.push_back((i, lease));
        }
    }
}
