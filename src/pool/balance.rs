//! Balancing algorithms: given the backends of an upstream and which of them
//! may be used now, pick one. Smooth weighted round-robin and weighted
//! least-connections.

use std::fmt::Debug;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::Backend;

/// Picks one backend index among those for which `eligible` is true.
///
/// Implementations keep their own rotation state and are shared by every
/// worker thread, so `pick` takes `&self`.
pub trait Balancer: Send + Sync + Debug {
    fn pick(&self, backends: &[Backend], eligible: &dyn Fn(usize) -> bool) -> Option<usize>;
}

/// Smooth weighted round-robin, as nginx does it: each pick adds every
/// eligible backend's weight to its running score, takes the highest, and
/// takes the total back off the winner. Weights 5,1,1 give `a a b a c a a`.
///
/// When all weights are equal this reduces to plain rotation, done with one
/// atomic counter and no lock.
#[derive(Debug)]
pub struct RoundRobin {
    uniform: bool,
    next: AtomicUsize,
    scores: Mutex<Vec<i64>>,
}

impl RoundRobin {
    pub fn new(backends: &[Backend]) -> Self {
        let uniform = backends.windows(2).all(|w| w[0].weight == w[1].weight);
        RoundRobin {
            uniform,
            next: AtomicUsize::new(0),
            scores: Mutex::new(vec![0; backends.len()]),
        }
    }

    fn rotate(&self, n: usize, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let count = (0..n).filter(|&i| eligible(i)).count();
        if count == 0 {
            return None;
        }
        let k = self.next.fetch_add(1, Ordering::Relaxed) % count;
        (0..n).filter(|&i| eligible(i)).nth(k)
    }

    fn smooth(&self, backends: &[Backend], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        // A poisoned lock only means another thread panicked mid-pick; the
        // scores are still numbers, so keep going rather than panic too.
        let mut scores = self.scores.lock().unwrap_or_else(|e| e.into_inner());
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, backend) in backends.iter().enumerate() {
            if !eligible(i) {
                continue;
            }
            let w = i64::from(backend.weight);
            scores[i] += w;
            total += w;
            if best.is_none_or(|b| scores[i] > scores[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        scores[b] -= total;
        Some(b)
    }
}

impl Balancer for RoundRobin {
    fn pick(&self, backends: &[Backend], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        if self.uniform {
            self.rotate(backends.len(), eligible)
        } else {
            self.smooth(backends, eligible)
        }
    }
}

/// Weighted least-connections: the backend with the fewest in-flight
/// requests per unit of weight; ties go round-robin (weighted), so equal idle
/// backends share evenly.
#[derive(Debug)]
pub struct LeastConnections {
    ties: RoundRobin,
}

impl LeastConnections {
    pub fn new(backends: &[Backend]) -> Self {
        LeastConnections {
            ties: RoundRobin::new(backends),
        }
    }
}

impl Balancer for LeastConnections {
    fn pick(&self, backends: &[Backend], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        // Load as (in_flight, weight); a/b < c/d  <=>  a*d < c*b.
        let load = |i: usize| {
            (
                backends[i].state.in_flight() as u64,
                u64::from(backends[i].weight),
            )
        };
        let mut best: Option<(usize, u64, u64)> = None;
        for i in (0..backends.len()).filter(|&i| eligible(i)) {
            let (f, w) = load(i);
            if best.is_none_or(|(_, bf, bw)| f * bw < bf * w) {
                best = Some((i, f, w));
            }
        }
        let (first, bf, bw) = best?;
        let tied = |i: usize| eligible(i) && load(i).0 * bw == bf * load(i).1;
        // Counts move under us; if the tie set emptied meanwhile, the first
        // minimum found is still a fine answer.
        Some(self.ties.pick(backends, &tied).unwrap_or(first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::BackendState;
    use std::sync::Arc;

    fn backends(weights: &[u32]) -> Vec<Backend> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Backend {
                state: Arc::new(BackendState::new(
                    format!("b{i}"),
                    format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                )),
                weight,
            })
            .collect()
    }

    fn sequence(b: &dyn Balancer, backends: &[Backend], n: usize) -> String {
        (0..n)
            .map(|_| (b'a' + b.pick(backends, &|_| true).unwrap() as u8) as char)
            .collect()
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
        let picks: Vec<usize> = (0..6).map(|_| rr.pick(&bs, &|i| i != 1).unwrap()).collect();
        assert_eq!(picks, [0, 2, 0, 2, 0, 2]);
        assert_eq!(rr.pick(&bs, &|_| false), None);
    }

    #[test]
    fn weighted_skip_uses_only_eligible_weights() {
        let bs = backends(&[2, 1, 1]);
        let rr = RoundRobin::new(&bs);
        // Without c: scores (a,b) 2,1 -> a; 0,2 -> b; 2,0 -> a; 1,1 -> a ... 2:1.
        let picks: String = (0..6)
            .map(|_| (b'a' + rr.pick(&bs, &|i| i != 2).unwrap() as u8) as char)
            .collect();
        assert_eq!(picks, "abaaba");
    }

    #[test]
    fn least_connections_prefers_fewest_in_flight_per_weight() {
        let bs = backends(&[1, 1, 2]);
        let lc = LeastConnections::new(&bs);
        let _a = bs[0].state.lease();
        let _c1 = bs[2].state.lease();
        // a: 1/1, b: 0/1, c: 1/2 -> b.
        assert_eq!(lc.pick(&bs, &|_| true), Some(1));
        let _b = bs[1].state.lease();
        // a: 1/1, b: 1/1, c: 1/2 -> c.
        assert_eq!(lc.pick(&bs, &|_| true), Some(2));
        let _c2 = bs[2].state.lease();
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
}
