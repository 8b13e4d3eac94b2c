//! Admitting a request: the checks of its framing and limits, routing it
//! through the route table, and its affinity hint; or the local answer
//! that refuses it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use pingora::http::authority::{raw_target_authority, RawTargetAuthority};
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::{affinity, errors, framing, grpc, headers, https, Proxy, RequestCtx};
use crate::access_log::LocalReason;
use crate::downstream;
use crate::pool::Snapshot;

impl Proxy {
    /// `request_filter`: `Ok(true)` when the request was answered here (an
    /// upgrade carried as a tunnel included).
    pub(super) async fn admit(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        downstream::request_started(body_framing(session));
        let snapshot = self.pool.snapshot();
        let server = &snapshot.config.server;
        session.set_read_timeout(Some(server.client_timeouts.body));
        if session.is_http2() {
            // An HTTP/2 client can stop taking a response with flow control
            // while still reading its socket, which the connection's own
            // send deadline never sees: each write of the stream is timed.
            session.set_write_timeout(Some(server.client_timeouts.send));
        }
        if self.draining.is_set() || server.client_timeouts.keepalive.is_none() {
            // `Connection: close`. When draining, the client's next request
            // opens a new connection, which reaches the new process (or, on
            // shutdown, is refused cleanly instead of racing the close of
            // an idle keep-alive connection).
            session.set_keepalive(None);
        }
        ctx.request_id = headers::request_id(session.req_header());
        ctx.grpc = grpc::is_grpc(session.req_header());
        ctx.te_trailers = headers::asks_trailers(session.req_header());
        if ctx.grpc {
            ctx.deadline =
                grpc::timeout(session.req_header()).and_then(|t| ctx.started.checked_add(t));
        }
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
        ctx.tls = https::is_tls(session);
        if server.redirect_https && !ctx.tls {
            self.redirect_to_https(session, ctx, &snapshot).await;
            return Ok(true);
        }
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let decided = {
            let req = session.req_header();
            let (host, target) = routing_facts(req);
            snapshot
                .routes()
                .decide(&host, &target, &req.headers)
                .map(|d| {
                    let upstream = &snapshot.upstreams()[d.upstream];
                    let hint = affinity::hint(upstream, &req.headers, &target, client);
                    (d.upstream, d.route.map(|r| r.position - 1), d.rewrite, hint)
                })
        };
        match decided {
            Ok((upstream, route, rewrite, hint)) => {
                let upstream = Arc::clone(&snapshot.upstreams()[upstream]);
                if upstream.hashed().is_some() && hint.key.is_none() {
                    upstream
                        .counters()
                        .hash_misses
                        .fetch_add(1, Ordering::Relaxed);
                    self.metrics.observe_hash_miss(upstream.name());
                }
                ctx.upstream = Some(upstream);
                ctx.route = route;
                ctx.rewrite = rewrite;
                ctx.hint = hint;
                ctx.snapshot = Some(snapshot);
                self.tunnel(session, ctx).await
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

    /// Answers the request with a short `code` response of the proxy's
    /// own, counted.
    pub(super) async fn respond_locally(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        code: u16,
    ) {
        self.respond_locally_with(session, ctx, code, None).await
    }

    /// [`respond_locally`](Self::respond_locally), with `location`.
    async fn respond_locally_with(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        code: u16,
        location: Option<&str>,
    ) {
        ctx.local_status = Some(code);
        ctx.local_reason
            .get_or_insert_with(|| LocalReason::for_status(code));
        self.metrics.observe_local_response(code);
        let server = match &ctx.snapshot {
            Some(snapshot) => snapshot.config.server.server_header.clone(),
            None => self.pool.snapshot().config.server.server_header.clone(),
        };
        let server = server.as_ref();
        if ctx.grpc {
            let upstream = ctx.upstream.as_ref().map_or("", |u| u.name());
            let backend = ctx.last_backend().unwrap_or("");
            match grpc::respond(session, code, &ctx.request_id, server).await {
                Ok(status) => self.metrics.observe_grpc(upstream, backend, status),
                Err(e) => log::debug!("could not send a gRPC error to client: {e}"),
            }
            return;
        }
        if let Err(e) = errors::respond(session, code, &ctx.request_id, server, location).await {
            log::debug!("could not send {code} to client: {e}");
        }
    }

    /// `redirect_https`: a `308` to the same URL on the first TLS
    /// listener's port, or a `400` for a request that names no host.
    async fn redirect_to_https(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        snapshot: &Snapshot,
    ) {
        let server = &snapshot.config.server;
        let port = server
            .tls
            .as_ref()
            .and_then(|t| t.listen.first())
            .map(|a| a.port());
        let location = port.and_then(|port| {
            let (host, target) = raw_facts(session.req_header());
            https::location(host, target, port)
        });
        // The body, if any, is not read.
        if has_body(session.req_header()) {
            session.set_keepalive(None);
        }
        match location {
            Some(location) => {
                self.respond_locally_with(session, ctx, 308, Some(&location))
                    .await
            }
            None => self.respond_locally(session, ctx, 400).await,
        }
    }
}

/// What routing needs of a request head: the host it names (the
/// absolute-form authority, else `Host`, else HTTP/2's `:authority`), and
/// its target in origin form. A target that is not UTF-8 is given as is,
/// lossily: its path cannot match a route's, and normalising refuses what
/// it cannot read.
fn routing_facts(req: &RequestHeader) -> (std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>) {
    let (host, target) = raw_facts(req);
    (
        String::from_utf8_lossy(host),
        String::from_utf8_lossy(target),
    )
}

/// [`routing_facts`], as the bytes the request carried.
pub(super) fn raw_facts(req: &RequestHeader) -> (&[u8], &[u8]) {
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
        .or_else(|| req.uri.authority().map(|a| a.as_str().as_bytes()))
        .unwrap_or_default();
    (host, target)
}

/// How the request's body is framed, as Pingora reads an HTTP/1 one: it
/// has refused a last transfer coding other than `chunked`, and lengths
/// that disagree. An upgrade without a body is read as it comes (what
/// follows its head is the new protocol's, once the backend agrees); one
/// with a body is declined and forwarded as a plain request, so its body
/// is read as strictly as any other.
fn body_framing(session: &Session) -> downstream::Body {
    let req = session.req_header();
    let length = framing::agreed_content_length(req);
    if req.headers.contains_key(http::header::TRANSFER_ENCODING) {
        downstream::Body::Chunked
    } else if session.is_upgrade_req() && length.is_none_or(|n| n == 0) {
        downstream::Body::Unknown
    } else if req.headers.contains_key(http::header::CONTENT_LENGTH) {
        length.map_or(downstream::Body::Unknown, downstream::Body::Length)
    } else {
        downstream::Body::Length(0)
    }
}

/// Whether the request says it has a body (unread when answered locally).
fn has_body(req: &RequestHeader) -> bool {
    req.headers.contains_key(http::header::TRANSFER_ENCODING)
        || req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}
