//! The process's drain: the moment it starts to hand its sockets to a new
//! process or to shut down. Requests read it on every response (a cheap
//! check), and open tunnels wait for it, to close at a time of their own
//! within the grace period.
//!
//! Tunnels are long-lived (WebSockets), so closing them all when the drain
//! begins, or all when the grace period ends, would send every client back
//! to reconnect in one wave. Each tunnel instead closes at its own instant,
//! drawn uniformly over the first [`SPREAD`] of the grace period; the rest
//! is the margin for the closes themselves before Pingora stops the
//! runtime.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The share of the grace period over which tunnels are closed.
pub const SPREAD: f64 = 0.9;

/// Set once, when the drain begins; never unset.
#[derive(Debug, Default)]
pub struct Draining {
    began: OnceLock<Instant>,
    began_notify: Notify,
}

impl Draining {
    /// Not draining yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The drain begins now, unless it already has.
    pub fn begin(&self) {
        if self.began.set(Instant::now()).is_ok() {
            self.began_notify.notify_waiters();
        }
    }

    /// Whether the drain has begun.
    pub fn is_set(&self) -> bool {
        self.began.get().is_some()
    }

    /// When the drain began, if it has.
    pub fn began_at(&self) -> Option<Instant> {
        self.began.get().copied()
    }

    /// When the drain began, waiting for it if it has not.
    pub async fn began(&self) -> Instant {
        let notified = self.began_notify.notified();
        tokio::pin!(notified);
        // Registered before the check, so a `begin` in between is not missed.
        notified.as_mut().enable();
        if let Some(at) = self.began.get() {
            return *at;
        }
        notified.await;
        // `begin` sets the instant before it notifies.
        self.began.get().copied().unwrap_or_else(Instant::now)
    }

    /// Resolves at this tunnel's close time once the drain has begun: a
    /// random instant within the first [`SPREAD`] of `grace_period` after
    /// the drain began (at once for a tunnel opened later than its instant).
    pub async fn tunnel_closes(&self, grace_period: Duration) {
        let began = self.began().await;
        let offset = spread(grace_period, rand::random::<f64>());
        tokio::time::sleep_until(began + offset).await;
    }
}

/// The close offset for a tunnel whose random draw is `unit` (in `[0, 1)`):
/// that fraction of the spread part of `grace_period`.
fn spread(grace_period: Duration, unit: f64) -> Duration {
    grace_period.mul_f64(SPREAD * unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_cover_the_first_nine_tenths_of_the_grace_period() {
        let grace = Duration::from_secs(10);
        assert_eq!(spread(grace, 0.0), Duration::ZERO);
        assert_eq!(spread(grace, 0.5), Duration::from_millis(4500));
        assert_eq!(spread(grace, 1.0), Duration::from_secs(9));
        // Out-of-range draws stay within the spread.
        assert_eq!(spread(grace, -1.0), Duration::ZERO);
        assert_eq!(spread(grace, 2.0), Duration::from_secs(9));
        assert_eq!(spread(Duration::ZERO, 0.7), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_tunnel_waits_for_the_drain_then_for_its_instant() {
        let draining = Draining::new();
        assert!(!draining.is_set());
        let grace = Duration::from_secs(10);
        let closes = draining.tunnel_closes(grace);
        tokio::pin!(closes);
        // Long before any drain, nothing closes.
        let waited = tokio::time::timeout(Duration::from_secs(3600), closes.as_mut()).await;
        assert!(waited.is_err());
        draining.begin();
        let began = Instant::now();
        assert!(draining.is_set());
        closes.await;
        assert!(Instant::now() - began <= grace.mul_f64(SPREAD));
        // A second `begin` keeps the first instant.
        draining.begin();
        assert_eq!(draining.began().await, began);
    }
}
