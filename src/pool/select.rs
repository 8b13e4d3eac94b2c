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
mod tests;
