//! Properties that must hold for any weights, loads and eligibility.

use super::tests::{backends, even};
use super::*;
use crate::pool::Lease;
use proptest::prelude::*;

proptest! {
    /// Over k full cycles (k × the sum of the weights picks), smooth
    /// round-robin gives every backend exactly k × its weight.
    #[test]
    fn round_robin_is_exactly_fair_per_cycle(
        weights in prop::collection::vec(1u32..=20, 1..=12),
        k in 1usize..=3,
    ) {
        let bs = backends(&weights);
        let rr = RoundRobin::new(&bs);
        let weight = |i: usize| u64::from(weights[i]);
        let total: u32 = weights.iter().sum();
        let mut picks = vec![0usize; weights.len()];
        for _ in 0..k * total as usize {
            picks[rr.pick(&bs, &weight, even(&bs)).unwrap()] += 1;
        }
        let expected: Vec<usize> = weights.iter().map(|&w| k * w as usize).collect();
        prop_assert_eq!(picks, expected);
    }

    /// The precomputed cycle is exactly what `smooth` picks, twice over.
    #[test]
    fn the_precomputed_cycle_is_smooth_round_robin(
        weights in prop::collection::vec(1u32..=20, 2..=12),
    ) {
        prop_assume!(!even(&backends(&weights)));
        let bs = backends(&weights);
        let rr = RoundRobin::new(&bs);
        let cycle = rr.cycle.clone().expect("unequal weights get a cycle");
        let weight = |i: usize| u64::from(weights[i]);
        for round in 0..2 {
            for (step, &expected) in cycle.iter().enumerate() {
                let picked = rr.smooth(bs.len(), &weight).unwrap();
                prop_assert_eq!(picked, expected as usize, "round {} step {}", round, step);
            }
        }
        let fast: Vec<usize> = (0..cycle.len())
            .map(|_| rr.pick_fast(&bs, false, &|_| true).unwrap())
            .collect();
        let slow: Vec<usize> = cycle.iter().map(|&i| i as usize).collect();
        prop_assert_eq!(fast, slow);
    }

    /// Least-connections never picks a backend with more in flight per
    /// unit of weight than another eligible one, and never an
    /// ineligible one.
    #[test]
    fn least_connections_picks_a_least_loaded_eligible_backend(
        cases in prop::collection::vec((1u32..=20, 0usize..=6, any::<bool>()), 1..=12),
    ) {
        let weights: Vec<u32> = cases.iter().map(|c| c.0).collect();
        let bs = backends(&weights);
        let _leases: Vec<Lease> = cases
            .iter()
            .enumerate()
            .flat_map(|(i, c)| (0..c.1).map(move |_| i))
            .map(|i| bs[i].state.lease(0))
            .collect();
        let eligible = |i: usize| cases[i].2;
        let weight = |i: usize| if eligible(i) { u64::from(weights[i]) } else { 0 };
        let lc = LeastConnections::new(&bs);
        let picked = lc.pick(&bs, &weight, even(&bs));
        if !(0..bs.len()).any(eligible) {
            prop_assert_eq!(picked, None);
            return Ok(());
        }
        let i = picked.expect("an eligible backend exists");
        prop_assert!(eligible(i));
        let load = |j: usize| (bs[j].state.in_flight() as u64, u64::from(weights[j]));
        let (fi, wi) = load(i);
        for j in (0..bs.len()).filter(|&j| eligible(j)) {
            let (fj, wj) = load(j);
            prop_assert!(fi * wj <= fj * wi, "picked {i} ({fi}/{wi}) over {j} ({fj}/{wj})");
        }
    }
}
