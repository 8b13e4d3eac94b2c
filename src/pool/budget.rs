//! The retry budget of an upstream: how many retries its recent traffic
//! allows, so that retries cannot multiply the load on a pool that is
//! already failing.
//!
//! Requests and retries are counted in one bucket per second over
//! [`RETRY_BUDGET_WINDOW`]. Each bucket is a single atomic word holding the
//! second it counts and the count, so a new second replaces a stale count
//! in one compare-and-swap: no lock and no allocation on the request path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::{RetryBudget, RETRY_BUDGET_WINDOW};

/// Buckets of one second each.
const BUCKETS: usize = RETRY_BUDGET_WINDOW.as_secs() as usize;
const SECOND: u64 = 1_000_000_000;
/// Compare-and-swap attempts before an update gives up: only a burst of
/// concurrent updates of the same counter makes one fail, and giving up
/// counts a request too few or refuses a retry, both harmless.
const ATTEMPTS: usize = 8;

/// The counts of an upstream's recent requests and retries. Kept by the
/// pool per upstream name, so a reload does not reset it.
#[derive(Debug, Default)]
pub struct RetryWindow {
    requests: [AtomicU64; BUCKETS],
    retries: [AtomicU64; BUCKETS],
}

/// A bucket's word: the second (of [`health::now`](super::health::now)) in
/// the high half, the count in the low half.
fn pack(second: u32, count: u32) -> u64 {
    (u64::from(second) << 32) | u64::from(count)
}

fn unpack(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

fn second(now: u64) -> u32 {
    // Wraps after 136 years of uptime; only differences are compared.
    (now / SECOND) as u32
}

/// The bucket of `second`.
fn index(second: u32) -> usize {
    second as usize % BUCKETS
}

/// What `word` counts for the window ending in `second`: its count if its
/// second is one of the window's, else nothing.
fn in_window(word: u64, second: u32) -> u64 {
    let (tag, count) = unpack(word);
    if (second.wrapping_sub(tag) as usize) < BUCKETS {
        u64::from(count)
    } else {
        0
    }
}

/// The window's total, leaving out bucket `skip` if given.
fn total(buckets: &[AtomicU64; BUCKETS], second: u32, skip: Option<usize>) -> u64 {
    buckets
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != skip)
        .map(|(_, b)| in_window(b.load(Ordering::SeqCst), second))
        .sum()
}

/// Adds one to `bucket` for `second` if `admit` allows the count it would
/// then hold, starting over if the bucket still counts an older second.
fn increment(bucket: &AtomicU64, second: u32, admit: impl Fn(u64) -> bool) -> bool {
    for _ in 0..ATTEMPTS {
        let word = bucket.load(Ordering::SeqCst);
        let (tag, count) = unpack(word);
        let count = if tag == second { count } else { 0 };
        let next = count.saturating_add(1);
        if !admit(u64::from(next)) {
            return false;
        }
        let swapped =
            bucket.compare_exchange(word, pack(second, next), Ordering::SeqCst, Ordering::SeqCst);
        if swapped.is_ok() {
            return true;
        }
    }
    false
}

impl RetryWindow {
    /// Counts a request (a first attempt) made at `now`.
    pub fn record_request(&self, now: u64) {
        let s = second(now);
        increment(&self.requests[index(s)], s, |_| true);
    }

    /// Takes one retry at `now` if fewer than `allowed(requests)` retries
    /// were taken over the window, where `requests` is the window's count.
    /// Retries taken concurrently within one second never exceed it: the
    /// check and the count are one compare-and-swap on that second's bucket.
    pub fn try_retry(&self, now: u64, allowed: impl Fn(u64) -> u64) -> bool {
        let s = second(now);
        let i = index(s);
        let allowed = allowed(total(&self.requests, s, None));
        // The other buckets hold earlier seconds, which no longer change.
        let earlier = total(&self.retries, s, Some(i));
        increment(&self.retries[i], s, |count| earlier + count <= allowed)
    }

    /// Requests and retries over the window ending at `now`.
    pub fn recent(&self, now: u64) -> (u64, u64) {
        let s = second(now);
        (
            total(&self.requests, s, None),
            total(&self.retries, s, None),
        )
    }
}

/// An upstream's retry budget: its settings and the shared window.
#[derive(Debug, Clone)]
pub struct Budget {
    settings: RetryBudget,
    /// `ratio` in millionths, so the check is integer arithmetic.
    ratio_ppm: u64,
    /// `min_retries_per_second` over the whole window.
    floor: u64,
    window: Arc<RetryWindow>,
}

impl Budget {
    pub fn new(settings: RetryBudget, window: Arc<RetryWindow>) -> Self {
        Budget {
            settings,
            ratio_ppm: (settings.ratio.clamp(0.0, 1.0) * 1e6).round() as u64,
            floor: u64::from(settings.min_retries_per_second) * BUCKETS as u64,
            window,
        }
    }

    pub fn settings(&self) -> &RetryBudget {
        &self.settings
    }

    pub fn window(&self) -> &Arc<RetryWindow> {
        &self.window
    }

    /// Counts a client request routed to this upstream at `now`.
    pub fn record_request(&self, now: u64) {
        self.window.record_request(now);
    }

    /// Takes one retry from the budget at `now`; false when it is spent.
    pub fn try_retry(&self, now: u64) -> bool {
        self.window
            .try_retry(now, |requests| self.allowed(requests))
    }

    /// Retries allowed over the window for `requests` requests in it.
    fn allowed(&self, requests: u64) -> u64 {
        // At most 2^32 per bucket, so this cannot overflow.
        (requests * self.ratio_ppm / 1_000_000).max(self.floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::health::ORIGIN;

    fn budget(ratio: f64, min_retries_per_second: u32) -> Budget {
        let settings = RetryBudget {
            ratio,
            min_retries_per_second,
        };
        Budget::new(settings, Arc::default())
    }

    /// Start of second `n` after the process began.
    fn sec(n: u64) -> u64 {
        ORIGIN + n * SECOND
    }

    /// How many of `n` retries at `now` the budget lets through.
    fn take(b: &Budget, now: u64, n: usize) -> usize {
        (0..n).filter(|_| b.try_retry(now)).count()
    }

    #[test]
    fn the_floor_allows_min_retries_per_second_over_the_window() {
        let b = budget(0.0, 2);
        assert_eq!(take(&b, sec(0), 25), 20);
        // Later in the same window: still spent.
        assert_eq!(take(&b, sec(9) + SECOND - 1, 5), 0);
        // The first second leaves the window: its 20 are free again.
        assert_eq!(take(&b, sec(10), 25), 20);
    }

    #[test]
    fn the_ratio_allows_a_share_of_the_requests() {
        let b = budget(0.2, 0);
        assert_eq!(take(&b, sec(0), 1), 0, "no requests, no floor");
        for _ in 0..50 {
            b.record_request(sec(0));
        }
        assert_eq!(take(&b, sec(0), 20), 10);
        // Fifty more requests a few seconds later allow ten more.
        for _ in 0..50 {
            b.record_request(sec(4));
        }
        assert_eq!(take(&b, sec(4), 20), 10);
        assert_eq!(b.window().recent(sec(4)), (100, 20));
        // Once the first second's requests and retries leave the window,
        // what remains is 50 requests and 10 retries: spent.
        assert_eq!(b.window().recent(sec(10)), (50, 10));
        assert_eq!(take(&b, sec(10), 1), 0);
        assert_eq!(b.window().recent(sec(14)), (0, 0));
    }

    #[test]
    fn the_larger_of_ratio_and_floor_applies() {
        let b = budget(0.5, 1);
        for _ in 0..4 {
            b.record_request(sec(0));
        }
        // 50% of 4 is 2, less than the floor of 10 over the window.
        assert_eq!(take(&b, sec(0), 15), 10);
        for _ in 0..40 {
            b.record_request(sec(1));
        }
        // 50% of 44 is 22: twelve more.
        assert_eq!(take(&b, sec(1), 15), 12);
    }

    #[test]
    fn a_bucket_reused_ten_seconds_later_starts_from_zero() {
        let b = budget(0.0, 1);
        assert_eq!(take(&b, sec(3), 10), 10);
        // Second 13 uses the same bucket as second 3.
        assert_eq!(b.window().recent(sec(13)), (0, 0));
        assert_eq!(take(&b, sec(13), 11), 10);
        assert_eq!(b.window().recent(sec(13)), (0, 10));
    }

    #[test]
    fn zero_allows_no_retry() {
        let b = budget(0.0, 0);
        for _ in 0..100 {
            b.record_request(sec(0));
        }
        assert_eq!(take(&b, sec(0), 5), 0);
    }

    #[test]
    fn concurrent_retries_never_exceed_the_budget() {
        let b = budget(0.0, 5);
        let taken = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let n = take(&b, sec(0), 40);
                    taken.fetch_add(n, Ordering::SeqCst);
                });
            }
        });
        assert!(taken.load(Ordering::SeqCst) <= 50);
        assert_eq!(
            b.window().recent(sec(0)).1,
            taken.load(Ordering::SeqCst) as u64
        );
    }
}
