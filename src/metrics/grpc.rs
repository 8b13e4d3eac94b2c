//! gRPC's metric: the `grpc-status` of every gRPC response, from a
//! backend (in its head or its trailers) or made by the proxy.

use prometheus::IntCounterVec;

use super::{counter, Metrics, GRPC_RESPONSES_TOTAL};
use crate::proxy::grpc_status_name;

/// `switchyard_grpc_responses_total{upstream, backend, grpc_status}`.
pub(super) fn responses() -> IntCounterVec {
    counter(
        GRPC_RESPONSES_TOTAL,
        "gRPC responses by grpc-status name (OK, UNAVAILABLE, ...; OTHER beyond the 17 gRPC \
         defines); backend is empty for an error the proxy made before choosing one.",
        &["upstream", "backend", "grpc_status"],
    )
}

impl Metrics {
    /// A gRPC response with `status` for a call to `upstream` (empty when
    /// none was chosen) sent to `backend` (empty when none was tried).
    pub fn observe_grpc(&self, upstream: &str, backend: &str, status: u8) {
        self.grpc_responses
            .with_label_values(&[upstream, backend, grpc_status_name(status)])
            .inc();
    }
}
