//! Passive health: ejection after failed requests, growing for a backend
//! that keeps failing, probation after an ejection ends, the early end of
//! an ejection when a check shows the process was restarted, and the
//! pass-over after a failed connect.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{changed, nanos, Health, LazyNow};
use crate::config::{Outcome, Passive};

/// How long balancers pass a backend over after a connect to it failed,
/// 2^30 ns or about 1.07 s, unless no usable backend is free of such a
/// failure. A process that is down refuses at once, so it has nothing in
/// flight and least-connections would otherwise send it nearly every
/// request; round-robin would send it its share, each one a retry. An
/// answer from it, or a passing check, ends this at once.
pub const PASS_OVER_AFTER_CONNECT_FAILURE: u64 = 1 << 30;

/// One ejection.
#[derive(Debug, Clone)]
pub struct Ejection {
    /// Monotonic time it began.
    pub since: u64,
    /// Monotonic time it ends.
    pub until: u64,
    pub length: Duration,
    /// Ejections in a row, this one included; each doubles the length.
    pub in_row: u32,
    /// The failure that ejected it.
    pub cause: Outcome,
    pub reason: String,
}

/// Failures have reached the point of ejecting a backend, which has not
/// happened yet: the upstream first checks that its cap on ejections
/// leaves room ([`Health::eject`]).
#[derive(Debug, Clone)]
pub struct DueEjection {
    /// Counted failures in a row, this one included.
    failures: u32,
    /// The end of the latest ejection when this was decided.
    previous_end: u64,
    /// That ejection ended recently enough for the doubling to go on.
    recent: bool,
    outcome: Outcome,
    /// Due because the backend was on probation, below the threshold.
    probation: bool,
    /// The failure that reached the threshold (or the one on probation),
    /// not one after it.
    first: bool,
}

impl DueEjection {
    /// What the ejection would say of itself.
    pub fn reason(&self) -> String {
        let what = outcome_text(self.outcome);
        if self.probation {
            format!("{what} on its first request after an ejection")
        } else {
            format!("{} failed requests in a row, last: {what}", self.failures)
        }
    }
}

impl Health {
    /// A request sent at `started` got a response that does not count as a
    /// failure.
    pub fn record_success(&self, started: u64) {
        self.clear_refusal(started);
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

    /// A connect to the backend failed at `now` (refused, unreachable, or
    /// timed out): balancers pass it over for a while.
    pub fn record_refusal(&self, now: u64) {
        let before = self.refused_at.swap(now.max(1), Ordering::Relaxed);
        // Least-connections' tree ranks passed-over backends last: it must
        // look again when one starts to be.
        if before == 0 || now.saturating_sub(before) >= PASS_OVER_AFTER_CONNECT_FAILURE {
            changed();
        }
    }

    /// An attempt chosen at `started` got through, so the failed connect
    /// before it is old news. One chosen earlier says nothing.
    fn clear_refusal(&self, started: u64) {
        let at = self.refused_at.load(Ordering::Relaxed);
        if at != 0 && started >= at {
            // Another refusal may land between the load and the exchange;
            // then it stays.
            let _ = self
                .refused_at
                .compare_exchange(at, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Whether balancers pass it over now: a connect to it failed less
    /// than [`PASS_OVER_AFTER_CONNECT_FAILURE`] ago, and nothing since got
    /// through. Reads the clock only for such a backend.
    pub fn passed_over_lazy(&self, now: &LazyNow) -> bool {
        let at = self.refused_at.load(Ordering::Relaxed);
        at != 0 && now.get() < at.saturating_add(PASS_OVER_AFTER_CONNECT_FAILURE)
    }

    /// When the pass-over after its last failed connect ends or ended; 0
    /// if there is none.
    pub fn passed_over_until(&self) -> u64 {
        match self.refused_at.load(Ordering::Relaxed) {
            0 => 0,
            at => at.saturating_add(PASS_OVER_AFTER_CONNECT_FAILURE),
        }
    }

    /// A request sent at `started` failed with `outcome` at `now`. Counts
    /// it; returns the ejection that is due, if any, for the upstream to
    /// apply with [`eject`](Self::eject) when its cap leaves room.
    pub fn failure_due(
        &self,
        policy: &Passive,
        outcome: Outcome,
        started: u64,
        now: u64,
    ) -> Option<DueEjection> {
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
        Some(DueEjection {
            failures: n,
            previous_end,
            recent,
            outcome,
            probation: n < policy.consecutive_failures,
            first: n <= policy.consecutive_failures,
        })
    }

    /// Applies a due ejection at `now`, unless another thread ejected the
    /// backend meanwhile; returns it.
    pub fn eject(&self, due: &DueEjection, policy: &Passive, now: u64) -> Option<Ejection> {
        let mut d = self.detail();
        if self.ejected_until.load(Ordering::Relaxed) != due.previous_end {
            return None;
        }
        if !due.recent {
            d.ejections_in_row = 0;
        }
        d.ejections_in_row = d.ejections_in_row.saturating_add(1);
        d.ejections += 1;
        d.capped = None;
        let length = ejection_length(policy, d.ejections_in_row);
        let until = now.saturating_add(nanos(length)).max(1);
        self.ejected_until.store(until, Ordering::Relaxed);
        changed();
        self.failures_in_row.store(0, Ordering::Relaxed);
        self.probation.store(true, Ordering::Relaxed);
        let ejection = Ejection {
            since: now,
            until,
            length,
            in_row: d.ejections_in_row,
            cause: due.outcome,
            reason: due.reason(),
        };
        d.last_ejection = Some(ejection.clone());
        Some(ejection)
    }

    /// A due ejection did not happen, for `why`; `/status` says so while
    /// no success comes. The failures stay counted, so the next one
    /// ejects the backend if there is room by then. Returns whether this
    /// is news: the first since the backend was last fine.
    pub fn note_capped(&self, due: &DueEjection, why: &str) -> bool {
        let mut d = self.detail();
        let news = d.capped.is_none() || due.first;
        d.capped = Some(format!("{}, but {why}", due.reason()));
        news
    }

    /// Counts a failure and applies the ejection it makes due, with no cap.
    #[cfg(test)]
    pub fn record_failure(
        &self,
        policy: &Passive,
        outcome: Outcome,
        started: u64,
        now: u64,
    ) -> Option<Ejection> {
        let due = self.failure_due(policy, outcome, started, now)?;
        self.eject(&due, policy, now)
    }

    /// An active check that began at `started` passed at `now`. A backend
    /// ejected for a failed connect, checked since and now accepting, has
    /// been restarted (a crashed process back under its supervisor): its
    /// ejection ends now, and so does its doubling, since the process
    /// that failed is gone. It stays on probation, so one more counted
    /// failure ejects it again. Returns the ejection it ended, if any.
    /// Also ends the pass-over after a failed connect.
    pub fn check_passed(&self, started: u64, now: u64) -> Option<Ejection> {
        self.clear_refusal(started);
        let until = self.ejected_until.load(Ordering::Relaxed);
        if until <= now {
            return None;
        }
        let mut d = self.detail();
        let ejection = d.last_ejection.clone()?;
        let restarted = ejection.until == until
            && ejection.cause == Outcome::Connect
            && ejection.since <= started;
        if !restarted
            || self
                .ejected_until
                .compare_exchange(until, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return None;
        }
        changed();
        d.ejections_in_row = 0;
        if let Some(last) = d.last_ejection.as_mut() {
            last.until = now.max(1);
        }
        Some(ejection)
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
        Outcome::Tls => "TLS handshake failure",
        Outcome::GrpcUnavailable => "gRPC UNAVAILABLE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Outcomes;

    const S: u64 = 1_000_000_000;

    fn policy(consecutive_failures: u32) -> Passive {
        let mut counts = Outcomes::DEFAULT;
        counts.insert(Outcome::ServerError);
        Passive {
            consecutive_failures,
            counts,
            ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(35),
            max_ejection_percent: 100,
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

    #[test]
    fn a_check_passing_after_a_connect_ejection_ends_it_and_the_doubling() {
        let p = policy(2);
        let h = Health::new(true, 0);
        assert!(h.record_failure(&p, Outcome::Connect, S, S).is_none());
        let first = h.record_failure(&p, Outcome::Connect, S, S).unwrap();
        assert_eq!(first.length.as_secs(), 10);
        // A check that began before the ejection proves nothing.
        assert!(h.check_passed(S - 1, 2 * S).is_none());
        assert!(h.ejected(2 * S));
        // One that began after it: the process was restarted.
        let ended = h.check_passed(2 * S, 2 * S).expect("the ejection ends");
        assert_eq!(ended.until, 11 * S);
        assert!(h.usable(2 * S));
        assert!(h.report(2 * S).ejected.is_none());
        assert_eq!(h.usable_since(), 2 * S, "slow start begins now");
        // Still on probation, but the next ejection is a first one again.
        let again = h
            .record_failure(&p, Outcome::Connect, 3 * S, 3 * S)
            .unwrap();
        assert_eq!((again.in_row, again.length.as_secs()), (1, 10));
        assert!(again.reason.contains("first request after an ejection"));
    }

    #[test]
    fn a_check_does_not_end_an_ejection_for_anything_but_failed_connects() {
        for outcome in [Outcome::Reset, Outcome::Timeout, Outcome::ServerError] {
            let h = Health::new(true, 0);
            h.record_failure(&policy(1), outcome, S, S).unwrap();
            assert!(h.check_passed(2 * S, 2 * S).is_none(), "{outcome:?}");
            assert!(h.ejected(2 * S), "{outcome:?}");
        }
    }
}
