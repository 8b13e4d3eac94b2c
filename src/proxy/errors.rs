//! What the proxy answers itself when no backend does: the status for each
//! kind of failure, and the response it writes.

use bytes::Bytes;
use http::header::SERVER;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::{Error, ErrorSource, ErrorType};

use crate::access_log::LocalReason;
use crate::config::Outcome;
use crate::downstream;

/// The status for a request that failed with `e`, or 0 when the client is
/// gone and nothing can be sent.
pub fn status_for(e: &Error) -> u16 {
    use ErrorType::*;
    // The client stream refused the body's chunked framing: a read error
    // to Pingora, a malformed request to the client.
    if downstream::is_malformed_body(e.root_cause()) {
        return 400;
    }
    match (e.esource(), e.etype()) {
        (_, HTTPStatus(code)) => *code,
        (ErrorSource::Upstream, ReadTimedout | WriteTimedout) => 504,
        (ErrorSource::Upstream, _) => 502,
        (ErrorSource::Downstream, ReadError | WriteError | ConnectionClosed) => 0,
        (ErrorSource::Downstream, ReadTimedout) => 408,
        (ErrorSource::Downstream, _) => 400,
        (ErrorSource::Internal | ErrorSource::Unset, _) => 500,
    }
}

/// Why a request that failed with `e` gets no backend's answer, when the
/// error says: `None` for a status an earlier step chose (which knows
/// its reason better). `deadline_bound`: the client's `grpc-timeout`, not
/// `read_timeout`, bounded the attempt.
pub fn local_reason(e: &Error, deadline_bound: bool) -> Option<LocalReason> {
    use ErrorType::*;
    if downstream::is_malformed_body(e.root_cause()) {
        return Some(LocalReason::BadRequest);
    }
    let reason = match (e.esource(), e.etype()) {
        (_, HTTPStatus(_)) => return None,
        (ErrorSource::Upstream, _) => match failure_kind(e) {
            Outcome::Timeout if deadline_bound => LocalReason::DeadlineExceeded,
            Outcome::Timeout => LocalReason::Timeout,
            Outcome::Connect => LocalReason::ConnectFailed,
            Outcome::Tls => LocalReason::UpstreamTls,
            Outcome::Protocol => LocalReason::UpstreamProtocol,
            _ => LocalReason::UpstreamReset,
        },
        (ErrorSource::Downstream, ReadError | WriteError | ConnectionClosed) => {
            LocalReason::ClientClosed
        }
        (ErrorSource::Downstream, ReadTimedout) => LocalReason::ClientTimeout,
        (ErrorSource::Downstream, _) => LocalReason::BadRequest,
        (ErrorSource::Internal | ErrorSource::Unset, _) => LocalReason::Internal,
    };
    Some(reason)
}

/// The `kind` of a failure that happened after the connection to the
/// backend was made.
pub fn failure_kind(e: &Error) -> Outcome {
    use ErrorType::*;
    if tls_alert(e) {
        return Outcome::Tls;
    }
    match e.etype() {
        ReadTimedout | WriteTimedout => Outcome::Timeout,
        TLSHandshakeFailure | TLSHandshakeTimedout | InvalidCert | TLSWantX509Lookup => {
            Outcome::Tls
        }
        InvalidHTTPHeader | H1Error | H2Error | InvalidH2 | H2Downgrade => Outcome::Protocol,
        ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError | SocketError
        | BindError => Outcome::Connect,
        _ => Outcome::Reset,
    }
}

/// Whether the root of `e` is a TLS error (an alert from the backend, its
/// certificate refused), which can come on the first read of a TLS 1.3
/// connection, after the handshake looked done to the client.
fn tls_alert(e: &Error) -> bool {
    let root = e.root_cause();
    root.downcast_ref::<rustls::Error>().is_some()
        || root
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
}

/// The `kind` of a failure to connect: the TLS handshake's, or the
/// connection's.
pub fn connect_kind(e: &Error) -> Outcome {
    match failure_kind(e) {
        Outcome::Tls => Outcome::Tls,
        _ => Outcome::Connect,
    }
}

/// Writes a small plain-text response carrying the request id, `server`
/// as its `Server` header, and `location` for a redirect. Does nothing if
/// a response has already started.
pub async fn respond(
    session: &mut ServerSession,
    code: u16,
    request_id: &str,
    server: Option<&HeaderValue>,
    location: Option<&str>,
) -> pingora::Result<()> {
    let mut resp: ResponseHeader = ServerSession::generate_error(code);
    set_server(&mut resp, server)?;
    if let Some(location) = location {
        resp.insert_header(http::header::LOCATION, location)?;
    }
    let reason = resp.status.canonical_reason().unwrap_or("Error");
    let body = Bytes::from(format!("{code} {reason}\n"));
    resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.set_content_length(body.len())?;
    resp.insert_header(super::headers::X_REQUEST_ID, request_id)?;
    session.write_error_response(resp, body).await
}

/// Says `server` as `resp`'s `Server` header (Pingora's builder says
/// `Pingora`), or nothing.
pub fn set_server(resp: &mut ResponseHeader, server: Option<&HeaderValue>) -> pingora::Result<()> {
    resp.remove_header(&SERVER);
    if let Some(server) = server {
        resp.insert_header(SERVER, server)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_chunked_body_is_a_bad_request_for_the_client_and_the_log() {
        let refused = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            downstream::Malformed("a bare LF ends a chunk line"),
        );
        let mut e = Error::because(ErrorType::ReadError, "reading the body", refused);
        e.as_down();
        assert_eq!(status_for(&e), 400);
        assert!(matches!(
            local_reason(&e, false),
            Some(LocalReason::BadRequest)
        ));
        // A client that went away is not one.
        let mut gone = Error::new(ErrorType::ConnectionClosed);
        gone.as_down();
        assert_eq!(status_for(&gone), 0);
        assert!(matches!(
            local_reason(&gone, false),
            Some(LocalReason::ClientClosed)
        ));
    }
}
