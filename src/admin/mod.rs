//! The admin listener, on its own port: `GET /metrics`, `/status`
//! (`status.rs`), `/explain` (`explain.rs`), `/healthz`, `/readyz`,
//! `POST /reload`, and the drain of one backend (`backends.rs`). Anything
//! else is 404; a known path with another method is 405. With `[admin]
//! token` set, the endpoints that change something (`/reload`, drain and
//! undrain) answer 401 to a request without `Authorization: Bearer TOKEN`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use http::{header, Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::Value;

use crate::discovery::Board;
use crate::drain::Draining;
use crate::drain_end::Left;
use crate::metrics::Metrics;
use crate::pool::{Pool, Snapshot};
use crate::reload::{Reloader, Trigger};

mod backends;
mod explain;
mod status;

use backends::BackendPath;

pub use status::status;

/// Serves the admin endpoints from the live pool and the server's metrics.
pub struct Admin {
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    reloader: Arc<Reloader>,
    /// What each followed DNS name last did.
    board: Arc<Board>,
    /// The process's own drain (SIGTERM, or an upgrade's handover).
    draining: Arc<Draining>,
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
        draining: Arc<Draining>,
    ) -> Self {
        Admin {
            pool,
            metrics,
            reloader,
            board,
            draining,
        }
    }

    /// Whether a request that changes something may: there is no
    /// `[admin] token`, or `authorization` carries it.
    fn authorized(&self, authorization: Option<&[u8]>) -> bool {
        let snapshot = self.pool.snapshot();
        let token = snapshot.config.admin.token.as_deref();
        token.is_none_or(|token| bearer_matches(authorization, token))
    }

    /// The answer for `method path?query`, with the request's
    /// `Authorization` header if it had one; independent of the transport.
    pub async fn handle(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        authorization: Option<&[u8]>,
    ) -> Response<Vec<u8>> {
        let backend = BackendPath::parse(path);
        let allowed: &[Method] = match (&backend, ENDPOINTS.iter().find(|(p, _)| *p == path)) {
            (Some(b), _) => b.action.methods(),
            (None, Some((_, m))) => std::slice::from_ref(m),
            (None, None) => {
                return text(StatusCode::NOT_FOUND, format!("no such endpoint: {path}\n"));
            }
        };
        if !allowed.contains(method) {
            let names: Vec<&str> = allowed.iter().map(Method::as_str).collect();
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("use {}\n", names.join(" or ")),
            );
            if let Ok(allow) = header::HeaderValue::from_str(&names.join(", ")) {
                r.headers_mut().insert(header::ALLOW, allow);
            }
            return r;
        }
        if method == Method::POST && !self.authorized(authorization) {
            return unauthorized();
        }
        if let Some(b) = &backend {
            return backends::handle(&self.pool, &self.metrics, method, b);
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
                let mut status = status(&snapshot, &self.reloader, &self.board, &self.metrics);
                let left = Left::now(&self.metrics, &self.pool);
                status["drain"] = left.to_json(&self.draining);
                json_response(StatusCode::OK, &status)
            }
            "/readyz" => readiness(&snapshot, &self.board),
            "/explain" => match explain::explain(&snapshot, &self.metrics, query) {
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
        let auth = req
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        let mut r = self.handle(&method, &path, &query, auth.as_deref()).await;
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
        if !u.draining().is_empty() {
            empty.push(format!("every backend of upstream {} is drained", u.name()));
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

/// Whether `authorization` is `Bearer TOKEN` (the scheme in any case)
/// with this token, compared in time independent of where the two differ.
fn bearer_matches(authorization: Option<&[u8]>, token: &str) -> bool {
    let Some((scheme, given)) = authorization.and_then(|a| a.split_at_checked(7)) else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return false;
    }
    let token = token.as_bytes();
    let differ = given
        .iter()
        .zip(token)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    given.len() == token.len() && differ == 0
}

fn unauthorized() -> Response<Vec<u8>> {
    let mut r = text(
        StatusCode::UNAUTHORIZED,
        "this endpoint needs `Authorization: Bearer TOKEN` with the [admin] token\n".into(),
    );
    let challenge = header::HeaderValue::from_static("Bearer realm=\"switchyard admin\"");
    r.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
    r
}

/// Percent-decodes `s` (and `+` as a space where `plus_is_space`, as in
/// a query string), or says why it cannot be.
pub(super) fn percent_decode(s: &str, plus_is_space: bool) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad escape in `{s}`"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("`{s}` is not UTF-8 once decoded"))
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
