//! `/upstreams/NAME/backends/ADDR/drain` and `.../undrain`: draining one
//! backend at runtime. `POST .../drain` stops new requests to it and
//! answers where the drain stands; `GET .../drain` answers that again (a
//! deploy script polls it until `"drained": true`); `POST .../undrain`
//! takes the backend back. Each change is a new snapshot from the pool's
//! builder, so reloads and DNS answers keep it.

use std::time::SystemTime;

use http::{Method, Response, StatusCode};
use serde_json::{json, Value};

use super::{json_response, percent_decode, rfc3339, text};
use crate::metrics::Metrics;
use crate::pool::{BackendState, DrainProgress, Pool};

/// What a path under `/upstreams/` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BackendPath {
    /// The upstream's name, decoded.
    pub upstream: String,
    /// The backend's address, decoded: as written, or as it resolved.
    pub backend: String,
    pub action: Action,
}

/// The last segment of the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// `drain`: `POST` drains, `GET` reports.
    Drain,
    /// `undrain`: `POST` takes the backend back.
    Undrain,
}

impl Action {
    /// The methods the endpoint takes; the first is the one named in 405s.
    pub(super) fn methods(self) -> &'static [Method] {
        match self {
            Action::Drain => &[Method::POST, Method::GET],
            Action::Undrain => &[Method::POST],
        }
    }
}

impl BackendPath {
    /// `/upstreams/NAME/backends/ADDR/drain` (or `undrain`), each segment
    /// percent-decoded (`%5B::1%5D:3001` for `[::1]:3001`); `None` for any
    /// other path.
    pub(super) fn parse(path: &str) -> Option<BackendPath> {
        let rest = path.strip_prefix("/upstreams/")?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [upstream, "backends", backend, action] = parts.as_slice() else {
            return None;
        };
        let action = match *action {
            "drain" => Action::Drain,
            "undrain" => Action::Undrain,
            _ => return None,
        };
        let decode = |s: &str| percent_decode(s, false).ok();
        let (upstream, backend) = (decode(upstream)?, decode(backend)?);
        if upstream.is_empty() || backend.is_empty() {
            return None;
        }
        Some(BackendPath {
            upstream,
            backend,
            action,
        })
    }
}

/// The answer to an allowed `method` on `path`.
pub(super) fn handle(
    pool: &Pool,
    metrics: &Metrics,
    method: &Method,
    path: &BackendPath,
) -> Response<Vec<u8>> {
    let (u, b) = (path.upstream.as_str(), path.backend.as_str());
    let done = match (path.action, method == Method::GET) {
        (Action::Drain, true) => Ok(b.to_string()),
        (Action::Drain, false) => pool.drain(u, b),
        (Action::Undrain, _) => pool.undrain(u, b),
    };
    let address = match done {
        Ok(address) => address,
        Err(e) => return text(StatusCode::NOT_FOUND, format!("{e}\n")),
    };
    match progress(pool, metrics, u, &address) {
        Some((p, listed)) => json_response(StatusCode::OK, &to_json(&p, listed)),
        // Undrained after leaving the config: nothing of it is left here.
        None if path.action == Action::Undrain => {
            let p = DrainProgress::new(u, &address, None, 0, 0);
            json_response(StatusCode::OK, &to_json(&p, false))
        }
        None => {
            let snapshot = pool.snapshot();
            let why = match snapshot.find_backend(u, &address) {
                Err(e) => e.to_string(),
                Ok(_) => format!("upstream {u} changed meanwhile"),
            };
            text(StatusCode::NOT_FOUND, format!("{why}\n"))
        }
    }
}

/// Where the drain of `backend` of `upstream` stands in the current
/// snapshot, and whether that lists it (a drained address the file or DNS
/// dropped is not, but what is still in flight on it counts); `None` if
/// the upstream neither lists it nor has it drained.
pub fn progress(
    pool: &Pool,
    metrics: &Metrics,
    upstream: &str,
    backend: &str,
) -> Option<(DrainProgress, bool)> {
    let snapshot = pool.snapshot();
    if let Ok(b) = snapshot.find_backend(upstream, backend) {
        return Some((progress_of(metrics, upstream, &b.state, b.drained), true));
    }
    let u = snapshot.upstream_named(upstream)?;
    let (address, since) = u.drained_unlisted().iter().find(|(a, _)| a == backend)?;
    let p = match pool.live_state(upstream, address) {
        Some(state) => progress_of(metrics, upstream, &state, Some(*since)),
        None => DrainProgress::new(upstream, address, Some(*since), 0, 0),
    };
    Some((p, false))
}

/// Where the drain of `state`, a backend of `upstream` drained `since`
/// then (or not), stands now: its leases and open tunnels.
pub(super) fn progress_of(
    metrics: &Metrics,
    upstream: &str,
    state: &BackendState,
    since: Option<SystemTime>,
) -> DrainProgress {
    let address = state.address();
    let tunnels = metrics.tunnels_open_to(upstream, address);
    let in_flight = state.left_in_flight() as u64;
    DrainProgress::new(upstream, address, since, in_flight, tunnels)
}

/// The JSON answer: `listed` is whether the upstream still lists it.
fn to_json(p: &DrainProgress, listed: bool) -> Value {
    json!({
        "upstream": p.upstream,
        "backend": p.backend,
        "state": p.state(),
        "draining_since": p.since.map(rfc3339),
        "in_flight": p.requests,
        "tunnels": p.tunnels,
        "drained": p.drained(),
        "listed": listed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_an_upstream_a_backend_and_an_action() {
        let p = BackendPath::parse("/upstreams/app/backends/127.0.0.1:3001/drain").unwrap();
        assert_eq!(
            (p.upstream.as_str(), p.backend.as_str(), p.action),
            ("app", "127.0.0.1:3001", Action::Drain)
        );
        let p = BackendPath::parse("/upstreams/app/backends/%5B::1%5D:3001/undrain").unwrap();
        assert_eq!(
            (p.backend.as_str(), p.action),
            ("[::1]:3001", Action::Undrain)
        );
        for bad in [
            "/upstreams/app/backends/127.0.0.1:3001",
            "/upstreams/app/backends/127.0.0.1:3001/drain/",
            "/upstreams/app/servers/127.0.0.1:3001/drain",
            "/upstreams//backends/127.0.0.1:3001/drain",
            "/upstreams/app/backends/%zz/drain",
            "/upstreams/app/backends/%ff/drain",
            "/upstreams/app/backends/a%2/drain",
            "/upstream/app/backends/127.0.0.1:3001/drain",
        ] {
            assert_eq!(BackendPath::parse(bad), None, "{bad}");
        }
    }
}
