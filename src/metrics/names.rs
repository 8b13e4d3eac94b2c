//! Every metric name Switchyard exports, and the fixed words of the
//! labels that are not names from the config.

use crate::config::Outcome;

pub const REQUESTS_TOTAL: &str = "switchyard_requests_total";
pub const REQUEST_DURATION_SECONDS: &str = "switchyard_request_duration_seconds";
pub const UPSTREAM_FAILURES_TOTAL: &str = "switchyard_upstream_failures_total";
pub const RETRIES_TOTAL: &str = "switchyard_retries_total";
pub const RETRY_BUDGET_EXHAUSTED_TOTAL: &str = "switchyard_retry_budget_exhausted_total";
pub const LOCAL_RESPONSES_TOTAL: &str = "switchyard_local_responses_total";
pub const BACKEND_IN_FLIGHT: &str = "switchyard_backend_in_flight";
pub const BACKEND_HEALTHY: &str = "switchyard_backend_healthy";
pub const BACKEND_WEIGHT: &str = "switchyard_backend_weight";
pub const BACKEND_DRAINING: &str = "switchyard_backend_draining";
pub const HEALTH_CHECKS_TOTAL: &str = "switchyard_health_checks_total";
pub const BACKEND_EJECTIONS_TOTAL: &str = "switchyard_backend_ejections_total";
pub const EJECTIONS_CAPPED_TOTAL: &str = "switchyard_ejections_capped_total";
pub const UPSTREAM_PANIC: &str = "switchyard_upstream_panic";
pub const CONFIG_RELOADS_TOTAL: &str = "switchyard_config_reloads_total";
pub const CONFIG_LAST_RELOAD_SUCCESSFUL: &str = "switchyard_config_last_reload_successful";
pub const CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP: &str =
    "switchyard_config_last_reload_success_timestamp_seconds";
pub const BUILD_INFO: &str = "switchyard_build_info";
pub const CLIENT_CONNECTIONS: &str = "switchyard_client_connections";
pub const CLIENT_CONNECTIONS_REFUSED_TOTAL: &str = "switchyard_client_connections_refused_total";
pub const CLIENT_TIMEOUTS_TOTAL: &str = "switchyard_client_timeouts_total";
pub const ROUTE_REQUESTS_TOTAL: &str = "switchyard_route_requests_total";
pub const HASH_KEY_MISSING_TOTAL: &str = "switchyard_hash_key_missing_total";
pub const TLS_HANDSHAKES_TOTAL: &str = "switchyard_tls_handshakes_total";
pub const TLS_CERTIFICATE_EXPIRY: &str = "switchyard_tls_certificate_expiry_timestamp_seconds";
pub const REQUESTS_BY_PROTOCOL_TOTAL: &str = "switchyard_requests_by_protocol_total";
pub const GRPC_RESPONSES_TOTAL: &str = "switchyard_grpc_responses_total";
pub const TUNNELS_OPEN: &str = "switchyard_tunnels_open";
pub const TUNNELS_TOTAL: &str = "switchyard_tunnels_total";
pub const DNS_RESOLUTIONS_TOTAL: &str = "switchyard_dns_resolutions_total";
pub const DNS_LAST_SUCCESS_TIMESTAMP: &str = "switchyard_dns_last_success_timestamp_seconds";
pub const ACCESS_LOG_DROPPED_TOTAL: &str = "switchyard_access_log_dropped_total";

/// The `protocol` labels of `switchyard_requests_by_protocol_total`.
pub const PROTOCOLS: [&str; 2] = ["http1", "h2"];

/// Request duration buckets in seconds: from a fast local backend (1ms) to
/// the default read timeout (30s).
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The `kind` labels of `switchyard_upstream_failures_total`: every
/// [`Outcome`] that is not a response.
pub const FAILURE_KINDS: [Outcome; 5] = [
    Outcome::Connect,
    Outcome::Timeout,
    Outcome::Reset,
    Outcome::Protocol,
    Outcome::Tls,
];

/// The `result` labels of `switchyard_health_checks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckResult {
    Success,
    Failure,
    /// No answer within the check's `timeout`.
    Timeout,
}

impl CheckResult {
    pub const ALL: [CheckResult; 3] = [
        CheckResult::Success,
        CheckResult::Failure,
        CheckResult::Timeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CheckResult::Success => "success",
            CheckResult::Failure => "failure",
            CheckResult::Timeout => "timeout",
        }
    }
}

/// The `timeout` labels of `switchyard_client_timeouts_total`: which of
/// `[server]`'s client timeouts closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientTimeout {
    Header,
    Body,
    Keepalive,
    Send,
}

impl ClientTimeout {
    pub const ALL: [ClientTimeout; 4] = [
        ClientTimeout::Header,
        ClientTimeout::Body,
        ClientTimeout::Keepalive,
        ClientTimeout::Send,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ClientTimeout::Header => "header",
            ClientTimeout::Body => "body",
            ClientTimeout::Keepalive => "keepalive",
            ClientTimeout::Send => "send",
        }
    }
}
