//! A scrape: the pool gauges read from the current snapshot, and the
//! series of removed backends, upstreams and routes dropped first.

use std::collections::{HashMap, HashSet};

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{Encoder, TextEncoder};

use super::Metrics;
use crate::pool::{health, Pool, Snapshot};

impl Metrics {
    /// Drops the series of backends (and upstreams) that the current
    /// snapshot no longer lists and that have no request left in flight.
    fn forget_removed(&self, pool: &Pool, snapshot: &Snapshot) {
        let listed = |u: &str, b: &str| {
            snapshot
                .upstreams()
                .iter()
                .any(|up| up.name() == u && up.listed().any(|x| x.state.address() == b))
        };
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.retain(|(u, b)| {
            if listed(u, b) || pool.is_live(u, b) {
                return true;
            }
            forget(&self.requests, u, b);
            forget(&self.duration, u, b);
            forget(&self.upstream_failures, u, b);
            forget(&self.health_checks, u, b);
            forget(&self.ejections, u, b);
            forget(&self.grpc_responses, u, b);
            forget(&self.tunnels_open, u, b);
            forget(&self.tunnels_total, u, b);
            false
        });
        // A removed route's series go with it; a request it took before the
        // reload may still count once more, and its series returns until
        // the next scrape.
        let routes: HashSet<&str> = snapshot
            .routes()
            .routes()
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        for family in self.route_requests.collect() {
            for m in family.get_metric() {
                let (route, code) = (label(m, "route"), label(m, "code"));
                if !routes.contains(route) {
                    let _ = self.route_requests.remove_label_values(&[route, code]);
                }
            }
        }
        let upstreams: HashSet<&str> = known.iter().map(|(u, _)| u.as_str()).collect();
        let gone =
            |u: &str| !upstreams.contains(u) && !snapshot.upstreams().iter().any(|x| x.name() == u);
        for per_upstream in self.per_upstream() {
            for family in per_upstream.collect() {
                for m in family.get_metric() {
                    let u = m.get_label().first().map_or("", |l| l.value());
                    if gone(u) {
                        let _ = per_upstream.remove_label_values(&[u]);
                    }
                }
            }
        }
        // A gRPC error made before any backend was tried has no backend.
        for family in self.grpc_responses.collect() {
            for m in family.get_metric() {
                let (u, b) = (label(m, "upstream"), label(m, "backend"));
                if b.is_empty() && gone(u) {
                    forget(&self.grpc_responses, u, b);
                }
            }
        }
    }

    /// The Prometheus text exposition of every metric, with pool gauges read
    /// from the current snapshot now.
    pub fn render(&self, pool: &Pool) -> String {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        let snapshot = pool.snapshot();
        self.forget_removed(pool, &snapshot);
        self.in_flight.reset();
        self.healthy.reset();
        self.weight.reset();
        self.draining.reset();
        self.panic.reset();
        let now = health::now();
        for upstream in snapshot.upstreams() {
            self.panic
                .with_label_values(&[upstream.name()])
                .set(i64::from(upstream.in_panic()));
            for b in upstream.listed() {
                let labels = [upstream.name(), b.state.address()];
                self.in_flight
                    .with_label_values(&labels)
                    .set(b.state.in_flight() as i64);
                self.healthy
                    .with_label_values(&labels)
                    .set(i64::from(b.state.health().usable(now)));
                self.weight
                    .with_label_values(&labels)
                    .set(i64::from(b.weight));
                self.draining
                    .with_label_values(&labels)
                    .set(i64::from(b.drained.is_some()));
            }
        }
        let mut out = Vec::new();
        // Encoding into a Vec fails only on invalid metric families, which
        // `register` has already refused.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The value of series `m`'s label `name`; empty if it has none.
fn label<'a>(m: &'a prometheus::proto::Metric, name: &str) -> &'a str {
    m.get_label()
        .iter()
        .find(|l| l.name() == name)
        .map_or("", |l| l.value())
}

/// Removes every series of `vec` labelled with this upstream and backend.
fn forget<B: MetricVecBuilder>(vec: &MetricVec<B>, upstream: &str, backend: &str) {
    for family in vec.collect() {
        for m in family.get_metric() {
            let labels: HashMap<&str, &str> = m
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            if labels.get("upstream") == Some(&upstream) && labels.get("backend") == Some(&backend)
            {
                let _ = vec.remove(&labels);
            }
        }
    }
}
