//! Series resolved once and kept where the hot path finds them (in a
//! backend's state, in a snapshot's routes), so that counting a response
//! neither hashes labels nor allocates.

use std::sync::OnceLock;

use http::StatusCode;
use prometheus::{Histogram, IntCounter, IntCounterVec};

/// Status codes whose response counters each backend keeps at hand.
pub(super) const COMMON_CODES: [u16; 16] = [
    200, 201, 204, 206, 301, 302, 304, 400, 401, 403, 404, 429, 500, 502, 503, 504,
];

/// One backend's response series, resolved on its first response. A
/// code's counter is created only once that code is seen, so no empty
/// series appear.
#[derive(Debug)]
pub struct BackendSeries {
    pub(super) duration: Histogram,
    pub(super) common: Common,
}

/// One counter slot per code of [`COMMON_CODES`].
pub(super) type Common = [OnceLock<IntCounter>; COMMON_CODES.len()];

/// One route's request counters, by code, resolved on first use.
#[derive(Debug, Default)]
pub struct RouteSeries {
    common: Common,
}

impl RouteSeries {
    /// Counts a request of `route` answered `code`, in `vec` labelled
    /// (`route`, `code`).
    pub(super) fn inc(&self, vec: &IntCounterVec, route: &str, code: StatusCode) {
        let get = || vec.with_label_values(&[route, code.as_str()]);
        match position(code) {
            Some(k) => self.common[k].get_or_init(get).inc(),
            None => get().inc(),
        }
    }
}

/// Where `code` is in [`COMMON_CODES`].
pub(super) fn position(code: StatusCode) -> Option<usize> {
    COMMON_CODES.iter().position(|&c| c == code.as_u16())
}
