//! The facts of one finished request, as the proxy gathered them: a plain
//! struct with no tie to the HTTP engine, formatted later, off the request
//! path, by the writer.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// One request (or one tunnel) as the access log tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// When the request arrived.
    pub time: SystemTime,
    /// Its `X-Request-Id`, as sent to the backend and the client.
    pub request_id: String,
    /// The client's address; `None` for a connection without an IP peer.
    pub client: Option<IpAddr>,
    pub method: http::Method,
    /// The host it named: the absolute-form authority, else `Host`, else
    /// HTTP/2's `:authority`; empty if none.
    pub host: String,
    /// Its path as the client sent it, without the query unless
    /// `log_query = true`.
    pub path: String,
    pub version: http::Version,
    /// The status sent to the client; 0 when nothing could be sent (the
    /// client had gone).
    pub status: u16,
    /// Request body bytes read from the client (a tunnel: every byte the
    /// client sent after its `101`).
    pub bytes_in: u64,
    /// Response body bytes sent to the client (a tunnel: every byte the
    /// backend sent after its `101`).
    pub bytes_out: u64,
    /// From the request's arrival to the end of its response (a tunnel: to
    /// its close).
    pub duration: Duration,
    /// From choosing the backend of the last attempt to its response head;
    /// `None` when no backend answered.
    pub upstream_time: Option<Duration>,
    pub route: Option<String>,
    pub upstream: Option<String>,
    /// The backend of the last attempt, by address as configured.
    pub backend: Option<String>,
    /// Attempts made on backends (retries and reconnects included).
    pub attempts: u32,
    /// Why Switchyard answered itself; `None` when a backend answered.
    pub local_reason: Option<LocalReason>,
    /// `Referer` and `User-Agent`, gathered only for the combined format.
    pub referer: Option<String>,
    pub user_agent: Option<String>,
}

/// Why a response was made by Switchyard rather than by a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalReason {
    /// The request's framing or target was refused (400, 501).
    BadRequest,
    /// A request limit: `max_uri_bytes` (414), `max_headers` or
    /// `max_header_bytes` (431).
    TooLarge,
    /// The body was over `max_body_bytes` (413).
    BodyTooLarge,
    /// No route matched and there is no default upstream (404).
    NoRoute,
    /// `redirect_https` (308).
    RedirectHttps,
    /// No backend of the upstream could take the request (503).
    NoHealthyBackend,
    /// A reload removed the upstream before a retry (503).
    UpstreamRemoved,
    /// Every allowed attempt failed to connect (502).
    ConnectFailed,
    /// The TLS handshake with the backend failed (502).
    UpstreamTls,
    /// The backend did not answer within `read_timeout` (504).
    Timeout,
    /// The call's `grpc-timeout` ran out (504).
    DeadlineExceeded,
    /// The backend closed or reset the connection before answering (502).
    UpstreamReset,
    /// The backend's answer was not valid HTTP (502).
    UpstreamProtocol,
    /// The client was too slow sending its body (408).
    ClientTimeout,
    /// The client went away before an answer could be sent (status 0).
    ClientClosed,
    /// Anything else Switchyard failed at (500).
    Internal,
}

impl LocalReason {
    /// Every reason, for documentation and tests.
    pub const ALL: [LocalReason; 16] = [
        LocalReason::BadRequest,
        LocalReason::TooLarge,
        LocalReason::BodyTooLarge,
        LocalReason::NoRoute,
        LocalReason::RedirectHttps,
        LocalReason::NoHealthyBackend,
        LocalReason::UpstreamRemoved,
        LocalReason::ConnectFailed,
        LocalReason::UpstreamTls,
        LocalReason::Timeout,
        LocalReason::DeadlineExceeded,
        LocalReason::UpstreamReset,
        LocalReason::UpstreamProtocol,
        LocalReason::ClientTimeout,
        LocalReason::ClientClosed,
        LocalReason::Internal,
    ];

    /// The word the log writes.
    pub fn as_str(self) -> &'static str {
        match self {
            LocalReason::BadRequest => "bad_request",
            LocalReason::TooLarge => "too_large",
            LocalReason::BodyTooLarge => "body_too_large",
            LocalReason::NoRoute => "no_route",
            LocalReason::RedirectHttps => "redirect_https",
            LocalReason::NoHealthyBackend => "no_healthy_backend",
            LocalReason::UpstreamRemoved => "upstream_removed",
            LocalReason::ConnectFailed => "connect_failed",
            LocalReason::UpstreamTls => "upstream_tls",
            LocalReason::Timeout => "timeout",
            LocalReason::DeadlineExceeded => "deadline_exceeded",
            LocalReason::UpstreamReset => "upstream_reset",
            LocalReason::UpstreamProtocol => "upstream_protocol",
            LocalReason::ClientTimeout => "client_timeout",
            LocalReason::ClientClosed => "client_closed",
            LocalReason::Internal => "internal",
        }
    }

    /// The reason a local answer with `status` has when nothing more
    /// precise is known.
    pub fn for_status(status: u16) -> LocalReason {
        match status {
            308 => LocalReason::RedirectHttps,
            404 => LocalReason::NoRoute,
            408 => LocalReason::ClientTimeout,
            413 => LocalReason::BodyTooLarge,
            414 | 431 => LocalReason::TooLarge,
            502 => LocalReason::ConnectFailed,
            503 => LocalReason::NoHealthyBackend,
            504 => LocalReason::Timeout,
            500 => LocalReason::Internal,
            _ => LocalReason::BadRequest,
        }
    }
}

/// The protocol as the request line writes it.
pub fn protocol(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// `target` (a path, maybe with a query) as the log shows it: the query
/// cut off unless `with_query`.
pub fn path_of(target: &str, with_query: bool) -> &str {
    if with_query {
        return target;
    }
    target.split_once('?').map_or(target, |(path, _)| path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_distinct_snake_case_words() {
        let words: Vec<&str> = LocalReason::ALL.iter().map(|r| r.as_str()).collect();
        for w in &words {
            assert!(
                w.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{w}"
            );
        }
        let mut sorted = words.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), words.len());
    }

    #[test]
    fn the_query_is_cut_unless_asked_for() {
        assert_eq!(path_of("/a/b?x=1&y=2", false), "/a/b");
        assert_eq!(path_of("/a/b?x=1&y=2", true), "/a/b?x=1&y=2");
        assert_eq!(path_of("/plain", false), "/plain");
        assert_eq!(path_of("?only", false), "");
    }

    #[test]
    fn statuses_map_to_their_reasons() {
        assert_eq!(LocalReason::for_status(413), LocalReason::BodyTooLarge);
        assert_eq!(LocalReason::for_status(431), LocalReason::TooLarge);
        assert_eq!(LocalReason::for_status(404), LocalReason::NoRoute);
        assert_eq!(LocalReason::for_status(308), LocalReason::RedirectHttps);
        assert_eq!(LocalReason::for_status(503), LocalReason::NoHealthyBackend);
        assert_eq!(LocalReason::for_status(501), LocalReason::BadRequest);
    }
}
