//! Building a snapshot: the builder that assembles every snapshot, over
//! the registry of backend state, from the last config and the latest DNS
//! answers, and what one answer changed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::drains::Drains;
use super::registry::Registry;
use super::{Snapshot, Upstream};
use crate::config::{BackendConfig, Config, UpstreamConfig};
use crate::metrics::RouteSeries;
use crate::route;

/// What every snapshot is built from: the config last installed and the
/// latest answer for each name its backends follow. Held with the registry
/// behind one mutex (see [`Pool`](super::Pool)), so a reload and a DNS
/// update are applied one after the other, each over the other's result.
#[derive(Debug)]
pub(super) struct Builder {
    pub(super) registry: Registry,
    pub(super) config: Arc<Config>,
    /// By (upstream, name): the backends the name's last answer gave, in
    /// address order. A name with no answer yet has none.
    resolved: HashMap<(String, String), Vec<BackendConfig>>,
    /// The backends drained on the admin port, by address: every snapshot
    /// leaves them out of selection, whatever built it.
    pub(super) drains: Drains,
}

/// What one DNS answer changed in its name's backends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// The snapshot that applies it.
    pub version: u64,
    /// `ip:port`, in address order.
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// `ip:port: old -> new`.
    pub reweighted: Vec<String>,
}

impl Change {
    /// The log line's changes: `added 10.0.0.7:3000; removed 10.0.0.5:3000`.
    pub fn summary(&self) -> String {
        let parts = [
            ("added", &self.added),
            ("removed", &self.removed),
            ("reweighted", &self.reweighted),
        ];
        let shown: Vec<String> = parts
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(what, v)| format!("{what} {}", v.join(", ")))
            .collect();
        shown.join("; ")
    }
}

impl Builder {
    pub(super) fn new(config: Config) -> Self {
        Builder {
            registry: Registry::default(),
            config: Arc::new(config),
            resolved: HashMap::new(),
            drains: Drains::default(),
        }
    }

    /// Takes `config` as the one to build from. The answers of the names
    /// it still follows the same way are kept, so a reload never empties
    /// them while they are looked up again; those of names it dropped, or
    /// now follows with another port or weight, are forgotten (they would
    /// keep the old ones until the next answer). Drain marks stay, but for
    /// upstreams it no longer has.
    pub(super) fn set_config(&mut self, config: Config) {
        let old = Arc::clone(&self.config);
        self.resolved.retain(|(upstream, name), _| {
            follows(&config, upstream, name)
                && entry(&old, upstream, name) == entry(&config, upstream, name)
        });
        let kept = |u: &str| config.upstreams.iter().any(|x| x.name == u);
        self.drains.retain_upstreams(kept);
        self.config = Arc::new(config);
    }

    /// Takes `backends` as the answer for `name` of `upstream`: what
    /// changed, or `None` if nothing did or the config no longer follows
    /// the name (an answer that raced a reload). The version is left to
    /// the caller to fill in.
    pub(super) fn set_answer(
        &mut self,
        upstream: &str,
        name: &str,
        mut backends: Vec<BackendConfig>,
    ) -> Option<Change> {
        if !follows(&self.config, upstream, name) {
            return None;
        }
        backends.sort_by(|a, b| a.address.cmp(&b.address));
        backends.dedup_by(|a, b| a.address == b.address);
        let key = (upstream.to_string(), name.to_string());
        let old = self.resolved.get(&key).map_or(&[][..], Vec::as_slice);
        if self.resolved.contains_key(&key) && old == backends.as_slice() {
            return None;
        }
        let find = |list: &[BackendConfig], b: &BackendConfig| {
            list.iter()
                .find(|o| o.address == b.address)
                .map(|o| o.weight)
        };
        let mut change = Change::default();
        for b in &backends {
            match find(old, b) {
                None => change.added.push(b.address.clone()),
                Some(w) if w != b.weight => change
                    .reweighted
                    .push(format!("{}: {w} -> {}", b.address, b.weight)),
                Some(_) => {}
            }
        }
        for o in old {
            if find(&backends, o).is_none() {
                change.removed.push(o.address.clone());
            }
        }
        self.resolved.insert(key, backends);
        Some(change)
    }

    /// The snapshot of the config and answers held now.
    pub(super) fn build(&mut self, version: u64, added_at: u64) -> Snapshot {
        let config = Arc::clone(&self.config);
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| {
                let members = members(u, &self.resolved);
                let (registry, drains) = (&mut self.registry, &self.drains);
                Arc::new(Upstream::build(u, &members, registry, drains, added_at))
            })
            .collect();
        let routes = route::Table::new(config.routes.clone(), config.default_upstream);
        Snapshot {
            version,
            route_series: config
                .routes
                .iter()
                .map(|_| RouteSeries::default())
                .collect(),
            routes,
            config,
            upstreams,
        }
    }
}

/// One backend of an upstream being built, and the name it came from
/// (`None`: the file lists it).
pub(super) struct Member<'a> {
    pub(super) config: &'a BackendConfig,
    pub(super) name: Option<&'a str>,
}

/// The backends of `u`: those the file lists, then each followed name's,
/// in file order. An address listed twice is one backend, the first.
fn members<'a>(
    u: &'a UpstreamConfig,
    resolved: &'a HashMap<(String, String), Vec<BackendConfig>>,
) -> Vec<Member<'a>> {
    let mut seen = HashSet::new();
    let listed = u.backends.iter().map(|b| (b, None));
    let discovered = u.dns.iter().flat_map(|d| {
        let key = (u.name.clone(), d.name.clone());
        let set = resolved.get(&key).map_or(&[][..], Vec::as_slice);
        set.iter().map(|b| (b, Some(d.name.as_str())))
    });
    listed
        .chain(discovered)
        .filter(|(b, _)| seen.insert(b.socket_addr))
        .map(|(config, name)| Member { config, name })
        .collect()
}

/// How `config` has `upstream` follow `name`, if it does.
fn entry<'a>(
    config: &'a Config,
    upstream: &str,
    name: &str,
) -> Option<&'a crate::config::DnsBackend> {
    config
        .upstreams
        .iter()
        .find(|u| u.name == upstream)?
        .dns
        .iter()
        .find(|d| d.name == name)
}

/// Whether `config` has `upstream` follow `name`.
fn follows(config: &Config, upstream: &str, name: &str) -> bool {
    config
        .upstreams
        .iter()
        .any(|u| u.name == upstream && u.dns.iter().any(|d| d.name == name))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Pool;
    use super::*;

    const DNS: &str = "[upstreams.app]\nbackends = [\"127.0.0.1:3001\", \
                       { address = \"app.test:3000\", resolve = true }]\n";

    fn config(text: &str) -> Config {
        crate::config::parse_offline(Path::new("test.toml"), text).unwrap()
    }

    fn answer(addresses: &[&str]) -> Vec<BackendConfig> {
        addresses
            .iter()
            .map(|a| BackendConfig {
                address: a.to_string(),
                socket_addr: a.parse().unwrap(),
                weight: 1,
            })
            .collect()
    }

    /// (address, name it came from) of the default upstream's backends.
    fn listed(pool: &Pool) -> Vec<(String, Option<String>)> {
        let snapshot = pool.snapshot();
        let u = snapshot.default_upstream().unwrap();
        let b = u.backends().iter();
        b.map(|b| {
            (
                b.state.address().to_string(),
                b.name.as_deref().map(String::from),
            )
        })
        .collect()
    }

    #[test]
    fn an_answer_adds_to_the_listed_backends_and_keeps_their_state() {
        let pool = Pool::new(config(DNS));
        assert_eq!(listed(&pool).len(), 1);
        let change = pool
            .discovered(
                "app",
                "app.test",
                answer(&["127.0.0.3:3000", "127.0.0.2:3000"]),
            )
            .unwrap();
        assert_eq!(change.version, 2);
        assert_eq!(change.added, ["127.0.0.2:3000", "127.0.0.3:3000"]);
        assert_eq!(change.summary(), "added 127.0.0.2:3000, 127.0.0.3:3000");
        let name = Some("app.test".to_string());
        assert_eq!(
            listed(&pool),
            [
                ("127.0.0.1:3001".to_string(), None),
                ("127.0.0.2:3000".to_string(), name.clone()),
                ("127.0.0.3:3000".to_string(), name.clone()),
            ]
        );
        let before = pool.snapshot();
        let kept = Arc::clone(&before.default_upstream().unwrap().backends()[2].state);
        let gone = Arc::clone(&before.default_upstream().unwrap().backends()[1].state);
        let group = gone.connection_group();
        // The same answer in another order changes nothing.
        let same = answer(&["127.0.0.2:3000", "127.0.0.3:3000"]);
        assert_eq!(pool.discovered("app", "app.test", same), None);
        let change = pool
            .discovered(
                "app",
                "app.test",
                answer(&["127.0.0.3:3000", "127.0.0.4:3000"]),
            )
            .unwrap();
        assert_eq!(
            change.summary(),
            "added 127.0.0.4:3000; removed 127.0.0.2:3000"
        );
        let after = pool.snapshot();
        assert!(Arc::ptr_eq(
            &after.default_upstream().unwrap().backends()[1].state,
            &kept
        ));
        assert_ne!(
            gone.connection_group(),
            group,
            "a dropped backend is retired"
        );
        assert_eq!(kept.connection_group(), kept.connection_group());
    }

    #[test]
    fn a_reload_keeps_the_answers_of_names_it_still_follows() {
        let pool = Pool::new(config(DNS));
        pool.discovered("app", "app.test", answer(&["127.0.0.2:3000"]));
        let state = Arc::clone(&pool.snapshot().default_upstream().unwrap().backends()[1].state);
        let group = state.connection_group();
        pool.install(config(&DNS.replace("3001", "3002")));
        let after = pool.snapshot();
        let kept = &after.default_upstream().unwrap().backends()[1];
        assert!(Arc::ptr_eq(&kept.state, &state));
        assert_eq!(state.connection_group(), group);
        // A config that stops following the name drops its answer, and a
        // late answer for it changes nothing.
        pool.install(config("[upstreams.app]\nbackends = [\"127.0.0.1:3001\"]\n"));
        assert_eq!(listed(&pool).len(), 1);
        assert_eq!(
            pool.discovered("app", "app.test", answer(&["127.0.0.5:3000"])),
            None
        );
        pool.install(config(DNS));
        assert_eq!(listed(&pool).len(), 1, "the old answer is not back");
    }

    #[test]
    fn an_address_both_listed_and_discovered_is_one_backend() {
        let pool = Pool::new(config(DNS));
        pool.discovered(
            "app",
            "app.test",
            answer(&["127.0.0.1:3001", "127.0.0.2:3000"]),
        );
        assert_eq!(
            listed(&pool),
            [
                ("127.0.0.1:3001".to_string(), None),
                ("127.0.0.2:3000".to_string(), Some("app.test".to_string())),
            ]
        );
    }

    #[test]
    fn an_upstream_with_no_backend_yet_answers_none() {
        let text = "[upstreams.app]\nbackends = [{ srv = \"_http._tcp.app.test\" }]\n\
                    balance = \"consistent_hash\"\nhash_key = \"path\"\n";
        for balance in [
            "round_robin",
            "least_connections",
            "least_latency",
            "consistent_hash",
        ] {
            let text = text.replace("consistent_hash", balance);
            let text = if balance == "consistent_hash" {
                text
            } else {
                text.replace("hash_key = \"path\"\n", "")
            };
            let pool = Pool::new(config(&text));
            let snapshot = pool.snapshot();
            let u = snapshot.default_upstream().unwrap();
            assert!(u.backends().is_empty());
            assert!(!u.is_ready() && !u.in_panic(), "{balance}");
            let hint = crate::pool::Hint {
                key: Some(7),
                pinned: Some(0),
            };
            assert!(u.select(&[], hint).is_none(), "{balance}");
            assert!(u.select(&[], Default::default()).is_none(), "{balance}");
        }
    }
}
