//! Balancing algorithms: given the backends of an upstream and which of them
//! may be used now, pick one. Smooth weighted round-robin and weighted
//! least-connections.

use std::fmt::Debug;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::health::LazyNow;
use super::{latency, Backend};

/// Picks one backend index among those with a nonzero weight.
///
/// `weight(i)` is backend `i`'s effective weight now (its configured weight
/// scaled by slow start), 0 when it may not be picked. `even` promises that
/// every nonzero weight is equal, so a plain rotation is exact.
///
/// Implementations keep their own rotation state and are shared by every
/// worker thread, so `pick` takes `&self`.
pub trait Balancer: Send + Sync + Debug {
    fn pick(
        &self,
        backends: &[Backend],
        weight: &dyn Fn(usize) -> u64,
        even: bool,
    ) -> Option<usize>;

    /// The pick `pick` would make if every backend were eligible at its
    /// configured weight, in constant time, if `eligible` accepts it.
    /// `None`, with the balancer's state as it was, when it does not, or
    /// where this balancer has no such shortcut: the caller then calls
    /// `pick`.
    fn pick_fast(
        &self,
        _backends: &[Backend],
        _even: bool,
        _eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        None
    }
}

/// Smooth weighted round-robin, as nginx does it: each pick adds every
/// eligible backend's weight to its running score, takes the highest, and
/// takes the total back off the winner. Weights 5,1,1 give `a a b a c a a`.
///
/// When all weights are equal this reduces to plain rotation, done with one
/// atomic counter and no lock.
#[derive(Debug)]
pub struct RoundRobin {
    next: AtomicUsize,
    scores: Mutex<Vec<i64>>,
    /// One whole cycle of `smooth`'s picks with every backend eligible,
    /// for unequal weights: then a pick is a lookup. `None` for equal
    /// weights, or a cycle too long to keep.
    cycle: Option<Box<[u32]>>,
}

/// Longest precomputed cycle (picks), and most work to compute one.
const MAX_CYCLE: u64 = 1 << 20;
const MAX_CYCLE_WORK: u64 = 1 << 24;

impl RoundRobin {
    pub fn new(backends: &[Backend]) -> Self {
        RoundRobin {
            next: AtomicUsize::new(0),
            scores: Mutex::new(vec![0; backends.len()]),
            cycle: smooth_cycle(backends),
        }
    }

    fn rotate(&self, n: usize, weight: &dyn Fn(usize) -> u64) -> Option<usize> {
        let count = (0..n).filter(|&i| weight(i) > 0).count();
        if count == 0 {
            return None;
        }
        let k = self.next.fetch_add(1, Ordering::Relaxed) % count;
        // Weights are read live: if some dropped to 0 since counting, the
        // first still eligible will do.
        (0..n)
            .filter(|&i| weight(i) > 0)
            .nth(k)
            .or_else(|| (0..n).find(|&i| weight(i) > 0))
    }

    fn smooth(&self, n: usize, weight: &dyn Fn(usize) -> u64) -> Option<usize> {
        // A poisoned lock only means another thread panicked mid-pick; the
        // scores are still numbers, so keep going rather than panic too.
        let mut scores = self.scores.lock().unwrap_or_else(|e| e.into_inner());
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for i in 0..n.min(scores.len()) {
            // Weights are at most MAX_WEIGHT * 1000.
            let w = weight(i) as i64;
            if w == 0 {
                continue;
            }
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
    fn pick(
        &self,
        backends: &[Backend],
        weight: &dyn Fn(usize) -> u64,
        even: bool,
    ) -> Option<usize> {
        if even {
            self.rotate(backends.len(), weight)
        } else {
            self.smooth(backends.len(), weight)
        }
    }

    fn pick_fast(
        &self,
        backends: &[Backend],
        even: bool,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        // With all n eligible, `rotate` takes the k-th of n: ticket mod n;
        // `smooth` takes the next step of its cycle.
        let n = backends.len();
        let ticket = |len: usize| self.next.fetch_add(1, Ordering::Relaxed) % len;
        let i = match &self.cycle {
            _ if n == 0 => return None,
            _ if even => ticket(n),
            Some(cycle) => cycle[ticket(cycle.len())] as usize,
            None => return None,
        };
        if eligible(i) {
            return Some(i);
        }
        // Hand the ticket back, so that `rotate` takes this turn and the
        // rotation still moves on by one per pick.
        self.next.fetch_sub(1, Ordering::Relaxed);
        None
    }
}

/// The picks `RoundRobin::smooth` makes over one cycle (as many picks as
/// the weights add up to) with every backend eligible, computed in
/// O(cycle × distinct weights) rather than O(cycle × backends): backends of
/// equal weight always have equal score but for their pick counts, so
/// within a weight they take turns in index order, and only each weight's
/// next in turn competes. `None` for equal weights (plain rotation is
/// already constant time) or a cycle too long to keep.
fn smooth_cycle(backends: &[Backend]) -> Option<Box<[u32]>> {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    if backends.windows(2).all(|w| w[0].weight == w[1].weight) || total > MAX_CYCLE {
        return None;
    }
    // Each distinct weight: its backends in index order, and picks so far.
    let mut classes: Vec<(i64, Vec<u32>, i64)> = Vec::new();
    for (i, b) in backends.iter().enumerate() {
        let w = i64::from(b.weight);
        match classes.iter_mut().find(|c| c.0 == w) {
            Some(class) => class.1.push(i as u32),
            None => classes.push((w, vec![i as u32], 0)),
        }
    }
    if total * classes.len() as u64 > MAX_CYCLE_WORK {
        return None;
    }
    let total = total as i64;
    let mut cycle = Vec::with_capacity(total as usize);
    for t in 1..=total {
        // A backend's score after t additions is t × weight − total × its
        // picks; the highest wins, the lowest index on a tie.
        let mut best: Option<(i64, u32, usize)> = None;
        for (k, (w, members, picks)) in classes.iter().enumerate() {
            let m = members.len() as i64;
            let next = members[(picks % m) as usize];
            let score = t * w - total * (picks / m);
            if best.is_none_or(|(s, i, _)| score > s || (score == s && next < i)) {
                best = Some((score, next, k));
            }
        }
        let (_, next, k) = best?;
        classes[k].2 += 1;
        cycle.push(next);
    }
    Some(cycle.into_boxed_slice())
}

/// Weighted least-connections: the backend with the fewest in-flight
/// requests per unit of weight; ties go round-robin (weighted), so equal idle
/// backends share evenly. A backend far slower than the fastest is held
/// back, but for a probe now and then (see [`latency`](super::latency)).
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

    /// The least loaded among the backends with a nonzero weight.
    fn least(
        &self,
        backends: &[Backend],
        weight: &dyn Fn(usize) -> u64,
        even: bool,
    ) -> Option<usize> {
        // Load as (in_flight, weight); a/b < c/d  <=>  a*d < c*b.
        let load = |i: usize| (backends[i].state.in_flight() as u64, weight(i));
        let mut best: Option<(usize, u64, u64)> = None;
        for i in 0..backends.len() {
            let (f, w) = load(i);
            if w > 0 && best.is_none_or(|(_, bf, bw)| f * bw < bf * w) {
                best = Some((i, f, w));
            }
        }
        let (first, bf, bw) = best?;
        let tied = |i: usize| {
            let (f, w) = load(i);
            if w > 0 && f * bw == bf * w {
                w
            } else {
                0
            }
        };
        // Counts move under us; if the tie set emptied meanwhile, the first
        // minimum found is still a fine answer.
        Some(self.ties.pick(backends, &tied, even).unwrap_or(first))
    }
}

impl Balancer for LeastConnections {
    fn pick(
        &self,
        backends: &[Backend],
        weight: &dyn Fn(usize) -> u64,
        even: bool,
    ) -> Option<usize> {
        let latency = |i: usize| backends[i].state.latency();
        // Nothing is held back unless the slowest judged backend is RATIO
        // times the fastest, eligible or not: one pass of plain loads
        // settles the common case.
        let judged = backends.iter().filter_map(|b| b.state.latency().compared());
        let (low, high) = judged.fold((u64::MAX, 0), |(l, h), c| (l.min(c), h.max(c)));
        if high / latency::RATIO < low {
            return self.least(backends, weight, even);
        }
        let eligible = || (0..backends.len()).filter(|&i| weight(i) > 0);
        let fastest = latency::fastest(eligible().map(|i| latency(i).compared()));
        let mut held = vec![false; backends.len()];
        for i in eligible().filter(|&i| latency(i).held_back(fastest)) {
            held[i] = true;
        }
        if !held.contains(&true) {
            return self.least(backends, weight, even);
        }
        let now = LazyNow::new();
        let in_flight = |i: usize| backends[i].state.in_flight();
        if let Some(i) = (0..backends.len())
            .find(|&i| held[i] && latency(i).claim_probe(now.get(), in_flight(i)))
        {
            return Some(i);
        }
        let kept = |i: usize| if held[i] { 0 } else { weight(i) };
        // The fastest is never held back, but latencies move under us: with
        // every candidate held back, they all compete.
        self.least(backends, &kept, even)
            .or_else(|| self.least(backends, weight, even))
    }
}

#[cfg(test)]
mod tests;

/// Properties that must hold for any weights, loads and eligibility.
#[cfg(test)]
mod properties;
