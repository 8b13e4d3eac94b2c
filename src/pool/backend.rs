//! Per-backend state that outlives any one config: in-flight count, health
//! and counters, shared by every snapshot that lists the backend.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use super::health::Health;
use super::keepalive::{Grouping, Pooling};
use super::latency::Latency;
use super::least::LoadTree;
use super::p2c::PeakEwma;
use super::upstream::Counters;
use crate::metrics::BackendSeries;

/// The live state of one backend of one upstream.
///
/// Kept in an `Arc` and keyed by (upstream, address) in the pool's registry,
/// so a reload that keeps the backend keeps this state.
#[derive(Debug)]
pub struct BackendState {
    address: String,
    socket_addr: SocketAddr,
    in_flight: AtomicUsize,
    health: Health,
    requests: AtomicU64,
    failures: AtomicU64,
    latency: Latency,
    ewma: PeakEwma,
    /// Its upstream's counters (shared by the upstream's backends, by
    /// name), kept alive by every backend state that may still count in
    /// them: bounded load's total in flight.
    upstream: Arc<Counters>,
    /// This backend's metric series, looked up on its first response
    /// rather than by label on every one.
    pub(crate) series: OnceLock<BackendSeries>,
    /// Which of the proxy's pooled connections may carry its requests, and
    /// how long they may idle; see [`retire`](Self::retire) and
    /// [`announce_keepalive`](Self::announce_keepalive).
    pooling: Pooling,
    /// Whether the current snapshot lists it as drained: set by the pool
    /// right after it stores each snapshot, from that snapshot. See
    /// [`is_drained`](Self::is_drained).
    drained: AtomicBool,
}

impl BackendState {
    /// A new backend with nothing in flight, of an upstream of its own.
    pub fn new(address: String, socket_addr: SocketAddr, health: Health) -> Self {
        Self::of_upstream(address, socket_addr, health, Arc::default())
    }

    /// A new backend with nothing in flight, of the upstream that counts
    /// in `upstream`.
    pub fn of_upstream(
        address: String,
        socket_addr: SocketAddr,
        health: Health,
        upstream: Arc<Counters>,
    ) -> Self {
        BackendState {
            upstream,
            address,
            socket_addr,
            in_flight: AtomicUsize::new(0),
            health,
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            latency: Latency::default(),
            ewma: PeakEwma::default(),
            series: OnceLock::new(),
            pooling: Pooling::default(),
            drained: AtomicBool::new(false),
        }
    }

    /// Whether the current snapshot has it drained. A request routed in
    /// an older snapshot reads this after taking its lease: then either it
    /// sees the drain (and picks again in the current snapshot), or the
    /// drain's count of what is left sees its lease ([`left_in_flight`]
    /// (Self::left_in_flight)); both sides use sequentially consistent
    /// order, so never neither.
    pub fn is_drained(&self) -> bool {
        self.drained.load(Ordering::SeqCst)
    }

    /// Called by the pool only, from the snapshot it has just stored.
    pub(super) fn set_drained(&self, drained: bool) {
        self.drained.store(drained, Ordering::SeqCst);
    }

    /// Requests in flight, read after [`is_drained`](Self::is_drained)'s
    /// flag was set: what a drain still waits for.
    pub fn left_in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Part of the key of the pooled connections its requests use (in the
    /// peer's `group_key`): unique to this state, and changed by
    /// [`retire`](Self::retire) and by a shorter keep-alive announced.
    pub fn connection_group(&self) -> u64 {
        self.pooling.get().group
    }

    /// Its connection group and the shortest keep-alive it announced (in
    /// seconds), read together: a peer built from them never pairs a
    /// group with a timeout longer than its connections may idle.
    pub fn pooling(&self) -> Grouping {
        self.pooling.get()
    }

    /// The backend answered with `Keep-Alive: timeout=seconds`: a shorter
    /// one than before is kept, and moves it to a new connection group,
    /// so that no connection pooled under a longer idle timeout is lent
    /// again (see [`keepalive`](super::keepalive)). Returns whether it
    /// moved.
    pub fn announce_keepalive(&self, seconds: u64) -> bool {
        self.pooling.announce(seconds)
    }

    /// No snapshot lists it any more. Pingora offers no way to close the
    /// idle connections of one peer in its pool, so instead they are never
    /// lent again: requests still in flight finish on theirs, which return
    /// to the pool under the old group, and a backend at this address
    /// later (the address may now be another server's) gets new ones. The
    /// old idle ones close at `idle_timeout`, or when the server closes
    /// them, whichever is first.
    pub fn retire(&self) {
        self.pooling.retire();
    }

    /// The address as written in the config.
    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn socket_addr(&self) -> SocketAddr {
        self.socket_addr
    }

    /// Requests sent to this backend and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Requests that got a response from this backend.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Attempts that failed (connect, timeout, reset, protocol).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// How quickly it answers, for least-connections.
    pub fn latency(&self) -> &Latency {
        &self.latency
    }

    /// Its decaying peak latency, for least_latency.
    pub fn ewma(&self) -> &PeakEwma {
        &self.ewma
    }

    pub fn record_response(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one request in flight, sent at `now` (see
    /// [`health::now`](super::health::now)), until the lease is dropped.
    pub fn lease(self: &Arc<Self>, now: u64) -> Lease {
        // Ordered before the lease's check of `drained`.
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.leased(now)
    }

    /// Like [`lease`](Self::lease), but only while fewer than `bound` are
    /// in flight: the check and the count are one step, so no two
    /// requests can both take the last slot.
    pub fn try_lease(self: &Arc<Self>, bound: usize, now: u64) -> Option<Lease> {
        self.in_flight
            .fetch_update(Ordering::SeqCst, Ordering::Relaxed, |n| {
                (n < bound).then_some(n + 1)
            })
            .ok()?;
        Some(self.leased(now))
    }

    fn leased(self: &Arc<Self>, now: u64) -> Lease {
        Lease {
            backend: Arc::clone(self),
            started: now,
            tree: None,
            counted: false,
        }
    }
}

/// One in-flight request on a backend. Dropping it gives the slot back, so
/// every exit path (response, error, retry, client abort, panic) releases it.
#[derive(Debug)]
pub struct Lease {
    backend: Arc<BackendState>,
    started: u64,
    /// The least-connections tree that counts this lease, and the
    /// backend's leaf in it.
    tree: Option<(Arc<LoadTree>, usize)>,
    /// Counted in the upstream's total in flight, for bounded load.
    counted: bool,
}

impl Lease {
    /// Counts this lease as backend `i`'s pick in `tree`, and its end.
    pub(super) fn track(mut self, tree: &Arc<LoadTree>, i: usize) -> Self {
        tree.picked(i);
        self.tree = Some((Arc::clone(tree), i));
        self
    }

    /// Counts this lease in its upstream's total too, until it ends.
    pub(super) fn count_in_upstream(mut self) -> Self {
        self.backend
            .upstream
            .in_flight
            .fetch_add(1, Ordering::Relaxed);
        self.counted = true;
        self
    }

    pub fn backend(&self) -> &Arc<BackendState> {
        &self.backend
    }

    /// When the backend was chosen for this attempt.
    pub fn started(&self) -> u64 {
        self.started
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Every lease incremented once in `BackendState::lease`, so this
        // cannot underflow.
        self.backend.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some((tree, i)) = &self.tree {
            tree.update(*i);
        }
        if self.counted {
            self.backend
                .upstream
                .in_flight
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_counts_in_flight_until_dropped() {
        let b = Arc::new(BackendState::new(
            "a".into(),
            "127.0.0.1:1".parse().unwrap(),
            Health::new(true, 0),
        ));
        let first = b.lease(0);
        let second = b.lease(0);
        assert_eq!(b.in_flight(), 2);
        drop(first);
        assert_eq!(b.in_flight(), 1);
        drop(second);
        assert_eq!(b.in_flight(), 0);
    }
}
