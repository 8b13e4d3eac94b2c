//! Whether a backend may take traffic, and why: the verdict of active
//! checks, ejection after failed requests, and the slow-start ramp.
//!
//! The data plane reads only atomics here. The mutex guards the details
//! that `/status` shows, and is taken by the checker, by an ejection and by
//! `/status`, never by an ordinary request.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crate::config::{Outcome, Passive};

/// Nanoseconds on a monotonic clock that reads [`ORIGIN`] when the process
/// starts. Every time in this module is one of these, so tests can pass
/// their own.
pub fn now() -> u64 {
    at(Instant::now())
}

/// `instant` on the clock of [`now`], for a time already read: the proxy
/// notes each request's start once and reuses it.
pub fn at(instant: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    // u64 nanoseconds last 584 years.
    ORIGIN + instant.saturating_duration_since(epoch).as_nanos() as u64
}

/// Counts changes of any backend's usability (checks' verdict, ejection),
/// so that what caches it (least-connections' tree) knows to look again.
/// The end of an ejection is not counted: it comes with time, not an event.
static CHANGES: AtomicU64 = AtomicU64::new(0);

/// How many times a backend's usability has changed, anywhere.
pub fn changes() -> u64 {
    CHANGES.load(Ordering::Relaxed)
}

fn changed() {
    CHANGES.fetch_add(1, Ordering::Relaxed);
}

/// [`now`], read at most once and only when needed: selection needs the
/// time only for a backend that has been ejected, or for slow start, and
/// reading the clock costs more than the rest of a pick.
#[derive(Debug, Default)]
pub struct LazyNow(Cell<u64>);

impl LazyNow {
    /// A clock not read yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The time now, read on first use.
    pub fn get(&self) -> u64 {
        match self.0.get() {
            0 => {
                let t = now();
                self.0.set(t);
                t
            }
            t => t,
        }
    }
}

/// What [`now`] reads at process start: further from 0 than any window
/// (durations are capped at a day), so time 0 means "long ago".
pub const ORIGIN: u64 = 2 * 24 * 3600 * 1_000_000_000;

/// `d` in nanoseconds, saturating (durations are capped at a day anyway).
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The wall-clock time of monotonic time `at`, for people reading `/status`.
pub fn wall_clock(at: u64, now: u64) -> SystemTime {
    let wall = SystemTime::now();
    if at >= now {
        wall + Duration::from_nanos(at - now)
    } else {
        wall - Duration::from_nanos(now - at)
    }
}

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
}

/// The outcome of one active check.
#[derive(Debug, Clone)]
pub struct CheckRecord {
    pub at: SystemTime,
    pub passed: bool,
    /// "status 200", "connection refused", "timed out after 1s", ...
    pub message: String,
}

/// A change of the active checks' verdict.
#[derive(Debug, Clone)]
pub struct Change {
    pub at: SystemTime,
    pub healthy: bool,
    pub reason: String,
}

/// One ejection.
#[derive(Debug, Clone)]
pub struct Ejection {
    /// Monotonic time it ends.
    pub until: u64,
    pub length: Duration,
    /// Ejections in a row, this one included; each doubles the length.
    pub in_row: u32,
    pub reason: String,
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
    /// compared with ejection ends, so for a backend never ejected 0 is as
    /// good (it began before any ejection) and spares the clock.
    pub fn attempt_start(&self, now: &LazyNow) -> u64 {
        if self.ejected_until.load(Ordering::Relaxed) == 0 {
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

    /// Records an active check; returns the change of verdict it caused.
    pub fn record_check(
        &self,
        passed: bool,
        message: String,
        thresholds: (u32, u32),
        now: u64,
    ) -> Option<Change> {
        let (healthy_threshold, unhealthy_threshold) = thresholds;
        let mut d = self.detail();
        let up = self.active_up.load(Ordering::Relaxed);
        let change = if passed {
            d.passes_in_row = d.passes_in_row.saturating_add(1);
            d.fails_in_row = 0;
            (!up && d.passes_in_row >= healthy_threshold).then(|| {
                self.up_since.store(now, Ordering::Relaxed);
                self.ever_up.store(true, Ordering::Relaxed);
                self.active_up.store(true, Ordering::Relaxed);
                changed();
                let n = d.passes_in_row;
                format!("{n} check{} passed in a row", plural(n))
            })
        } else {
            d.fails_in_row = d.fails_in_row.saturating_add(1);
            d.passes_in_row = 0;
            (up && d.fails_in_row >= unhealthy_threshold).then(|| {
                self.active_up.store(false, Ordering::Relaxed);
                changed();
                let n = d.fails_in_row;
                format!("{n} check{} failed in a row, last: {message}", plural(n))
            })
        };
        d.last_check = Some(CheckRecord {
            at: SystemTime::now(),
            passed,
            message,
        });
        let change = change.map(|reason| Change {
            at: SystemTime::now(),
            healthy: passed,
            reason,
        });
        if change.is_some() {
            d.last_change.clone_from(&change);
        }
        change
    }

    /// Without active checks nothing would ever bring a backend back up,
    /// so their verdict is dropped.
    pub fn clear_checks(&self, now: u64) {
        let mut d = self.detail();
        if !self.active_up.swap(true, Ordering::Relaxed) {
            self.up_since.store(now, Ordering::Relaxed);
            changed();
        }
        self.ever_up.store(true, Ordering::Relaxed);
        d.passes_in_row = 0;
        d.fails_in_row = 0;
        d.last_check = None;
    }

    /// A request sent at `started` got a response that does not count as a
    /// failure.
    pub fn record_success(&self, started: u64) {
        if self.is_straggler(started) {
            return;
        }
        // Loads first: the common case writes nothing shared.
        if self.failures_in_row.load(Ordering::Relaxed) != 0 {
            self.failures_in_row.store(0, Ordering::Relaxed);
        }
        if self.probation.load(Ordering::Relaxed) {
            self.probation.store(false, Ordering::Relaxed);
        }
    }

    /// Sent before the latest ejection ended (in panic mode, or before it
    /// began): its outcome says nothing about the backend since.
    fn is_straggler(&self, started: u64) -> bool {
        started < self.ejected_until.load(Ordering::Relaxed)
    }

    /// A request sent at `started` failed with `outcome` at `now`; returns
    /// the ejection it caused.
    pub fn record_failure(
        &self,
        policy: &Passive,
        outcome: Outcome,
        started: u64,
        now: u64,
    ) -> Option<Ejection> {
        if policy.consecutive_failures == 0 || !policy.counts.contains(outcome) {
            self.record_success(started);
            return None;
        }
        if self.is_straggler(started) {
            return None;
        }
        let n = self.failures_in_row.fetch_add(1, Ordering::Relaxed) + 1;
        let previous_end = self.ejected_until.load(Ordering::Relaxed);
        // Probation lasts until a success, or `max_ejection_time` after the
        // ejection ended, when the doubling starts over too.
        let recent = previous_end != 0
            && now.saturating_sub(previous_end) <= nanos(policy.max_ejection_time);
        let probation = self.probation.load(Ordering::Relaxed) && recent;
        if n < policy.consecutive_failures && !probation {
            return None;
        }
        let mut d = self.detail();
        if self.ejected_until.load(Ordering::Relaxed) != previous_end {
            return None; // another thread ejected it meanwhile
        }
        if !recent {
            d.ejections_in_row = 0;
        }
        d.ejections_in_row = d.ejections_in_row.saturating_add(1);
        d.ejections += 1;
        let length = ejection_length(policy, d.ejections_in_row);
        let until = now.saturating_add(nanos(length)).max(1);
        self.ejected_until.store(until, Ordering::Relaxed);
        changed();
        self.failures_in_row.store(0, Ordering::Relaxed);
        self.probation.store(true, Ordering::Relaxed);
        let what = outcome_text(outcome);
        let reason = if n < policy.consecutive_failures {
            format!("{what} on its first request after an ejection")
        } else {
            format!("{n} failed requests in a row, last: {what}")
        };
        let ejection = Ejection {
            until,
            length,
            in_row: d.ejections_in_row,
            reason,
        };
        d.last_ejection = Some(ejection.clone());
        Some(ejection)
    }

    pub fn report(&self, now: u64) -> Report {
        let d = self.detail();
        Report {
            active_up: self.active_up.load(Ordering::Relaxed),
            ever_up: self.ever_up.load(Ordering::Relaxed),
            passes_in_row: d.passes_in_row,
            fails_in_row: d.fails_in_row,
            last_check: d.last_check.clone(),
            last_change: d.last_change.clone(),
            ejected: d.last_ejection.clone().filter(|e| e.until > now),
            ejections: d.ejections,
            failures_in_row: self.failures_in_row.load(Ordering::Relaxed),
        }
    }
}

/// `ejection_time` doubled for each earlier ejection in a row, capped at
/// `max_ejection_time`.
pub fn ejection_length(policy: &Passive, in_row: u32) -> Duration {
    let factor = 1u32
        .checked_shl(in_row.saturating_sub(1))
        .unwrap_or(u32::MAX);
    policy
        .ejection_time
        .checked_mul(factor)
        .unwrap_or(Duration::MAX)
        .min(policy.max_ejection_time)
}

fn outcome_text(o: Outcome) -> &'static str {
    match o {
        Outcome::Connect => "connect failure",
        Outcome::Timeout => "timeout",
        Outcome::Reset => "connection reset",
        Outcome::Protocol => "invalid HTTP",
        Outcome::ServerError => "5xx response",
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
    use crate::config::Outcomes;

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
    fn checks_change_the_verdict_at_exactly_the_thresholds() {
        let h = Health::new(true, 0);
        let check = |passed| h.record_check(passed, "x".into(), (2, 3), 7 * S);
        assert!(check(false).is_none());
        assert!(check(false).is_none());
        assert!(h.usable(7 * S));
        let down = check(false).expect("third failure marks it down");
        assert!(!down.healthy);
        assert!(
            down.reason.starts_with("3 checks failed in a row"),
            "{}",
            down.reason
        );
        assert!(!h.usable(7 * S));
        assert!(check(false).is_none(), "a change is reported once");
        assert!(check(true).is_none());
        assert!(!h.usable(7 * S));
        // A failure in between starts the count again.
        assert!(check(false).is_none());
        assert!(check(true).is_none());
        let up = check(true).expect("second pass in a row marks it up");
        assert!(up.healthy);
        assert!(h.usable(7 * S));
        assert_eq!(h.usable_since(), 7 * S);
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

    fn policy(consecutive_failures: u32) -> Passive {
        let mut counts = Outcomes::DEFAULT;
        counts.insert(Outcome::ServerError);
        Passive {
            consecutive_failures,
            counts,
            ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(35),
        }
    }

    #[test]
    fn ejection_doubles_in_a_row_up_to_the_cap() {
        let p = policy(2);
        let lengths: Vec<u64> = (1..=5).map(|n| ejection_length(&p, n).as_secs()).collect();
        assert_eq!(lengths, [10, 20, 35, 35, 35]);
        assert_eq!(ejection_length(&p, u32::MAX).as_secs(), 35);
    }

    #[test]
    fn consecutive_failures_eject_and_probation_ejects_again() {
        let p = policy(2);
        let h = Health::new(true, 0);
        let fail = |outcome, at| h.record_failure(&p, outcome, at, at);
        assert!(fail(Outcome::ServerError, S).is_none());
        h.record_success(S);
        assert!(fail(Outcome::ServerError, S).is_none());
        let first = fail(Outcome::ServerError, S).unwrap();
        assert_eq!((first.length.as_secs(), first.until), (10, 11 * S));
        assert!(!h.usable(5 * S) && h.usable(11 * S));
        assert_eq!(h.usable_since(), 11 * S, "slow start begins when it ends");
        // Requests sent before the ejection ended change nothing, even when
        // they end after it (a slow timeout), and whatever their outcome.
        assert!(fail(Outcome::Connect, 5 * S).is_none());
        assert!(h
            .record_failure(&p, Outcome::Timeout, 10 * S, 12 * S)
            .is_none());
        h.record_success(10 * S);
        // Back, and failing at once: out again for twice as long.
        let second = fail(Outcome::Timeout, 12 * S).unwrap();
        assert_eq!((second.length.as_secs(), second.in_row), (20, 2));
        assert!(second.reason.contains("first request after an ejection"));
        // A success clears probation; then it takes two failures again.
        assert!(h.usable(32 * S));
        h.record_success(32 * S);
        assert!(fail(Outcome::Reset, 33 * S).is_none());
        let third = fail(Outcome::Reset, 33 * S).unwrap();
        assert_eq!(third.length.as_secs(), 35);
        // Long after the last one ended (no success in between), probation
        // is over and the length starts over.
        let later = 33 * S + 35 * S + 36 * S;
        assert!(fail(Outcome::Reset, later).is_none());
        let fourth = fail(Outcome::Reset, later).unwrap();
        assert_eq!((fourth.length.as_secs(), fourth.in_row), (10, 1));
        assert_eq!(h.report(later).ejections, 4);
    }

    #[test]
    fn outcomes_not_counted_do_not_eject() {
        let h = Health::new(true, 0);
        let p = Passive {
            counts: Outcomes::DEFAULT,
            ..policy(1)
        };
        assert!(h.record_failure(&p, Outcome::ServerError, S, S).is_none());
        assert!(h.usable(S));
        let off = policy(0);
        assert!(h.record_failure(&off, Outcome::Connect, S, S).is_none());
        assert!(h.record_failure(&p, Outcome::Connect, S, S).is_some());
    }
}
