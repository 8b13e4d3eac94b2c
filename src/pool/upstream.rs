//! One upstream in a snapshot: its backends and settings, and the choice
//! of a backend for each attempt, from the usable ones when there are any
//! and from the least bad otherwise (panic mode).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::health::{self, LazyNow};
use super::least::LoadTree;
use super::{latency, Backend, Balancer, Budget, LeastConnections, Registry, RoundRobin};
use crate::config::{Balance, HealthCheck, Passive, Timeouts, UpstreamConfig};

/// One upstream in a snapshot.
#[derive(Debug)]
pub struct Upstream {
    pub(super) name: String,
    pub(super) balance: Balance,
    pub(super) timeouts: Timeouts,
    pub(super) retries: usize,
    pub(super) backends: Vec<Backend>,
    pub(super) balancer: Box<dyn Balancer>,
    /// Least-connections' index of the backends by load.
    pub(super) least: Option<Arc<LoadTree>>,
    /// Every configured weight is the same.
    pub(super) even: bool,
    pub(super) health_check: Option<Arc<HealthCheck>>,
    pub(super) passive: Passive,
    pub(super) slow_start: Option<Duration>,
    pub(super) retry_budget: Budget,
    /// Held while deciding an ejection, so that the cap holds.
    pub(super) ejecting: Mutex<()>,
}

impl Upstream {
    /// `added_at`: when backends new to the registry count as usable
    /// since, for slow start.
    pub(super) fn build(config: &UpstreamConfig, registry: &mut Registry, added_at: u64) -> Self {
        let initial_up = config
            .health_check
            .as_ref()
            .is_none_or(|c| c.initial_healthy);
        let backends: Vec<Backend> = config
            .backends
            .iter()
            .map(|b| Backend {
                state: registry.state(&config.name, b, initial_up, added_at),
                weight: b.weight,
            })
            .collect();
        if config.health_check.is_none() {
            let now = health::now();
            for b in &backends {
                b.state.health().clear_checks(now);
            }
        }
        let balancer: Box<dyn Balancer> = match config.balance {
            Balance::RoundRobin => Box::new(RoundRobin::new(&backends)),
            Balance::LeastConnections => Box::new(LeastConnections::new(&backends)),
        };
        Upstream {
            name: config.name.clone(),
            balance: config.balance,
            timeouts: config.timeouts,
            retries: config.retries,
            even: backends.windows(2).all(|w| w[0].weight == w[1].weight),
            least: (config.balance == Balance::LeastConnections
                && backends.len() > LoadTree::MIN_BACKENDS)
                .then(|| Arc::new(LoadTree::new(&backends))),
            backends,
            balancer,
            health_check: config.health_check.clone().map(Arc::new),
            passive: config.passive,
            slow_start: config.slow_start,
            retry_budget: Budget::new(config.retry_budget, registry.window(&config.name)),
            ejecting: Mutex::new(()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn balance(&self) -> Balance {
        self.balance
    }

    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// Extra attempts allowed after a connect failure.
    pub fn retries(&self) -> usize {
        self.retries
    }

    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    pub fn health_check(&self) -> Option<&Arc<HealthCheck>> {
        self.health_check.as_ref()
    }

    pub fn passive(&self) -> &Passive {
        &self.passive
    }

    pub fn slow_start(&self) -> Option<Duration> {
        self.slow_start
    }

    /// How many retries the upstream's recent traffic allows.
    pub fn retry_budget(&self) -> &Budget {
        &self.retry_budget
    }

    /// At least one backend is usable.
    pub fn is_ready(&self) -> bool {
        let now = LazyNow::new();
        self.backends
            .iter()
            .any(|b| b.state.health().usable_lazy(&now))
    }

    /// No backend is usable, yet some may take traffic as the least bad.
    pub fn in_panic(&self) -> bool {
        !self.is_ready() && self.candidates(&[], &LazyNow::new()).is_some()
    }

    /// The base latency least-connections compares every backend with:
    /// the lowest among usable judged backends (see [`latency`]). Backend
    /// `i` is held back if `latency().held_back(` this `)`; for `/status`.
    pub fn fastest_latency(&self) -> Option<u64> {
        let now = LazyNow::new();
        let usable = self
            .backends
            .iter()
            .filter(|b| b.state.health().usable_lazy(&now));
        latency::fastest(usable.map(|b| b.state.latency().compared()))
    }

    /// Backend `i`'s weight now, slow start included (what `/status` shows).
    pub fn effective_weight(&self, i: usize, now: u64) -> f64 {
        let b = &self.backends[i];
        let share = self.slow_start.map_or(1000, |window| {
            health::ramp_permille(b.state.health().usable_since(), now, window)
        });
        f64::from(b.weight) * share as f64 / 1000.0
    }
}
