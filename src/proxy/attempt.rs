//! One attempt on a backend: choosing it (a retry from the pool as it is
//! now), what its failure counts for, and whether it is tried again.

use std::sync::Arc;
use std::time::Instant;

use pingora::prelude::HttpPeer;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType, Result};

use super::{errors, retry, Proxy, RequestCtx};
use crate::access_log::LocalReason;
use crate::config::Outcome;
use crate::pool::{health, Lease, Upstream};

impl Proxy {
    /// `upstream_peer`: the backend for this attempt, leased.
    pub(super) fn choose(&self, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        let mut upstream = ctx
            .upstream
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "request has no upstream"))?;
        if std::mem::take(&mut ctx.reconnect) {
            if let Some((_, lease)) = &ctx.attempt {
                ctx.attempt_started = Instant::now();
                let mut peer = peer_for(&upstream, lease);
                within_deadline(ctx, &mut peer)?;
                ctx.attempts += 1;
                return Ok(peer);
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
            upstream = self.current_upstream(ctx)?;
        }
        let (upstream, index, lease) = self.pick(ctx, upstream)?;
        let mut peer = peer_for(&upstream, &lease);
        within_deadline(ctx, &mut peer)?;
        if !ctx.tried.is_empty() {
            self.metrics.observe_retry(upstream.name());
            ctx.attempt_started = Instant::now();
        }
        ctx.tried.push(index);
        ctx.attempt = Some((index, lease));
        ctx.attempts += 1;
        Ok(peer)
    }

    /// The upstream's pick for this attempt, leased, and the upstream it
    /// was picked in. A pick that a drain
    /// has just taken out (the request was routed in the snapshot before
    /// it) is given back, and made again in the current snapshot; a drain
    /// that saw nothing in flight on the backend so stays right. The third
    /// pick stands: only an undrain racing the pick could get that far.
    fn pick(
        &self,
        ctx: &mut RequestCtx,
        mut upstream: Arc<Upstream>,
    ) -> Result<(Arc<Upstream>, usize, Lease)> {
        let mut picks = 0;
        loop {
            let Some((index, lease)) = upstream.select(&ctx.tried, ctx.hint) else {
                let why = format!("upstream {} has no usable backend", upstream.name());
                return Err(Error::explain(ErrorType::HTTPStatus(503), why));
            };
            picks += 1;
            if picks == 3 || !lease.backend().is_drained() {
                return Ok((upstream, index, lease));
            }
            drop(lease);
            upstream = self.current_upstream(ctx)?;
        }
    }

    /// The request's upstream in the current snapshot, made the request's
    /// own, with the backends it tried named by their indices there.
    fn current_upstream(&self, ctx: &mut RequestCtx) -> Result<Arc<Upstream>> {
        let upstream = ctx
            .upstream
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "request has no upstream"))?;
        let Some(current) = self
            .pool
            .snapshot()
            .upstream_named(upstream.name())
            .cloned()
        else {
            let why = format!("upstream {} was removed by a reload", upstream.name());
            ctx.local_reason = Some(LocalReason::UpstreamRemoved);
            return Err(Error::explain(ErrorType::HTTPStatus(503), why));
        };
        if !Arc::ptr_eq(&current, &upstream) {
            ctx.tried = moved_tried(&upstream, &current, &ctx.tried);
            // Indices of the old snapshot's backends mean nothing now.
            ctx.hint.pinned = None;
            ctx.upstream = Some(Arc::clone(&current));
        }
        Ok(current)
    }

    /// `fail_to_connect`: counts the refusal and decides on a retry.
    pub(super) fn connect_failed(&self, ctx: &mut RequestCtx, mut e: Box<Error>) -> Box<Error> {
        // Releasing the lease here keeps a refused backend from looking busy
        // to least-connections while the retry runs.
        if let (Some(upstream), Some((_, lease))) = (&ctx.upstream, ctx.attempt.take()) {
            self.record_failure(upstream, &lease, errors::connect_kind(&e));
            ctx.failures += 1;
            let may_retry = ctx.failures <= upstream.retries() && upstream.has_untried(&ctx.tried);
            e.set_retry(may_retry && self.take_retry(upstream));
        }
        e
    }

    /// `error_while_proxy`: whether a broken attempt is sent again.
    pub(super) fn attempt_failed(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let kind = errors::failure_kind(&e);
        ctx.reconnect = false;
        e.set_retry(false);
        let upstream_side = *e.esource() == ErrorSource::Upstream;
        // An HTTP/2 stream the backend refused, or left unprocessed when it
        // went away, never ran; nor did a request on a TLS connection the
        // backend refused at the end of its handshake (TLS 1.3 sends the
        // refusal of a client certificate after the client is done): they
        // may go to another backend whatever their method.
        let refused = upstream_side && retry::refused_stream(&e);
        let never_ran = refused || (upstream_side && kind == Outcome::Tls);
        let replayable = if never_ran {
            retry::resendable(session)
        } else {
            retry::replayable(session)
        };
        // Otherwise only a broken connection is retried. Not a timeout:
        // the backend may still be working on it, and a second try doubles
        // the wait. Not invalid HTTP: the backend would answer the same.
        // Not the client's own failure.
        let broken = upstream_side && kind == Outcome::Reset;
        if !replayable || !(broken || never_ran) {
            return e;
        }
        let Some(upstream) = ctx.upstream.clone().filter(|_| ctx.attempt.is_some()) else {
            return e;
        };
        if client_reused && !never_ran {
            // A reused keep-alive connection broke: most likely the backend
            // closed it as we sent. That is not the backend failing, so it
            // is not counted and does not use up `retries`: the same
            // backend gets a new connection.
            e.set_retry(true);
            ctx.reconnect = true;
        } else if refused {
            // The backend shed load or is going away: not a failure of it.
            // Another backend if there is one, else a new stream (or, after
            // a GOAWAY, a new connection) on the same.
            let may_retry = ctx.failures < upstream.retries() && self.take_retry(&upstream);
            e.set_retry(may_retry);
            if may_retry {
                ctx.failures += 1;
                if upstream.has_untried(&ctx.tried) {
                    ctx.attempt = None;
                } else {
                    ctx.reconnect = true;
                }
            }
        } else {
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

    /// Counts the failed attempt of `lease` in the metrics and towards
    /// its backend's ejection.
    pub(super) fn record_failure(&self, upstream: &Upstream, lease: &Lease, kind: Outcome) {
        let backend = lease.backend();
        backend.record_failure();
        self.metrics
            .observe_failure(upstream.name(), backend.address(), kind);
        self.passive(upstream, lease, Some(kind));
    }

    /// Feeds the outcome of `lease`'s attempt to passive health checking:
    /// `None` is a response that does not count as a failure.
    pub(super) fn passive(&self, upstream: &Upstream, lease: &Lease, outcome: Option<Outcome>) {
        let backend = lease.backend();
        let verdict = upstream.record_outcome(backend, lease.started(), outcome);
        crate::health::report_verdict(&self.metrics, upstream.name(), backend, verdict);
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

/// Bounds `peer`'s connect and read timeouts by the client's
/// `grpc-timeout`, when it ends first; an error once it has ended. Notes
/// in `ctx` whether the deadline, not the backend, set the read timeout.
fn within_deadline(ctx: &mut RequestCtx, peer: &mut HttpPeer) -> Result<()> {
    let Some(deadline) = ctx.deadline else {
        return Ok(());
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        ctx.local_reason = Some(LocalReason::DeadlineExceeded);
        let why = "the call's grpc-timeout ran out before a backend answered";
        return Err(Error::explain(ErrorType::HTTPStatus(504), why));
    }
    let o = &mut peer.options;
    ctx.deadline_bound = o.read_timeout.is_none_or(|r| left < r);
    o.read_timeout = Some(o.read_timeout.map_or(left, |r| r.min(left)));
    o.connection_timeout = Some(o.connection_timeout.map_or(left, |c| c.min(left)));
    Ok(())
}

/// The peer for the backend `lease` is on, with the upstream's protocol,
/// TLS and timeouts.
fn peer_for(upstream: &Upstream, lease: &Lease) -> Box<HttpPeer> {
    let backend = lease.backend();
    let template = upstream.peer_template();
    Box::new(template.peer(backend, upstream.timeouts()))
}
