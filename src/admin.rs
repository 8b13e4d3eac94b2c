//! The admin listener, on its own port: `GET /metrics`, `/status`,
//! `/healthz`, `/readyz` and `POST /reload`. Anything else is 404; a known
//! path with another method is 405.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use http::{header, Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};

use crate::config::{Balance, HealthCheck, Probe};
use crate::metrics::Metrics;
use crate::pool::{health, latency, Pool, Snapshot, Upstream};
use crate::reload::{Reloader, Trigger};

/// Serves the admin endpoints from the live pool and the server's metrics.
pub struct Admin {
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    reloader: Arc<Reloader>,
}

/// Each endpoint and the one method it takes.
const ENDPOINTS: [(&str, Method); 5] = [
    ("/metrics", Method::GET),
    ("/status", Method::GET),
    ("/healthz", Method::GET),
    ("/readyz", Method::GET),
    ("/reload", Method::POST),
];

impl Admin {
    pub fn new(pool: Arc<Pool>, metrics: Arc<Metrics>, reloader: Arc<Reloader>) -> Self {
        Admin {
            pool,
            metrics,
            reloader,
        }
    }

    /// The answer for `method path`, independent of the transport.
    pub async fn handle(&self, method: &Method, path: &str) -> Response<Vec<u8>> {
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
            "/status" => json_response(StatusCode::OK, &status(&snapshot, &self.reloader)),
            "/readyz" => readiness(&snapshot),
            _ => text(StatusCode::OK, "ok\n".into()),
        }
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let (method, path) = (req.method.clone(), req.uri.path().to_string());
        self.handle(&method, &path).await
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
        "not ready: no healthy backend in upstream {} (see /status)\n",
        not_ready.join(", ")
    );
    text(StatusCode::SERVICE_UNAVAILABLE, reason)
}

/// The `/status` document.
pub fn status(snapshot: &Snapshot, reloader: &Reloader) -> Value {
    let config = &snapshot.config;
    let (loaded_at, last_reload) = reloader.status();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "config": {
            "path": config.path.display().to_string(),
            "sha256": config.hash,
            "loaded_at": rfc3339(loaded_at),
            "snapshot_version": snapshot.version,
            "default_upstream": snapshot.default_upstream().map(|u| u.name()),
            "watch": config.server.watch_config,
            "last_reload": last_reload.map(|a| a.to_json()),
        },
        "upstreams": snapshot.upstreams().iter().map(|u| upstream_status(u)).collect::<Vec<_>>(),
    })
}

fn upstream_status(u: &Upstream) -> Value {
    let t = u.timeouts();
    let now = health::now();
    // Once per upstream: each backend is compared with the same fastest.
    let fastest = (u.balance() == Balance::LeastConnections).then(|| u.fastest_latency());
    let backends: Vec<Value> = (0..u.backends().len())
        .map(|i| backend_status(u, i, now, fastest))
        .collect();
    let p = u.passive();
    let budget = u.retry_budget();
    let (requests, retries) = budget.window().recent(now);
    json!({
        "name": u.name(),
        "balance": u.balance().name(),
        "retries": u.retries(),
        "timeouts_ms": {
            "connect": millis(t.connect),
            "read": millis(t.read),
            "write": millis(t.write),
            "idle": millis(t.idle),
        },
        "health_check": u.health_check().map(|c| check_settings(c)),
        "passive_health_check": {
            "consecutive_failures": p.consecutive_failures,
            "failures": p.counts.names(),
            "ejection_time_ms": millis(p.ejection_time),
            "max_ejection_time_ms": millis(p.max_ejection_time),
            "max_ejection_percent": p.max_ejection_percent,
            "max_ejected_backends": p.max_ejected(u.backends().len()),
        },
        "slow_start_ms": u.slow_start().map(millis),
        "retry_budget": {
            "ratio": budget.settings().ratio,
            "min_retries_per_second": budget.settings().min_retries_per_second,
            "window_ms": millis(crate::config::RETRY_BUDGET_WINDOW),
            "window_requests": requests,
            "window_retries": retries,
        },
        "ready": u.is_ready(),
        "panic": u.in_panic(),
        "panic_reason": u.in_panic().then_some(
            "no backend is healthy: traffic goes to the least bad ones (ejected before failing checks)",
        ),
        "backends": backends,
    })
}

fn check_settings(c: &HealthCheck) -> Value {
    let mut v = json!({
        "interval_ms": millis(c.interval),
        "timeout_ms": millis(c.timeout),
        "healthy_threshold": c.healthy_threshold,
        "unhealthy_threshold": c.unhealthy_threshold,
        "initial_state": if c.initial_healthy { "healthy" } else { "unhealthy" },
    });
    match &c.probe {
        Probe::Tcp => v["type"] = "tcp".into(),
        Probe::Http { path, host, expect } => {
            v["type"] = "http".into();
            v["path"] = path.as_str().into();
            v["host"] = host.as_deref().into();
            v["expect_status"] = expect.iter().map(ToString::to_string).collect();
        }
    }
    v
}

/// `fastest`: for least-connections, what [`Upstream::fastest_latency`]
/// gives; `None` for other algorithms.
fn backend_status(u: &Upstream, i: usize, now: u64, fastest: Option<Option<u64>>) -> Value {
    let b = &u.backends()[i];
    let s = &b.state;
    let h = s.health().report(now);
    let effective = u.effective_weight(i, now);
    let latency_ms = s
        .latency()
        .base()
        .map(|ns| (ns as f64 / 1e4).round() / 100.0);
    let held_back = fastest.map(|fastest| s.latency().held_back(fastest));
    // Failing checks come first: they keep the backend out after any
    // ejection ends.
    let (state, reason) = if !h.active_up && !h.ever_up {
        let n = u.health_check().map_or(1, |c| c.healthy_threshold);
        let why = format!("no traffic until {n} check(s) pass (initial_state = \"unhealthy\")");
        ("pending", why)
    } else if !h.active_up {
        let why = h
            .last_change
            .as_ref()
            .map_or("failing checks".into(), |c| c.reason.clone());
        ("unhealthy", why)
    } else if let Some(e) = &h.ejected {
        ("ejected", format!("ejected: {}", e.reason))
    } else if u.health_check().is_none() {
        (
            "healthy",
            "no active checks configured; not ejected".to_string(),
        )
    } else if let Some(c) = h.last_change.as_ref().filter(|c| c.healthy) {
        ("healthy", c.reason.clone())
    } else if h.last_check.is_some() {
        ("healthy", "passing checks".to_string())
    } else {
        (
            "healthy",
            "not checked yet; a new backend starts healthy".to_string(),
        )
    };
    let mut reason = reason;
    if effective < f64::from(b.weight) && state == "healthy" {
        let share = effective * 100.0 / f64::from(b.weight);
        reason += &format!("; slow start at {share:.0}% of its weight");
    }
    if let (Some(capped), "healthy") = (&h.capped, state) {
        reason += &format!("; not ejected: {capped}");
    }
    if let (Some(until), "healthy") = (h.passed_over_until, state) {
        let ms = until.saturating_sub(now) / 1_000_000;
        reason += &format!(
            "; a connect to it failed: other backends first for {ms} ms more, or until it answers"
        );
    }
    if held_back == Some(true) && state == "healthy" {
        reason += &format!(
            "; held back by least_connections: answers in {} ms at best, {} times the \
             quickest backend or more; one probe request about every second",
            latency_ms.unwrap_or_default(),
            latency::RATIO
        );
    }
    let checks = u.health_check().map(|_| {
        json!({
            "consecutive_passes": h.passes_in_row,
            "consecutive_failures": h.fails_in_row,
            "last_result": h.last_check.as_ref().map(|c| if c.passed { "success" } else { "failure" }),
            "last_message": h.last_check.as_ref().map(|c| c.message.as_str()),
            "last_check_at": h.last_check.as_ref().map(|c| rfc3339(c.at)),
            "last_change": h.last_change.as_ref().map(|c| json!({
                "at": rfc3339(c.at),
                "healthy": c.healthy,
                "reason": c.reason,
            })),
        })
    });
    let ejection = h.ejected.as_ref().map(|e| {
        json!({
            "until": rfc3339(health::wall_clock(e.until, now)),
            "remaining_ms": (e.until.saturating_sub(now)) / 1_000_000,
            "length_ms": millis(e.length),
            "in_row": e.in_row,
            "reason": e.reason,
        })
    });
    json!({
        "address": s.address(),
        "resolved": s.socket_addr().to_string(),
        "weight": b.weight,
        "effective_weight": (effective * 1000.0).round() / 1000.0,
        "healthy": s.health().usable(now),
        "state": state,
        "reason": reason,
        "checks": checks,
        "ejection": ejection,
        "ejections_total": h.ejections,
        "consecutive_request_failures": h.failures_in_row,
        "passed_over_until": h.passed_over_until.map(|t| rfc3339(health::wall_clock(t, now))),
        "in_flight": s.in_flight(),
        "base_latency_ms": latency_ms,
        "held_back": held_back,
        "responses_total": s.requests(),
        "failures_total": s.failures(),
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn rfc3339(t: SystemTime) -> String {
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
