//! The upstream pool: one consistent snapshot of every upstream and its
//! backends behind a single `ArcSwap`, built over per-backend state that
//! survives snapshots (so reloads and health checks plug in here).

mod backend;
mod balance;
mod budget;
pub mod health;
pub mod latency;
mod least;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

pub use backend::{BackendState, Lease};
pub use balance::{Balancer, LeastConnections, RoundRobin};
pub use budget::{Budget, RetryWindow};

use crate::config::{
    BackendConfig, Balance, Config, HealthCheck, Passive, Timeouts, UpstreamConfig,
};
use health::{Health, LazyNow};
use least::LoadTree;

/// One backend as the current snapshot sees it: shared state plus the
/// weight this config gives it.
#[derive(Debug)]
pub struct Backend {
    pub state: Arc<BackendState>,
    /// 1 or more.
    pub weight: u32,
}

/// One upstream in a snapshot.
#[derive(Debug)]
pub struct Upstream {
    name: String,
    balance: Balance,
    timeouts: Timeouts,
    retries: usize,
    backends: Vec<Backend>,
    balancer: Box<dyn Balancer>,
    /// Least-connections' index of the backends by load.
    least: Option<Arc<LoadTree>>,
    /// Every configured weight is the same.
    even: bool,
    health_check: Option<Arc<HealthCheck>>,
    passive: Passive,
    slow_start: Option<Duration>,
    retry_budget: Budget,
}

/// Which backends a pick may choose from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Candidates {
    /// Those that are usable (the normal case).
    Usable,
    /// None is usable: those in this panic tier (see `Health::panic_tier`).
    Panic(u8),
}

impl Upstream {
    /// `added_at`: when backends new to the registry count as usable
    /// since, for slow start.
    fn build(config: &UpstreamConfig, registry: &mut Registry, added_at: u64) -> Self {
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

    /// Picks a backend not in `tried` and leases a slot on it: a usable one
    /// if there is any; otherwise (panic mode) one of the least bad.
    pub fn select(&self, tried: &[usize]) -> Option<(usize, Lease)> {
        // The common case in constant time: a first attempt, no slow start
        // to weigh, and the balancer's pick is usable. Anything else takes
        // the general path below, which looks at every backend.
        if tried.is_empty() && self.slow_start.is_none() {
            let now = LazyNow::new();
            let usable = |i: usize| self.backends[i].state.health().usable_lazy(&now);
            let fast = match &self.least {
                Some(tree) => tree
                    .best(&now)
                    .filter(|&i| usable(i) && tree.may_take(i, &now)),
                None => self.balancer.pick_fast(&self.backends, self.even, &usable),
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

    /// A lease on backend `i`, counted by least-connections' tree.
    fn lease(&self, i: usize, now: &LazyNow) -> Lease {
        let state = &self.backends[i].state;
        let lease = state.lease(state.health().attempt_start(now));
        match &self.least {
            Some(tree) => lease.track(tree, i),
            None => lease,
        }
    }

    fn pick(&self, tried: &[usize], candidates: Candidates, now: &LazyNow) -> Option<usize> {
        let ramping = candidates == Candidates::Usable
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

    /// Usable backends if there are any (tried or not), else the least bad
    /// panic tier among the untried; `None` if nothing may be picked.
    fn candidates(&self, tried: &[usize], now: &LazyNow) -> Option<Candidates> {
        let mut any_usable = false;
        for (i, b) in self.backends.iter().enumerate() {
            if b.state.health().usable_lazy(now) {
                if !tried.contains(&i) {
                    return Some(Candidates::Usable);
                }
                any_usable = true;
            }
        }
        if any_usable {
            return None;
        }
        (0..self.backends.len())
            .filter(|i| !tried.contains(i))
            .filter_map(|i| self.backends[i].state.health().panic_tier())
            .min()
            .map(Candidates::Panic)
    }

    fn is_candidate(&self, i: usize, tried: &[usize], c: Candidates, now: &LazyNow) -> bool {
        let health = self.backends[i].state.health();
        !tried.contains(&i)
            && match c {
                Candidates::Usable => health.usable_lazy(now),
                Candidates::Panic(tier) => health.panic_tier() == Some(tier),
            }
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

/// Everything a request needs to be routed, consistent with one config.
#[derive(Debug)]
pub struct Snapshot {
    /// Counts snapshots installed in this process, from 1.
    pub version: u64,
    pub config: Arc<Config>,
    upstreams: Vec<Arc<Upstream>>,
    default: usize,
}

impl Snapshot {
    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// The upstream for a request. There is one route for now: the default
    /// upstream; host and path routing will choose here.
    pub fn route(&self) -> &Arc<Upstream> {
        &self.upstreams[self.default]
    }
}

/// Backend states by (upstream, address), and retry windows by upstream.
/// Weak, so a backend that no snapshot lists goes away once its last lease
/// ends, and an upstream's window once no snapshot lists the upstream.
#[derive(Debug, Default)]
struct Registry {
    states: HashMap<(String, String), Weak<BackendState>>,
    windows: HashMap<String, Weak<RetryWindow>>,
}

impl Registry {
    fn state(
        &mut self,
        upstream: &str,
        backend: &BackendConfig,
        initial_up: bool,
        added_at: u64,
    ) -> Arc<BackendState> {
        let (address, socket_addr) = (&backend.address, backend.socket_addr);
        let key = (upstream.to_string(), address.to_string());
        if let Some(state) = self.states.get(&key).and_then(Weak::upgrade) {
            if state.socket_addr() == socket_addr {
                return state;
            }
        }
        let state = Arc::new(BackendState::new(
            address.to_string(),
            socket_addr,
            Health::new(initial_up, added_at),
        ));
        self.states.insert(key, Arc::downgrade(&state));
        state
    }

    /// The retry window of `upstream`: the one it had if it stays.
    fn window(&mut self, upstream: &str) -> Arc<RetryWindow> {
        if let Some(window) = self.windows.get(upstream).and_then(Weak::upgrade) {
            return window;
        }
        let window = Arc::new(RetryWindow::default());
        self.windows
            .insert(upstream.to_string(), Arc::downgrade(&window));
        window
    }

    fn is_live(&self, upstream: &str, address: &str) -> bool {
        let key = (upstream.to_string(), address.to_string());
        self.states.get(&key).is_some_and(|w| w.strong_count() > 0)
    }

    fn prune(&mut self) {
        self.states.retain(|_, w| w.strong_count() > 0);
        self.windows.retain(|_, w| w.strong_count() > 0);
    }
}

/// The live pool: the current snapshot and the state registry behind it.
#[derive(Debug)]
pub struct Pool {
    current: ArcSwap<Snapshot>,
    registry: Mutex<Registry>,
    /// The version of the current snapshot, for those that follow changes.
    versions: tokio::sync::watch::Sender<u64>,
}

impl Pool {
    pub fn new(config: Config) -> Self {
        let mut registry = Registry::default();
        // The first config's backends are not new: no slow start for them.
        let snapshot = build_snapshot(config, 1, &mut registry, 0);
        Pool {
            current: ArcSwap::from_pointee(snapshot),
            registry: Mutex::new(registry),
            versions: tokio::sync::watch::Sender::new(1),
        }
    }

    /// The current snapshot. Load it once per request and keep the `Arc`;
    /// never hold a guard across an `.await`.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Installs a snapshot of `config`, reusing the state of every backend
    /// that stays. Returns the new version.
    pub fn install(&self, config: Config) -> u64 {
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let version = self.current.load().version + 1;
        let snapshot = build_snapshot(config, version, &mut registry, health::now());
        self.current.store(Arc::new(snapshot));
        registry.prune();
        self.versions.send_replace(version);
        version
    }

    /// Whether the state of this backend still exists: listed in a
    /// snapshot, or a request on it still in flight.
    pub fn is_live(&self, upstream: &str, address: &str) -> bool {
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        registry.is_live(upstream, address)
    }

    /// Sees the version change each time a snapshot is installed.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.versions.subscribe()
    }
}

fn build_snapshot(
    config: Config,
    version: u64,
    registry: &mut Registry,
    added_at: u64,
) -> Snapshot {
    let upstreams = config
        .upstreams
        .iter()
        .map(|u| Arc::new(Upstream::build(u, registry, added_at)))
        .collect();
    Snapshot {
        version,
        default: config.default_upstream,
        config: Arc::new(config),
        upstreams,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(backends: &str) -> Config {
        let text = format!("[upstreams.app]\nbackends = [{backends}]\n");
        crate::config::parse(Path::new("test.toml"), &text).unwrap()
    }

    #[test]
    fn install_keeps_state_of_backends_that_stay() {
        let pool = Pool::new(config(r#""127.0.0.1:3001", "127.0.0.1:3002""#));
        let before = pool.snapshot();
        let (_, lease) = before.route().select(&[]).unwrap();
        let kept = Arc::clone(lease.backend());
        let version = pool.install(config(
            r#""127.0.0.1:3002", "127.0.0.1:3001", "127.0.0.1:3003""#,
        ));
        assert_eq!(version, 2);
        let after = pool.snapshot();
        let same = after
            .route()
            .backends()
            .iter()
            .find(|b| b.state.address() == kept.address())
            .unwrap();
        assert!(Arc::ptr_eq(&same.state, &kept));
        assert_eq!(same.state.in_flight(), 1);
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
        let up = snapshot.route();
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
            let (i, lease) = up.select(&[]).unwrap();
            assert_ne!(i, 0);
            held.push(lease);
        }
        // Nothing happens to backend 0 but time: the tree must notice, and
        // then backend 0 is the only one with nothing in flight.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while up.select(&[]).unwrap().0 != 0 {
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
            let up = snapshot.route();
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
                up.select(&[]).unwrap();
            }
            let mut held = Vec::new();
            for _ in 0..8 * (n - 1) {
                let (i, lease) = up.select(&[]).unwrap();
                assert_ne!(i, 0, "n = {n}: picked the slow backend");
                held.push(lease);
            }
            if up.least.is_none() {
                continue;
            }
            // The tree's probe (the scan's is in the end-to-end tests): one
            // request, once a second has passed, and only one.
            std::thread::sleep(Duration::from_nanos(latency::PROBE_EVERY + 50_000_000));
            let (i, probe) = up.select(&[]).unwrap();
            assert_eq!(i, 0, "n = {n}: no probe");
            for _ in 0..n {
                assert_ne!(up.select(&[]).unwrap().0, 0, "n = {n}: a second probe");
            }
            drop(probe);
        }
    }

    #[test]
    fn install_keeps_the_retry_window_of_upstreams_that_stay() {
        let pool = Pool::new(config(r#""127.0.0.1:3001""#));
        let now = health::now();
        pool.snapshot().route().retry_budget().record_request(now);
        let text = "[upstreams.app]\nbackends = [\"127.0.0.1:3002\"]\n\
                    [upstreams.app.retry_budget]\nratio = 0.5\n\
                    [upstreams.other]\nbackends = [\"127.0.0.1:3003\"]\n\
                    [server]\ndefault_upstream = \"app\"\n";
        pool.install(crate::config::parse(Path::new("test.toml"), text).unwrap());
        let snapshot = pool.snapshot();
        let app = snapshot.route().retry_budget();
        assert_eq!(app.settings().ratio, 0.5);
        assert_eq!(app.window().recent(now), (1, 0));
        let other = &snapshot.upstreams()[1];
        assert_eq!(other.name(), "other");
        assert_eq!(other.retry_budget().window().recent(now), (0, 0));
    }

    #[test]
    fn select_skips_tried_and_unhealthy() {
        let pool = Pool::new(config(
            r#""127.0.0.1:3001", "127.0.0.1:3002", "127.0.0.1:3003""#,
        ));
        let snap = pool.snapshot();
        let up = snap.route();
        let down = up.backends()[1].state.health();
        down.record_check(false, "test".into(), (1, 1), health::now());
        for _ in 0..4 {
            let (i, _) = up.select(&[0]).unwrap();
            assert_eq!(i, 2);
        }
        assert!(up.select(&[0, 2]).is_none());
        assert!(!up.has_untried(&[0, 2]));
    }

    #[test]
    fn a_recovered_backend_starts_at_a_tenth_of_its_weight() {
        for balance in Balance::NAMES {
            let text = format!(
                "[upstreams.app]\nbalance = \"{balance}\"\nslow_start = \"30s\"\n\
                 backends = [\"127.0.0.1:3001\", \"127.0.0.1:3002\"]\n\
                 [upstreams.app.health_check]\n"
            );
            let pool = Pool::new(crate::config::parse(Path::new("t.toml"), &text).unwrap());
            let snap = pool.snapshot();
            let up = snap.route();
            let h = up.backends()[1].state.health();
            h.record_check(false, "x".into(), (1, 1), health::now());
            h.record_check(true, "x".into(), (1, 1), health::now());
            let mut picks = [0; 2];
            for _ in 0..110 {
                picks[up.select(&[]).unwrap().0] += 1;
            }
            assert_eq!(picks, [100, 10], "{balance}");
            assert_eq!(up.effective_weight(0, health::now()), 1.0);
            assert!(up.effective_weight(1, health::now()) < 0.2);
        }
    }
}

/// Selection never returns a backend that is down, ejected or removed
/// while a usable one exists, whatever the mix.
#[cfg(test)]
mod properties {
    use super::*;
    use crate::config::{Outcome, Passive};
    use proptest::prelude::*;
    use std::path::Path;

    fn config(ports: &[u16], balance: &str) -> Config {
        let list: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
        let text = format!(
            "[upstreams.app]\nbalance = \"{balance}\"\nbackends = [{}]\n\
             [upstreams.app.health_check]\n",
            list.join(", ")
        );
        crate::config::parse(Path::new("p.toml"), &text).unwrap()
    }

    proptest! {
        #[test]
        fn selection_avoids_down_ejected_and_removed_backends(
            // Per backend: 0 usable, 1 failing checks, 2 ejected.
            states in prop::collection::vec(0u8..3, 2..=10),
            removed in prop::collection::vec(any::<bool>(), 10),
            least in any::<bool>(),
        ) {
            let balance = if least { "least_connections" } else { "round_robin" };
            let ports: Vec<u16> = (0..states.len() as u16).map(|i| 4000 + i).collect();
            let pool = Pool::new(config(&ports, balance));
            let now = health::now();
            let eject = Passive { consecutive_failures: 1, ..Passive::default() };
            {
                let snapshot = pool.snapshot();
                for (b, state) in snapshot.route().backends().iter().zip(&states) {
                    let h = b.state.health();
                    match state {
                        1 => { h.record_check(false, "down".into(), (1, 1), now); }
                        2 => { h.record_failure(&eject, Outcome::Connect, now, now); }
                        _ => {}
                    }
                }
            }
            // Remove some backends by reloading without them (keep one).
            let kept: Vec<u16> = ports
                .iter()
                .zip(&removed)
                .enumerate()
                .filter(|(i, (_, r))| *i == 0 || !**r)
                .map(|(_, (p, _))| *p)
                .collect();
            pool.install(config(&kept, balance));
            let snapshot = pool.snapshot();
            let up = snapshot.route();
            let any_usable = up.backends().iter().any(|b| b.state.health().usable(health::now()));
            for _ in 0..3 * states.len() {
                let (i, _lease) = up.select(&[]).expect("panic mode still picks");
                let chosen = &up.backends()[i].state;
                let port = chosen.socket_addr().port();
                prop_assert!(kept.contains(&port), "picked removed backend {port}");
                if any_usable {
                    prop_assert!(chosen.health().usable(health::now()), "picked {port} while a usable one exists");
                }
            }
        }

        /// Pools over `LoadTree::MIN_BACKENDS` pick through the tree,
        /// smaller ones by scanning: both must always pick a least loaded
        /// usable backend.
        #[test]
        fn least_connections_tree_picks_a_least_loaded_usable_backend(
            weights in prop::collection::vec(1u32..6, 1..60),
            down in prop::collection::vec(any::<bool>(), 60),
            // Per step: which backend to lease directly (as a retry or an
            // older snapshot would), and whether to end the oldest lease.
            steps in prop::collection::vec((0usize..60, any::<bool>(), any::<bool>()), 1..120),
        ) {
            let list: Vec<String> = weights
                .iter()
                .enumerate()
                .map(|(i, w)| format!("{{ address = \"127.0.0.1:{}\", weight = {w} }}", 5000 + i))
                .collect();
            let text = format!(
                "[upstreams.app]\nbalance = \"least_connections\"\nbackends = [{}]\n\
                 [upstreams.app.health_check]\n",
                list.join(", ")
            );
            let pool = Pool::new(crate::config::parse(Path::new("p.toml"), &text).unwrap());
            let snapshot = pool.snapshot();
            let up = snapshot.route();
            let n = weights.len();
            let now = health::now();
            for (b, &d) in up.backends().iter().zip(&down) {
                if d {
                    b.state.health().record_check(false, "down".into(), (1, 1), now);
                }
            }
            let usable: Vec<usize> = (0..n).filter(|&i| !down[i]).collect();
            let mut held = std::collections::VecDeque::new();
            for (target, direct, release) in steps {
                if release {
                    held.pop_front();
                }
                if direct {
                    held.push_back((target % n, up.lease(target % n, &LazyNow::new())));
                    continue;
                }
                let (i, lease) = up.select(&[]).expect("something is picked");
                let load = |j: usize| up.backends()[j].state.in_flight() as u64 - u64::from(j == i);
                let w = |j: usize| u64::from(weights[j]);
                if !usable.is_empty() {
                    prop_assert!(usable.contains(&i), "picked {i}, which is down");
                    for &j in &usable {
                        prop_assert!(
                            load(i) * w(j) <= load(j) * w(i),
                            "picked {i} ({}/{}) over {j} ({}/{})", load(i), w(i), load(j), w(j)
                        );
                    }
                }
                held.push_back((i, lease));
            }
        }
    }
}
