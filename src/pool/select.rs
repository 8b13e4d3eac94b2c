//! Choosing a backend for one attempt: the balancer's pick among the
//! candidates. Those are the usable backends not tried yet, and among them
//! first those with no recent failed connect; when no usable backend is
//! left untried, the least bad of the rest (panic mode, and retries that
//! have used up every usable backend).

use super::health::{self, LazyNow};
use super::{Lease, Upstream};

/// Which backends a pick may choose from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Candidates {
    /// Usable, and not passed over for a recent failed connect (the
    /// normal case).
    Preferred,
    /// Usable: every such backend left has failed a connect lately.
    Usable,
    /// No usable backend is left: those in this panic tier (see
    /// `Health::panic_tier`).
    Panic(u8),
}

/// What a request brings to the choice of its backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hint {
    /// The hash of its consistent_hash key, if the upstream hashes and the
    /// request has the key.
    pub key: Option<u64>,
    /// The backend its sticky cookie names, by index, if it names one.
    pub pinned: Option<usize>,
}

impl Upstream {
    /// Picks a backend not in `tried` and leases a slot on it: the one the
    /// sticky cookie names or the key hashes to, if it may be taken; else a
    /// usable one if there is any, one without a recent failed connect if
    /// possible; otherwise (panic mode) one of the least bad.
    pub fn select(&self, tried: &[usize], hint: Hint) -> Option<(usize, Lease)> {
        if let Some(i) = hint.pinned.filter(|i| !tried.contains(i)) {
            if let Some(lease) = self.take_pinned(i, tried) {
                return Some((i, lease));
            }
        }
        if let (Some(hashed), Some(key)) = (&self.hashed, hint.key) {
            return self.select_hashed(hashed, tried, key);
        }
        // The common case in constant time: a first attempt, no slow start
        // to weigh, and the balancer's pick is preferred. Anything else
        // takes the general path below, which looks at every backend.
        if tried.is_empty() && self.slow_start.is_none() {
            let now = LazyNow::new();
            let preferred = |i: usize| {
                let h = self.backends[i].state.health();
                h.usable_lazy(&now) && !h.passed_over_lazy(&now)
            };
            let fast = match &self.least {
                Some(tree) => tree
                    .best(&now)
                    .filter(|&i| preferred(i) && tree.may_take(i, &now)),
                None => self
                    .balancer
                    .pick_fast(&self.backends, self.even, &preferred),
            };
            if let Some(i) = fast {
                return Some((i, self.lease(i, &now)));
            }
        }
        // Health can change between deciding the candidates and picking
        // among them (another thread ejects the last usable backend): then
        // decide again rather than answer 503. Each change is a real event,
        // so this ends at once in practice; the bound keeps it certain.
        for _ in 0..4 {
            let now = LazyNow::new();
            let candidates = self.candidates(tried, &now)?;
            if let Some(i) = self.pick(tried, candidates, &now) {
                return Some((i, self.lease(i, &now)));
            }
        }
        None
    }

    /// A lease on backend `i`, counted by least-connections' tree and by
    /// bounded load's total.
    pub(super) fn lease(&self, i: usize, now: &LazyNow) -> Lease {
        let state = &self.backends[i].state;
        let lease = state.lease(state.health().attempt_start(now));
        self.count(i, lease)
    }

    /// Adds the upstream's own counts to a lease on backend `i`.
    pub(super) fn count(&self, i: usize, lease: Lease) -> Lease {
        let lease = match &self.least {
            Some(tree) => lease.track(tree, i),
            None => lease,
        };
        match &self.hashed {
            Some(h) if h.factor > 0.0 => lease.count_in_upstream(),
            _ => lease,
        }
    }

    /// A lease on backend `i` if it is among the best candidates there
    /// are: a sticky backend keeps its clients while it may take traffic
    /// as much as any other.
    fn take_pinned(&self, i: usize, tried: &[usize]) -> Option<Lease> {
        let now = LazyNow::new();
        let h = self.backends.get(i)?.state.health();
        let best = (h.usable_lazy(&now) && !h.passed_over_lazy(&now))
            || self
                .candidates(tried, &now)
                .is_some_and(|c| self.is_candidate(i, tried, c, &now));
        best.then(|| self.lease(i, &now))
    }

    fn pick(&self, tried: &[usize], candidates: Candidates, now: &LazyNow) -> Option<usize> {
        let ramping = !matches!(candidates, Candidates::Panic(_))
            && self.slow_start.is_some_and(|window| {
                let since = now.get().saturating_sub(health::nanos(window));
                self.backends
                    .iter()
                    .any(|b| b.state.health().usable_since() > since)
            });
        let weight = |i: usize| {
            if !self.is_candidate(i, tried, candidates, now) {
                return 0;
            }
            let weight = u64::from(self.backends[i].weight);
            match self.slow_start {
                Some(window) if ramping => {
                    let since = self.backends[i].state.health().usable_since();
                    weight * health::ramp_permille(since, now.get(), window)
                }
                _ => weight * 1000,
            }
        };
        self.balancer
            .pick(&self.backends, &weight, self.even && !ramping)
    }

    /// Whether a backend outside `tried` could still be selected.
    pub fn has_untried(&self, tried: &[usize]) -> bool {
        self.candidates(tried, &LazyNow::new()).is_some()
    }

    /// Among the untried: preferred backends if there are any, else usable
    /// ones, else the least bad panic tier; `None` if nothing may be
    /// picked. A retry that has tried every usable backend goes on to the
    /// least bad of the others, as a first attempt does in panic mode:
    /// an ejected backend may well be back, and the alternative is a 502.
    pub(super) fn candidates(&self, tried: &[usize], now: &LazyNow) -> Option<Candidates> {
        let mut usable = false;
        for (i, b) in self.backends.iter().enumerate() {
            let h = b.state.health();
            if !tried.contains(&i) && h.usable_lazy(now) {
                if !h.passed_over_lazy(now) {
                    return Some(Candidates::Preferred);
                }
                usable = true;
            }
        }
        if usable {
            return Some(Candidates::Usable);
        }
        (0..self.backends.len())
            .filter(|i| !tried.contains(i))
            .filter_map(|i| self.backends[i].state.health().panic_tier())
            .min()
            .map(Candidates::Panic)
    }

    pub(super) fn is_candidate(
        &self,
        i: usize,
        tried: &[usize],
        c: Candidates,
        now: &LazyNow,
    ) -> bool {
        let health = self.backends[i].state.health();
        !tried.contains(&i)
            && match c {
                Candidates::Preferred => health.usable_lazy(now) && !health.passed_over_lazy(now),
                Candidates::Usable => health.usable_lazy(now),
                Candidates::Panic(tier) => health.panic_tier() == Some(tier),
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Balance;
    use crate::config::Config;
    use crate::config::Passive;
    use crate::pool::latency;
    use crate::pool::least::LoadTree;
    use crate::pool::Pool;
    use std::path::Path;
    use std::time::Duration;

    fn config(backends: &str) -> Config {
        let text = format!("[upstreams.app]\nbackends = [{backends}]\n");
        crate::config::parse(Path::new("test.toml"), &text).unwrap()
    }

    /// A pool of `n` least-connections backends on 127.0.0.1:3001 and on.
    fn least_connections_pool(n: usize) -> Pool {
        let list: Vec<String> = (0..n)
            .map(|i| format!("\"127.0.0.1:{}\"", 3001 + i))
            .collect();
        let text = format!(
            "[upstreams.app]\nbalance = \"least_connections\"\nbackends = [{}]\n",
            list.join(", ")
        );
        Pool::new(crate::config::parse(Path::new("t.toml"), &text).unwrap())
    }

    #[test]
    fn least_connections_takes_back_a_backend_when_its_ejection_ends() {
        // Enough backends for the tree rather than the scan.
        let n = LoadTree::MIN_BACKENDS + 4;
        let pool = least_connections_pool(n);
        let snapshot = pool.snapshot();
        let up = snapshot.default_upstream().unwrap();
        assert!(up.least.is_some());
        let eject = Passive {
            consecutive_failures: 1,
            ejection_time: Duration::from_millis(50),
            ..Passive::default()
        };
        let now = health::now();
        let ejected = up.backends()[0].state.health();
        assert!(ejected
            .record_failure(&eject, crate::config::Outcome::Connect, now, now)
            .is_some());
        // The others take everything meanwhile, and stay busy.
        let mut held = Vec::new();
        for _ in 1..n {
            let (i, lease) = up.select(&[], Default::default()).unwrap();
            assert_ne!(i, 0);
            held.push(lease);
        }
        // Nothing happens to backend 0 but time: the tree must notice, and
        // then backend 0 is the only one with nothing in flight.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while up.select(&[], Default::default()).unwrap().0 != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "backend 0 never came back"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!ejected.ejected(health::now()));
    }

    /// Least-connections holds back a backend answering in 20 ms among
    /// backends that answer at once, however busy they are, but for a
    /// probe a second: by scan (3 backends) and through the tree (20).
    #[test]
    fn least_connections_holds_back_a_slow_backend() {
        for n in [3, LoadTree::MIN_BACKENDS + 4] {
            let pool = least_connections_pool(n);
            let snapshot = pool.snapshot();
            let up = snapshot.default_upstream().unwrap();
            assert_eq!(up.least.is_some(), n > LoadTree::MIN_BACKENDS);
            // As the proxy does: responses come in while their leases are
            // held, and the leases end after.
            for (i, b) in up.backends().iter().enumerate() {
                let lease = up.lease(i, &LazyNow::new());
                let took = if i == 0 { 20_000_000 } else { 200_000 };
                for _ in 0..40 {
                    b.state.latency().record(took, health::now());
                }
                drop(lease);
            }
            let fastest = up.fastest_latency();
            assert!(up.backends()[0].state.latency().held_back(fastest));
            assert!(!up.backends()[1].state.latency().held_back(fastest));
            // Enough picks for the tree's periodic look at latencies.
            for _ in 0..1024 {
                up.select(&[], Default::default()).unwrap();
            }
            let mut held = Vec::new();
            for _ in 0..8 * (n - 1) {
                let (i, lease) = up.select(&[], Default::default()).unwrap();
                assert_ne!(i, 0, "n = {n}: picked the slow backend");
                held.push(lease);
            }
            if up.least.is_none() {
                continue;
            }
            // The tree's probe (the scan's is in the end-to-end tests): one
            // request, once a second has passed, and only one.
            std::thread::sleep(Duration::from_nanos(latency::PROBE_EVERY + 50_000_000));
            let (i, probe) = up.select(&[], Default::default()).unwrap();
            assert_eq!(i, 0, "n = {n}: no probe");
            for _ in 0..n {
                assert_ne!(
                    up.select(&[], Default::default()).unwrap().0,
                    0,
                    "n = {n}: a second probe"
                );
            }
            drop(probe);
        }
    }

    #[test]
    fn select_skips_tried_and_unhealthy() {
        let pool = Pool::new(config(
            r#""127.0.0.1:3001", "127.0.0.1:3002", "127.0.0.1:3003""#,
        ));
        let snap = pool.snapshot();
        let up = snap.default_upstream().unwrap();
        let down = up.backends()[1].state.health();
        down.record_check(false, "test".into(), (1, 1), health::now());
        for _ in 0..4 {
            let (i, _) = up.select(&[0], Default::default()).unwrap();
            assert_eq!(i, 2);
        }
        // Every usable backend tried: a retry goes on to the least bad of
        // the rest rather than give up.
        assert_eq!(up.select(&[0, 2], Default::default()).unwrap().0, 1);
        assert!(up.has_untried(&[0, 2]));
        assert!(up.select(&[0, 1, 2], Default::default()).is_none());
        assert!(!up.has_untried(&[0, 1, 2]));
    }

    /// A backend that refused a connection is down (or restarting): it
    /// has nothing in flight, so least-connections would send it nearly
    /// everything, each a failure and a retry; round-robin its share. Both
    /// pass it over while another backend has no such failure, by scan
    /// (3 backends) and through the tree (20), and take it back once it
    /// answers.
    /// The lines that pick `balance` (and what it needs).
    fn balance_lines(balance: &str) -> String {
        let key = if balance == "consistent_hash" {
            "hash_key = \"path\"\n"
        } else {
            ""
        };
        format!("balance = \"{balance}\"\n{key}")
    }

    /// A hint with the `k`-th of many keys.
    fn hint(k: usize) -> Hint {
        Hint {
            key: Some(crate::pool::ring::mix(k as u64)),
            pinned: None,
        }
    }

    #[test]
    fn a_backend_that_refused_a_connection_is_passed_over() {
        for balance in Balance::NAMES {
            for n in [3, LoadTree::MIN_BACKENDS + 4] {
                let list: Vec<String> = (0..n)
                    .map(|i| format!("\"127.0.0.1:{}\"", 3001 + i))
                    .collect();
                let text = format!(
                    "[upstreams.app]\n{}backends = [{}]\n",
                    balance_lines(balance),
                    list.join(", ")
                );
                let pool = Pool::new(crate::config::parse(Path::new("t.toml"), &text).unwrap());
                let snapshot = pool.snapshot();
                let up = snapshot.default_upstream().unwrap();
                let refused = &up.backends()[0].state;
                up.record_outcome(refused, 0, Some(crate::config::Outcome::Connect));
                assert!(up.is_ready(), "{balance}: a refusal is not an outage");
                for k in 0..4 * n {
                    let (i, lease) = up.select(&[], hint(k)).unwrap();
                    assert_ne!(i, 0, "{balance}, {n} backends: picked the refusing backend");
                    drop(lease);
                }
                // With every other backend tried, a retry still takes it.
                let others: Vec<usize> = (1..n).collect();
                assert_eq!(up.select(&others, hint(0)).unwrap().0, 0);
                // An answer on an attempt chosen after the refusal ends it.
                up.record_outcome(refused, health::now(), None);
                let picked = (0..40 * n).any(|k| up.select(&[], hint(k)).unwrap().0 == 0);
                assert!(picked, "{balance}, {n} backends: never taken back");
            }
        }
    }

    /// With every backend refusing, they are all still candidates: the
    /// pass-over ranks backends, it never empties the pool.
    #[test]
    fn when_every_backend_refused_each_is_still_picked() {
        let pool = Pool::new(config(r#""127.0.0.1:3001", "127.0.0.1:3002""#));
        let snapshot = pool.snapshot();
        let up = snapshot.default_upstream().unwrap();
        for b in up.backends() {
            up.record_outcome(&b.state, 0, Some(crate::config::Outcome::Connect));
        }
        let mut picks = [0; 2];
        for _ in 0..10 {
            picks[up.select(&[], Default::default()).unwrap().0] += 1;
        }
        assert_eq!(picks, [5, 5]);
    }

    #[test]
    fn a_recovered_backend_starts_at_a_tenth_of_its_weight() {
        for balance in Balance::NAMES {
            let text = format!(
                "[upstreams.app]\n{}slow_start = \"30s\"\n\
                 backends = [\"127.0.0.1:3001\", \"127.0.0.1:3002\"]\n\
                 [upstreams.app.health_check]\n",
                balance_lines(balance)
            );
            let pool = Pool::new(crate::config::parse(Path::new("t.toml"), &text).unwrap());
            let snap = pool.snapshot();
            let up = snap.default_upstream().unwrap();
            let h = up.backends()[1].state.health();
            h.record_check(false, "x".into(), (1, 1), health::now());
            h.record_check(true, "x".into(), (1, 1), health::now());
            let mut picks = [0; 2];
            for k in 0..1100 {
                picks[up.select(&[], hint(k)).unwrap().0] += 1;
            }
            if balance == "round_robin" || balance == "least_connections" {
                assert_eq!(picks, [1000, 100], "{balance}");
            } else {
                // Keys and random pairs: about a tenth of its share.
                assert!(picks[1] < 1100 / 5, "{balance}: {picks:?}");
                assert!(picks[1] > 0, "{balance}: {picks:?}");
            }
            assert_eq!(up.effective_weight(0, health::now()), 1.0);
            assert!(up.effective_weight(1, health::now()) < 0.2);
        }
    }
}
