//! Backends drained at runtime: the marks the admin port sets, held by the
//! snapshot builder by (upstream, address) so that every snapshot, whether
//! a reload or a DNS answer made it, leaves a marked backend out of
//! selection; and what a drain still waits for.

use std::collections::HashMap;
use std::time::SystemTime;

use std::sync::Arc;

use super::{Backend, BackendState, Builder, Pool, Snapshot};

/// The drain marks: by upstream, then by backend address (as the backend's
/// state names it: `ip:port` as written, or as DNS gave it).
#[derive(Debug, Default)]
pub(super) struct Drains {
    marks: HashMap<String, HashMap<String, SystemTime>>,
}

impl Drains {
    /// Marks `address` of `upstream` drained since now, unless it already
    /// is; when it was marked.
    pub(super) fn mark(&mut self, upstream: &str, address: &str) -> SystemTime {
        *self
            .marks
            .entry(upstream.to_string())
            .or_default()
            .entry(address.to_string())
            .or_insert_with(SystemTime::now)
    }

    /// Takes the mark off; whether there was one.
    pub(super) fn unmark(&mut self, upstream: &str, address: &str) -> bool {
        let Some(of) = self.marks.get_mut(upstream) else {
            return false;
        };
        let had = of.remove(address).is_some();
        if of.is_empty() {
            self.marks.remove(upstream);
        }
        had
    }

    /// Since when `address` of `upstream` is drained, if it is.
    pub(super) fn since(&self, upstream: &str, address: &str) -> Option<SystemTime> {
        self.marks.get(upstream)?.get(address).copied()
    }

    /// The marks of `upstream`: address and since when, in address order.
    pub(super) fn of(&self, upstream: &str) -> Vec<(String, SystemTime)> {
        let mut marks: Vec<_> = self
            .marks
            .get(upstream)
            .into_iter()
            .flatten()
            .map(|(a, t)| (a.clone(), *t))
            .collect();
        marks.sort();
        marks
    }

    /// Keeps only the marks of upstreams `keep` says still exist. A mark of
    /// an address the upstream no longer lists stays: if DNS or the file
    /// brings the address back, it comes back drained.
    pub(super) fn retain_upstreams(&mut self, keep: impl Fn(&str) -> bool) {
        self.marks.retain(|upstream, _| keep(upstream));
    }
}

/// A drain or undrain that names nothing the pool has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrainError {
    #[error("no upstream named {0}")]
    NoUpstream(String),
    #[error("upstream {upstream} lists no backend {backend}")]
    NoBackend { upstream: String, backend: String },
}

impl Snapshot {
    /// The backend of `upstream` that `backend` names, drained or not: by
    /// its address as written, or by the address it resolved to.
    pub fn find_backend(&self, upstream: &str, backend: &str) -> Result<&Backend, DrainError> {
        let u = self
            .upstream_named(upstream)
            .ok_or_else(|| DrainError::NoUpstream(upstream.to_string()))?;
        let mut listed = u.listed();
        listed
            .find(|b| b.state.address() == backend || b.state.socket_addr().to_string() == backend)
            .ok_or_else(|| DrainError::NoBackend {
                upstream: upstream.to_string(),
                backend: backend.to_string(),
            })
    }
}

impl Pool {
    /// Drains `backend` of `upstream`: the next snapshot, and every one
    /// after it until [`undrain`](Self::undrain), chooses it for nothing
    /// (sticky cookies and hash keys that name it included); what is in
    /// flight on it finishes. Its address as the pool names it. An address
    /// drained before and no longer listed stays so.
    pub fn drain(&self, upstream: &str, backend: &str) -> Result<String, DrainError> {
        let mut builder = self.builder();
        let address = self.drain_target(&builder, upstream, backend)?;
        if builder.drains.since(upstream, &address).is_none() {
            builder.drains.mark(upstream, &address);
            self.rebuild(&mut builder);
        }
        Ok(address)
    }

    /// Takes `backend` of `upstream` back: the next snapshot chooses it
    /// again. A mark on an address the upstream no longer lists can be
    /// taken off too. Its address as the pool names it.
    pub fn undrain(&self, upstream: &str, backend: &str) -> Result<String, DrainError> {
        let mut builder = self.builder();
        let address = self.drain_target(&builder, upstream, backend)?;
        if builder.drains.unmark(upstream, &address) {
            self.rebuild(&mut builder);
        }
        Ok(address)
    }

    /// The address, as the pool names it, of what `backend` names in
    /// `upstream`: a backend the current snapshot lists, or a drained
    /// address it no longer lists. Read under the builder's lock, so the
    /// snapshot is the one the builder made last.
    fn drain_target(
        &self,
        builder: &Builder,
        upstream: &str,
        backend: &str,
    ) -> Result<String, DrainError> {
        match self.snapshot().find_backend(upstream, backend) {
            Ok(b) => Ok(b.state.address().to_string()),
            Err(_) if builder.drains.since(upstream, backend).is_some() => Ok(backend.to_string()),
            Err(e) => Err(e),
        }
    }

    /// The state of `backend` of `upstream` if it still exists, listed or
    /// not (a request in flight keeps it).
    pub fn live_state(&self, upstream: &str, backend: &str) -> Option<Arc<BackendState>> {
        self.builder().registry.live(upstream, backend)
    }
}

/// Where a backend's drain stands, for the admin port and the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainProgress {
    pub upstream: String,
    /// As the backend's state names it.
    pub backend: String,
    /// `None`: not drained (it takes requests).
    pub since: Option<SystemTime>,
    /// Requests in flight on it, tunnels not included.
    pub requests: u64,
    /// Tunnels (WebSockets, CONNECT) open to it.
    pub tunnels: u64,
}

impl DrainProgress {
    /// `in_flight`: the backend's leases, each open tunnel holding one.
    pub fn new(
        upstream: &str,
        backend: &str,
        since: Option<SystemTime>,
        in_flight: u64,
        tunnels: u64,
    ) -> Self {
        DrainProgress {
            upstream: upstream.to_string(),
            backend: backend.to_string(),
            since,
            requests: in_flight.saturating_sub(tunnels),
            tunnels,
        }
    }

    /// Drained, and nothing left on it: safe to stop.
    pub fn drained(&self) -> bool {
        self.since.is_some() && self.requests == 0 && self.tunnels == 0
    }

    /// `draining`, `drained` or `active`.
    pub fn state(&self) -> &'static str {
        match (self.since, self.drained()) {
            (None, _) => "active",
            (Some(_), true) => "drained",
            (Some(_), false) => "draining",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_keeps_its_first_time_and_goes_with_its_upstream() {
        let mut d = Drains::default();
        let first = d.mark("app", "127.0.0.1:3001");
        assert_eq!(d.mark("app", "127.0.0.1:3001"), first);
        assert_eq!(d.since("app", "127.0.0.1:3001"), Some(first));
        assert_eq!(d.since("app", "127.0.0.1:3002"), None);
        assert_eq!(d.since("api", "127.0.0.1:3001"), None);
        d.mark("api", "127.0.0.1:3001");
        d.retain_upstreams(|u| u == "app");
        assert_eq!(d.since("api", "127.0.0.1:3001"), None);
        assert!(d.unmark("app", "127.0.0.1:3001"));
        assert!(!d.unmark("app", "127.0.0.1:3001"));
        assert!(d.marks.is_empty());
    }

    fn since(p: &Pool, address: &str) -> Option<SystemTime> {
        p.builder().drains.since("app", address)
    }

    fn pool(text: &str) -> Pool {
        Pool::new(crate::config::parse_offline(std::path::Path::new("t.toml"), text).unwrap())
    }

    /// The ports of the backends 200 selections (with a hash key each, if
    /// `hashed`) went to.
    fn chosen(pool: &Pool, hashed: bool) -> std::collections::BTreeSet<u16> {
        let snapshot = pool.snapshot();
        let u = snapshot.default_upstream().unwrap();
        (0..200u64)
            .map(|k| {
                let hint = super::super::Hint {
                    key: hashed.then_some(k.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                    pinned: None,
                };
                let (i, _lease) = u.select(&[], hint).unwrap();
                u.backends()[i].state.socket_addr().port()
            })
            .collect()
    }

    #[test]
    fn a_drained_backend_is_chosen_for_nothing_until_undrained_across_reloads() {
        let three = "\"127.0.0.1:3001\", \"127.0.0.1:3002\", \"127.0.0.1:3003\"";
        for balance in [
            "\"round_robin\"",
            "\"least_connections\"",
            "\"least_latency\"",
            "\"consistent_hash\"\nhash_key = \"path\"",
        ] {
            let text = format!("[upstreams.app]\nbalance = {balance}\nbackends = [{three}]\n");
            let p = pool(&text);
            let hashed = balance.contains("consistent");
            assert_eq!(chosen(&p, hashed).len(), 3, "{balance}");
            assert_eq!(p.drain("app", "127.0.0.1:3002").unwrap(), "127.0.0.1:3002");
            let first = since(&p, "127.0.0.1:3002").unwrap();
            assert_eq!(chosen(&p, hashed), [3001, 3003].into(), "{balance}");
            // Draining again keeps the first time; a reload keeps the mark.
            p.drain("app", "127.0.0.1:3002").unwrap();
            p.install(crate::config::parse_offline(std::path::Path::new("t.toml"), &text).unwrap());
            assert_eq!(since(&p, "127.0.0.1:3002"), Some(first));
            assert_eq!(chosen(&p, hashed), [3001, 3003].into(), "{balance}");
            let snapshot = p.snapshot();
            let u = snapshot.default_upstream().unwrap();
            assert_eq!(u.draining().len(), 1);
            assert_eq!(u.listed().count(), 3);
            p.undrain("app", "127.0.0.1:3002").unwrap();
            assert_eq!(chosen(&p, hashed).len(), 3, "{balance}");
        }
    }

    #[test]
    fn drains_name_listed_backends_and_go_with_their_upstream() {
        let p = pool("[upstreams.app]\nbackends = [\"127.0.0.1:3001\", \"127.0.0.1:3002\"]\n");
        let version = p.snapshot().version;
        assert!(matches!(
            p.drain("api", "127.0.0.1:3001"),
            Err(DrainError::NoUpstream(_))
        ));
        assert!(matches!(
            p.drain("app", "127.0.0.1:9"),
            Err(DrainError::NoBackend { .. })
        ));
        assert!(matches!(
            p.undrain("app", "127.0.0.1:9"),
            Err(DrainError::NoBackend { .. })
        ));
        assert_eq!(p.snapshot().version, version, "nothing was rebuilt");
        // Undraining a backend that takes requests changes nothing.
        assert_eq!(
            p.undrain("app", "127.0.0.1:3001").unwrap(),
            "127.0.0.1:3001"
        );
        assert_eq!(p.snapshot().version, version);
        p.drain("app", "127.0.0.1:3001").unwrap();
        // A backend the file drops keeps its mark, and comes back drained.
        let one = "[upstreams.app]\nbackends = [\"127.0.0.1:3002\"]\n";
        let cfg =
            |t: &str| crate::config::parse_offline(std::path::Path::new("t.toml"), t).unwrap();
        p.install(cfg(one));
        assert!(since(&p, "127.0.0.1:3001").is_some());
        p.install(cfg(
            "[upstreams.app]\nbackends = [\"127.0.0.1:3002\", \"127.0.0.1:3001\"]\n",
        ));
        assert_eq!(p.snapshot().default_upstream().unwrap().draining().len(), 1);
        // An upstream that leaves takes its marks with it.
        p.install(cfg("[upstreams.other]\nbackends = [\"127.0.0.1:3001\"]\n"));
        p.install(cfg("[upstreams.app]\nbackends = [\"127.0.0.1:3001\"]\n"));
        assert_eq!(since(&p, "127.0.0.1:3001"), None);
    }

    #[test]
    fn a_dns_answer_keeps_a_drained_backend_drained() {
        let p =
            pool("[upstreams.app]\nbackends = [{ address = \"app.test:3000\", resolve = true }]\n");
        let answer = |ips: &[&str]| -> Vec<crate::config::BackendConfig> {
            ips.iter()
                .map(|a| crate::config::BackendConfig {
                    address: a.to_string(),
                    socket_addr: a.parse().unwrap(),
                    weight: 1,
                })
                .collect()
        };
        p.discovered(
            "app",
            "app.test",
            answer(&["127.0.0.2:3000", "127.0.0.3:3000"]),
        );
        p.drain("app", "127.0.0.2:3000").unwrap();
        p.discovered(
            "app",
            "app.test",
            answer(&["127.0.0.2:3000", "127.0.0.3:3000", "127.0.0.4:3000"]),
        )
        .unwrap();
        assert_eq!(chosen(&p, false), [3000].into());
        let snapshot = p.snapshot();
        let u = snapshot.default_upstream().unwrap();
        let taking: Vec<_> = u.backends().iter().map(|b| b.state.address()).collect();
        assert_eq!(taking, ["127.0.0.3:3000", "127.0.0.4:3000"]);
        assert_eq!(u.draining()[0].state.address(), "127.0.0.2:3000");
        assert_eq!(u.draining()[0].name.as_deref(), Some("app.test"));
    }

    #[test]
    fn a_pick_in_the_snapshot_before_a_drain_sees_it_or_is_counted() {
        let text = "[upstreams.app]\nbackends = [\"127.0.0.1:3001\", \"127.0.0.1:3002\"]\n\
                    [upstreams.app.sticky]\ncookie = \"sy\"\n";
        let p = pool(text);
        let old = p.snapshot();
        let u = old.default_upstream().unwrap();
        let id = u.sticky().unwrap().id(0).to_string();
        p.drain("app", "127.0.0.1:3001").unwrap();
        // Routed before the drain, a request may still pick the backend
        // there; its lease then reads the drain, and the drain counts it.
        let picks: Vec<_> = (0..2)
            .map(|_| u.select(&[], Default::default()).unwrap())
            .collect();
        let (_, lease) = picks.iter().find(|(i, _)| *i == 0).unwrap();
        assert!(lease.backend().is_drained());
        assert_eq!(lease.backend().left_in_flight(), 1);
        drop(picks);
        // In the current snapshot the sticky id names no backend that takes
        // requests, but a drained one.
        let now = p.snapshot();
        let sticky = now.default_upstream().unwrap().sticky().unwrap();
        assert_eq!(sticky.backend(&id), None);
        assert_eq!(sticky.drained_backend(&id), Some("127.0.0.1:3001"));
        p.undrain("app", "127.0.0.1:3001").unwrap();
        let now = p.snapshot();
        assert!(!now.default_upstream().unwrap().backends()[0]
            .state
            .is_drained());
    }

    #[test]
    fn drained_once_no_request_nor_tunnel_is_left() {
        let now = Some(SystemTime::now());
        let p = DrainProgress::new("app", "b", now, 3, 1);
        assert_eq!((p.requests, p.tunnels, p.state()), (2, 1, "draining"));
        let p = DrainProgress::new("app", "b", now, 1, 1);
        assert!(!p.drained());
        let p = DrainProgress::new("app", "b", now, 0, 0);
        assert_eq!(p.state(), "drained");
        let p = DrainProgress::new("app", "b", None, 0, 0);
        assert_eq!((p.drained(), p.state()), (false, "active"));
    }
}
