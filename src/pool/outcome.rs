//! What an attempt's outcome does to its backend: a failed connect makes
//! balancers pass the backend over for a moment, counted failures eject
//! it, and the upstream caps how many of its backends may be ejected at
//! once, so that ejection never empties a pool whose processes merely
//! restart (panic mode is for real outages).

use super::health::{self, Ejection};
use super::{BackendState, Upstream};
use crate::config::Outcome;

/// What an attempt's outcome changed.
#[derive(Debug)]
pub enum Verdict {
    /// Nothing worth telling.
    Counted,
    /// The backend is ejected.
    Ejected(Ejection),
    /// The backend's failures called for an ejection, but the upstream's
    /// cap did not allow one; `first` for the first such refusal since
    /// the backend was last fine.
    Capped { why: String, first: bool },
}

impl Upstream {
    /// Feeds the outcome of an attempt on `state`, chosen at `started`
    /// (see [`Lease::started`](super::Lease::started)), to passive
    /// health: `None` for a response that is no failure.
    pub fn record_outcome(
        &self,
        state: &BackendState,
        started: u64,
        outcome: Option<Outcome>,
    ) -> Verdict {
        let h = state.health();
        let Some(outcome) = outcome else {
            h.record_success(started);
            return Verdict::Counted;
        };
        let now = health::now();
        if outcome == Outcome::Connect {
            h.record_refusal(now);
        }
        let Some(due) = h.failure_due(&self.passive, outcome, started, now) else {
            return Verdict::Counted;
        };
        // One ejection at a time per upstream, so two cannot both take
        // the last room. Ejections are rare; requests never wait here.
        let _one_at_a_time = self.ejecting.lock().unwrap_or_else(|e| e.into_inner());
        let max = self.passive.max_ejected(self.backends.len());
        let ejected = self
            .backends
            .iter()
            .filter(|b| b.state.health().ejected(now))
            .count();
        if ejected >= max {
            let why = format!(
                "{ejected} of the upstream's {} backends {} ejected already, the most \
                 max_ejection_percent = {} allows",
                self.backends.len(),
                if ejected == 1 { "is" } else { "are" },
                self.passive.max_ejection_percent,
            );
            let first = h.note_capped(&due, &why);
            return Verdict::Capped { why, first };
        }
        match h.eject(&due, &self.passive, now) {
            Some(ejection) => Verdict::Ejected(ejection),
            None => Verdict::Counted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::Pool;
    use std::path::Path;

    /// An upstream of `n` backends ejecting on one connect failure, with
    /// `percent` as its cap (default if `None`).
    fn pool(n: usize, percent: Option<u32>) -> Pool {
        pool_ejecting_after(n, 1, percent)
    }

    fn pool_ejecting_after(n: usize, failures: u32, percent: Option<u32>) -> Pool {
        let list: Vec<String> = (0..n)
            .map(|i| format!("\"127.0.0.1:{}\"", 3001 + i))
            .collect();
        let cap = percent.map_or(String::new(), |p| format!("max_ejection_percent = {p}\n"));
        let text = format!(
            "[upstreams.app]\nbackends = [{}]\n\
             [upstreams.app.passive_health_check]\nconsecutive_failures = {failures}\n{cap}",
            list.join(", ")
        );
        Pool::new(crate::config::parse(Path::new("t.toml"), &text).unwrap())
    }

    /// Fails a connect to each backend in turn; returns which got ejected.
    fn fail_all(up: &Upstream) -> Vec<bool> {
        (0..up.backends().len())
            .map(|i| {
                let state = &up.backends()[i].state;
                let verdict = up.record_outcome(state, 0, Some(Outcome::Connect));
                matches!(verdict, Verdict::Ejected(_))
            })
            .collect()
    }

    #[test]
    fn the_default_cap_is_a_tenth_of_the_pool_and_at_least_one_backend() {
        for (n, max) in [(1, 1), (3, 1), (10, 1), (20, 2), (25, 2), (100, 10)] {
            let pool = pool(n, None);
            let snapshot = pool.snapshot();
            let ejected = fail_all(snapshot.default_upstream().unwrap());
            let count = ejected.iter().filter(|&&e| e).count();
            assert_eq!(count, max, "{n} backends");
            // The first ones in turn took the room.
            assert!(ejected[..max].iter().all(|&e| e), "{n} backends");
        }
    }

    #[test]
    fn the_cap_follows_max_ejection_percent() {
        for (n, percent, max) in [(3, 0, 1), (3, 50, 1), (4, 50, 2), (3, 100, 3), (10, 34, 3)] {
            let pool = pool(n, Some(percent));
            let snapshot = pool.snapshot();
            let count = fail_all(snapshot.default_upstream().unwrap())
                .iter()
                .filter(|&&e| e)
                .count();
            assert_eq!(count, max, "{n} backends at {percent}%");
        }
    }

    #[test]
    fn a_capped_backend_says_why_and_is_ejected_once_there_is_room() {
        let pool = pool(3, None);
        let snapshot = pool.snapshot();
        let up = snapshot.default_upstream().unwrap();
        let (a, b) = (&up.backends()[0].state, &up.backends()[1].state);
        assert!(matches!(
            up.record_outcome(a, 0, Some(Outcome::Connect)),
            Verdict::Ejected(_)
        ));
        let Verdict::Capped { why, first } = up.record_outcome(b, 0, Some(Outcome::Connect)) else {
            panic!("b was ejected over the cap");
        };
        assert!(first);
        assert!(
            why.contains("1 of the upstream's 3 backends is ejected"),
            "{why}"
        );
        let report = b.health().report(health::now());
        let capped = report.capped.expect("/status says why b is in");
        assert!(capped.starts_with("1 failed requests in a row"), "{capped}");
        // A second refusal is not news.
        assert!(matches!(
            up.record_outcome(b, 0, Some(Outcome::Connect)),
            Verdict::Capped { first: false, .. }
        ));
        // Once a's ejection is over, b's next failure ejects it.
        let now = health::now();
        assert!(a.health().check_passed(now, now).is_some());
        assert!(matches!(
            up.record_outcome(b, 0, Some(Outcome::Connect)),
            Verdict::Ejected(_)
        ));
        assert!(b.health().report(health::now()).capped.is_none());
    }

    #[test]
    fn a_failed_connect_makes_balancers_pass_the_backend_over_until_it_answers() {
        let pool = pool_ejecting_after(2, 5, None);
        let snapshot = pool.snapshot();
        let up = snapshot.default_upstream().unwrap();
        let a = &up.backends()[0].state;
        up.record_outcome(a, 0, Some(Outcome::Connect));
        let now = health::LazyNow::new();
        assert!(a.health().passed_over_lazy(&now));
        // An answer to an attempt chosen before the failure is old news.
        up.record_outcome(a, 0, None);
        assert!(a.health().passed_over_lazy(&now));
        up.record_outcome(a, health::now(), None);
        assert!(!a.health().passed_over_lazy(&health::LazyNow::new()));
    }
}
