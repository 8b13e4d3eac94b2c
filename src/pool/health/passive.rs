//! Passive health: ejection after failed requests, growing for a backend
//! that keeps failing, and probation after an ejection ends.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{changed, nanos, Health};
use crate::config::{Outcome, Passive};

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

impl Health {
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
