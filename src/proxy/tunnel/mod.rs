//! Upgraded connections (WebSockets and other HTTP/1.1 upgrades) as
//! tunnels Switchyard owns from the backend's `101` on.
//!
//! An admitted upgrade request leaves Pingora's proxy loop in
//! `request_filter`: its backend is chosen and leased as for any request
//! (`attempt.rs`, with its retries), the request head goes out shaped by
//! the same hooks (`upstream_request_filter`), and the backend's answer
//! comes back through `upstream_response_filter` and `response_filter`.
//! Anything but a `101` is relayed as a response and both connections
//! close, so nothing the client sent after the head is ever read as a
//! request. A `101` is written to the client, and from then on the bytes
//! are copied both ways here (`pipe.rs`), the early ones of either side
//! first: Pingora's loop, which can end a tunnel right after relaying its
//! `101` (cloudflare/pingora#946), never sees it.
//!
//! The tunnel holds its backend's in-flight lease while it is open, so
//! least-connections sees it, and outlives reloads: what it holds is its
//! own. It ends when either side closes, after `tunnel_idle_timeout` with
//! no byte either way, or at its instant of the drain.

mod head;
mod pipe;
mod take;

use std::sync::Arc;

use bytes::Bytes;
use pingora::connectors::TransportConnector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::protocols::http::v1::client::HttpSession as Backend;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::{ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};
use tokio::io::AsyncWriteExt;

use super::{Proxy, RequestCtx};
use crate::config::MAX_RETRIES;
use crate::downstream;

/// Informational answers (`100`, `103`) skipped before a backend's final
/// answer to an upgrade; more is a broken backend.
const MAX_INFORMATIONAL: usize = 8;

/// Opens tunnels' connections to their backends.
pub(super) struct Connector {
    /// New connections only, never pooled: a tunnel's connection is its
    /// own. TCP now; TLS where the peer asks for it.
    transport: TransportConnector,
}

impl Connector {
    pub(super) fn new() -> Self {
        Connector {
            transport: TransportConnector::new(None),
        }
    }

    /// A new connection to `peer`, within its connect timeout. An upgrade
    /// is HTTP/1.1 only, so a TLS handshake offers nothing else.
    async fn connect(&self, peer: &mut HttpPeer) -> Result<Stream> {
        peer.options.alpn = ALPN::H1;
        self.transport.new_stream(peer).await
    }
}

impl Proxy {
    /// Serves an admitted request as a tunnel if it is an upgrade Switchyard
    /// carries: `Ok(true)` once it has been answered (and, after a `101`,
    /// carried to its end), `Ok(false)` for the proxy loop to forward.
    pub(super) async fn tunnel(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // An HTTP/2 backend takes no HTTP/1.1 upgrade, and Switchyard does
        // not open WebSockets as HTTP/2 streams (RFC 8441): the request goes
        // on as a plain one, and the backend says what it makes of it.
        let http2 = ctx
            .upstream
            .as_ref()
            .is_some_and(|u| u.peer_template().http2());
        match head::classify(session) {
            head::Kind::Plain => return Ok(false),
            head::Kind::Tunnel if http2 => {
                head::decline(session.req_header_mut());
                return Ok(false);
            }
            head::Kind::Declined => {
                head::decline(session.req_header_mut());
                return Ok(false);
            }
            head::Kind::Tunnel => {}
        }
        let mut req = session.req_header().clone();
        head::for_backend(&mut req)?;
        ProxyHttp::upstream_request_filter(self, session, &mut req, ctx).await?;
        let mut backend = self.handshake(session, ctx, &req).await?;
        let Some(resp) = backend.resp_header() else {
            return Error::e_explain(ErrorType::InternalError, "no response head read");
        };
        let mut resp = resp.clone();
        ProxyHttp::upstream_response_filter(self, session, &mut resp, ctx).await?;
        ProxyHttp::response_filter(self, session, &mut resp, ctx).await?;
        if resp.status != http::StatusCode::SWITCHING_PROTOCOLS {
            relay(session, backend, resp).await?;
            return Ok(true);
        }
        if !backend.was_upgraded() {
            // A 101 in HTTP/1.0, which has no upgrades.
            let why = "101 Switching Protocols not in HTTP/1.1";
            return Err(Error::explain(ErrorType::InvalidHTTPHeader, why).into_up());
        }
        let early = early_bytes(&mut backend).await;
        let client = take::take(session).await?;
        self.carry(session, ctx, client, (backend.into_inner(), early), &resp)
            .await;
        Ok(true)
    }

    /// Connects to a backend and sends it `req`, until its final answer's
    /// head is read; a failed connect, or a new connection broken before
    /// any answer, tries another backend as the proxy loop would.
    async fn handshake(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        req: &RequestHeader,
    ) -> Result<Backend> {
        // The upstream's `retries` and budget decide; this only bounds it.
        for _ in 0..=MAX_RETRIES {
            let mut peer = self.choose(ctx)?;
            let stream = match self.tunnels.connect(&mut peer).await {
                Ok(stream) => stream,
                Err(e) => {
                    let e = self.connect_failed(ctx, e.into_up());
                    if e.retry() {
                        continue;
                    }
                    return Err(e);
                }
            };
            let mut backend = Backend::new_with_options(stream, &*peer);
            backend.read_timeout = peer.options.read_timeout;
            backend.write_timeout = peer.options.write_timeout;
            match exchange(&mut backend, req).await {
                Ok(()) => return Ok(backend),
                Err(e) => {
                    let e = self.attempt_failed(&peer, session, e.into_up(), ctx, false);
                    if !e.retry() {
                        return Err(e);
                    }
                }
            }
        }
        Error::e_explain(ErrorType::InternalError, "no attempt left for the tunnel")
    }

    /// Sends the `101` to the client and carries the tunnel to its end.
    async fn carry(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        client: take::Client,
        backend: (Stream, Bytes),
        resp: &ResponseHeader,
    ) {
        let (Some(upstream), Some((_, lease))) = (ctx.upstream.clone(), &ctx.attempt) else {
            return;
        };
        let backend_state = Arc::clone(lease.backend());
        let mut stream = client.stream;
        let sent = async {
            stream.write_all(&head::to_wire(resp)).await?;
            stream.flush().await
        };
        if let Err(e) = sent.await {
            log::debug!("client gone before its 101: {e}");
            return;
        }
        take::record(session, resp).await;
        downstream::tunnel_started();
        // The route is counted now, so that the tunnel need not hold the
        // snapshot it was routed in (and its whole config) while it lasts;
        // only its name is kept, for the access log's line at the close.
        self.count_route(session, ctx);
        ctx.tunnel_route = ctx.route_name().map(str::to_owned);
        ctx.route = None;
        let grace_period = ctx.snapshot.take().map(|s| s.config.server.grace_period);
        let _open = self
            .metrics
            .tunnel_opened(upstream.name(), backend_state.address());
        let closing = self
            .draining
            .tunnel_closes(grace_period.unwrap_or_default());
        let idle = upstream.timeouts().tunnel_idle;
        let carried = pipe::carry((stream, client.early), backend, idle, closing).await;
        ctx.tunnel_bytes = Some((carried.from_client, carried.from_backend));
        log::debug!(
            "tunnel to {} of {} ended: {}",
            backend_state.address(),
            upstream.name(),
            carried.end
        );
    }
}

/// Writes `req` and reads the answer's head, skipping informational ones.
async fn exchange(backend: &mut Backend, req: &RequestHeader) -> Result<()> {
    backend.write_request_header(Box::new(req.clone())).await?;
    for _ in 0..MAX_INFORMATIONAL {
        backend.read_response().await?;
        match backend.get_status() {
            Some(s) if s.is_informational() && s != http::StatusCode::SWITCHING_PROTOCOLS => {}
            _ => return Ok(()),
        }
    }
    Error::e_explain(
        ErrorType::InvalidHTTPHeader,
        "too many informational responses",
    )
}

/// The bytes the backend sent right behind its `101` head, which its
/// session read with the head. After a `101` the session reads the rest
/// as a body that ends at close, and its first read returns those bytes
/// without touching the socket; a read that would have to wait means there
/// were none. Whatever it returns is the tunnel's first bytes in order.
async fn early_bytes(backend: &mut Backend) -> Bytes {
    tokio::select! {
        biased;
        read = backend.read_body_ref() => match read {
            Ok(Some(bytes)) => Bytes::copy_from_slice(bytes),
            Ok(None) => Bytes::new(),
            Err(e) => {
                log::debug!("backend failed right after its 101: {e}");
                Bytes::new()
            }
        },
        () = std::future::ready(()) => Bytes::new(),
    }
}

/// Relays a backend's refusal of an upgrade (any answer but `101`) and
/// closes the connection after it: what the client sent after its
/// request head was meant for another protocol and is never read.
async fn relay(session: &mut Session, mut backend: Backend, resp: ResponseHeader) -> Result<()> {
    session.set_keepalive(None);
    session.write_response_header(Box::new(resp), false).await?;
    while let Some(body) = backend.read_body_bytes().await.map_err(|e| e.into_up())? {
        session.write_response_body(Some(body), false).await?;
    }
    session.finish_body().await
}
