//! The data plane: Switchyard's `ProxyHttp`, a thin adapter over the core
//! (routing, pool, affinity). Each request loads the pool snapshot once and
//! is admitted in `request.rs` (framing and limits, its route, its affinity
//! hint from `affinity.rs`); each attempt takes a backend and an in-flight
//! lease in `attempt.rs`, which retries a failed attempt on another backend
//! when that is safe (`retry.rs`) and the retry budget allows it. The hooks
//! here shape the responses and count them.

mod access;
pub(crate) mod affinity;
mod attempt;
mod ctx;
mod errors;
mod framing;
#[doc(hidden)]
pub mod fuzz;
mod grpc;
mod headers;
mod https;
mod peer;
mod request;
mod retry;
mod tunnel;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::access_log::AccessLog;
use crate::config::{Balance, Outcome};
use crate::drain::Draining;
use crate::metrics::{ClientTimeout, Metrics};
use crate::pool::{health, keepalive, Pool};

pub use ctx::RequestCtx;
pub use grpc::status_name as grpc_status_name;
pub use headers::{MAX_REQUEST_ID_LEN, X_REQUEST_ID};
pub use peer::PeerTemplate;

/// The proxy logic shared by every worker thread.
pub struct Proxy {
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    /// Set once the process is handing over or shutting down.
    draining: Arc<Draining>,
    /// Connects tunnels to their backends.
    tunnels: tunnel::Connector,
    access_log: Arc<AccessLog>,
}

impl Proxy {
    /// `draining` is set when the process starts to hand its sockets over
    /// or to shut down: from then on every response closes its connection,
    /// and tunnels close spread over the grace period. Every request ends
    /// with a line in `access_log` (when it is on).
    pub fn new(
        pool: Arc<Pool>,
        metrics: Arc<Metrics>,
        draining: Arc<Draining>,
        access_log: Arc<AccessLog>,
    ) -> Self {
        Proxy {
            pool,
            metrics,
            draining,
            tunnels: tunnel::Connector::new(),
            access_log,
        }
    }

    /// Counts the request under the route it took, with the status it got
    /// (from a backend or from the proxy); nothing if none was sent.
    fn count_route(&self, session: &Session, ctx: &RequestCtx) {
        let (Some(snapshot), Some(i)) = (&ctx.snapshot, ctx.route) else {
            return;
        };
        let status = match ctx.local_status {
            Some(code) => http::StatusCode::from_u16(code).ok(),
            None => session.response_written().map(|r| r.status),
        };
        if let (Some(status), Some(series)) = (status, snapshot.route_series.get(i)) {
            let name = &snapshot.routes().routes()[i].name;
            self.metrics.observe_route(series, name, status);
        }
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        self.admit(session, ctx).await
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // A body without Content-Length (chunked) is counted as it comes.
        let (Some(limit), Some(chunk)) = (ctx.body_limit, body.as_ref()) else {
            return Ok(());
        };
        ctx.body_bytes += chunk.len() as u64;
        if ctx.body_bytes > limit {
            session.set_keepalive(None);
            let why = format!("request body larger than max_body_bytes ({limit})");
            return Err(Error::explain(ErrorType::HTTPStatus(413), why));
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        self.choose(ctx)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        self.connect_failed(ctx, e)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        self.attempt_failed(peer, session, e, ctx, client_reused)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        framing::normalise(upstream_request)?;
        if let Some(target) = &ctx.rewrite {
            upstream_request.set_raw_path(target.as_bytes())?;
        }
        let prefix = ctx
            .snapshot
            .as_ref()
            .zip(ctx.route)
            .and_then(|(s, i)| s.routes().routes()[i].forwarded_prefix());
        headers::set_forwarded_prefix(upstream_request, prefix)?;
        if ctx
            .upstream
            .as_ref()
            .is_some_and(|u| u.peer_template().http2())
        {
            headers::te_for_http2(upstream_request, ctx.te_trailers)?;
        }
        headers::add_forwarded(upstream_request, client_ip, ctx.tls, &ctx.request_id)
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // After a 101 the backend speaks another protocol on the connection.
        // A client that asked for no upgrade would read that as HTTP, so
        // the backend broke the protocol: 502, and the connection is dropped.
        if upstream_response.status == http::StatusCode::SWITCHING_PROTOCOLS
            && !session.is_upgrade_req()
        {
            let why = "101 Switching Protocols to a request without Upgrade";
            return Err(Error::explain(ErrorType::InvalidHTTPHeader, why).into_up());
        }
        note_keepalive(upstream_response, ctx);
        // How long the backend took to answer, for least-connections. An
        // informational head (100, 103) is not the answer, and a 5xx is no
        // measure of speed: a backend failing fast must not look like the
        // fastest and hold the working ones back.
        let status = upstream_response.status;
        if ctx.grpc {
            // A trailers-only answer carries its status in the head.
            ctx.grpc_status = grpc::status_of(&upstream_response.headers);
        }
        if status.is_informational() && status != http::StatusCode::SWITCHING_PROTOCOLS {
            return Ok(());
        }
        let now = Instant::now();
        let took = now.saturating_duration_since(ctx.attempt_started);
        ctx.upstream_time = Some(took);
        if let (Some((_, lease)), false) = (
            &ctx.attempt,
            status.is_informational() || status.is_server_error(),
        ) {
            let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
            lease.backend().latency().record(took, health::at(now));
            if let Some(u) = ctx
                .upstream
                .as_ref()
                .filter(|u| u.balance() == Balance::LeastLatency)
            {
                let decay = u.latency_decay();
                lease.backend().ewma().observe(took, health::at(now), decay);
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if self.draining.is_set() {
            // Also for requests that arrived before draining began.
            session.set_keepalive(None);
        }
        // Pin the client to the backend that answered, unless its cookie
        // already named that one.
        if let (Some(upstream), Some((i, _))) = (&ctx.upstream, &ctx.attempt) {
            if let Some(sticky) = upstream.sticky().filter(|_| ctx.hint.pinned != Some(*i)) {
                let cookie = affinity::set_cookie(&sticky.config, sticky.id(*i), ctx.tls);
                upstream_response.append_header(http::header::SET_COOKIE, cookie)?;
            }
        }
        if ctx.tls {
            let hsts = ctx
                .snapshot
                .as_ref()
                .and_then(|s| s.config.server.tls.as_ref()?.hsts.as_deref());
            if let Some(hsts) = hsts {
                upstream_response.insert_header(http::header::STRICT_TRANSPORT_SECURITY, hsts)?;
            }
        }
        upstream_response.insert_header(X_REQUEST_ID, ctx.request_id.as_str())
    }

    async fn response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut RequestCtx,
    ) -> Result<Option<bytes::Bytes>> {
        if ctx.grpc {
            ctx.grpc_status = grpc::status_of(trailers).or(ctx.grpc_status);
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let already_started = response_started(session);
        let code = if already_started {
            0
        } else {
            ctx.local_reason = errors::local_reason(e, ctx.deadline_bound).or(ctx.local_reason);
            errors::status_for(e)
        };
        if code > 0 {
            self.respond_locally(session, ctx, code).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        self.log_access(session, ctx);
        self.metrics.observe_protocol(session.is_http2());
        self.count_route(session, ctx);
        // The other client timeouts are counted where they fire, in the
        // connection's stream; an HTTP/2 stream's writes are timed by
        // Pingora.
        match e
            .filter(|e| *e.esource() == ErrorSource::Downstream)
            .map(|e| e.etype())
        {
            Some(ErrorType::ReadTimedout) => {
                self.metrics.observe_client_timeout(ClientTimeout::Body)
            }
            Some(ErrorType::WriteTimedout) if session.is_http2() => {
                self.metrics.observe_client_timeout(ClientTimeout::Send)
            }
            _ => {}
        }
        let (Some(upstream), Some((_, lease))) = (&ctx.upstream, &ctx.attempt) else {
            return;
        };
        let backend = lease.backend();
        if let Some(e) = e.filter(|e| *e.esource() == ErrorSource::Upstream) {
            // The client's own deadline, or a stream the backend refused
            // (it shed the load; nothing ran), is not the backend failing.
            let client_deadline = ctx.deadline_bound && *e.etype() == ErrorType::ReadTimedout;
            if !client_deadline && !retry::refused_stream(e) {
                // Includes a response cut off mid-body: a failure, not a
                // response.
                self.record_failure(upstream, lease, errors::failure_kind(e));
            }
            return;
        }
        if ctx.local_status.is_some() || !response_started(session) {
            return;
        }
        if let Some(resp) = session.response_written() {
            backend.record_response();
            if let Some(status) = ctx.grpc_status {
                self.metrics
                    .observe_grpc(upstream.name(), backend.address(), status);
            }
            let outcome = if resp.status.is_server_error() {
                Some(Outcome::ServerError)
            } else if ctx.grpc_status == Some(grpc::UNAVAILABLE) {
                Some(Outcome::GrpcUnavailable)
            } else {
                None
            };
            self.passive(upstream, lease, outcome);
            let seconds = ctx.started.elapsed().as_secs_f64();
            self.metrics
                .observe_response(upstream.name(), backend, resp.status, seconds);
        }
    }
}

/// Remembers the keep-alive an HTTP/1.1 backend announces, so that its
/// pooled connections stop being lent before it closes them (see
/// [`keepalive`](crate::pool::keepalive)).
fn note_keepalive(response: &ResponseHeader, ctx: &RequestCtx) {
    let (Some(upstream), Some((_, lease))) = (&ctx.upstream, &ctx.attempt) else {
        return;
    };
    if upstream.peer_template().http2() {
        return;
    }
    let values = response.headers.get_all("keep-alive").into_iter();
    let Some(seconds) = keepalive::announced_timeout(values.map(|v| v.as_bytes())) else {
        return;
    };
    let backend = lease.backend();
    if backend.announce_keepalive(seconds) {
        let idle = keepalive::pooled_idle_timeout(upstream.timeouts().idle, Some(seconds));
        log::info!(
            "backend {}/{} announces a keep-alive of {seconds}s: its pooled connections \
             idle at most {idle:?}",
            upstream.name(),
            backend.address(),
        );
    }
}

/// Whether a final response has gone to the client. A 1xx (103 Early Hints,
/// 100 Continue) is not final, so an error after one still gets its 5xx.
fn response_started(session: &Session) -> bool {
    session
        .response_written()
        .is_some_and(|r| !r.status.is_informational() || r.status == 101)
}
