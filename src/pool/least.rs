//! Least-connections in logarithmic time: a tournament tree over an
//! upstream's backends.
//!
//! Each leaf is a backend and each inner node holds the index of the best
//! backend below it, so the root is the pick. Best means usable first,
//! then without a recent failed connect, then not held back for slowness
//! (see [`latency`](super::latency)) unless due for a probe, then fewest in
//! flight per unit of weight, then the earliest turn: each pick moves the
//! backend's turn on by `TURN / weight`, so equally loaded backends take
//! turns in proportion to their weights.
//!
//! A lease and its release each update one leaf-to-root path. What changes
//! without passing through this tree is caught by a rebuild: a change of
//! health anywhere, the end of an ejection or of the pass-over after a
//! failed connect, a held-back backend's next probe, and, every so many
//! picks on a thread ([`REBUILD_EVERY`] or more), counts moved by leases of
//! an older snapshot and latencies compared against the fastest backend as
//! it was. Concurrent updates can leave a node briefly out of date; the
//! pick is then one of the least loaded rather than the least, until the
//! next update of that path.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use super::health::{self, LazyNow};
use super::latency;
use super::{Backend, BackendState};

/// An empty leaf (the tree's width is a power of two).
const NONE: u32 = u32::MAX;

/// One turn at weight 1; weights are at most 10,000, so a turn at any
/// weight is still a whole number of at least 1,677.
const TURN: u64 = 1 << 24;

/// Picks on one thread between rebuilds, at least; a large pool waits
/// 16 picks per backend, so a rebuild costs at most 1/16 of a comparison
/// per pick.
const REBUILD_EVERY: u32 = 1024;

#[derive(Debug)]
pub struct LoadTree {
    states: Vec<Arc<BackendState>>,
    weights: Vec<u64>,
    turns: Box<[AtomicU64]>,
    /// Heap order: the root at 1, node k's children at 2k and 2k + 1, the
    /// leaves from `width` on.
    nodes: Box<[AtomicU32]>,
    width: usize,
    /// [`health::changes`] when the tree was last rebuilt.
    built_at: AtomicU64,
    /// When to rebuild: the earliest end of an ejection or probe of a
    /// held-back backend, and a second after the last rebuild at the latest.
    wake_at: AtomicU64,
    /// The base latency of the fastest usable backend at the last
    /// rebuild, as [`latency::fastest`] gives it; 0 for none.
    fastest: AtomicU64,
    /// Per backend: held back for slowness, and not due for a probe. Set
    /// at a rebuild, and at the backend's own picks and releases.
    held: Box<[AtomicBool]>,
    /// How many of `held` are set, so that comparisons skip the flags in
    /// the common case of none.
    held_count: AtomicUsize,
    rebuilding: AtomicBool,
    /// Picks between periodic rebuilds, for this pool's size.
    rebuild_every: u32,
}

impl LoadTree {
    /// Pools this small are faster to scan, above all with threads picking
    /// at once: the tree's shared nodes are written on every pick and
    /// release, and for a few backends they share a cache line.
    pub const MIN_BACKENDS: usize = 16;

    pub fn new(backends: &[Backend]) -> Self {
        let width = backends.len().next_power_of_two().max(1);
        let tree = LoadTree {
            states: backends.iter().map(|b| Arc::clone(&b.state)).collect(),
            weights: backends.iter().map(|b| u64::from(b.weight)).collect(),
            turns: backends.iter().map(|_| AtomicU64::new(0)).collect(),
            nodes: (0..2 * width)
                .map(|k| {
                    let leaf = k.checked_sub(width).filter(|&i| i < backends.len());
                    AtomicU32::new(leaf.map_or(NONE, |i| i as u32))
                })
                .collect(),
            width,
            built_at: AtomicU64::new(0),
            wake_at: AtomicU64::new(0),
            fastest: AtomicU64::new(0),
            held: backends.iter().map(|_| AtomicBool::new(false)).collect(),
            held_count: AtomicUsize::new(0),
            rebuilding: AtomicBool::new(false),
            rebuild_every: REBUILD_EVERY.max(16u32.saturating_mul(backends.len() as u32)),
        };
        tree.rebuild(health::changes());
        tree
    }

    /// The best backend at `now`. Not necessarily usable: with none usable
    /// the caller chooses another way.
    pub fn best(&self, now: &LazyNow) -> Option<usize> {
        let changes = health::changes();
        let wake_at = self.wake_at.load(Ordering::Relaxed);
        if changes != self.built_at.load(Ordering::Relaxed)
            || (wake_at != 0 && wake_at <= now.get())
            || due_for_rebuild(self.rebuild_every)
        {
            self.rebuild(changes);
        }
        let root = self
            .nodes
            .get(1)
            .map_or(NONE, |n| n.load(Ordering::Relaxed));
        (root != NONE).then_some(root as usize)
    }

    /// Backend `i` was picked: it takes its turn, and its lease counts.
    pub fn picked(&self, i: usize) {
        // A load and a store rather than an atomic add: two threads picking
        // the same backend at once may move its turn on only once, which
        // costs a tie-break, not a count.
        let turn = &self.turns[i];
        turn.store(
            turn.load(Ordering::Relaxed) + TURN / self.weights[i],
            Ordering::Relaxed,
        );
        self.update(i);
    }

    /// Backend `i`'s count in flight changed: fix its path to the root.
    pub fn update(&self, i: usize) {
        let now = LazyNow::new();
        self.set_held(i, self.held_back(i, &now));
        let mut node = (self.width + i) / 2;
        while node >= 1 {
            let best = self.better(self.child(2 * node), self.child(2 * node + 1), &now);
            // A load and a store: cheaper than a swap, and a lost race
            // only leaves a node for the next update to fix.
            let old = self.nodes[node].load(Ordering::Relaxed);
            if old != best {
                self.nodes[node].store(best, Ordering::Relaxed);
            }
            // Above here nothing changes unless this node's best did, or
            // is the backend whose count moved.
            if old == best && best as usize != i {
                break;
            }
            node /= 2;
        }
    }

    fn child(&self, k: usize) -> u32 {
        self.nodes[k].load(Ordering::Relaxed)
    }

    /// Recomputes every node from the live state. One thread at a time;
    /// another that finds a rebuild under way uses the tree as it is.
    fn rebuild(&self, changes: u64) {
        if self.rebuilding.swap(true, Ordering::Acquire) {
            return;
        }
        let now = LazyNow::new();
        // A backend that sat out (ejected, down) rejoins one turn behind
        // the furthest, rather than winning every tie until it catches up.
        let furthest = self
            .turns
            .iter()
            .map(|t| t.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        for turn in self.turns.iter() {
            turn.fetch_max(furthest.saturating_sub(TURN), Ordering::Relaxed);
        }
        let usable = || self.states.iter().filter(|s| s.health().usable_lazy(&now));
        let fastest = latency::fastest(usable().map(|s| s.latency().compared()));
        self.fastest.store(fastest.unwrap_or(0), Ordering::Relaxed);
        for i in 0..self.held.len() {
            self.set_held(i, self.held_back(i, &now));
        }
        for node in (1..self.width).rev() {
            let best = self.better(self.child(2 * node), self.child(2 * node + 1), &now);
            self.nodes[node].store(best, Ordering::Relaxed);
        }
        let wake_at = self
            .states
            .iter()
            .flat_map(|s| [s.health().ejected_until(), s.health().passed_over_until()])
            .filter(|&until| until != 0 && until > now.get())
            .chain(
                usable()
                    .filter(|s| s.latency().held_back(fastest))
                    // A probe due but not yet takeable (a request still in
                    // flight) is looked at again a little later, until it
                    // is overdue and taken anyway.
                    .map(|s| {
                        s.latency()
                            .probe_at()
                            .max(now.get() + latency::PROBE_EVERY / 16)
                    }),
            )
            // Latencies change without an event: compare them again at
            // least this often, however little traffic there is.
            .chain([now.get() + latency::PROBE_EVERY])
            .min()
            .unwrap_or(0);
        self.wake_at.store(wake_at, Ordering::Relaxed);
        self.built_at.store(changes, Ordering::Relaxed);
        self.rebuilding.store(false, Ordering::Release);
    }

    /// Whether least-connections holds backend `i` back now: slow, and not
    /// due for a probe.
    fn held_back(&self, i: usize, now: &LazyNow) -> bool {
        let (state, latency) = (&self.states[i], self.states[i].latency());
        latency.held_back(self.fastest()) && !latency.probe_due(now.get(), state.in_flight())
    }

    /// Whether backend `i`, the best, may take the request: it is not held
    /// back, or this takes its probe.
    pub fn may_take(&self, i: usize, now: &LazyNow) -> bool {
        let (state, latency) = (&self.states[i], self.states[i].latency());
        if !latency.held_back(self.fastest()) {
            return true;
        }
        let probe = latency.claim_probe(now.get(), state.in_flight());
        // Probed or not, it is held back until its next probe is due; if
        // not probed, the path moves on from it now, rather than leaving
        // every pick to fall back to the scan.
        self.set_held(i, true);
        if !probe {
            self.update(i);
        }
        probe
    }

    /// Sets backend `i`'s flag in `held`, written only on a change: the
    /// flags share cache lines.
    fn set_held(&self, i: usize, held: bool) {
        let flag = &self.held[i];
        if flag.load(Ordering::Relaxed) != held && flag.swap(held, Ordering::Relaxed) != held {
            if held {
                self.held_count.fetch_add(1, Ordering::Relaxed);
            } else {
                self.held_count.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// The fastest usable backend's base latency at the last rebuild.
    fn fastest(&self) -> Option<u64> {
        Some(self.fastest.load(Ordering::Relaxed)).filter(|&f| f != 0)
    }

    /// The better of two nodes' backends (`a` on a tie: it is to the left).
    fn better(&self, a: u32, b: u32, now: &LazyNow) -> u32 {
        if a == NONE {
            return b;
        }
        if b == NONE {
            return a;
        }
        let (x, y) = (a as usize, b as usize);
        let (sx, sy) = (&self.states[x], &self.states[y]);
        let (hx, hy) = (sx.health(), sy.health());
        let (ux, uy) = (hx.usable_lazy(now), hy.usable_lazy(now));
        if ux != uy {
            return if ux { a } else { b };
        }
        // A recent failed connect: a process that is down refuses at once
        // and has nothing in flight, so it would look the least loaded.
        let (ax, ay) = (hx.passed_over_lazy(now), hy.passed_over_lazy(now));
        if ax != ay {
            return if ay { a } else { b };
        }
        if self.held_count.load(Ordering::Relaxed) > 0 {
            let (hx, hy) = (
                self.held[x].load(Ordering::Relaxed),
                self.held[y].load(Ordering::Relaxed),
            );
            if hx != hy {
                return if hy { a } else { b };
            }
        }
        // In flight per weight, compared as fx/wx against fy/wy.
        let fx = sx.in_flight() as u64 * self.weights[y];
        let fy = sy.in_flight() as u64 * self.weights[x];
        match fx.cmp(&fy) {
            std::cmp::Ordering::Less => a,
            std::cmp::Ordering::Greater => b,
            std::cmp::Ordering::Equal => {
                let (tx, ty) = (
                    self.turns[x].load(Ordering::Relaxed),
                    self.turns[y].load(Ordering::Relaxed),
                );
                if ty < tx {
                    b
                } else {
                    a
                }
            }
        }
    }
}

/// Counts picks on this thread; true once every `every`.
fn due_for_rebuild(every: u32) -> bool {
    thread_local! {
        static PICKS: Cell<u32> = const { Cell::new(0) };
    }
    PICKS.with(|picks| {
        let n = picks.get().wrapping_add(1);
        picks.set(n);
        n % every == 0
    })
}
