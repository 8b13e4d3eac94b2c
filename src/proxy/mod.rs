//! The data plane: Switchyard's `ProxyHttp`. Each request loads the pool
//! snapshot once, picks a backend with the upstream's balancer, holds an
//! in-flight lease for the attempt, and retries a failed attempt on another
//! backend when that is safe (`retry.rs`) and the upstream's retry budget
//! allows it.

mod errors;
mod framing;
#[doc(hidden)]
pub mod fuzz;
mod headers;
mod retry;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::http::authority::{raw_target_authority, RawTargetAuthority};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::config::Outcome;
use crate::downstream;
use crate::metrics::{ClientTimeout, Metrics};
use crate::pool::{health, Lease, Pool, Snapshot, Upstream};

pub use headers::{MAX_REQUEST_ID_LEN, X_REQUEST_ID};

/// The proxy logic shared by every worker thread.
pub struct Proxy {
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    /// Set once the process is handing over or shutting down.
    draining: Arc<AtomicBool>,
}

impl Proxy {
    /// `draining` is set when the process starts to hand its sockets over
    /// or to shut down: from then on every response closes its connection.
    pub fn new(pool: Arc<Pool>, metrics: Arc<Metrics>, draining: Arc<AtomicBool>) -> Self {
        Proxy {
            pool,
            metrics,
            draining,
        }
    }

    /// Counts the failed attempt of `lease` in the metrics and towards
    /// its backend's ejection.
    fn record_failure(&self, upstream: &Upstream, lease: &Lease, kind: Outcome) {
        let backend = lease.backend();
        backend.record_failure();
        self.metrics
            .observe_failure(upstream.name(), backend.address(), kind);
        self.passive(upstream, lease, Some(kind));
    }

    /// Feeds the outcome of `lease`'s attempt to passive health checking:
    /// `None` is a response that does not count as a failure.
    fn passive(&self, upstream: &Upstream, lease: &Lease, outcome: Option<Outcome>) {
        let backend = lease.backend();
        let verdict = upstream.record_outcome(backend, lease.started(), outcome);
        crate::health::report_verdict(&self.metrics, upstream.name(), backend, verdict);
    }

    /// Answers the request with a short `code` response of the proxy's
    /// own, counted.
    async fn respond_locally(&self, session: &mut Session, ctx: &mut RequestCtx, code: u16) {
        ctx.local_status = Some(code);
        self.metrics.observe_local_response(code);
        if let Err(e) = errors::respond(session, code, &ctx.request_id).await {
            log::debug!("could not send {code} to client: {e}");
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

    /// Takes one retry from `upstream`'s budget; counts it when spent.
    fn take_retry(&self, upstream: &Upstream) -> bool {
        if upstream.retry_budget().try_retry(health::now()) {
            return true;
        }
        log::debug!("retry budget of upstream {} spent", upstream.name());
        self.metrics.observe_retry_budget_exhausted(upstream.name());
        false
    }
}

/// Per-request state. Dropping it (at the end of the request, whatever the
/// outcome) releases the in-flight lease.
pub struct RequestCtx {
    started: Instant,
    /// When the current attempt's backend was chosen.
    attempt_started: Instant,
    request_id: String,
    /// The snapshot the request was routed in: its route and upstream
    /// stay those for the whole request, reloads or not.
    snapshot: Option<Arc<Snapshot>>,
    /// Index of the route it took in the snapshot's table, if one did.
    route: Option<usize>,
    /// The path and query its backend gets, when not the request's own.
    rewrite: Option<String>,
    upstream: Option<Arc<Upstream>>,
    /// The backend of the current attempt, leased.
    attempt: Option<(usize, Lease)>,
    /// Backends already attempted, by index in `upstream`.
    tried: Vec<usize>,
    /// Failed attempts so far; `retries` bounds these, not reconnects.
    failures: usize,
    /// Pingora is retrying because a reused keep-alive connection broke:
    /// go back to the same backend on a new connection.
    reconnect: bool,
    /// Set when the proxy wrote the response itself.
    local_status: Option<u16>,
    /// `[server] max_body_bytes` for this request, and the body so far.
    body_limit: Option<u64>,
    body_bytes: u64,
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        let started = Instant::now();
        RequestCtx {
            started,
            attempt_started: started,
            request_id: String::new(),
            snapshot: None,
            route: None,
            rewrite: None,
            upstream: None,
            attempt: None,
            tried: Vec::new(),
            failures: 0,
            reconnect: false,
            local_status: None,
            body_limit: None,
            body_bytes: 0,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        downstream::request_started();
        let snapshot = self.pool.snapshot();
        let server = &snapshot.config.server;
        session.set_read_timeout(Some(server.client_timeouts.body));
        if self.draining.load(Ordering::Relaxed) || server.client_timeouts.keepalive.is_none() {
            // `Connection: close`. When draining, the client's next request
            // opens a new connection, which reaches the new process (or, on
            // shutdown, is refused cleanly instead of racing the close of
            // an idle keep-alive connection).
            session.set_keepalive(None);
        }
        ctx.request_id = headers::request_id(session.req_header());
        let limits = &server.limits;
        let checked = framing::check(session.req_header())
            .and_then(|()| framing::check_limits(session.req_header(), limits));
        if let Err(rejection) = checked {
            log::debug!("refused request: {}", rejection.why);
            // Whatever follows on this connection cannot be trusted to
            // start where this request ends (and its body is not read).
            session.set_keepalive(None);
            self.respond_locally(session, ctx, rejection.status).await;
            return Ok(true);
        }
        ctx.body_limit = limits.body_bytes;
        let decided = {
            let (host, target) = routing_facts(session.req_header());
            let headers = &session.req_header().headers;
            snapshot
                .routes()
                .decide(&host, &target, headers)
                .map(|d| (d.upstream, d.route.map(|r| r.position - 1), d.rewrite))
        };
        match decided {
            Ok((upstream, route, rewrite)) => {
                ctx.upstream = Some(Arc::clone(&snapshot.upstreams()[upstream]));
                ctx.route = route;
                ctx.rewrite = rewrite;
                ctx.snapshot = Some(snapshot);
                Ok(false)
            }
            Err(refusal) => {
                log::debug!("refused request: {}", refusal.why());
                // The body, if any, is not read: the connection cannot
                // carry another request.
                if has_body(session.req_header()) {
                    session.set_keepalive(None);
                }
                self.respond_locally(session, ctx, refusal.status()).await;
                Ok(true)
            }
        }
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
        let mut upstream = ctx
            .upstream
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "request has no upstream"))?;
        if std::mem::take(&mut ctx.reconnect) {
            if let Some((_, lease)) = &ctx.attempt {
                ctx.attempt_started = Instant::now();
                return Ok(peer_for(&upstream, lease));
            }
        }
        if ctx.tried.is_empty() {
            // The start time already read spares a clock read per request.
            upstream
                .retry_budget()
                .record_request(health::at(ctx.started));
        } else {
            // A retry chooses from the pool as it is now: a reload since the
            // first attempt may have removed backends, or the upstream.
            let Some(current) = self
                .pool
                .snapshot()
                .upstream_named(upstream.name())
                .cloned()
            else {
                let why = format!("upstream {} was removed by a reload", upstream.name());
                return Err(Error::explain(ErrorType::HTTPStatus(503), why));
            };
            if !Arc::ptr_eq(&current, &upstream) {
                ctx.tried = moved_tried(&upstream, &current, &ctx.tried);
                ctx.upstream = Some(Arc::clone(&current));
                upstream = current;
            }
        }
        let Some((index, lease)) = upstream.select(&ctx.tried) else {
            let why = format!("upstream {} has no usable backend", upstream.name());
            return Err(Error::explain(ErrorType::HTTPStatus(503), why));
        };
        if !ctx.tried.is_empty() {
            self.metrics.observe_retry(upstream.name());
            ctx.attempt_started = Instant::now();
        }
        let peer = peer_for(&upstream, &lease);
        ctx.tried.push(index);
        ctx.attempt = Some((index, lease));
        Ok(peer)
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
            self.record_failure(upstream, &lease, Outcome::Connect);
            ctx.failures += 1;
            let may_retry = ctx.failures <= upstream.retries() && upstream.has_untried(&ctx.tried);
            e.set_retry(may_retry && self.take_retry(upstream));
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let replayable = retry::replayable(session);
        let kind = errors::failure_kind(&e);
        ctx.reconnect = false;
        e.set_retry(false);
        // Only a broken connection is retried. Not a timeout: the backend
        // may still be working on it, and a second try doubles the wait.
        // Not invalid HTTP: the backend would answer the same. Not the
        // client's own failure.
        let broken = *e.esource() == ErrorSource::Upstream && kind == Outcome::Reset;
        if !replayable || !broken {
            return e;
        }
        if client_reused {
            // A reused keep-alive connection broke: most likely the backend
            // closed it as we sent. That is not the backend failing, so it
            // is not counted and does not use up `retries`: the same
            // backend gets a new connection.
            e.set_retry(true);
            ctx.reconnect = true;
        } else if let Some(upstream) = ctx.upstream.clone().filter(|_| ctx.attempt.is_some()) {
            // A new connection failed before any answer: the backend did.
            let may_retry = ctx.failures < upstream.retries()
                && upstream.has_untried(&ctx.tried)
                && self.take_retry(&upstream);
            e.set_retry(may_retry);
            if may_retry {
                // Counted here, as `logging` sees only the last attempt.
                if let Some((_, lease)) = ctx.attempt.take() {
                    self.record_failure(&upstream, &lease, kind);
                }
                ctx.failures += 1;
            }
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
        headers::add_forwarded(upstream_request, client_ip, &ctx.request_id)
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
        // How long the backend took to answer, for least-connections. An
        // informational head (100, 103) is not the answer, and a 5xx is no
        // measure of speed: a backend failing fast must not look like the
        // fastest and hold the working ones back.
        let status = upstream_response.status;
        if let (Some((_, lease)), false) = (
            &ctx.attempt,
            status.is_informational() || status.is_server_error(),
        ) {
            let now = Instant::now();
            let took = now.saturating_duration_since(ctx.attempt_started);
            let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
            lease.backend().latency().record(took, health::at(now));
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if self.draining.load(Ordering::Relaxed) {
            // Also for requests that arrived before draining began.
            session.set_keepalive(None);
        }
        upstream_response.insert_header(X_REQUEST_ID, ctx.request_id.as_str())
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
        self.count_route(session, ctx);
        // The other client timeouts are counted where they fire, in the
        // connection's stream.
        if e.is_some_and(|e| {
            *e.esource() == ErrorSource::Downstream && *e.etype() == ErrorType::ReadTimedout
        }) {
            self.metrics.observe_client_timeout(ClientTimeout::Body);
        }
        let (Some(upstream), Some((_, lease))) = (&ctx.upstream, &ctx.attempt) else {
            return;
        };
        let backend = lease.backend();
        if let Some(e) = e.filter(|e| *e.esource() == ErrorSource::Upstream) {
            // Includes a response cut off mid-body: a failure, not a response.
            self.record_failure(upstream, lease, errors::failure_kind(e));
            return;
        }
        if ctx.local_status.is_some() || !response_started(session) {
            return;
        }
        if let Some(resp) = session.response_written() {
            backend.record_response();
            let outcome = resp
                .status
                .is_server_error()
                .then_some(Outcome::ServerError);
            self.passive(upstream, lease, outcome);
            let seconds = ctx.started.elapsed().as_secs_f64();
            self.metrics
                .observe_response(upstream.name(), backend, resp.status, seconds);
        }
    }
}

/// What routing needs of a request head: the host it names (the
/// absolute-form authority, else `Host`), and its target in origin form.
/// A target that is not UTF-8 is given as is, lossily: its path cannot
/// match a route's, and normalising refuses what it cannot read.
fn routing_facts(req: &RequestHeader) -> (std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>) {
    let raw = req.raw_path();
    let (authority, target) = match raw_target_authority(raw) {
        RawTargetAuthority::Absolute {
            authority,
            path_and_query,
            ..
        } => (Some(authority), path_and_query),
        _ => (None, raw),
    };
    let host = authority
        .or_else(|| req.headers.get(http::header::HOST).map(|h| h.as_bytes()))
        .unwrap_or_default();
    (
        String::from_utf8_lossy(host),
        String::from_utf8_lossy(target),
    )
}

/// Whether the request says it has a body (unread when answered locally).
fn has_body(req: &RequestHeader) -> bool {
    req.headers.contains_key(http::header::TRANSFER_ENCODING)
        || req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// Whether a final response has gone to the client. A 1xx (103 Early Hints,
/// 100 Continue) is not final, so an error after one still gets its 5xx.
fn response_started(session: &Session) -> bool {
    session
        .response_written()
        .is_some_and(|r| !r.status.is_informational() || r.status == 101)
}

/// `tried`, indices into `old`'s backends, as indices into `new`'s (the
/// same addresses; those `new` no longer has drop out).
fn moved_tried(old: &Upstream, new: &Upstream, tried: &[usize]) -> Vec<usize> {
    tried
        .iter()
        .filter_map(|&i| {
            let address = old.backends().get(i)?.state.address();
            new.backends()
                .iter()
                .position(|b| b.state.address() == address)
        })
        .collect()
}

/// The peer for the backend `lease` is on, with the upstream's timeouts.
fn peer_for(upstream: &Upstream, lease: &Lease) -> Box<HttpPeer> {
    let t = upstream.timeouts();
    let mut peer = HttpPeer::new(lease.backend().socket_addr(), false, String::new());
    peer.options.connection_timeout = Some(t.connect);
    peer.options.read_timeout = Some(t.read);
    peer.options.write_timeout = Some(t.write);
    peer.options.idle_timeout = Some(t.idle);
    Box::new(peer)
}
