//! The upstream pool: one consistent snapshot of every upstream and its
//! backends behind a single `ArcSwap`, built over per-backend state that
//! survives snapshots (so reloads and health checks plug in here).

mod backend;
mod balance;
mod budget;
mod build;
mod drains;
mod hash;
pub mod health;
pub mod keepalive;
pub mod latency;
mod least;
mod outcome;
mod p2c;
#[cfg(test)]
mod properties;
mod registry;
mod ring;
mod select;
mod upstream;

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

pub use backend::{BackendState, Lease};
pub use balance::{Balancer, LeastConnections, RoundRobin};
pub use budget::{Budget, RetryWindow};
pub use hash::KeyChoice;
pub use outcome::Verdict;
pub use ring::{key_hash, Ring};
pub use select::Hint;
pub use upstream::{Counters, Hashed, StickyIds, Upstream};

use crate::config::{BackendConfig, Config};
use crate::metrics::RouteSeries;
use crate::route;
pub use build::Change;
use build::{Builder, Member};
pub use drains::{DrainError, DrainProgress};
use registry::Registry;

/// One backend as the current snapshot sees it: shared state plus the
/// weight this config gives it.
#[derive(Debug)]
pub struct Backend {
    pub state: Arc<BackendState>,
    /// 1 or more.
    pub weight: u32,
    /// The DNS name it came from; `None`: the file lists it.
    pub name: Option<Arc<str>>,
    /// Since when it is drained on the admin port, if it is.
    pub drained: Option<std::time::SystemTime>,
}

/// Everything a request needs to be routed, consistent with one config:
/// the routes and the upstreams they name swap together.
#[derive(Debug)]
pub struct Snapshot {
    /// Counts snapshots installed in this process, from 1.
    pub version: u64,
    pub config: Arc<Config>,
    upstreams: Vec<Arc<Upstream>>,
    routes: route::Table,
    /// Each route's metric series, by its index in the table, looked up
    /// on its first request rather than by label on every one.
    pub(crate) route_series: Box<[RouteSeries]>,
}

impl Snapshot {
    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    pub fn routes(&self) -> &route::Table {
        &self.routes
    }

    /// The upstream that takes requests no route matches, if any.
    pub fn default_upstream(&self) -> Option<&Arc<Upstream>> {
        self.routes.default_upstream().map(|i| &self.upstreams[i])
    }

    /// The upstream of this name, if the config has it: where a retry
    /// after a reload looks for the upstream its request started on.
    pub fn upstream_named(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| u.name() == name)
    }
}

/// The live pool: the current snapshot and the builder behind it.
#[derive(Debug)]
pub struct Pool {
    current: ArcSwap<Snapshot>,
    /// Every snapshot is built and stored with this held: reloads and DNS
    /// answers form one ordered stream of snapshots, each built over the
    /// last.
    builder: Mutex<Builder>,
    /// The version of the current snapshot, for those that follow changes.
    versions: tokio::sync::watch::Sender<u64>,
}

impl Pool {
    pub fn new(config: Config) -> Self {
        let mut builder = Builder::new(config);
        // The first config's backends are not new: no slow start for them.
        let snapshot = builder.build(1, 0);
        Pool {
            current: ArcSwap::from_pointee(snapshot),
            builder: Mutex::new(builder),
            versions: tokio::sync::watch::Sender::new(1),
        }
    }

    /// The current snapshot. Load it once per request and keep the `Arc`;
    /// never hold a guard across an `.await`.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Installs a snapshot of `config`, reusing the state of every backend
    /// that stays, and the last answer of every DNS name it still follows.
    /// Returns the new version.
    pub fn install(&self, config: Config) -> u64 {
        let mut builder = self.builder();
        builder.set_config(config);
        self.rebuild(&mut builder)
    }

    /// Takes `backends` as the latest answer for `name`, which `upstream`
    /// follows, and installs a snapshot with them if they changed anything
    /// (a backend that stays keeps its state, as on a reload). `None` if
    /// nothing changed, or if the config no longer follows the name.
    pub fn discovered(
        &self,
        upstream: &str,
        name: &str,
        backends: Vec<BackendConfig>,
    ) -> Option<Change> {
        let mut builder = self.builder();
        let mut change = builder.set_answer(upstream, name, backends)?;
        change.version = self.rebuild(&mut builder);
        Some(change)
    }

    fn builder(&self) -> std::sync::MutexGuard<'_, Builder> {
        self.builder.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Builds and stores the next snapshot; backends it drops are retired.
    fn rebuild(&self, builder: &mut Builder) -> u64 {
        let old = self.current.load_full();
        let version = old.version + 1;
        let snapshot = Arc::new(builder.build(version, health::now()));
        self.current.store(Arc::clone(&snapshot));
        // After the store: a request that sees the flag and picks again
        // finds this snapshot or a later one.
        for u in snapshot.upstreams() {
            for b in u.listed() {
                b.state.set_drained(b.drained.is_some());
            }
        }
        retire_dropped(&old, &snapshot);
        builder.registry.prune();
        self.versions.send_replace(version);
        version
    }

    /// Whether the state of this backend still exists: listed in a
    /// snapshot, or a request on it still in flight.
    pub fn is_live(&self, upstream: &str, address: &str) -> bool {
        self.builder().registry.is_live(upstream, address)
    }

    /// Sees the version change each time a snapshot is installed.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.versions.subscribe()
    }
}

/// Retires every backend of `old` that `new` no longer lists: its requests
/// in flight finish, but its pooled connections are never lent again (the
/// address may soon be another server's).
fn retire_dropped(old: &Snapshot, new: &Snapshot) {
    let listed: std::collections::HashSet<*const BackendState> = new
        .upstreams()
        .iter()
        .flat_map(|u| u.listed())
        .map(|b| Arc::as_ptr(&b.state))
        .collect();
    let old = old.upstreams().iter().flat_map(|u| u.listed());
    for b in old.filter(|b| !listed.contains(&Arc::as_ptr(&b.state))) {
        b.state.retire();
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
        let (_, lease) = before
            .default_upstream()
            .unwrap()
            .select(&[], Default::default())
            .unwrap();
        let kept = Arc::clone(lease.backend());
        let version = pool.install(config(
            r#""127.0.0.1:3002", "127.0.0.1:3001", "127.0.0.1:3003""#,
        ));
        assert_eq!(version, 2);
        let after = pool.snapshot();
        let same = after
            .default_upstream()
            .unwrap()
            .backends()
            .iter()
            .find(|b| b.state.address() == kept.address())
            .unwrap();
        assert!(Arc::ptr_eq(&same.state, &kept));
        assert_eq!(same.state.in_flight(), 1);
    }

    #[test]
    fn install_keeps_the_retry_window_of_upstreams_that_stay() {
        let pool = Pool::new(config(r#""127.0.0.1:3001""#));
        let now = health::now();
        pool.snapshot()
            .default_upstream()
            .unwrap()
            .retry_budget()
            .record_request(now);
        let text = "[upstreams.app]\nbackends = [\"127.0.0.1:3002\"]\n\
                    [upstreams.app.retry_budget]\nratio = 0.5\n\
                    [upstreams.other]\nbackends = [\"127.0.0.1:3003\"]\n\
                    [server]\ndefault_upstream = \"app\"\n";
        pool.install(crate::config::parse(Path::new("test.toml"), text).unwrap());
        let snapshot = pool.snapshot();
        let app = snapshot.default_upstream().unwrap().retry_budget();
        assert_eq!(app.settings().ratio, 0.5);
        assert_eq!(app.window().recent(now), (1, 0));
        let other = &snapshot.upstreams()[1];
        assert_eq!(other.name(), "other");
        assert_eq!(other.retry_budget().window().recent(now), (0, 0));
    }
}
