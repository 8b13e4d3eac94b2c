//! What a reload changes, and what it cannot change without a restart.

use serde_json::{json, Value};

use crate::config::{Config, UpstreamConfig};

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub upstreams_added: Vec<String>,
    pub upstreams_removed: Vec<String>,
    /// `upstream/address`, or `upstream/name:port (resolve)` and
    /// `upstream/srv name` for names followed.
    pub backends_added: Vec<String>,
    pub backends_removed: Vec<String>,
    /// `upstream/address: old -> new`.
    pub reweighted: Vec<String>,
    /// `upstream: key, key` or `default_upstream`.
    pub settings: Vec<String>,
    /// Route names.
    pub routes_added: Vec<String>,
    pub routes_removed: Vec<String>,
    /// `name: what`, for a route of the same name whose conditions,
    /// upstream or rewriting changed (file position alone does not count).
    pub routes_changed: Vec<String>,
    /// Certificates loaded anew (their files changed), and TLS settings.
    pub certificates: Vec<String>,
}

impl Diff {
    /// Compares two valid configs. Settings that cannot change without a
    /// restart are checked by [`restart_needed`], not here.
    pub fn between(old: &Config, new: &Config) -> Diff {
        let mut d = Diff::default();
        for u in &new.upstreams {
            let Some(o) = old.upstreams.iter().find(|o| o.name == u.name) else {
                d.upstreams_added.push(u.name.clone());
                d.backends_added.extend(entries(u));
                continue;
            };
            for b in &u.backends {
                match o.backends.iter().find(|ob| ob.address == b.address) {
                    None => d.backends_added.push(format!("{}/{}", u.name, b.address)),
                    Some(ob) if ob.weight != b.weight => d.reweighted.push(format!(
                        "{}/{}: {} -> {}",
                        u.name, b.address, ob.weight, b.weight
                    )),
                    Some(_) => {}
                }
            }
            for ob in &o.backends {
                if !u.backends.iter().any(|b| b.address == ob.address) {
                    d.backends_removed
                        .push(format!("{}/{}", u.name, ob.address));
                }
            }
            let (new_names, old_names) = (names(u), names(o));
            let missing = |from: &[String], of: &[String]| -> Vec<String> {
                from.iter().filter(|n| !of.contains(n)).cloned().collect()
            };
            d.backends_added.extend(missing(&new_names, &old_names));
            d.backends_removed.extend(missing(&old_names, &new_names));
            let changed: Vec<&str> = [
                ("balance", o.balance != u.balance),
                ("timeouts", o.timeouts != u.timeouts),
                ("retries", o.retries != u.retries),
                ("health_check", o.health_check != u.health_check),
                ("passive_health_check", o.passive != u.passive),
                ("slow_start", o.slow_start != u.slow_start),
                ("retry_budget", o.retry_budget != u.retry_budget),
                ("protocol", o.protocol != u.protocol),
                (
                    "max_streams_per_connection",
                    o.max_streams_per_connection != u.max_streams_per_connection,
                ),
                ("tls", o.tls != u.tls),
                (
                    "min_refresh, max_refresh, hold_empty",
                    o.refresh != u.refresh,
                ),
            ]
            .into_iter()
            .filter_map(|(key, changed)| changed.then_some(key))
            .collect();
            if !changed.is_empty() {
                d.settings
                    .push(format!("{}: {}", u.name, changed.join(", ")));
            }
        }
        for o in &old.upstreams {
            if !new.upstreams.iter().any(|u| u.name == o.name) {
                d.upstreams_removed.push(o.name.clone());
                d.backends_removed.extend(entries(o));
            }
        }
        if old.resolver != new.resolver {
            d.settings.push("[resolver]".to_string());
        }
        if old.log != new.log {
            d.settings.push("[log]".to_string());
        }
        let default_name = |c: &Config| c.default_upstream().map(|u| u.name.clone());
        if default_name(old) != default_name(new) {
            d.settings.push("default_upstream".to_string());
        }
        d.diff_routes(old, new);
        let (o, n) = (&old.server, &new.server);
        let server: Vec<&str> = [
            ("request limits", o.limits != n.limits),
            ("h2_max_streams", o.h2.max_streams != n.h2.max_streams),
            ("redirect_https", o.redirect_https != n.redirect_https),
            ("server_header", o.server_header != n.server_header),
            (
                "tls.hsts",
                o.tls.as_ref().map(|t| &t.hsts) != n.tls.as_ref().map(|t| &t.hsts),
            ),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect();
        if !server.is_empty() {
            d.settings.push(format!("[server] {}", server.join(", ")));
        }
        d
    }

    /// Routes are matched by name (an unnamed route's name is its position
    /// and upstream, so moving it reads as a removal and an addition).
    fn diff_routes(&mut self, old: &Config, new: &Config) {
        for r in &new.routes {
            let Some(o) = old.routes.iter().find(|o| o.name == r.name) else {
                self.routes_added.push(r.name.clone());
                continue;
            };
            let upstream = |c: &Config, i: usize| c.upstreams[i].name.clone();
            let changed: Vec<&str> = [
                ("hosts", o.hosts != r.hosts),
                ("path_prefix", o.path_prefix != r.path_prefix),
                ("strip_prefix", o.strip_prefix != r.strip_prefix),
                ("headers", o.headers != r.headers),
                (
                    "upstream",
                    upstream(old, o.upstream) != upstream(new, r.upstream),
                ),
            ]
            .into_iter()
            .filter_map(|(key, changed)| changed.then_some(key))
            .collect();
            if !changed.is_empty() {
                self.routes_changed
                    .push(format!("{}: {}", r.name, changed.join(", ")));
            }
        }
        for o in &old.routes {
            if !new.routes.iter().any(|r| r.name == o.name) {
                self.routes_removed.push(o.name.clone());
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Diff::default()
    }

    pub fn to_json(&self) -> Value {
        json!({
            "upstreams_added": self.upstreams_added,
            "upstreams_removed": self.upstreams_removed,
            "backends_added": self.backends_added,
            "backends_removed": self.backends_removed,
            "reweighted": self.reweighted,
            "settings_changed": self.settings,
            "routes_added": self.routes_added,
            "routes_removed": self.routes_removed,
            "routes_changed": self.routes_changed,
            "certificates": self.certificates,
        })
    }

    /// One line for the log.
    pub fn summary(&self) -> String {
        if self.is_empty() {
            return "no changes".to_string();
        }
        let parts = [
            ("upstreams added", &self.upstreams_added),
            ("upstreams removed", &self.upstreams_removed),
            ("backends added", &self.backends_added),
            ("backends removed", &self.backends_removed),
            ("reweighted", &self.reweighted),
            ("settings changed", &self.settings),
            ("routes added", &self.routes_added),
            ("routes removed", &self.routes_removed),
            ("routes changed", &self.routes_changed),
            ("TLS", &self.certificates),
        ];
        let shown: Vec<String> = parts
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(what, v)| format!("{what}: {}", v.join(", ")))
            .collect();
        shown.join("; ")
    }
}

/// Every backend entry of `u`: `upstream/address` for those listed by
/// address, then its names followed.
fn entries(u: &UpstreamConfig) -> Vec<String> {
    let listed = u
        .backends
        .iter()
        .map(|b| format!("{}/{}", u.name, b.address));
    listed.chain(names(u)).collect()
}

/// `upstream/name:port (resolve)` or `upstream/srv name` for each name `u`
/// follows, with its weight if not 1.
fn names(u: &UpstreamConfig) -> Vec<String> {
    u.dns
        .iter()
        .map(|d| match d.weight {
            1 => format!("{}/{}", u.name, d.describe()),
            w => format!("{}/{} weight {w}", u.name, d.describe()),
        })
        .collect()
}

/// The settings of `new` that differ from `old` and need a restart (or
/// `--upgrade`): the process and its listeners are built from them.
pub fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (&old.server, &new.server);
    [
        ("[server] listen", o.listen != n.listen),
        ("[server] threads", o.threads != n.threads),
        ("[server] grace_period", o.grace_period != n.grace_period),
        ("[server] watch_config", o.watch_config != n.watch_config),
        ("[admin] listen", old.admin.listen != new.admin.listen),
        ("[server.tls] listen", tls_listen(old) != tls_listen(new)),
        ("[server] h2c", o.h2.h2c != n.h2.h2c),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

/// The TLS listeners, none without `[server.tls]`.
fn tls_listen(config: &Config) -> &[std::net::SocketAddr] {
    config.server.tls.as_ref().map_or(&[], |t| &t.listen)
}
