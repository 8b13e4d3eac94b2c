//! Taking a client connection out of Pingora's session for a tunnel.
//!
//! Pingora's HTTP/1 session owns the client stream and any bytes it read
//! past the request head (a WebSocket's first frames can arrive in the same
//! packet). Its public way to hand both back is keep-alive reuse with
//! pipelining on: the request had no body, so everything read past the
//! head is "the next request's" prefix, given back with the stream, and
//! nothing is ever parsed as a request.
//!
//! The session is not left empty: Pingora still calls `logging` and
//! finishes it, and anything may call `req_header()` on it. A stand-in
//! session takes its place, built from the same request head bytes over an
//! in-memory stream, with the real connection's digest (client address,
//! TLS); the `101` is recorded in it once sent, so logging counts it as
//! the response it is. Keep-alive is off in it, so finishing it ends the
//! connection.

use std::io::Cursor;

use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::protocols::http::v1::server::HttpSession as H1Session;
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Digest, Stream};
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

/// The client's side of a tunnel.
pub(super) struct Client {
    pub stream: Stream,
    /// What the client sent after its request head, already read.
    pub early: Bytes,
}

/// Takes the client's stream and early bytes out of `session`, leaving
/// the stand-in in its place. The request must have no body.
pub(super) async fn take(session: &mut Session) -> Result<Client> {
    let (head, digest) = match session.as_downstream() {
        ServerSession::H1(h1) => (h1.get_headers_raw_bytes(), h1.digest().clone()),
        _ => return Error::e_explain(ErrorType::InternalError, "a tunnel over HTTP/2"),
    };
    let stand_in = stand_in(head, digest).await?;
    let real = std::mem::replace(
        &mut session.downstream_session,
        Box::new(ServerSession::H1(stand_in)),
    );
    let ServerSession::H1(mut h1) = *real else {
        return Error::e_explain(ErrorType::InternalError, "a tunnel over HTTP/2");
    };
    // Reuse hands the stream back only to a session that may be kept
    // alive; `Connection: close` requests are not tunnelled.
    h1.set_server_keepalive(Some(0));
    h1.set_keepalive_reuses_remaining(None);
    h1.set_pipelining_enabled(true);
    let reusable = h1.reuse().await?.ok_or_else(|| {
        Error::explain(
            ErrorType::ConnectionClosed,
            "the client connection could not be taken for a tunnel",
        )
        .into_down()
    })?;
    let (stream, early) = reusable.into_parts();
    let early = early.map_or_else(Bytes::new, BytesMut::freeze);
    Ok(Client { stream, early })
}

/// Records `resp`, sent to the client, as the stand-in's response.
pub(super) async fn record(session: &mut Session, resp: &ResponseHeader) {
    let recorded = session
        .as_downstream_mut()
        .write_response_header(Box::new(resp.clone()))
        .await;
    if let Err(e) = recorded {
        log::debug!("could not record a tunnel's 101: {e}");
    }
}

/// A session that has read `head` from memory and writes into memory.
async fn stand_in(head: Bytes, digest: Digest) -> Result<H1Session> {
    let mut session = H1Session::new(Box::new(Cursor::new(head.to_vec())));
    match session.read_request().await? {
        Some(_) => {}
        None => return Error::e_explain(ErrorType::InternalError, "request head read twice"),
    }
    *session.digest_mut() = digest;
    session.set_server_keepalive(None);
    Ok(session)
}
