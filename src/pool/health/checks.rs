//! The active checks' verdict on a backend: exactly `unhealthy_threshold`
//! failures in a row take it out, exactly `healthy_threshold` passes in a
//! row bring it back.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::{changed, plural, Health};

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

impl Health {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

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
}
