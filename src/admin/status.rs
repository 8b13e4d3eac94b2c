//! The `/status` document: the serving config, the last reload, every
//! route in precedence order, and every upstream and backend with its state
//! and why.

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use super::{millis, rfc3339};
use crate::config::{Balance, HealthCheck, Probe};
use crate::discovery::Board;
use crate::metrics::Metrics;
use crate::pool::{health, latency, Backend, Snapshot, Upstream};
use crate::reload::Reloader;

/// The `/status` document.
pub fn status(snapshot: &Snapshot, reloader: &Reloader, board: &Board, metrics: &Metrics) -> Value {
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
        "tls": reloader.tls().map(|t| t.status()),
        "http2": {
            "tls_alpn": config.server.tls.as_ref().is_some_and(|t| t.h2),
            "h2c": config.server.h2.h2c,
            "max_streams": config.server.h2.max_streams,
        },
        "routes": routes(snapshot),
        "unmatched_requests": match snapshot.default_upstream() {
            Some(u) => format!("to upstream {} (default_upstream)", u.name()),
            None if snapshot.routes().routes().is_empty() => "none: there are no routes".into(),
            None => "404: no default_upstream".to_string(),
        },
        "upstreams": snapshot.upstreams().iter().map(|u| {
            let mut v = upstream_status(u, metrics);
            v["dns"] = dns_status(snapshot, u.name(), board);
            v
        }).collect::<Vec<_>>(),
    })
}

/// The refresh settings and each name's last answer, error and next
/// lookup, for an upstream that follows names; `null` otherwise.
fn dns_status(snapshot: &Snapshot, upstream: &str, board: &Board) -> Value {
    let config = snapshot
        .config
        .upstreams
        .iter()
        .find(|u| u.name == upstream);
    let Some(u) = config.filter(|u| !u.dns.is_empty()) else {
        return Value::Null;
    };
    json!({
        "min_refresh_ms": millis(u.refresh.min),
        "max_refresh_ms": millis(u.refresh.max),
        "hold_empty_ms": millis(u.refresh.hold_empty),
        "names": board.to_json(upstream),
    })
}

/// The routes in precedence order, each with the upstream it names and,
/// for one that can never match, the route that takes its requests.
fn routes(snapshot: &Snapshot) -> Vec<Value> {
    let table = snapshot.routes();
    let shadows = table.shadows();
    table
        .by_precedence()
        .into_iter()
        .map(|r| {
            let by = shadows
                .iter()
                .find(|s| s.route == r.position)
                .map(|s| table.routes()[s.by - 1].name.as_str());
            json!({
                "name": r.name,
                "position": r.position,
                "hosts": r.hosts.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "path_prefix": r.path_prefix,
                "strip_prefix": r.strip_prefix,
                "headers": r.headers.iter().map(|(k, v)| {
                    (k.to_string(), Value::from(v.to_str().unwrap_or("(not text)")))
                }).collect::<serde_json::Map<_, _>>(),
                "upstream": snapshot.upstreams()[r.upstream].name(),
                "never_matches_because_of": by,
            })
        })
        .collect()
}

pub(super) fn upstream_status(u: &Upstream, metrics: &Metrics) -> Value {
    let t = u.timeouts();
    let now = health::now();
    // Once per upstream: each backend is compared with the same fastest.
    let fastest = (u.balance() == Balance::LeastConnections).then(|| u.fastest_latency());
    let taking = u.backends().iter().enumerate();
    let mut backends: Vec<Value> = taking
        .map(|(i, b)| backend_status(u, b, Some(i), now, fastest))
        .collect();
    for b in u.draining() {
        let mut v = backend_status(u, b, None, now, fastest);
        drained_status(&mut v, u, b, metrics);
        backends.push(v);
    }
    let p = u.passive();
    let budget = u.retry_budget();
    let (requests, retries) = budget.window().recent(now);
    json!({
        "name": u.name(),
        "balance": u.balance().name(),
        "transport": u.peer_template().description(),
        "retries": u.retries(),
        "timeouts_ms": {
            "connect": millis(t.connect),
            "read": millis(t.read),
            "write": millis(t.write),
            "idle": millis(t.idle),
            "tunnel_idle": millis(t.tunnel_idle),
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
        "consistent_hash": u.hashed().map(|h| json!({
            "hash_key": h.key.to_string(),
            "hash_balance_factor": h.factor,
            "ring_points": h.ring.len(),
            "requests_without_key": u.counters().hash_misses.load(Ordering::Relaxed),
            "without_key": "round_robin",
        })),
        "least_latency": (u.balance() == Balance::LeastLatency).then(|| json!({
            "latency_decay_ms": millis(u.latency_decay()),
        })),
        "sticky": u.sticky().map(|s| json!({
            "cookie": s.config.cookie,
            "max_age_s": s.config.max_age.map(|d| d.as_secs()),
            "path": s.config.path,
            "secure": s.config.secure.map_or(Value::from("on for HTTPS requests"), Value::from),
            "http_only": s.config.http_only,
            "same_site": s.config.same_site.attribute(),
        })),
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
        "drained_unlisted": u.drained_unlisted().iter().map(|(address, since)| json!({
            "address": address,
            "draining_since": rfc3339(*since),
            "why": "drained on the admin port, then dropped by the file or DNS: comes back drained if listed again",
        })).collect::<Vec<_>>(),
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
        Probe::Grpc { service } => {
            v["type"] = "grpc".into();
            v["service"] = service.as_str().into();
        }
    }
    v
}

/// Overrides the state of a backend drained on the admin port with where
/// its drain stands: what is left on it, or that it may be stopped.
fn drained_status(v: &mut Value, u: &Upstream, b: &Backend, metrics: &Metrics) {
    let p = super::backends::progress_of(metrics, u.name(), &b.state, b.drained);
    let since = p.since.map(rfc3339).unwrap_or_default();
    let health = v["state"].as_str().unwrap_or_default().to_string();
    v["reason"] = match p.drained() {
        true => format!("drained on the admin port since {since}: nothing left on it, safe to stop ({health})"),
        false => format!(
            "drained on the admin port since {since}: no new requests; {} requests and {} tunnels left ({health})",
            p.requests, p.tunnels
        ),
    }
    .into();
    v["state"] = p.state().into();
    v["draining_since"] = since.into();
    v["tunnels"] = p.tunnels.into();
    v["drained"] = p.drained().into();
}

/// `fastest`: for least-connections, what [`Upstream::fastest_latency`]
/// gives; `None` for other algorithms. `i`: its index among the backends
/// that take requests; `None` for a drained one.
fn backend_status(
    u: &Upstream,
    b: &Backend,
    i: Option<usize>,
    now: u64,
    fastest: Option<Option<u64>>,
) -> Value {
    let s = &b.state;
    let h = s.health().report(now);
    let effective = i.map_or(0.0, |i| u.effective_weight(i, now));
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
    if effective < f64::from(b.weight) && state == "healthy" && i.is_some() {
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
        "source": if b.name.is_some() { "dns" } else { "file" },
        "dns_name": b.name.as_deref(),
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
        "keepalive_announced_s": s.pooling().announced,
        "base_latency_ms": latency_ms,
        "held_back": held_back,
        "latency_ewma_ms": (u.balance() == Balance::LeastLatency).then(|| {
            let ewma = s.ewma().latency(now, u.latency_decay());
            (ewma / 1e4).round() / 100.0
        }),
        "sticky_id": u.sticky().zip(i).map(|(st, i)| st.id(i)),
        "responses_total": s.requests(),
        "failures_total": s.failures(),
    })
}
