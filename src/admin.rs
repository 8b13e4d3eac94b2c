//! The admin listener, on its own port: `/metrics`, `/status`, `/healthz`,
//! `/readyz`. Anything else is 404; a known path with another method is 405.

use std::sync::Arc;

use async_trait::async_trait;
use http::{header, Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};

use crate::metrics::Metrics;
use crate::pool::{Pool, Snapshot, Upstream};

/// Serves the admin endpoints from the live pool and the server's metrics.
pub struct Admin {
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
}

impl Admin {
    pub fn new(pool: Arc<Pool>, metrics: Arc<Metrics>) -> Self {
        Admin { pool, metrics }
    }

    /// The answer for `method path`, independent of the transport.
    pub fn handle(&self, method: &Method, path: &str) -> Response<Vec<u8>> {
        let known = ["/metrics", "/status", "/healthz", "/readyz"];
        if !known.contains(&path) {
            return text(StatusCode::NOT_FOUND, format!("no such endpoint: {path}\n"));
        }
        if method != Method::GET {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into());
            r.headers_mut()
                .insert(header::ALLOW, "GET".parse().expect("static"));
            return r;
        }
        let snapshot = self.pool.snapshot();
        match path {
            "/metrics" => {
                let mut r = text(StatusCode::OK, self.metrics.render(&snapshot));
                let ct = prometheus::TEXT_FORMAT.parse().expect("static");
                r.headers_mut().insert(header::CONTENT_TYPE, ct);
                r
            }
            "/status" => json_response(StatusCode::OK, &status(&snapshot)),
            "/readyz" => readiness(&snapshot),
            _ => text(StatusCode::OK, "ok\n".into()),
        }
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        self.handle(&req.method, req.uri.path())
    }
}

fn readiness(snapshot: &Snapshot) -> Response<Vec<u8>> {
    let not_ready: Vec<&str> = snapshot
        .upstreams()
        .iter()
        .filter(|u| !u.is_ready())
        .map(|u| u.name())
        .collect();
    if not_ready.is_empty() {
        return text(StatusCode::OK, "ready\n".into());
    }
    let reason = format!(
        "not ready: no healthy backend in upstream {}\n",
        not_ready.join(", ")
    );
    text(StatusCode::SERVICE_UNAVAILABLE, reason)
}

/// The `/status` document.
pub fn status(snapshot: &Snapshot) -> Value {
    let config = &snapshot.config;
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "config": {
            "path": config.path.display().to_string(),
            "sha256": config.hash,
            "snapshot_version": snapshot.version,
            "default_upstream": snapshot.route().name(),
        },
        "upstreams": snapshot.upstreams().iter().map(|u| upstream_status(u)).collect::<Vec<_>>(),
    })
}

fn upstream_status(u: &Upstream) -> Value {
    let t = u.timeouts();
    let backends: Vec<Value> = u
        .backends()
        .iter()
        .map(|b| {
            let s = &b.state;
            json!({
                "address": s.address(),
                "resolved": s.socket_addr().to_string(),
                "weight": b.weight,
                "healthy": s.is_healthy(),
                "reason": "no active health checks in this version; every listed backend receives traffic",
                "in_flight": s.in_flight(),
                "responses_total": s.requests(),
                "failures_total": s.failures(),
            })
        })
        .collect();
    json!({
        "name": u.name(),
        "balance": u.balance().name(),
        "retries": u.retries(),
        "timeouts_ms": {
            "connect": t.connect.as_millis() as u64,
            "read": t.read.as_millis() as u64,
            "write": t.write.as_millis() as u64,
            "idle": t.idle.as_millis() as u64,
        },
        "ready": u.is_ready(),
        "backends": backends,
    })
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
