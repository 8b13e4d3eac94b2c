//! The state one request carries through the proxy's hooks: its route,
//! upstream and lease, its attempts, and what gRPC and the limits need.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::access_log::LocalReason;
use crate::pool::{Hint, Lease, Snapshot, Upstream};

/// Per-request state. Dropping it (at the end of the request, whatever the
/// outcome) releases the in-flight lease.
pub struct RequestCtx {
    pub(super) started: Instant,
    /// When the current attempt's backend was chosen.
    pub(super) attempt_started: Instant,
    pub(super) request_id: String,
    /// The snapshot the request was routed in: its route and upstream
    /// stay those for the whole request, reloads or not.
    pub(super) snapshot: Option<Arc<Snapshot>>,
    /// Index of the route it took in the snapshot's table, if one did.
    pub(super) route: Option<usize>,
    /// The path and query its backend gets, when not the request's own.
    pub(super) rewrite: Option<String>,
    /// Its consistent_hash key and sticky backend, for selection.
    pub(super) hint: Hint,
    pub(super) upstream: Option<Arc<Upstream>>,
    /// The backend of the current attempt, leased.
    pub(super) attempt: Option<(usize, Lease)>,
    /// Backends already attempted, by index in `upstream`.
    pub(super) tried: Vec<usize>,
    /// Failed attempts so far; `retries` bounds these, not reconnects.
    pub(super) failures: usize,
    /// Pingora is retrying because a reused keep-alive connection broke:
    /// go back to the same backend on a new connection.
    pub(super) reconnect: bool,
    /// Set when the proxy wrote the response itself.
    pub(super) local_status: Option<u16>,
    /// Why it did (or why nothing could be sent), for the access log.
    pub(super) local_reason: Option<LocalReason>,
    /// Attempts on backends so far, reconnects included.
    pub(super) attempts: u32,
    /// From choosing the last attempt's backend to its response head.
    pub(super) upstream_time: Option<Duration>,
    /// A tunnel's route name, kept when it lets go of its snapshot.
    pub(super) tunnel_route: Option<String>,
    /// Bytes a tunnel carried: from the client, and from the backend.
    pub(super) tunnel_bytes: Option<(u64, u64)>,
    /// The request came over TLS.
    pub(super) tls: bool,
    /// `[server] max_body_bytes` for this request, and the body so far.
    pub(super) body_limit: Option<u64>,
    pub(super) body_bytes: u64,
    /// The request is a gRPC call: errors made here are gRPC errors.
    pub(super) grpc: bool,
    /// The client's `TE` accepts trailers.
    pub(super) te_trailers: bool,
    /// When its `grpc-timeout` runs out, if it set one.
    pub(super) deadline: Option<Instant>,
    /// The deadline, not the upstream's `read_timeout`, bounds the current
    /// attempt: its expiry says nothing about the backend.
    pub(super) deadline_bound: bool,
    /// The `grpc-status` of the backend's answer, once seen.
    pub(super) grpc_status: Option<u8>,
}

impl RequestCtx {
    pub(super) fn new() -> RequestCtx {
        let started = Instant::now();
        RequestCtx {
            started,
            attempt_started: started,
            request_id: String::new(),
            snapshot: None,
            route: None,
            rewrite: None,
            hint: Hint::default(),
            upstream: None,
            attempt: None,
            tried: Vec::new(),
            failures: 0,
            reconnect: false,
            local_status: None,
            local_reason: None,
            attempts: 0,
            upstream_time: None,
            tunnel_route: None,
            tunnel_bytes: None,
            tls: false,
            body_limit: None,
            body_bytes: 0,
            grpc: false,
            te_trailers: false,
            deadline: None,
            deadline_bound: false,
            grpc_status: None,
        }
    }
}

impl RequestCtx {
    /// The address of the backend of the last attempt, if one was made
    /// (its lease may be gone: a failed connect releases it).
    pub(super) fn last_backend(&self) -> Option<&str> {
        let (upstream, &i) = self.upstream.as_ref().zip(self.tried.last())?;
        upstream.backends().get(i).map(|b| b.state.address())
    }

    /// The name of the route the request took, if one did.
    pub(super) fn route_name(&self) -> Option<&str> {
        let routed = self.snapshot.as_ref().zip(self.route);
        routed
            .and_then(|(s, i)| s.routes().routes().get(i))
            .map(|r| r.name.as_str())
            .or(self.tunnel_route.as_deref())
    }
}
