//! Whether a backend may take traffic, and why: the verdict of active
//! checks (`checks.rs`), ejection after failed requests and the pass-over
//! after a failed connect (`passive.rs`), and the slow-start ramp.
//!
//! The data plane reads only atomics here. The mutex guards the details
//! that `/status` shows, and is taken by the checker, by an ejection and by
//! `/status`, never by an ordinary request.

mod checks;
mod clock;
mod passive;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

pub use checks::{Change, CheckRecord};
pub use clock::{at, changes, now, wall_clock, LazyNow, ORIGIN};
pub(crate) use clock::{changed, nanos};
pub use passive::{ejection_length, DueEjection, Ejection, PASS_OVER_AFTER_CONNECT_FAILURE};

/// Smallest share of its weight a backend gets when slow start begins.
pub const SLOW_START_MIN_PERMILLE: u64 = 100;

/// The share of its weight, in thousandths, that a backend usable since
/// `since` gets at `now` when slow start lasts `window`: linear from
/// [`SLOW_START_MIN_PERMILLE`] up to 1000 at the end of the window.
pub fn ramp_permille(since: u64, now: u64, window: Duration) -> u64 {
    let window = nanos(window).max(1);
    let elapsed = now.saturating_sub(since);
    if elapsed >= window {
        return 1000;
    }
    let share = (u128::from(elapsed) * 1000 / u128::from(window)) as u64;
    share.max(SLOW_START_MIN_PERMILLE)
}

/// The health of one backend.
#[derive(Debug)]
pub struct Health {
    /// The active checks' verdict; stays true when there are none.
    active_up: AtomicBool,
    /// Whether the backend has ever been up (it starts up unless
    /// `initial_state = "unhealthy"`). One that never was gets no traffic
    /// even in panic mode.
    ever_up: AtomicBool,
    /// When the checks last brought it up, or when it was created.
    up_since: AtomicU64,
    /// Ejected until this time; 0 when never ejected.
    ejected_until: AtomicU64,
    /// Counted request failures in a row.
    failures_in_row: AtomicU32,
    /// Set by an ejection, cleared by the next success: while set, one
    /// counted failure ejects again (as nginx retries one request after
    /// `fail_timeout`).
    probation: AtomicBool,
    /// When a connect to it last failed; 0 if never, or cleared since by
    /// an answer or a passing check. Balancers pass it over for
    /// [`PASS_OVER_AFTER_CONNECT_FAILURE`] after that.
    refused_at: AtomicU64,
    detail: Mutex<Detail>,
}

#[derive(Debug, Default)]
struct Detail {
    passes_in_row: u32,
    fails_in_row: u32,
    last_check: Option<CheckRecord>,
    ejections_in_row: u32,
    ejections: u64,
    last_ejection: Option<Ejection>,
    last_change: Option<Change>,
    /// Why the last ejection due did not happen: the upstream's cap.
    capped: Option<String>,
}

/// What `/status` shows of a backend's health.
#[derive(Debug, Clone)]
pub struct Report {
    pub active_up: bool,
    pub ever_up: bool,
    pub passes_in_row: u32,
    pub fails_in_row: u32,
    pub last_check: Option<CheckRecord>,
    pub last_change: Option<Change>,
    /// The current ejection, if it has not ended.
    pub ejected: Option<Ejection>,
    pub ejections: u64,
    pub failures_in_row: u32,
    /// Until when balancers pass it over after a failed connect, if now.
    pub passed_over_until: Option<u64>,
    /// Why it is not ejected although its failures say it should be:
    /// the upstream's cap on ejections. Only while no success came since.
    pub capped: Option<String>,
}

impl Health {
    pub fn new(initial_up: bool, now: u64) -> Self {
        Health {
            active_up: AtomicBool::new(initial_up),
            ever_up: AtomicBool::new(initial_up),
            up_since: AtomicU64::new(now),
            ejected_until: AtomicU64::new(0),
            failures_in_row: AtomicU32::new(0),
            probation: AtomicBool::new(false),
            refused_at: AtomicU64::new(0),
            detail: Mutex::new(Detail::default()),
        }
    }

    fn detail(&self) -> std::sync::MutexGuard<'_, Detail> {
        // Details are plain data; a panic elsewhere cannot leave them unsafe.
        self.detail.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May take traffic: the checks say up and it is not ejected.
    pub fn usable(&self, now: u64) -> bool {
        self.active_up.load(Ordering::Relaxed) && !self.ejected(now)
    }

    /// [`usable`](Self::usable), reading the clock only for a backend that
    /// has been ejected at some point.
    pub fn usable_lazy(&self, now: &LazyNow) -> bool {
        if !self.active_up.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        until == 0 || until <= now.get()
    }

    /// When the latest ejection ends or ended; 0 if never ejected.
    pub fn ejected_until(&self) -> u64 {
        self.ejected_until.load(Ordering::Relaxed)
    }

    pub fn ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }

    /// The start time to record for an attempt beginning `now`: only ever
    /// compared with the ends of ejections and with failed connects, so
    /// for a backend with neither 0 is as good (it began before any) and
    /// spares the clock.
    pub fn attempt_start(&self, now: &LazyNow) -> u64 {
        if self.ejected_until.load(Ordering::Relaxed) == 0
            && self.refused_at.load(Ordering::Relaxed) == 0
        {
            0
        } else {
            now.get()
        }
    }

    /// In panic mode (no backend usable), lower is less bad: 0 for ejected
    /// but passing checks, 1 for failing checks. `None` for a backend that
    /// has never been up, which gets no traffic at all.
    pub fn panic_tier(&self) -> Option<u8> {
        if !self.ever_up.load(Ordering::Relaxed) {
            None
        } else if self.active_up.load(Ordering::Relaxed) {
            Some(0)
        } else {
            Some(1)
        }
    }

    /// When the backend last became usable: brought up by the checks,
    /// created, or back from an ejection. Slow start ramps from here.
    pub fn usable_since(&self) -> u64 {
        let up = self.up_since.load(Ordering::Relaxed);
        up.max(self.ejected_until.load(Ordering::Relaxed))
    }

    pub fn report(&self, now: u64) -> Report {
        let d = self.detail();
        let failures_in_row = self.failures_in_row.load(Ordering::Relaxed);
        Report {
            active_up: self.active_up.load(Ordering::Relaxed),
            ever_up: self.ever_up.load(Ordering::Relaxed),
            passes_in_row: d.passes_in_row,
            fails_in_row: d.fails_in_row,
            last_check: d.last_check.clone(),
            last_change: d.last_change.clone(),
            ejected: d.last_ejection.clone().filter(|e| e.until > now),
            ejections: d.ejections,
            failures_in_row,
            passed_over_until: Some(self.passed_over_until()).filter(|&t| t > now),
            capped: d.capped.clone().filter(|_| failures_in_row > 0),
        }
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn slow_start_ramps_linearly_from_a_tenth_to_full() {
        let window = Duration::from_secs(30);
        let since = 5 * S;
        assert_eq!(ramp_permille(since, since, window), 100);
        assert_eq!(ramp_permille(since, since + S, window), 100);
        assert_eq!(ramp_permille(since, since + 3 * S, window), 100);
        assert_eq!(ramp_permille(since, since + 6 * S, window), 200);
        assert_eq!(ramp_permille(since, since + 15 * S, window), 500);
        assert_eq!(ramp_permille(since, since + 30 * S - 1, window), 999);
        assert_eq!(ramp_permille(since, since + 30 * S, window), 1000);
        assert_eq!(ramp_permille(since, since + 3600 * S, window), 1000);
        // A clock read before `since` (another thread) is the start.
        assert_eq!(ramp_permille(since, 0, window), 100);
    }

    #[test]
    fn initial_unhealthy_waits_for_passes_and_stays_out_of_panic() {
        let h = Health::new(false, 0);
        assert!(!h.usable(0));
        assert_eq!(h.panic_tier(), None);
        h.record_check(true, "status 200".into(), (1, 1), S);
        assert!(h.usable(S));
        h.record_check(false, "status 500".into(), (1, 1), 2 * S);
        assert_eq!(h.panic_tier(), Some(1));
    }
}
