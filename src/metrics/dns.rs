//! DNS discovery's metrics: lookups of each followed name by result, and
//! when each last gave records.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{GaugeVec, IntCounterVec, Opts};

use super::{counter, Metrics, DNS_LAST_SUCCESS_TIMESTAMP, DNS_RESOLUTIONS_TOTAL};

/// The `result` labels of `switchyard_dns_resolutions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsResult {
    /// Records: the backends were set from them.
    Success,
    /// An authoritative empty answer (NXDOMAIN, no records).
    Empty,
    /// Timeout, SERVFAIL, REFUSED, a network error: backends kept.
    Failure,
}

impl DnsResult {
    pub const ALL: [DnsResult; 3] = [DnsResult::Success, DnsResult::Empty, DnsResult::Failure];

    pub fn as_str(self) -> &'static str {
        match self {
            DnsResult::Success => "success",
            DnsResult::Empty => "empty",
            DnsResult::Failure => "failure",
        }
    }
}

/// `switchyard_dns_resolutions_total{upstream, name, result}` and
/// `switchyard_dns_last_success_timestamp_seconds{upstream, name}`.
pub(super) fn families() -> (IntCounterVec, GaugeVec) {
    let resolutions = counter(
        DNS_RESOLUTIONS_TOTAL,
        "Lookups of each name backends follow, by result (success, empty: NXDOMAIN or no \
         records, failure: timeout, SERVFAIL, REFUSED or network; backends kept).",
        &["upstream", "name", "result"],
    );
    let opts = Opts::new(
        DNS_LAST_SUCCESS_TIMESTAMP,
        "Unix time each followed name last answered with records (0: never yet).",
    );
    let last = GaugeVec::new(opts, &["upstream", "name"]).expect("valid gauge");
    (resolutions, last)
}

impl Metrics {
    /// Creates the zero series of a name the config now follows.
    pub fn init_dns(&self, upstream: &str, name: &str) {
        for result in DnsResult::ALL {
            self.dns_resolutions
                .with_label_values(&[upstream, name, result.as_str()]);
        }
        self.dns_last_success.with_label_values(&[upstream, name]);
    }

    /// A lookup of `name` for `upstream` ended in `result` at `at`.
    pub fn observe_dns(&self, upstream: &str, name: &str, result: DnsResult, at: SystemTime) {
        self.dns_resolutions
            .with_label_values(&[upstream, name, result.as_str()])
            .inc();
        if result == DnsResult::Success {
            let secs = at
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.dns_last_success
                .with_label_values(&[upstream, name])
                .set(secs);
        }
    }

    /// Drops the series of a name the config no longer follows.
    pub fn forget_dns(&self, upstream: &str, name: &str) {
        for result in DnsResult::ALL {
            let _ = self
                .dns_resolutions
                .remove_label_values(&[upstream, name, result.as_str()]);
        }
        let _ = self.dns_last_success.remove_label_values(&[upstream, name]);
    }
}
