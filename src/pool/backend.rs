//! Per-backend state that outlives any one config: in-flight count, health
//! and counters, shared by every snapshot that lists the backend.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use super::health::Health;
use super::latency::Latency;
use super::least::LoadTree;
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
    /// This backend's metric series, looked up on its first response
    /// rather than by label on every one.
    pub(crate) series: OnceLock<BackendSeries>,
}

impl BackendState {
    /// A new backend with nothing in flight.
    pub fn new(address: String, socket_addr: SocketAddr, health: Health) -> Self {
        BackendState {
            address,
            socket_addr,
            in_flight: AtomicUsize::new(0),
            health,
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            latency: Latency::default(),
            series: OnceLock::new(),
        }
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

    pub fn record_response(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one request in flight, sent at `now` (see
    /// [`health::now`](super::health::now)), until the lease is dropped.
    pub fn lease(self: &Arc<Self>, now: u64) -> Lease {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Lease {
            backend: Arc::clone(self),
            started: now,
            tree: None,
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
}

impl Lease {
    /// Counts this lease as backend `i`'s pick in `tree`, and its end.
    pub(super) fn track(mut self, tree: &Arc<LoadTree>, i: usize) -> Self {
        tree.picked(i);
        self.tree = Some((Arc::clone(tree), i));
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
