//! Consistent hashing with bounded load: a ring of points, each owned by a
//! backend, where a request's key lands on the first point at or after its
//! hash and goes to that point's owner.
//!
//! - **Stable.** A backend's points depend only on its own id (a hash of
//!   its upstream and address as written) and weight, so adding or
//!   removing one backend moves only the keys of its own points, about 1/N
//!   of them, and none between backends that stay. Weight `w` gives `w`
//!   times the points, so about `w` times the keys.
//! - **Health.** An unusable backend's keys go to the owners of the points
//!   after its own, spread over the others, and come back when it does.
//! - **Bounded load** (Mirrokni, Thorup and Zadimoghaddam, "Consistent
//!   Hashing with Bounded Loads"): no backend takes a request while it has
//!   `ceil(factor × (in-flight + 1) / usable backends)` in flight or more;
//!   the key moves on along the ring to the next backend with room. The
//!   check and the lease are one compare-and-swap, so the bound holds under
//!   any concurrency.
//!
//! The ring itself is in `ring.rs`.

use std::sync::atomic::Ordering;

use super::health::{self, LazyNow};
use super::ring::{bound, mix};
use super::{Hashed, Lease, Upstream};

/// Why a key went where it went, for `/explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChoice {
    /// The backend owning the key's point.
    pub owner: usize,
    /// Where a request with the key would go now; `None` if nowhere.
    pub chosen: Option<usize>,
    pub why: String,
}

impl Upstream {
    /// consistent_hash for a request with a key: the owner of its point,
    /// or the first owner after it that may take the request (a candidate
    /// as `select` means it, admitted by slow start, under the bound).
    pub(super) fn select_hashed(
        &self,
        h: &Hashed,
        tried: &[usize],
        key: u64,
    ) -> Option<(usize, Lease)> {
        for _ in 0..4 {
            let now = LazyNow::new();
            let candidates = self.candidates(tried, &now)?;
            let eligible = |i: usize| {
                self.is_candidate(i, tried, candidates, &now) && self.ramp_admits(h, i, key, &now)
            };
            let take = |i: usize, bound: Option<usize>| {
                let state = &self.backends[i].state;
                match bound {
                    None => Some(self.lease(i, &now)),
                    Some(b) => state
                        .try_lease(b, state.health().attempt_start(&now))
                        .map(|lease| self.count(i, lease)),
                }
            };
            if let Some((i, lease, _)) = self.walk(h, key, &eligible, take) {
                return Some((i, lease));
            }
        }
        None
    }

    /// Where a request with `key` would go now and why, taking nothing.
    pub fn explain_key(&self, key: u64) -> Option<KeyChoice> {
        let h = self.hashed.as_ref().filter(|h| !h.ring.is_empty())?;
        let owner = h.ring.owner(h.ring.find(key));
        let now = LazyNow::new();
        let Some(candidates) = self.candidates(&[], &now) else {
            let why = "no backend may take traffic".to_string();
            return Some(KeyChoice {
                owner,
                chosen: None,
                why,
            });
        };
        let eligible = |i: usize| {
            self.is_candidate(i, &[], candidates, &now) && self.ramp_admits(h, i, key, &now)
        };
        let take = |i: usize, bound: Option<usize>| {
            let load = self.backends[i].state.in_flight();
            bound.is_none_or(|b| load < b).then_some(load)
        };
        let (chosen, _, over) = self.walk(h, key, &eligible, take)?;
        let address = |i: usize| self.backends[i].state.address().to_string();
        let why = if chosen == owner {
            "the owner of the key's point".to_string()
        } else if over {
            "every backend is at its bound: the first that may take it".to_string()
        } else if eligible(owner) {
            format!(
                "its owner {} is at the bounded-load limit: the next backend on the ring with room",
                address(owner)
            )
        } else {
            format!(
                "its owner {} may not take traffic now (see its state): the next backend on the ring",
                address(owner)
            )
        };
        Some(KeyChoice {
            owner,
            chosen: Some(chosen),
            why,
        })
    }

    /// Walks the ring from `key`'s point: the first eligible owner that
    /// `take` accepts (with the bound, when there is one), or, if every
    /// eligible backend is at the bound, the first eligible one without
    /// it (the `true`). `None` if no backend is eligible.
    fn walk<T>(
        &self,
        h: &Hashed,
        key: u64,
        eligible: &dyn Fn(usize) -> bool,
        mut take: impl FnMut(usize, Option<usize>) -> Option<T>,
    ) -> Option<(usize, T, bool)> {
        if h.ring.is_empty() {
            return None;
        }
        let bounded = h.factor > 0.0;
        let total = self.counters.in_flight.load(Ordering::Relaxed);
        // The bound with every backend counted is the lowest it can be: a
        // backend under it is under the real one, counted only if needed.
        let lowest = bound(h.factor, total, self.backends.len());
        let mut exact: Option<(usize, usize)> = None;
        let mut first = None;
        let mut full: Option<Vec<bool>> = None;
        let mut p = h.ring.find(key);
        for _ in 0..h.ring.len() {
            let i = h.ring.owner(p);
            p = h.ring.next(p);
            if full.as_ref().is_some_and(|f| f[i]) || !eligible(i) {
                continue;
            }
            if !bounded {
                return take(i, None).map(|t| (i, t, false));
            }
            first.get_or_insert(i);
            let load = self.backends[i].state.in_flight();
            let bound = if load < lowest {
                lowest
            } else {
                let (usable, b) = *exact.get_or_insert_with(|| {
                    let n = (0..self.backends.len()).filter(|&j| eligible(j)).count();
                    (n, bound(h.factor, total, n))
                });
                let f = full.get_or_insert_with(|| vec![false; self.backends.len()]);
                if f.iter().filter(|&&x| x).count() >= usable {
                    break;
                }
                b
            };
            match take(i, Some(bound)) {
                Some(t) => return Some((i, t, false)),
                None => {
                    if let Some(f) = full.as_mut() {
                        f[i] = true;
                        let (usable, _) = exact.unwrap_or((usize::MAX, 0));
                        if f.iter().filter(|&&x| x).count() >= usable {
                            break;
                        }
                    }
                }
            }
        }
        let i = first?;
        take(i, None).map(|t| (i, t, true))
    }

    /// Slow start for a key: a backend ramping up takes the keys whose
    /// draw is under its share, so its share of keys grows with its weight.
    fn ramp_admits(&self, h: &Hashed, i: usize, key: u64, now: &LazyNow) -> bool {
        let Some(window) = self.slow_start else {
            return true;
        };
        let since = self.backends[i].state.health().usable_since();
        if since.saturating_add(health::nanos(window)) <= now.get() {
            return true;
        }
        let share = health::ramp_permille(since, now.get(), window);
        mix(key ^ h.ids[i]) % 1000 < share
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Outcome, Passive};
    use crate::pool::{key_hash, Hint, Pool};
    use std::path::Path;

    /// A consistent_hash upstream of `n` backends on 127.0.0.1:3001 and on.
    fn pool(n: usize, extra: &str) -> Pool {
        let list: Vec<String> = (0..n)
            .map(|i| format!("\"127.0.0.1:{}\"", 3001 + i))
            .collect();
        let text = format!(
            "[upstreams.app]\nbalance = \"consistent_hash\"\nhash_key = \"path\"\n{extra}\
             backends = [{}]\n",
            list.join(", ")
        );
        Pool::new(crate::config::parse(Path::new("t.toml"), &text).unwrap())
    }

    fn keyed(k: usize) -> Hint {
        Hint {
            key: Some(key_hash(format!("/user/{k}").as_bytes())),
            pinned: None,
        }
    }

    fn owners(up: &Upstream, keys: usize) -> Vec<usize> {
        (0..keys)
            .map(|k| up.select(&[], keyed(k)).unwrap().0)
            .collect()
    }

    #[test]
    fn an_unusable_owner_s_keys_move_to_the_others_and_come_back() {
        let pool = pool(5, "");
        let snapshot = pool.snapshot();
        let up = snapshot.default_upstream().unwrap();
        let before = owners(up, 1000);
        assert_eq!(before, owners(up, 1000), "the same key, the same backend");
        let now = health::now();
        let h = up.backends()[2].state.health();
        h.record_check(false, "down".into(), (1, 1), now);
        let during = owners(up, 1000);
        for (k, (&b, &d)) in before.iter().zip(&during).enumerate() {
            if b == 2 {
                assert_ne!(d, 2, "key {k} still on the ejected backend");
            } else {
                assert_eq!(d, b, "key {k} moved between backends that stay");
            }
        }
        // Its keys spread over the others rather than piling on one.
        let moved: std::collections::BTreeSet<usize> = before
            .iter()
            .zip(&during)
            .filter(|(b, _)| **b == 2)
            .map(|(_, d)| *d)
            .collect();
        assert!(moved.len() >= 3, "{moved:?}");
        h.record_check(true, "up".into(), (1, 1), now);
        assert_eq!(owners(up, 1000), before, "its keys come back");
        // Ejected, the same.
        let eject = Passive {
            consecutive_failures: 1,
            ..Passive::default()
        };
        up.backends()[4]
            .state
            .health()
            .record_failure(&eject, Outcome::Reset, now, now);
        for (b, d) in before.iter().zip(owners(up, 1000)) {
            assert!(if *b == 4 { d != 4 } else { d == *b });
        }
    }

    #[test]
    fn bounded_load_caps_a_hot_key_at_the_bound_and_moves_it_along_the_ring() {
        let pool = pool(3, "");
        let snapshot = pool.snapshot();
        let up = snapshot.default_upstream().unwrap();
        let hot = keyed(7);
        let owner = up.select(&[], hot).unwrap().0;
        let mut held = Vec::new();
        for _ in 0..30 {
            let total = up.counters().in_flight.load(Ordering::Relaxed);
            let limit = bound(1.25, total, 3);
            let (i, lease) = up.select(&[], hot).unwrap();
            for (j, b) in up.backends().iter().enumerate() {
                assert!(
                    b.state.in_flight() <= limit,
                    "backend {j} over {limit} after {total}"
                );
            }
            held.push((i, lease));
        }
        assert_eq!(up.counters().in_flight.load(Ordering::Relaxed), 30);
        let on_owner = held.iter().filter(|(i, _)| *i == owner).count();
        assert!(
            (10..=13).contains(&on_owner),
            "the owner took {on_owner} of 30"
        );
        let choice = up.explain_key(hot.key.unwrap()).unwrap();
        assert_eq!(choice.owner, owner);
        assert!(choice.why.contains("bounded-load limit"), "{}", choice.why);
        drop(held);
        assert_eq!(up.counters().in_flight.load(Ordering::Relaxed), 0);
        assert_eq!(
            up.explain_key(hot.key.unwrap()).unwrap().chosen,
            Some(owner)
        );
    }

    #[test]
    fn without_bounded_load_a_hot_key_stays_on_its_owner() {
        let pool = pool(3, "hash_balance_factor = 0\n");
        let snapshot = pool.snapshot();
        let up = snapshot.default_upstream().unwrap();
        let hot = keyed(7);
        let held: Vec<_> = (0..20).map(|_| up.select(&[], hot).unwrap()).collect();
        assert!(held.iter().all(|(i, _)| *i == held[0].0));
    }

    #[test]
    fn a_retry_walks_on_from_the_backend_it_tried() {
        let pool = pool(4, "");
        let snapshot = pool.snapshot();
        let up = snapshot.default_upstream().unwrap();
        let (first, _) = up.select(&[], keyed(3)).unwrap();
        let (second, _) = up.select(&[first], keyed(3)).unwrap();
        assert_ne!(first, second);
        let (third, _) = up.select(&[first, second], keyed(3)).unwrap();
        assert!(third != first && third != second);
    }
}
