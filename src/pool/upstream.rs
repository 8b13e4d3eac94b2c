//! One upstream in a snapshot: its backends and settings, and the choice
//! of a backend for each attempt, from the usable ones when there are any
//! and from the least bad otherwise (panic mode).

use crate::proxy::PeerTemplate;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::drains::Drains;
use super::health::{self, LazyNow};
use super::least::LoadTree;
use super::p2c::LeastLatency;
use super::ring::{self, Ring};
use super::{latency, Backend, Balancer, Budget, LeastConnections, Member, Registry, RoundRobin};
use crate::config::{Balance, HashKey, HealthCheck, Passive, Sticky, Timeouts, UpstreamConfig};

/// What one upstream counts across snapshots (kept by name).
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests in flight on all its backends, for bounded load.
    pub in_flight: AtomicUsize,
    /// Requests to a consistent_hash upstream that had no key.
    pub hash_misses: AtomicU64,
}

/// consistent_hash's ring and settings.
#[derive(Debug)]
pub struct Hashed {
    pub ring: Ring,
    pub key: HashKey,
    /// 0: no bound.
    pub factor: f64,
    /// Each backend's id on the ring, by index.
    pub ids: Box<[u64]>,
}

/// The sticky cookie's settings and each backend's id in it.
#[derive(Debug)]
pub struct StickyIds {
    pub config: Sticky,
    /// By backend index: 16 hex digits, not the address.
    ids: Box<[String]>,
    by_id: HashMap<String, usize>,
    /// The ids of drained backends, and their addresses: a cookie naming
    /// one gets a new pick, as a stale one does.
    drained: HashMap<String, String>,
}

impl StickyIds {
    fn new(
        config: &Sticky,
        upstream: &str,
        backends: &[Backend],
        drained: &[Backend],
    ) -> StickyIds {
        let secret = config.secret.as_deref().unwrap_or("");
        let id = |b: &Backend| {
            let input = format!("{secret}\0{upstream}\0{}", b.state.address());
            format!("{:016x}", xxhash_rust::xxh3::xxh3_64(input.as_bytes()))
        };
        let ids: Box<[String]> = backends.iter().map(id).collect();
        let drained = drained
            .iter()
            .map(|b| (id(b), b.state.address().to_string()))
            .collect();
        let by_id = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i))
            .collect();
        StickyIds {
            config: config.clone(),
            ids,
            by_id,
            drained,
        }
    }

    /// Backend `i`'s id.
    pub fn id(&self, i: usize) -> &str {
        &self.ids[i]
    }

    /// The backend with this id, if any (a forged or stale id is none).
    pub fn backend(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// The address of the drained backend with this id, if one is.
    pub fn drained_backend(&self, id: &str) -> Option<&str> {
        self.drained.get(id).map(String::as_str)
    }
}

/// One upstream in a snapshot.
#[derive(Debug)]
pub struct Upstream {
    pub(super) name: String,
    pub(super) balance: Balance,
    pub(super) timeouts: Timeouts,
    pub(super) retries: usize,
    /// The backends that take requests: what every balancer chooses from.
    pub(super) backends: Vec<Backend>,
    /// Those drained on the admin port: listed (checked, counted, shown)
    /// but never chosen.
    pub(super) draining: Vec<Backend>,
    /// Drain marks on addresses it no longer lists (the file or DNS dropped
    /// them): they come back drained if listed again.
    pub(super) drained_unlisted: Vec<(String, std::time::SystemTime)>,
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
    pub(super) hashed: Option<Hashed>,
    pub(super) sticky: Option<StickyIds>,
    pub(super) latency_decay: Duration,
    pub(super) counters: Arc<Counters>,
    /// How its backends are reached: protocol and TLS.
    pub(super) peer: Arc<PeerTemplate>,
}

impl Upstream {
    /// `added_at`: when backends new to the registry count as usable
    /// since, for slow start.
    /// `members`: its backends, from the file and from DNS; those `drains`
    /// marks are listed apart, out of every balancer.
    pub(super) fn build(
        config: &UpstreamConfig,
        members: &[Member<'_>],
        registry: &mut Registry,
        drains: &Drains,
        added_at: u64,
    ) -> Self {
        let initial_up = config
            .health_check
            .as_ref()
            .is_none_or(|c| c.initial_healthy);
        let counters = registry.counters(&config.name);
        let (mut backends, mut draining) = (Vec::new(), Vec::new());
        for m in members {
            let state = registry.state(&config.name, m.config, initial_up, added_at, &counters);
            let drained = drains.since(&config.name, state.address());
            let list = if drained.is_some() {
                &mut draining
            } else {
                &mut backends
            };
            list.push(Backend {
                state,
                weight: m.config.weight,
                name: m.name.map(Arc::from),
                drained,
            });
        }
        let mut drained_unlisted = drains.of(&config.name);
        drained_unlisted.retain(|(a, _)| draining.iter().all(|b| b.state.address() != a));
        if config.health_check.is_none() {
            let now = health::now();
            for b in backends.iter().chain(&draining) {
                b.state.health().clear_checks(now);
            }
        }
        let balancer: Box<dyn Balancer> = match config.balance {
            // consistent_hash falls back to round-robin for requests
            // without a key.
            Balance::RoundRobin | Balance::ConsistentHash => Box::new(RoundRobin::new(&backends)),
            Balance::LeastConnections => Box::new(LeastConnections::new(&backends)),
            Balance::LeastLatency => Box::new(LeastLatency::new(config.latency_decay, &backends)),
        };
        let hashed = config.hash_key.clone().map(|key| {
            let ids: Box<[u64]> = backends
                .iter()
                .map(|b| ring::backend_id(&config.name, b.state.address()))
                .collect();
            let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
            Hashed {
                ring: Ring::new(&ids, &weights),
                key,
                factor: config.hash_balance_factor,
                ids,
            }
        });
        let sticky = config
            .sticky
            .as_ref()
            .map(|s| StickyIds::new(s, &config.name, &backends, &draining));
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
            draining,
            drained_unlisted,
            balancer,
            health_check: config.health_check.clone().map(Arc::new),
            passive: config.passive,
            slow_start: config.slow_start,
            retry_budget: Budget::new(config.retry_budget, registry.window(&config.name)),
            ejecting: Mutex::new(()),
            hashed,
            sticky,
            latency_decay: config.latency_decay,
            counters,
            peer: Arc::new(PeerTemplate::new(config)),
        }
    }

    /// How its backends are reached.
    pub fn peer_template(&self) -> &Arc<PeerTemplate> {
        &self.peer
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

    /// The backends requests may be sent to, by the index selection uses.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// The backends drained on the admin port: no new request goes to them.
    pub fn draining(&self) -> &[Backend] {
        &self.draining
    }

    /// Drain marks on addresses it no longer lists, with since when.
    pub fn drained_unlisted(&self) -> &[(String, std::time::SystemTime)] {
        &self.drained_unlisted
    }

    /// Every backend it lists: those that take requests, then the drained.
    pub fn listed(&self) -> impl Iterator<Item = &Backend> {
        self.backends.iter().chain(&self.draining)
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

    /// consistent_hash's ring and settings, for that balance.
    pub fn hashed(&self) -> Option<&Hashed> {
        self.hashed.as_ref()
    }

    /// The sticky cookie, if configured.
    pub fn sticky(&self) -> Option<&StickyIds> {
        self.sticky.as_ref()
    }

    /// How long least_latency remembers a latency.
    pub fn latency_decay(&self) -> Duration {
        self.latency_decay
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
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
