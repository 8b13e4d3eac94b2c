//! How quickly each backend answers, so that least-connections can hold
//! back a backend that is far slower than the others.
//!
//! In-flight counts alone cannot tell: under light load every backend has
//! nothing in flight between requests, and under a burst every backend has
//! the proxy's own queue in flight. Either way a backend that takes 20 ms
//! keeps getting a share, and its answers set the tail.
//!
//! Each backend keeps its quickest time from being chosen to its response
//! head over the last few seconds ([`WINDOW`] to twice that): its base
//! latency. An average would also measure the proxy's own queue, which
//! every backend shares and which grows in a burst; the quickest answer
//! shows what the backend itself costs, and one slow answer cannot raise it.
//!
//! After [`MIN_SAMPLES`] responses a backend is judged: base latencies
//! under [`FLOOR`] count as [`FLOOR`], and one whose base latency is
//! [`RATIO`] times the lowest among usable judged backends, or more, is
//! *held back*. Least-connections sends it nothing but a *probe*: one
//! request when it has had no request or response for [`PROBE_EVERY`] and
//! has nothing in flight (or for twice that, whatever it has in flight), to
//! see whether it has recovered; one quick answer is enough. The quickest
//! backend is never held back.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Base latencies under this, 2^21 ns or about 2.1 ms, count as this: a few
/// milliseconds' difference is no reason to hold a backend back.
pub const FLOOR: u64 = 1 << 21;

/// Held back at this many times the lowest base latency or more.
pub const RATIO: u64 = 4;

/// Responses before a backend is judged.
pub const MIN_SAMPLES: u32 = 8;

/// A held-back backend gets one request in this long: 2^30 ns, about 1.07 s.
pub const PROBE_EVERY: u64 = 1 << 30;

/// The base latency is the quickest answer in the current window of this
/// length (2^31 ns, about 2.1 s) and the one before.
pub const WINDOW: u64 = 1 << 31;

/// No answer yet in a window.
const NONE: u64 = u64::MAX;

/// The time of the last response is kept to within this, 2^20 ns or about
/// 1 ms: enough for timing probes a second apart.
const AT_GRAIN: u64 = 1 << 20;

/// One backend's quickest recent time to its response head.
#[derive(Debug)]
pub struct Latency {
    /// When the current window began, on the clock of
    /// [`health::now`](super::health::now).
    window: AtomicU64,
    /// The quickest answer in the current window and in the one before,
    /// in nanoseconds; [`NONE`] for none.
    current: AtomicU64,
    previous: AtomicU64,
    /// When the last response came, to within [`AT_GRAIN`].
    at: AtomicU64,
    /// Responses so far, counted up to [`MIN_SAMPLES`].
    samples: AtomicU32,
    /// When the last probe was sent.
    probed: AtomicU64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            window: AtomicU64::new(0),
            current: AtomicU64::new(NONE),
            previous: AtomicU64::new(NONE),
            at: AtomicU64::new(0),
            samples: AtomicU32::new(0),
            probed: AtomicU64::new(0),
        }
    }
}

impl Latency {
    /// A response head came `took` nanoseconds after the backend was
    /// chosen, at `now`.
    pub fn record(&self, took: u64, now: u64) {
        let began = self.window.load(Ordering::Relaxed);
        if now.saturating_sub(began) >= WINDOW
            && self
                .window
                .compare_exchange(began, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // This thread moves the window on: the current one becomes the
            // one before, unless it ended long ago. An answer recorded by
            // another thread meanwhile may land in either; both are recent.
            let last = self.current.swap(NONE, Ordering::Relaxed);
            let stale = now.saturating_sub(began) >= 2 * WINDOW;
            self.previous
                .store(if stale { NONE } else { last }, Ordering::Relaxed);
        }
        // Every response reads these, few write them: a backend's state is
        // shared by every worker thread, and writes make its cache lines
        // bounce between them.
        let took = took.min(NONE - 1);
        if took < self.current.load(Ordering::Relaxed) {
            self.current.fetch_min(took, Ordering::Relaxed);
        }
        if now.saturating_sub(self.at.load(Ordering::Relaxed)) >= AT_GRAIN {
            self.at.store(now, Ordering::Relaxed);
        }
        // A load and a store: only "at least MIN_SAMPLES" matters.
        let samples = self.samples.load(Ordering::Relaxed);
        if samples < MIN_SAMPLES {
            self.samples.store(samples + 1, Ordering::Relaxed);
        }
    }

    /// The base latency in nanoseconds: the quickest answer in this window
    /// and the one before; `None` if there was none.
    pub fn base(&self) -> Option<u64> {
        let quickest = self
            .current
            .load(Ordering::Relaxed)
            .min(self.previous.load(Ordering::Relaxed));
        (quickest != NONE).then_some(quickest)
    }

    /// The base latency as compared, never under [`FLOOR`]; `None` until
    /// the backend is judged.
    pub fn compared(&self) -> Option<u64> {
        if self.samples.load(Ordering::Relaxed) < MIN_SAMPLES {
            return None;
        }
        self.base().map(|base| base.max(FLOOR))
    }

    /// Whether a backend this slow is held back, given the `fastest`
    /// compared base latency among the usable backends.
    pub fn held_back(&self, fastest: Option<u64>) -> bool {
        // The cheaper test first: nothing is judged yet, most often.
        let Some(fastest) = fastest else {
            return false;
        };
        self.compared().is_some_and(|base| base / RATIO >= fastest)
    }

    /// When a held-back backend may next be probed: [`PROBE_EVERY`] after
    /// its last response or probe, whichever is later.
    pub fn probe_at(&self) -> u64 {
        let last = self
            .at
            .load(Ordering::Relaxed)
            .max(self.probed.load(Ordering::Relaxed));
        last.saturating_add(PROBE_EVERY)
    }

    /// Whether a probe is due at `now`: from [`probe_at`](Self::probe_at)
    /// if the backend has nothing in flight, and a [`PROBE_EVERY`] later
    /// even if it has (a long download or a tunnel must not keep it held
    /// back for good).
    pub fn probe_due(&self, now: u64, in_flight: usize) -> bool {
        let at = self.probe_at();
        now >= at && (in_flight == 0 || now >= at.saturating_add(PROBE_EVERY))
    }

    /// Takes the probe due at `now`, if it is due and no other thread took
    /// it first.
    pub fn claim_probe(&self, now: u64, in_flight: usize) -> bool {
        let probed = self.probed.load(Ordering::Relaxed);
        self.probe_due(now, in_flight)
            && self
                .probed
                .compare_exchange(probed, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// The lowest of these [`Latency::compared`] base latencies; `None` if no
/// backend is judged yet.
pub fn fastest(bases: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    bases.flatten().min()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const START: u64 = 1_000 * MS;

    /// After `n` responses of `took` each, 2 ms apart from `START`.
    fn after(n: u64, took: u64) -> Latency {
        let l = Latency::default();
        for k in 0..n {
            l.record(took, START + 2 * k * MS);
        }
        l
    }

    #[test]
    fn a_backend_is_judged_only_after_enough_responses() {
        let slow = after(u64::from(MIN_SAMPLES) - 1, 50 * MS);
        assert_eq!(slow.base(), Some(50 * MS));
        assert_eq!(slow.compared(), None);
        assert!(!slow.held_back(Some(FLOOR)));
        assert!(Latency::default().base().is_none());
    }

    #[test]
    fn slow_answers_among_quick_ones_change_nothing() {
        let fast = after(20, MS);
        let odd = after(20, MS);
        for k in 0..20 {
            odd.record(60 * MS, START + 2 * (20 + k) * MS);
        }
        let top = fastest([fast.compared(), odd.compared()].into_iter());
        assert_eq!(
            top,
            Some(FLOOR),
            "base latencies under the floor count as it"
        );
        assert_eq!(odd.base(), Some(MS));
        assert!(!odd.held_back(top));
    }

    #[test]
    fn a_steadily_slow_backend_is_held_back() {
        let slow = after(40, 20 * MS);
        let fast = after(40, MS / 5);
        let top = fastest([slow.compared(), fast.compared()].into_iter());
        assert!(slow.held_back(top));
        assert!(!fast.held_back(top));
        // Against backends that take 6 ms at best, 20 ms is not 4 times
        // slower.
        let busy = after(40, 6 * MS);
        assert!(!slow.held_back(fastest([busy.compared()].into_iter())));
    }

    #[test]
    fn backends_within_four_times_of_each_other_are_not_held_back() {
        let a = after(40, 50 * MS);
        let b = after(40, 190 * MS);
        let top = fastest([a.compared(), b.compared()].into_iter());
        assert!(!a.held_back(top));
        assert!(!b.held_back(top));
    }

    #[test]
    fn the_base_forgets_answers_older_than_two_windows() {
        let l = after(10, MS);
        // Slow from now on: the quick answers count for one more window.
        l.record(30 * MS, START + WINDOW);
        assert_eq!(l.base(), Some(MS));
        l.record(30 * MS, START + 2 * WINDOW + 10 * MS);
        assert_eq!(l.base(), Some(30 * MS));
        // After a long silence, only the new answer counts.
        l.record(5 * MS, START + 10 * WINDOW);
        assert_eq!(l.base(), Some(5 * MS));
    }

    #[test]
    fn a_held_back_backend_is_probed_once_a_second_and_recovers_at_once() {
        let slow = after(40, 20 * MS);
        let last = START + 2 * 39 * MS;
        let top = Some(FLOOR);
        assert!(!slow.claim_probe(last + PROBE_EVERY - 1, 0));
        assert!(slow.claim_probe(last + PROBE_EVERY, 0));
        assert!(
            !slow.claim_probe(last + PROBE_EVERY, 0),
            "one probe at a time"
        );
        let probe = last + PROBE_EVERY;
        assert!(!slow.claim_probe(probe + PROBE_EVERY - 1, 0));
        // The probe is still slow: still held back, probed a second later.
        slow.record(20 * MS, probe + 20 * MS);
        assert!(slow.held_back(top));
        assert!(slow.claim_probe(probe + 20 * MS + PROBE_EVERY, 0));
        // This one finds it quick again.
        slow.record(MS, probe + 21 * MS + PROBE_EVERY);
        assert!(!slow.held_back(top));
    }

    #[test]
    fn a_busy_held_back_backend_is_probed_a_second_later() {
        let slow = after(40, 20 * MS);
        let last = START + 2 * 39 * MS;
        // A request still in flight (a tunnel, a long download) delays the
        // probe by a second, no more.
        assert!(!slow.claim_probe(last + PROBE_EVERY, 1));
        assert!(!slow.claim_probe(last + 2 * PROBE_EVERY - 1, 1));
        assert!(slow.claim_probe(last + 2 * PROBE_EVERY, 1));
    }
}
