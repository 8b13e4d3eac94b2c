//! The admin listener, on its own port: `GET /metrics`, `/status`
//! (`status.rs`), `/explain` (`explain.rs`), `/healthz`, `/readyz` and
//! `POST /reload`. Anything else is 404; a known path with another method
//! is 405.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use http::{header, Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::Value;

use crate::discovery::Board;
use crate::metrics::Metrics;
use crate::pool::{Pool, Snapshot};
use crate::reload::{Reloader, Trigger};

mod explain;
mod status;

pub use status::status;

/// Serves the admin endpoints from the live pool and the server's metrics.
pub struct Admin {
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    reloader: Arc<Reloader>,
    /// What each followed DNS name last did.
    board: Arc<Board>,
}

/// Each endpoint and the one method it takes.
const ENDPOINTS: [(&str, Method); 6] = [
    ("/metrics", Method::GET),
    ("/status", Method::GET),
    ("/explain", Method::GET),
    ("/healthz", Method::GET),
    ("/readyz", Method::GET),
    ("/reload", Method::POST),
];

impl Admin {
    pub fn new(
        pool: Arc<Pool>,
        metrics: Arc<Metrics>,
        reloader: Arc<Reloader>,
        board: Arc<Board>,
    ) -> Self {
        Admin {
            pool,
            metrics,
            reloader,
            board,
        }
    }

    /// The answer for `method path?query`, independent of the transport.
    pub async fn handle(&self, method: &Method, path: &str, query: &str) -> Response<Vec<u8>> {
        let Some((_, allowed)) = ENDPOINTS.iter().find(|(p, _)| *p == path) else {
            return text(StatusCode::NOT_FOUND, format!("no such endpoint: {path}\n"));
        };
        if method != allowed {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, format!("use {allowed}\n"));
            let allow = header::HeaderValue::from_static(allowed.as_str());
            r.headers_mut().insert(header::ALLOW, allow);
            return r;
        }
        if path == "/reload" {
            return match self.reloader.reload_async(Trigger::Admin).await {
                Some(a) if a.succeeded() => json_response(StatusCode::OK, &a.to_json()),
                Some(a) => json_response(StatusCode::UNPROCESSABLE_ENTITY, &a.to_json()),
                None => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "reload did not run\n".into(),
                ),
            };
        }
        let snapshot = self.pool.snapshot();
        match path {
            "/metrics" => {
                let mut r = text(StatusCode::OK, self.metrics.render(&self.pool));
                let ct = prometheus::TEXT_FORMAT.parse().expect("static");
                r.headers_mut().insert(header::CONTENT_TYPE, ct);
                r
            }
            "/status" => {
                let status = status(&snapshot, &self.reloader, &self.board);
                json_response(StatusCode::OK, &status)
            }
            "/readyz" => readiness(&snapshot, &self.board),
            "/explain" => match explain::explain(&snapshot, query) {
                Ok(answer) => json_response(StatusCode::OK, &answer),
                Err(why) => text(StatusCode::BAD_REQUEST, format!("{why}\n")),
            },
            _ => text(StatusCode::OK, "ok\n".into()),
        }
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let (method, path) = (req.method.clone(), req.uri.path().to_string());
        let query = req.uri.query().unwrap_or("").to_string();
        let mut r = self.handle(&method, &path, &query).await;
        // Like the data port's own answers.
        let server = self.pool.snapshot().config.server.server_header.clone();
        if let Some(server) = server {
            r.headers_mut().insert(header::SERVER, server);
        }
        r
    }
}

/// 200 when every upstream has a usable backend; else 503 saying which
/// have none and why: no healthy one, or none at all (with what their DNS
/// names answered).
fn readiness(snapshot: &Snapshot, board: &Board) -> Response<Vec<u8>> {
    let (mut unhealthy, mut empty) = (Vec::new(), Vec::new());
    for u in snapshot.upstreams().iter().filter(|u| !u.is_ready()) {
        if !u.backends().is_empty() {
            unhealthy.push(u.name());
            continue;
        }
        let why = board.why_empty(u.name());
        empty.push(match why {
            Some(why) => format!("upstream {} has no backends ({why})", u.name()),
            None => format!("upstream {} has no backends", u.name()),
        });
    }
    if unhealthy.is_empty() && empty.is_empty() {
        return text(StatusCode::OK, "ready\n".into());
    }
    if !unhealthy.is_empty() {
        empty.push(format!(
            "no healthy backend in upstream {}",
            unhealthy.join(", ")
        ));
    }
    let reason = format!("not ready: {} (see /status)\n", empty.join("; "));
    text(StatusCode::SERVICE_UNAVAILABLE, reason)
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn text(status: StatusCode, body: String) -> Response<Vec<u8>> {
    respond(status, "text/plain; charset=utf-8", body.into_bytes())
}

fn json_response(status: StatusCode, value: &Value) -> Response<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    respond(status, "application/json", body)
}

fn respond(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let len = r.body().len();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    h.insert(header::CONTENT_LENGTH, len.into());
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}
