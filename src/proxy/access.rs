//! The access log's side of the proxy: gathering a finished request's
//! facts from Pingora's session and the request's context into a
//! [`Record`], and handing it to the writer without waiting. Formatting
//! and writing happen in the writer's thread.

use std::time::SystemTime;

use pingora::proxy::Session;

use super::{request, Proxy, RequestCtx};
use crate::access_log::{path_of, Record};

impl Proxy {
    /// Logs the request, if the access log is on. Takes the request id
    /// out of `ctx`: `logging` is the request's last hook.
    pub(super) fn log_access(&self, session: &Session, ctx: &mut RequestCtx) {
        let Some(sink) = self.access_log.sink() else {
            return;
        };
        let duration = ctx.started.elapsed();
        let now = SystemTime::now();
        let req = session.req_header();
        let (host, target) = request::raw_facts(req);
        // As sent: a gRPC call answered locally got 200, whatever status
        // stands for its error.
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.local_status)
            .unwrap_or(0);
        let (bytes_in, bytes_out) = ctx.tunnel_bytes.unwrap_or_else(|| {
            (
                session.body_bytes_read() as u64,
                session.body_bytes_sent() as u64,
            )
        });
        let header = |name| {
            sink.wants_agent()
                .then(|| req.headers.get(name))
                .flatten()
                .map(|v| {
                    capped(
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        AGENT_BYTES,
                    )
                })
        };
        let record = Record {
            time: now.checked_sub(duration).unwrap_or(now),
            request_id: std::mem::take(&mut ctx.request_id),
            client: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
            method: req.method.clone(),
            host: capped(String::from_utf8_lossy(host).into_owned(), HOST_BYTES),
            path: capped(
                path_of(&String::from_utf8_lossy(target), sink.log_query()).to_owned(),
                PATH_BYTES,
            ),
            version: req.version,
            status,
            bytes_in,
            bytes_out,
            duration,
            upstream_time: ctx.upstream_time,
            route: ctx.route_name().map(str::to_owned),
            upstream: ctx.upstream.as_ref().map(|u| u.name().to_owned()),
            backend: ctx.last_backend().map(str::to_owned),
            attempts: ctx.attempts,
            local_reason: ctx.local_reason,
            referer: header(http::header::REFERER),
            user_agent: header(http::header::USER_AGENT),
        };
        sink.send(record);
    }
}

/// The longest host, path and `Referer` or `User-Agent` a line keeps: a
/// queued record holds at most about 3.3 KiB of the client's bytes, so a
/// stalled writer's full queue stays small (13 MiB at 4,096 lines) however
/// long the requests it holds.
const HOST_BYTES: usize = 256;
const PATH_BYTES: usize = 2048;
const AGENT_BYTES: usize = 512;

/// `s` cut to at most `max` bytes, on a character boundary.
fn capped(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_fields_are_cut_on_a_character_boundary() {
        assert_eq!(super::capped("abc".into(), 8), "abc");
        assert_eq!(super::capped("abcdef".into(), 4), "abcd");
        assert_eq!(super::capped("aé".into(), 2), "a");
    }
}
