//! Which failed attempts may be sent again. A connect failure sent nothing,
//! so it may always move to another backend; a request whose head went out
//! may be sent again only if doing it twice is harmless, all of it can be
//! sent again, and nothing of an answer has reached the client.

use http::Method;
use pingora::http::RequestHeader;
use pingora::proxy::Session;

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
    idempotent(session.req_header())
        && !session.as_ref().retry_buffer_truncated()
        && session.response_written().is_none()
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
