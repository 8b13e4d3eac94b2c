//! Every metric Switchyard exports: names, help texts and label sets in one
//! place, registered in a registry the server owns (tests get fresh ones).
//!
//! Labels are bounded: upstream and backend names from the config, status
//! codes and fixed words. Pool gauges are read from the current snapshot at
//! scrape time, so they can never drift or underflow.

mod dns;
mod grpc;
mod names;
mod scrape;
mod series;
mod tunnels;

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use http::StatusCode;
use prometheus::{
    Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::config::Outcome;
use crate::pool::{BackendState, Snapshot};

pub use dns::DnsResult;
pub use names::*;
use series::position;
pub use series::{BackendSeries, RouteSeries};
pub use tunnels::OpenTunnel;

/// The server's metrics and the registry they live in.
pub struct Metrics {
    registry: Registry,
    /// upstream, backend, code: responses a backend produced.
    pub requests: IntCounterVec,
    /// upstream, backend: time from request start to the end of the response.
    pub duration: HistogramVec,
    /// upstream, backend, kind.
    pub upstream_failures: IntCounterVec,
    /// upstream: extra attempts made after a failure.
    pub retries: IntCounterVec,
    /// upstream: retries refused because the retry budget was spent.
    pub retry_budget_exhausted: IntCounterVec,
    /// code: responses the proxy made itself.
    pub local_responses: IntCounterVec,
    /// upstream, backend, result.
    pub health_checks: IntCounterVec,
    /// upstream, backend.
    pub ejections: IntCounterVec,
    /// upstream: ejections due that the upstream's cap did not allow.
    ejections_capped: IntCounterVec,
    /// upstream: consistent_hash requests without their key.
    hash_key_missing: IntCounterVec,
    in_flight: IntGaugeVec,
    healthy: IntGaugeVec,
    weight: IntGaugeVec,
    draining: IntGaugeVec,
    panic: IntGaugeVec,
    /// result: reloads that succeeded or failed.
    reloads: IntCounterVec,
    last_reload_ok: IntGauge,
    last_reload_success: Gauge,
    /// Client connections open now.
    pub client_connections: IntGauge,
    /// Client connections answered 503 because `max_connections` were open.
    pub client_connections_refused: IntCounter,
    /// timeout: client connections closed by one of the client timeouts.
    client_timeouts: IntCounterVec,
    /// route, code: requests each route took, by the status they got.
    route_requests: IntCounterVec,
    /// result: client TLS handshakes that succeeded or failed.
    tls_handshakes: IntCounterVec,
    /// certificate: when each serving certificate expires (Unix time).
    cert_expiry: prometheus::GaugeVec,
    /// protocol: requests by the protocol the client spoke.
    by_protocol: IntCounterVec,
    /// upstream, backend, grpc_status.
    grpc_responses: IntCounterVec,
    /// Its series, resolved once: counted on every request.
    by_protocol_series: [IntCounter; 2],
    /// upstream, backend: tunnels open now, and opened in all.
    tunnels_open: IntGaugeVec,
    tunnels_total: IntCounterVec,
    /// upstream, name, result: lookups of each followed DNS name.
    dns_resolutions: IntCounterVec,
    /// upstream, name: when each followed name last gave records.
    dns_last_success: prometheus::GaugeVec,
    /// Access log lines lost: the queue was full, or their write failed.
    pub access_log_dropped: IntCounter,
    /// Every (upstream, backend) given series, so those of removed
    /// backends can be dropped once the backend is gone.
    known: Mutex<HashSet<(String, String)>>,
    /// Serialises scrapes: each one resets and refills the pool gauges.
    scrape: Mutex<()>,
}

impl Metrics {
    /// A fresh registry with every metric registered and `build_info` set.
    pub fn new() -> Self {
        let registry = Registry::new();
        let backend = &["upstream", "backend"];
        let by_protocol = counter(
            REQUESTS_BY_PROTOCOL_TOTAL,
            "Client requests by the protocol they came in (http1, h2).",
            &["protocol"],
        );
        let by_protocol_series = PROTOCOLS.map(|p| by_protocol.with_label_values(&[p]));
        let (dns_resolutions, dns_last_success) = dns::families();
        let metrics = Metrics {
            requests: counter(REQUESTS_TOTAL, "Responses from backends, by status code.", &["upstream", "backend", "code"]),
            duration: HistogramVec::new(
                HistogramOpts::new(REQUEST_DURATION_SECONDS, "Time from receiving a request to finishing its response, for requests a backend answered.")
                    .buckets(DURATION_BUCKETS.to_vec()),
                backend,
            )
            .expect("valid histogram"),
            upstream_failures: counter(UPSTREAM_FAILURES_TOTAL, "Failed attempts on a backend, by kind (connect, timeout, reset, protocol, tls).", &["upstream", "backend", "kind"]),
            retries: counter(RETRIES_TOTAL, "Extra attempts on another backend after a failure.", &["upstream"]),
            retry_budget_exhausted: counter(RETRY_BUDGET_EXHAUSTED_TOTAL, "Retries not made because the upstream's retry budget was spent.", &["upstream"]),
            local_responses: counter(LOCAL_RESPONSES_TOTAL, "Responses the proxy made itself (no backend answered), by status code.", &["code"]),
            health_checks: counter(HEALTH_CHECKS_TOTAL, "Active health checks, by result (success, failure, timeout).", &["upstream", "backend", "result"]),
            ejections: counter(BACKEND_EJECTIONS_TOTAL, "Times a backend was ejected after failed requests.", backend),
            hash_key_missing: counter(HASH_KEY_MISSING_TOTAL, "Requests to a consistent_hash upstream without the hash_key, sent by round-robin instead.", &["upstream"]),
            ejections_capped: counter(EJECTIONS_CAPPED_TOTAL, "Failed requests that called for an ejection the upstream's max_ejection_percent did not allow.", &["upstream"]),
            in_flight: gauge(BACKEND_IN_FLIGHT, "Requests sent to a backend and not finished.", backend),
            healthy: gauge(BACKEND_HEALTHY, "1 if the backend passes its checks and is not ejected, else 0.", backend),
            weight: gauge(BACKEND_WEIGHT, "The backend's configured weight.", backend),
            draining: gauge(
                BACKEND_DRAINING,
                "1 while the backend is drained on the admin port (no new requests), else 0.",
                backend,
            ),
            reloads: counter(CONFIG_RELOADS_TOTAL, "Config reload attempts, by result (success, failure).", &["result"]),
            last_reload_ok: IntGauge::new(CONFIG_LAST_RELOAD_SUCCESSFUL, "1 if the last config reload succeeded (or none was tried), else 0.").expect("valid gauge"),
            last_reload_success: Gauge::new(CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP, "Unix time the serving config was loaded.").expect("valid gauge"),
            client_connections: IntGauge::new(CLIENT_CONNECTIONS, "Client connections open now.").expect("valid gauge"),
            client_connections_refused: IntCounter::new(CLIENT_CONNECTIONS_REFUSED_TOTAL, "Client connections answered 503 and closed because max_connections were open.").expect("valid counter"),
            client_timeouts: counter(CLIENT_TIMEOUTS_TOTAL, "Client connections closed because the client was too slow, by timeout (header, body, keepalive, send).", &["timeout"]),
            tls_handshakes: counter(TLS_HANDSHAKES_TOTAL, "Client TLS handshakes, by result (success, failure).", &["result"]),
            cert_expiry: prometheus::GaugeVec::new(Opts::new(TLS_CERTIFICATE_EXPIRY, "When each serving certificate expires, as Unix time (alert well before it)."), &["certificate"]).expect("valid gauge"),
            by_protocol,
            by_protocol_series,
            grpc_responses: grpc::responses(),
            tunnels_open: gauge(TUNNELS_OPEN, "Upgraded connections (WebSockets) open to the backend now.", backend),
            tunnels_total: counter(TUNNELS_TOTAL, "Upgraded connections (WebSockets) opened to the backend.", backend),
            route_requests: counter(ROUTE_REQUESTS_TOTAL, "Requests each route took, by the status they were answered with (by a backend or by the proxy).", &["route", "code"]),
            dns_resolutions,
            dns_last_success,
            access_log_dropped: IntCounter::new(ACCESS_LOG_DROPPED_TOTAL, "Access log lines dropped: the queue to the writer was full, or the write failed.").expect("valid counter"),
            known: Mutex::new(HashSet::new()),
            panic: gauge(UPSTREAM_PANIC, "1 while no backend of the upstream is healthy and traffic goes to the least bad ones.", &["upstream"]),
            scrape: Mutex::new(()),
            registry,
        };
        let build_info = gauge(
            BUILD_INFO,
            "Always 1; the version label says which build runs.",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        metrics.last_reload_ok.set(1);
        for timeout in ClientTimeout::ALL {
            metrics
                .client_timeouts
                .with_label_values(&[timeout.as_str()]);
        }
        for result in ["success", "failure"] {
            metrics.tls_handshakes.with_label_values(&[result]);
        }
        let all: [Box<dyn prometheus::core::Collector>; 32] = [
            Box::new(metrics.reloads.clone()),
            Box::new(metrics.last_reload_ok.clone()),
            Box::new(metrics.last_reload_success.clone()),
            Box::new(metrics.requests.clone()),
            Box::new(metrics.duration.clone()),
            Box::new(metrics.upstream_failures.clone()),
            Box::new(metrics.retries.clone()),
            Box::new(metrics.retry_budget_exhausted.clone()),
            Box::new(metrics.local_responses.clone()),
            Box::new(metrics.health_checks.clone()),
            Box::new(metrics.ejections.clone()),
            Box::new(metrics.ejections_capped.clone()),
            Box::new(metrics.hash_key_missing.clone()),
            Box::new(metrics.in_flight.clone()),
            Box::new(metrics.healthy.clone()),
            Box::new(metrics.weight.clone()),
            Box::new(metrics.draining.clone()),
            Box::new(metrics.panic.clone()),
            Box::new(metrics.client_connections.clone()),
            Box::new(metrics.client_connections_refused.clone()),
            Box::new(metrics.client_timeouts.clone()),
            Box::new(metrics.route_requests.clone()),
            Box::new(metrics.tls_handshakes.clone()),
            Box::new(metrics.cert_expiry.clone()),
            Box::new(metrics.by_protocol.clone()),
            Box::new(metrics.grpc_responses.clone()),
            Box::new(metrics.tunnels_open.clone()),
            Box::new(metrics.tunnels_total.clone()),
            Box::new(metrics.dns_resolutions.clone()),
            Box::new(metrics.dns_last_success.clone()),
            Box::new(metrics.access_log_dropped.clone()),
            Box::new(build_info),
        ];
        for c in all {
            metrics
                .registry
                .register(c)
                .expect("metric names are unique");
        }
        metrics
    }

    /// Creates the zero series of every upstream and backend in `snapshot`,
    /// so that `rate()` and alerts see them from the first scrape rather than
    /// from the first failure.
    pub fn init_series(&self, snapshot: &Snapshot) {
        for result in ["success", "failure"] {
            self.reloads.with_label_values(&[result]);
        }
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        for upstream in snapshot.upstreams() {
            for per_upstream in self.per_upstream() {
                per_upstream.with_label_values(&[upstream.name()]);
            }
            for b in upstream.listed() {
                let backend = [upstream.name(), b.state.address()];
                known.insert((backend[0].to_string(), backend[1].to_string()));
                for kind in FAILURE_KINDS {
                    let labels = [backend[0], backend[1], kind.name()];
                    self.upstream_failures.with_label_values(&labels);
                }
                self.ejections.with_label_values(&backend);
                self.tunnels_open.with_label_values(&backend);
                self.tunnels_total.with_label_values(&backend);
                if upstream.health_check().is_some() {
                    for result in CheckResult::ALL {
                        let labels = [backend[0], backend[1], result.as_str()];
                        self.health_checks.with_label_values(&labels);
                    }
                }
            }
        }
        for code in [502, 503, 504] {
            self.local_responses
                .with_label_values(&[status_label(code).as_str()]);
        }
    }

    /// Records a response from a backend of `upstream`. The backend's
    /// series are looked up by label once and then kept in its state, so
    /// the per-request path neither hashes labels nor allocates.
    pub fn observe_response(
        &self,
        upstream: &str,
        backend: &BackendState,
        code: StatusCode,
        seconds: f64,
    ) {
        let address = backend.address();
        let series = backend.series.get_or_init(|| BackendSeries {
            duration: self.duration.with_label_values(&[upstream, address]),
            common: Default::default(),
        });
        series.duration.observe(seconds);
        let counter = |code: StatusCode| {
            self.requests
                .with_label_values(&[upstream, address, code.as_str()])
        };
        match position(code) {
            Some(k) => series.common[k].get_or_init(|| counter(code)).inc(),
            None => counter(code).inc(),
        }
    }

    /// Counts a request that route `name` took, answered with `code`;
    /// `series` is the route's slot in its snapshot.
    pub fn observe_route(&self, series: &RouteSeries, name: &str, code: StatusCode) {
        series.inc(&self.route_requests, name, code);
    }

    pub fn observe_failure(&self, upstream: &str, backend: &str, kind: Outcome) {
        self.upstream_failures
            .with_label_values(&[upstream, backend, kind.name()])
            .inc();
    }

    pub fn observe_check(&self, upstream: &str, backend: &str, result: CheckResult) {
        self.health_checks
            .with_label_values(&[upstream, backend, result.as_str()])
            .inc();
    }

    pub fn observe_ejection(&self, upstream: &str, backend: &str) {
        self.ejections.with_label_values(&[upstream, backend]).inc();
    }

    pub fn observe_ejection_capped(&self, upstream: &str) {
        self.ejections_capped.with_label_values(&[upstream]).inc();
    }

    pub fn observe_tls_handshake(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.tls_handshakes.with_label_values(&[result]).inc();
    }

    /// The serving certificates' expiry times, replacing any before (a
    /// certificate removed by a reload loses its series).
    pub fn observe_certificates(&self, expiries: &[(String, f64)]) {
        self.cert_expiry.reset();
        for (label, secs) in expiries {
            self.cert_expiry.with_label_values(&[label]).set(*secs);
        }
    }

    /// A client request, over HTTP/2 or HTTP/1.x.
    pub fn observe_protocol(&self, http2: bool) {
        self.by_protocol_series[usize::from(http2)].inc();
    }

    pub fn observe_hash_miss(&self, upstream: &str) {
        self.hash_key_missing.with_label_values(&[upstream]).inc();
    }

    /// The counters labelled by upstream alone.
    fn per_upstream(&self) -> [&IntCounterVec; 4] {
        [
            &self.retries,
            &self.retry_budget_exhausted,
            &self.ejections_capped,
            &self.hash_key_missing,
        ]
    }

    pub fn observe_client_timeout(&self, timeout: ClientTimeout) {
        self.client_timeouts
            .with_label_values(&[timeout.as_str()])
            .inc();
    }

    pub fn observe_retry(&self, upstream: &str) {
        self.retries.with_label_values(&[upstream]).inc();
    }

    pub fn observe_retry_budget_exhausted(&self, upstream: &str) {
        self.retry_budget_exhausted
            .with_label_values(&[upstream])
            .inc();
    }

    pub fn observe_local_response(&self, code: u16) {
        self.local_responses
            .with_label_values(&[status_label(code).as_str()])
            .inc();
    }

    /// The serving config was loaded at `at`.
    pub fn observe_config_loaded(&self, at: SystemTime) {
        let secs = at
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_reload_success.set(secs);
    }

    /// A reload attempt ended (whether it loaded anything new or not).
    pub fn observe_reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.reloads.with_label_values(&[result]).inc();
        self.last_reload_ok.set(i64::from(success));
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn status_label(code: u16) -> String {
    code.to_string()
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter")
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge")
}
