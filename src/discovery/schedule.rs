//! When to ask a name again, and what its answers do to its backends: the
//! policy of one name's task as plain functions of the answers and the
//! clock, so it can be traced by hand.
//!
//! - Records: they are the backends; ask again at the TTL, clamped to
//!   `[min_refresh, max_refresh]` (TTL 0 is `min_refresh`).
//! - A failure (timeout, SERVFAIL, ...): keep the backends; ask again
//!   after `min_refresh`, twice as late each failure in a row, up to
//!   `max_refresh` or [`MAX_FAILURE_BACKOFF`], whichever is shorter.
//! - An authoritative empty answer: keep the backends until empty answers
//!   have lasted `hold_empty`, then empty them; ask again at `min_refresh`.
//!
//! Each wait is then spread by up to a tenth either way ([`jitter`]),
//! never outside `[min_refresh, max_refresh]`, so that many instances
//! started together do not ask together.

use std::time::{Duration, Instant};

use rand::Rng;

use crate::config::{BackendConfig, Refresh, MAX_FAILURE_BACKOFF};

/// What a name's state is, for the log (once per change) and `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No answer yet.
    Starting,
    /// The last lookup gave records.
    Answering,
    /// Lookups fail; the last good backends are kept.
    Failing,
    /// Empty answers, for less than `hold_empty`: the backends are kept.
    Holding,
    /// Empty answers: the name has no backends.
    Empty,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Answering => "answering",
            Phase::Failing => "failing",
            Phase::Holding => "holding",
            Phase::Empty => "empty",
        }
    }
}

/// One name's memory of its answers.
#[derive(Debug)]
pub struct Tracker {
    refresh: Refresh,
    phase: Phase,
    /// Whether the backends last handed to the pool are some.
    has_backends: bool,
    /// When the empty answers in a row began.
    empty_since: Option<Instant>,
    failures_in_row: u32,
}

/// What to do after one lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The backends to hand to the pool, if they change.
    pub publish: Option<Vec<BackendConfig>>,
    /// How long until the next lookup, before [`jitter`].
    pub wait: Duration,
}

impl Tracker {
    /// `has_backends`: the pool already has backends from this name (a
    /// task restarted by a reload).
    pub fn new(refresh: Refresh, has_backends: bool) -> Tracker {
        Tracker {
            refresh,
            phase: Phase::Starting,
            has_backends,
            empty_since: None,
            failures_in_row: 0,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// When the empty answers in a row began, if they did.
    pub fn empty_since(&self) -> Option<Instant> {
        self.empty_since
    }

    pub fn records(&mut self, backends: Vec<BackendConfig>, ttl: Duration) -> Step {
        self.phase = Phase::Answering;
        self.empty_since = None;
        self.failures_in_row = 0;
        self.has_backends = true;
        Step {
            publish: Some(backends),
            wait: ttl.clamp(self.refresh.min, self.refresh.max),
        }
    }

    pub fn failed(&mut self) -> Step {
        if self.phase != Phase::Holding && self.phase != Phase::Empty {
            self.phase = Phase::Failing;
        }
        self.failures_in_row = self.failures_in_row.saturating_add(1);
        // With no backends yet (DNS down at start), every request is a
        // 503 until an answer comes: ask again at min_refresh, no backoff.
        let cap = if self.has_backends {
            self.refresh
                .max
                .min(MAX_FAILURE_BACKOFF)
                .max(self.refresh.min)
        } else {
            self.refresh.min
        };
        let doublings = (self.failures_in_row - 1).min(16);
        Step {
            publish: None,
            wait: self.refresh.min.saturating_mul(1 << doublings).min(cap),
        }
    }

    pub fn empty(&mut self, now: Instant) -> Step {
        self.failures_in_row = 0;
        let since = *self.empty_since.get_or_insert(now);
        let held = now.saturating_duration_since(since) >= self.refresh.hold_empty;
        let publish = if self.has_backends && !held {
            self.phase = Phase::Holding;
            None
        } else {
            self.phase = Phase::Empty;
            self.has_backends = false;
            Some(Vec::new())
        };
        Step {
            publish,
            wait: self.refresh.min,
        }
    }
}

/// `wait`, moved by a random part of up to a tenth of it either way, but
/// never outside `[refresh.min, refresh.max]`.
pub fn jitter(wait: Duration, refresh: &Refresh) -> Duration {
    let low = wait.mul_f64(0.9).max(refresh.min);
    let high = wait.mul_f64(1.1).min(refresh.max);
    if low >= high {
        return wait.clamp(refresh.min, refresh.max);
    }
    rand::thread_rng().gen_range(low..=high)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn refresh() -> Refresh {
        Refresh {
            min: S,
            max: 60 * S,
            hold_empty: 30 * S,
        }
    }

    fn one() -> Vec<BackendConfig> {
        let a = "10.0.0.7:3000";
        vec![BackendConfig {
            address: a.into(),
            socket_addr: a.parse().unwrap(),
            weight: 1,
        }]
    }

    #[test]
    fn the_ttl_is_clamped() {
        let mut t = Tracker::new(refresh(), false);
        assert_eq!(t.records(one(), Duration::ZERO).wait, S);
        assert_eq!(t.records(one(), 5 * S).wait, 5 * S);
        assert_eq!(t.records(one(), 86_400 * S).wait, 60 * S);
        assert_eq!(t.phase(), Phase::Answering);
    }

    #[test]
    fn failures_keep_the_backends_and_back_off() {
        let mut t = Tracker::new(refresh(), false);
        t.records(one(), 5 * S);
        let waits: Vec<u64> = (0..8).map(|_| t.failed().wait.as_secs()).collect();
        // 1, 2, 4, ... capped at MAX_FAILURE_BACKOFF (30s, under max 60s).
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(t.phase(), Phase::Failing);
        assert_eq!(t.failed().publish, None);
        // An answer starts the backoff over.
        t.records(one(), 5 * S);
        assert_eq!(t.failed().wait, S);
    }

    #[test]
    fn empty_answers_empty_the_name_only_once_held() {
        let start = Instant::now();
        let mut t = Tracker::new(refresh(), false);
        t.records(one(), 5 * S);
        // 0s and 29s: held; a failure in between does not restart the hold.
        assert_eq!(t.empty(start).publish, None);
        assert_eq!(t.phase(), Phase::Holding);
        t.failed();
        assert_eq!(t.phase(), Phase::Holding);
        assert_eq!(t.empty(start + 29 * S).publish, None);
        // 30s: emptied, and stays so without publishing again.
        assert_eq!(t.empty(start + 30 * S).publish, Some(Vec::new()));
        assert_eq!(t.phase(), Phase::Empty);
        assert_eq!(t.empty(start + 31 * S).publish, Some(Vec::new()));
        // Records end it; the next empty answer starts a new hold.
        t.records(one(), S);
        assert_eq!(t.empty_since(), None);
        assert_eq!(t.empty(start + 40 * S).publish, None);
    }

    #[test]
    fn an_empty_first_answer_has_nothing_to_hold() {
        let mut t = Tracker::new(refresh(), false);
        assert_eq!(t.empty(Instant::now()).publish, Some(Vec::new()));
        // A task restarted over backends already in the pool holds them.
        let mut t = Tracker::new(refresh(), true);
        assert_eq!(t.empty(Instant::now()).publish, None);
    }

    #[test]
    fn jitter_stays_inside_the_bounds() {
        let r = refresh();
        for _ in 0..1000 {
            let at_min = jitter(S, &r);
            assert!((S..=S.mul_f64(1.1)).contains(&at_min), "{at_min:?}");
            let at_max = jitter(60 * S, &r);
            assert!((S.mul_f64(54.0)..=60 * S).contains(&at_max), "{at_max:?}");
        }
        let fixed = Refresh {
            min: S,
            max: S,
            ..r
        };
        assert_eq!(jitter(S, &fixed), S);
    }
}
