//! The upstream pool: one consistent snapshot of every upstream and its
//! backends behind a single `ArcSwap`, built over per-backend state that
//! survives snapshots (so reloads and health checks plug in here).

mod backend;
mod balance;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;

pub use backend::{BackendState, Lease};
pub use balance::{Balancer, LeastConnections, RoundRobin};

use crate::config::{Balance, Config, Timeouts, UpstreamConfig};

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
}

impl Upstream {
    fn build(config: &UpstreamConfig, registry: &mut Registry) -> Self {
        let backends: Vec<Backend> = config
            .backends
            .iter()
            .map(|b| Backend {
                state: registry.state(&config.name, &b.address, b.socket_addr),
                weight: b.weight,
            })
            .collect();
        let balancer: Box<dyn Balancer> = match config.balance {
            Balance::RoundRobin => Box::new(RoundRobin::new(&backends)),
            Balance::LeastConnections => Box::new(LeastConnections::new(&backends)),
        };
        Upstream {
            name: config.name.clone(),
            balance: config.balance,
            timeouts: config.timeouts,
            retries: config.retries,
            backends,
            balancer,
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

    /// Picks a healthy backend not in `tried` and leases a slot on it.
    pub fn select(&self, tried: &[usize]) -> Option<(usize, Lease)> {
        let i = self
            .balancer
            .pick(&self.backends, &|i| self.usable(i, tried))?;
        Some((i, self.backends[i].state.lease()))
    }

    /// Whether a backend outside `tried` could still be selected.
    pub fn has_untried(&self, tried: &[usize]) -> bool {
        (0..self.backends.len()).any(|i| self.usable(i, tried))
    }

    fn usable(&self, i: usize, tried: &[usize]) -> bool {
        !tried.contains(&i) && self.backends[i].state.is_healthy()
    }

    /// At least one backend is healthy.
    pub fn is_ready(&self) -> bool {
        self.backends.iter().any(|b| b.state.is_healthy())
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

/// Backend states by (upstream, address). Weak, so a backend that no
/// snapshot lists goes away once its last lease ends.
#[derive(Debug, Default)]
struct Registry {
    states: HashMap<(String, String), Weak<BackendState>>,
}

impl Registry {
    fn state(
        &mut self,
        upstream: &str,
        address: &str,
        socket_addr: std::net::SocketAddr,
    ) -> Arc<BackendState> {
        let key = (upstream.to_string(), address.to_string());
        if let Some(state) = self.states.get(&key).and_then(Weak::upgrade) {
            if state.socket_addr() == socket_addr {
                return state;
            }
        }
        let state = Arc::new(BackendState::new(address.to_string(), socket_addr));
        self.states.insert(key, Arc::downgrade(&state));
        state
    }

    fn prune(&mut self) {
        self.states.retain(|_, w| w.strong_count() > 0);
    }
}

/// The live pool: the current snapshot and the state registry behind it.
#[derive(Debug)]
pub struct Pool {
    current: ArcSwap<Snapshot>,
    registry: Mutex<Registry>,
}

impl Pool {
    pub fn new(config: Config) -> Self {
        let mut registry = Registry::default();
        let snapshot = build_snapshot(config, 1, &mut registry);
        Pool {
            current: ArcSwap::from_pointee(snapshot),
            registry: Mutex::new(registry),
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
        let snapshot = build_snapshot(config, version, &mut registry);
        self.current.store(Arc::new(snapshot));
        registry.prune();
        version
    }
}

fn build_snapshot(config: Config, version: u64, registry: &mut Registry) -> Snapshot {
    let upstreams = config
        .upstreams
        .iter()
        .map(|u| Arc::new(Upstream::build(u, registry)))
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

    #[test]
    fn select_skips_tried_and_unhealthy() {
        let pool = Pool::new(config(
            r#""127.0.0.1:3001", "127.0.0.1:3002", "127.0.0.1:3003""#,
        ));
        let snap = pool.snapshot();
        let up = snap.route();
        up.backends()[1].state.set_healthy(false);
        for _ in 0..4 {
            let (i, _) = up.select(&[0]).unwrap();
            assert_eq!(i, 2);
        }
        assert!(up.select(&[0, 2]).is_none());
        assert!(!up.has_untried(&[0, 2]));
    }
}
