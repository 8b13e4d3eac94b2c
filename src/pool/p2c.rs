//! `least_latency`: the power of two choices over peak-EWMA latency, as
//! Finagle and linkerd balance. Each pick takes two candidates at random
//! and sends the request to the one with the lower cost: its decaying peak
//! latency times its requests in flight plus one, per unit of weight.
//!
//! The latency is a moving average that jumps to a slower answer at once
//! (the peak) and decays back over `latency_decay`, also while no answer
//! comes, so a backend that was slow for a moment is tried again. A
//! backend with no answer yet costs nothing while it is idle, and the most
//! while it has requests in flight, so new backends are tried one request
//! at a time. Two random choices instead of the best of all keep every
//! pick constant-time and spread load that a global minimum would herd
//! onto one backend.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::health::{self, LazyNow};
use super::{Backend, Balancer};

/// Cost of a backend with requests in flight and no latency measured yet.
const PENALTY: f64 = 1e18;

/// Random tries to find a candidate before listing them all.
const TRIES: usize = 8;

/// One backend's decaying peak latency.
#[derive(Debug, Default)]
pub struct PeakEwma {
    /// Nanoseconds, as `f64` bits; 0 until the first answer.
    cost: AtomicU64,
    /// When `cost` was last set, on the clock of [`health::now`].
    stamp: AtomicU64,
}

impl PeakEwma {
    /// An answer came `rtt` nanoseconds after the backend was chosen, at
    /// `now`: a slower one than the average sets it, a quicker one moves
    /// it by how much time has passed.
    pub fn observe(&self, rtt: u64, now: u64, decay: Duration) {
        let rtt = rtt as f64;
        let last = self.stamp.swap(now, Ordering::Relaxed);
        let old = f64::from_bits(self.cost.load(Ordering::Relaxed));
        let cost = if rtt > old || old == 0.0 {
            rtt
        } else {
            let w = weight(now.saturating_sub(last), decay);
            old * w + rtt * (1.0 - w)
        };
        self.cost.store(cost.to_bits(), Ordering::Relaxed);
    }

    /// Whether an answer has been timed yet.
    pub fn measured(&self) -> bool {
        self.cost.load(Ordering::Relaxed) != 0
    }

    /// The latency at `now`, decayed since the last answer; 0 if none yet.
    pub fn latency(&self, now: u64, decay: Duration) -> f64 {
        let cost = f64::from_bits(self.cost.load(Ordering::Relaxed));
        if cost == 0.0 {
            return 0.0;
        }
        let last = self.stamp.load(Ordering::Relaxed);
        cost * weight(now.saturating_sub(last), decay)
    }
}

/// How much of the old average is left after `elapsed` nanoseconds.
fn weight(elapsed: u64, decay: Duration) -> f64 {
    let tau = decay.as_nanos().max(1) as f64;
    (-(elapsed as f64) / tau).exp()
}

/// The least_latency balancer.
#[derive(Debug)]
pub struct LeastLatency {
    decay: Duration,
    /// The largest configured weight: random picks take a backend with
    /// odds in proportion to its weight.
    max_weight: u64,
}

impl LeastLatency {
    pub fn new(decay: Duration, backends: &[Backend]) -> Self {
        LeastLatency {
            decay,
            max_weight: backends
                .iter()
                .map(|b| u64::from(b.weight))
                .max()
                .unwrap_or(1),
        }
    }

    /// What sending one more request to backend `b` of weight `w` costs;
    /// `now` is read only for a backend with a latency to decay.
    fn cost(&self, b: &Backend, w: u64, now: &LazyNow) -> f64 {
        let in_flight = b.state.in_flight() as f64;
        let ewma = b.state.ewma();
        let cost = if !ewma.measured() {
            if in_flight > 0.0 {
                PENALTY
            } else {
                0.0
            }
        } else {
            ewma.latency(now.get(), self.decay) * (in_flight + 1.0)
        };
        cost / w.max(1) as f64
    }

    /// The better of two random candidates by [`cost`](Self::cost).
    /// `draw(max, not)` gives a random candidate other than `not`, with
    /// odds in proportion to its weight; `w(i)` is candidate `i`'s weight.
    fn choose(
        &self,
        backends: &[Backend],
        draw: &dyn Fn(Option<usize>) -> Option<usize>,
        w: &dyn Fn(usize) -> u64,
    ) -> Option<usize> {
        let a = draw(None)?;
        let Some(b) = draw(Some(a)) else {
            return Some(a);
        };
        let now = LazyNow::new();
        let (ca, cb) = (
            self.cost(&backends[a], w(a), &now),
            self.cost(&backends[b], w(b), &now),
        );
        Some(if cb < ca { b } else { a })
    }
}

impl Balancer for LeastLatency {
    fn pick(
        &self,
        backends: &[Backend],
        weight: &dyn Fn(usize) -> u64,
        _even: bool,
    ) -> Option<usize> {
        // Weights here are in thousandths, slow start included, and 0 for
        // a backend that may not be picked.
        let max = self.max_weight * 1000;
        let n = backends.len();
        let draw = |not: Option<usize>| {
            sample(n, not, &|i, r| {
                let wi = weight(i);
                wi > 0 && accept(r, wi, max)
            })
            .or_else(|| weighted(n, weight, not))
        };
        self.choose(backends, &draw, weight)
    }

    fn pick_fast(
        &self,
        backends: &[Backend],
        _even: bool,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        // The weight decides first: it is in the backend list at hand,
        // whereas whether a backend is eligible is in its shared state.
        let max = self.max_weight;
        let w = |i: usize| u64::from(backends[i].weight);
        let draw = |not: Option<usize>| {
            sample(backends.len(), not, &|i, r| {
                accept(r, w(i), max) && eligible(i)
            })
        };
        self.choose(backends, &draw, &w)
    }
}

/// A random index among `n` other than `not` that `take(i, r)` accepts
/// (`r`: random bits to accept by), in a few tries; `None` if the tries
/// found none.
fn sample(n: usize, not: Option<usize>, take: &dyn Fn(usize, u64) -> bool) -> Option<usize> {
    if n == 0 {
        return None;
    }
    (0..TRIES).find_map(|_| {
        let r = random();
        // The high half picks the index, the low half decides acceptance.
        let i = (((r >> 32) * n as u64) >> 32) as usize;
        (Some(i) != not && take(i, r)).then_some(i)
    })
}

/// Whether a backend of weight `w`, of at most `max`, is taken on the
/// draw `r`: with odds `w / max`.
fn accept(r: u64, w: u64, max: u64) -> bool {
    w >= max || ((r & 0xffff_ffff) * max) >> 32 < w
}

/// A random candidate by weight, found by adding up every weight: for
/// pools where random tries keep missing (most backends down, or slowly
/// starting).
fn weighted(n: usize, w: &dyn Fn(usize) -> u64, not: Option<usize>) -> Option<usize> {
    let weight = |i: usize| if Some(i) == not { 0 } else { w(i) };
    let total: u64 = (0..n).map(weight).sum();
    if total == 0 {
        return None;
    }
    let mut r = random() % total;
    (0..n).find(|&i| {
        let wi = weight(i);
        if r < wi {
            return true;
        }
        r -= wi;
        false
    })
}

/// A fast per-thread random number (splitmix64 over a counter seeded from
/// the clock and the thread): choices need spread, not secrecy.
fn random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let local = 0u8;
            health::now() ^ (&local as *const u8 as u64)
        });
    }
    STATE.with(|s| {
        let x = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(x);
        super::ring::mix(x)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const DECAY: Duration = Duration::from_secs(10);

    #[test]
    fn the_average_jumps_to_a_peak_and_decays_back() {
        let e = PeakEwma::default();
        assert_eq!(e.latency(0, DECAY), 0.0);
        e.observe(10 * MS, 1_000 * MS, DECAY);
        assert_eq!(e.latency(1_000 * MS, DECAY), (10 * MS) as f64);
        // A slower answer sets it at once.
        e.observe(40 * MS, 1_001 * MS, DECAY);
        assert_eq!(e.latency(1_001 * MS, DECAY), (40 * MS) as f64);
        // A quicker one a decay later moves it most of the way.
        e.observe(10 * MS, 11_001 * MS, DECAY);
        let after = e.latency(11_001 * MS, DECAY) / MS as f64;
        assert!((20.0..22.0).contains(&after), "{after} ms");
        // With no answers it decays too: e^-1 of it a decay later.
        let later = e.latency(21_001 * MS, DECAY) / MS as f64;
        assert!((after * 0.36..after * 0.37).contains(&later), "{later} ms");
    }
}
