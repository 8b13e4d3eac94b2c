//! Which failed attempts may be sent again. A connect failure sent nothing,
//! so it may always move to another backend; a request whose head went out
//! may be sent again only if doing it twice is harmless, all of it can be
//! sent again, and nothing of an answer has reached the client. An HTTP/2
//! stream the backend refused was never processed, so it is sent again
//! whatever its method.

use http::Method;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use pingora::Error;

/// Lets a client mark a request that is safe to repeat, whatever its method.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Whether sending `req` twice has the effect of sending it once: its
/// method says so (GET, HEAD, OPTIONS, PUT, DELETE), or the client gave it
/// a non-empty `Idempotency-Key`, promising to recognise a repeat.
pub fn idempotent(req: &RequestHeader) -> bool {
    matches!(
        req.method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    ) || req
        .headers
        .get(IDEMPOTENCY_KEY)
        .is_some_and(|key| !key.as_bytes().trim_ascii().is_empty())
}

/// Whether the request of `session`, already sent to a backend that then
/// failed, may be sent to another: idempotent, its body still held whole
/// for a replay (Pingora keeps up to 64 KiB of it), and no response byte
/// written to the client.
pub fn replayable(session: &Session) -> bool {
    idempotent(session.req_header()) && resendable(session)
}

/// Whether the request of `session` can be sent again as it was: its body
/// still held whole, and no response byte written to the client.
pub fn resendable(session: &Session) -> bool {
    !session.as_ref().retry_buffer_truncated() && session.response_written().is_none()
}

/// Whether `e` is an HTTP/2 stream the backend did not process: reset
/// with `REFUSED_STREAM`, or cut by the backend's `GOAWAY` (which it
/// sends with the last stream it will process; later ones never ran).
pub fn refused_stream(e: &Error) -> bool {
    let Some(h2) = e.root_cause().downcast_ref::<h2::Error>() else {
        return false;
    };
    h2.reason() == Some(h2::Reason::REFUSED_STREAM) || (h2.is_go_away() && h2.is_remote())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build(method, b"/", None).unwrap();
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).unwrap();
        }
        req
    }

    #[test]
    fn exactly_the_listed_methods_are_idempotent() {
        for m in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"] {
            assert!(idempotent(&request(m, &[])), "{m}");
        }
        for m in ["POST", "PATCH", "TRACE", "PROPFIND", "LOCK"] {
            assert!(!idempotent(&request(m, &[])), "{m}");
        }
    }

    #[test]
    fn an_idempotency_key_makes_any_method_idempotent() {
        assert!(idempotent(&request(
            "POST",
            &[("Idempotency-Key", "8e03978e")]
        )));
        assert!(idempotent(&request(
            "PATCH",
            &[("idempotency-key", "\"k\"")]
        )));
        assert!(!idempotent(&request("POST", &[("idempotency-key", "")])));
        assert!(!idempotent(&request("POST", &[("idempotency-key", "  ")])));
    }
}
