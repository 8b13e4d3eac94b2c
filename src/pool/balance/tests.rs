//! Unit tests of the balancers: spread by weight, eligibility, ties.

use super::*;
use crate::pool::BackendState;
use std::sync::Arc;

pub(super) fn backends(weights: &[u32]) -> Vec<Backend> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| Backend {
            state: Arc::new(BackendState::new(
                format!("b{i}"),
                format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                crate::pool::health::Health::new(true, 0),
            )),
            weight,
            name: None,
            drained: None,
        })
        .collect()
}

/// Configured weights, all eligible.
fn all(backends: &[Backend]) -> impl Fn(usize) -> u64 + '_ {
    |i| u64::from(backends[i].weight)
}

pub(super) fn even(backends: &[Backend]) -> bool {
    backends.windows(2).all(|w| w[0].weight == w[1].weight)
}

fn sequence(b: &dyn Balancer, backends: &[Backend], n: usize) -> String {
    (0..n)
        .map(|_| {
            let i = b.pick(backends, &all(backends), even(backends)).unwrap();
            (b'a' + i as u8) as char
        })
        .collect()
}

fn except(backends: &[Backend], skip: usize) -> impl Fn(usize) -> u64 + '_ {
    move |i| {
        if i == skip {
            0
        } else {
            u64::from(backends[i].weight)
        }
    }
}

#[test]
fn smooth_round_robin_interleaves_weights() {
    let bs = backends(&[5, 1, 1]);
    let rr = RoundRobin::new(&bs);
    // Scores (a,b,c) before each pick: 5,1,1 -> a; 3,2,2 -> a; 1,3,3 -> b;
    // 6,-3,4 -> a; 4,-2,5 -> c; 9,-1,-1 -> a; 7,0,0 -> a; back to 0,0,0.
    assert_eq!(sequence(&rr, &bs, 14), "aabacaaaabacaa");
}

#[test]
fn equal_weights_rotate() {
    let bs = backends(&[3, 3, 3]);
    assert_eq!(sequence(&RoundRobin::new(&bs), &bs, 7), "abcabca");
}

#[test]
fn round_robin_skips_ineligible_and_stays_even() {
    let bs = backends(&[1, 1, 1]);
    let rr = RoundRobin::new(&bs);
    let picks: Vec<usize> = (0..6)
        .map(|_| rr.pick(&bs, &except(&bs, 1), true).unwrap())
        .collect();
    assert_eq!(picks, [0, 2, 0, 2, 0, 2]);
    assert_eq!(rr.pick(&bs, &|_| 0, true), None);
    assert_eq!(rr.pick(&bs, &|_| 0, false), None);
}

#[test]
fn weighted_skip_uses_only_eligible_weights() {
    let bs = backends(&[2, 1, 1]);
    let rr = RoundRobin::new(&bs);
    // Without c: scores (a,b) 2,1 -> a; 0,2 -> b; 2,0 -> a; 1,1 -> a ... 2:1.
    let picks: String = (0..6)
        .map(|_| (b'a' + rr.pick(&bs, &except(&bs, 2), false).unwrap() as u8) as char)
        .collect();
    assert_eq!(picks, "abaaba");
}

#[test]
fn least_connections_prefers_fewest_in_flight_per_weight() {
    let bs = backends(&[1, 1, 2]);
    let lc = LeastConnections::new(&bs);
    let _a = bs[0].state.lease(0);
    let _c1 = bs[2].state.lease(0);
    // a: 1/1, b: 0/1, c: 1/2 -> b.
    assert_eq!(lc.pick(&bs, &all(&bs), false), Some(1));
    let _b = bs[1].state.lease(0);
    // a: 1/1, b: 1/1, c: 1/2 -> c.
    assert_eq!(lc.pick(&bs, &all(&bs), false), Some(2));
    let _c2 = bs[2].state.lease(0);
    // a: 1/1, b: 1/1, c: 2/2 -> three-way tie, weighted rotation.
    let tied = sequence(&lc, &bs, 4);
    assert_eq!(tied, "cabc");
}

#[test]
fn least_connections_spreads_idle_backends_evenly() {
    let bs = backends(&[1, 1, 1]);
    let lc = LeastConnections::new(&bs);
    assert_eq!(sequence(&lc, &bs, 9), "abcabcabc");
}
