//! The data plane: Switchyard's `ProxyHttp`. Each request loads the pool
//! snapshot once, picks a backend with the upstream's balancer, holds an
//! in-flight lease for the attempt, and retries connect failures on another
//! backend.

mod errors;
mod headers;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::metrics::{FailureKind, Metrics};
use crate::pool::{Lease, Pool, Upstream};

pub use headers::{MAX_REQUEST_ID_LEN, X_REQUEST_ID};

/// The proxy logic shared by every worker thread.
pub struct Proxy {
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
}

impl Proxy {
    pub fn new(pool: Arc<Pool>, metrics: Arc<Metrics>) -> Self {
        Proxy { pool, metrics }
    }
}

/// Per-request state. Dropping it (at the end of the request, whatever the
/// outcome) releases the in-flight lease.
pub struct RequestCtx {
    started: Instant,
    request_id: String,
    upstream: Option<Arc<Upstream>>,
    /// The backend of the current attempt, leased.
    attempt: Option<(usize, Lease)>,
    /// Backends already attempted, by index in `upstream`.
    tried: Vec<usize>,
    /// Set when the proxy wrote the response itself.
    local_status: Option<u16>,
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            request_id: String::new(),
            upstream: None,
            attempt: None,
            tried: Vec::new(),
            local_status: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.request_id = headers::request_id(session.req_header());
        ctx.upstream = Some(Arc::clone(self.pool.snapshot().route()));
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let upstream = ctx
            .upstream
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "request has no upstream"))?;
        let retrying = !ctx.tried.is_empty();
        // A retry after a broken keep-alive connection may go back to a
        // backend already tried, on a fresh connection.
        let selected = upstream
            .select(&ctx.tried)
            .or_else(|| retrying.then(|| upstream.select(&[])).flatten());
        let Some((index, lease)) = selected else {
            let why = format!("upstream {} has no usable backend", upstream.name());
            return Err(Error::explain(ErrorType::HTTPStatus(503), why));
        };
        if retrying {
            self.metrics.observe_retry(upstream.name());
        }
        let t = upstream.timeouts();
        let mut peer = HttpPeer::new(lease.backend().socket_addr(), false, String::new());
        peer.options.connection_timeout = Some(t.connect);
        peer.options.read_timeout = Some(t.read);
        peer.options.write_timeout = Some(t.write);
        peer.options.idle_timeout = Some(t.idle);
        ctx.tried.push(index);
        ctx.attempt = Some((index, lease));
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Releasing the lease here keeps a refused backend from looking busy
        // to least-connections while the retry runs.
        if let (Some(upstream), Some((_, lease))) = (&ctx.upstream, ctx.attempt.take()) {
            let backend = lease.backend();
            backend.record_failure();
            self.metrics
                .observe_failure(upstream.name(), backend.address(), FailureKind::Connect);
            let may_retry =
                ctx.tried.len() <= upstream.retries() && upstream.has_untried(&ctx.tried);
            e.set_retry(may_retry);
        }
        e
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
        headers::add_forwarded(upstream_request, client_ip, &ctx.request_id)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        upstream_response.insert_header(X_REQUEST_ID, ctx.request_id.as_str())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let already_started = session.response_written().is_some();
        let code = if already_started {
            0
        } else {
            errors::status_for(e)
        };
        if code > 0 {
            ctx.local_status = Some(code);
            self.metrics.observe_local_response(code);
            if let Err(write) = errors::respond(session, code, &ctx.request_id).await {
                log::debug!("could not send {code} to client: {write}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let (Some(upstream), Some((_, lease))) = (&ctx.upstream, &ctx.attempt) else {
            return;
        };
        let backend = lease.backend();
        if let Some(e) = e.filter(|e| *e.esource() == ErrorSource::Upstream) {
            backend.record_failure();
            self.metrics.observe_failure(
                upstream.name(),
                backend.address(),
                errors::failure_kind(e),
            );
        }
        if ctx.local_status.is_some() {
            return;
        }
        if let Some(resp) = session.response_written() {
            backend.record_response();
            let seconds = ctx.started.elapsed().as_secs_f64();
            self.metrics.observe_response(
                upstream.name(),
                backend.address(),
                resp.status.as_u16(),
                seconds,
            );
        }
    }
}
