//! Active health checks: a background service that runs one task per
//! checked backend, each on its own schedule, and feeds the results into the
//! backend's shared [`Health`](crate::pool::health::Health). Also the
//! reporting of ejections, which the proxy decides on request outcomes.

mod grpc;
mod probe;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rand::Rng;
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, timeout, Instant};

use crate::config::HealthCheck;
use crate::metrics::{CheckResult, Metrics};
use crate::pool::health::{self, Ejection};
use crate::pool::{BackendState, Pool, Snapshot, Verdict};
use crate::proxy::PeerTemplate;

pub use probe::Probe;

/// Runs the active checks of every backend in the current snapshot.
pub struct Checker {
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
}

/// One backend's check task, and what it was started with.
struct Task {
    upstream: String,
    check: Arc<HealthCheck>,
    /// How the backend is reached ([`PeerTemplate::key`]).
    transport: u64,
    handle: JoinHandle<()>,
}

impl Checker {
    pub fn new(pool: Arc<Pool>, metrics: Arc<Metrics>) -> Self {
        Checker { pool, metrics }
    }

    /// Makes the running tasks match `snapshot`: starts the missing ones,
    /// stops those whose backend left or whose check settings changed.
    async fn reconcile(&self, snapshot: &Snapshot, tasks: &mut HashMap<usize, Task>) {
        let mut wanted = HashMap::new();
        let mut unchecked = HashMap::new();
        for upstream in snapshot.upstreams() {
            for b in upstream.listed() {
                let key = Arc::as_ptr(&b.state) as usize;
                if let Some(check) = upstream.health_check() {
                    let peer = upstream.peer_template();
                    wanted.insert(key, (upstream.name(), check, &b.state, peer));
                } else {
                    unchecked.insert(key, &b.state);
                }
            }
        }
        let stale: Vec<usize> = tasks
            .iter()
            .filter(|(key, task)| {
                !wanted.get(*key).is_some_and(|(name, check, _, peer)| {
                    task.upstream == *name
                        && *task.check == ***check
                        && task.transport == peer.key()
                })
            })
            .map(|(key, _)| *key)
            .collect();
        for key in stale {
            let Some(task) = tasks.remove(&key) else {
                continue;
            };
            task.handle.abort();
            // Once it has really stopped, no late result of it can land
            // after this: a backend that is no longer checked is cleared of
            // its old verdict, or nothing would ever bring it back.
            let _ = task.handle.await;
            if let Some(state) = unchecked.get(&key) {
                state.health().clear_checks(health::now());
            }
        }
        for (key, (name, check, state, peer)) in wanted {
            tasks.entry(key).or_insert_with(|| Task {
                upstream: name.to_string(),
                check: Arc::clone(check),
                transport: peer.key(),
                handle: tokio::spawn(run(
                    name.to_string(),
                    Arc::clone(check),
                    Arc::clone(peer),
                    Arc::clone(state),
                    Arc::clone(&self.metrics),
                )),
            });
        }
    }
}

#[async_trait]
impl BackgroundService for Checker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut versions = self.pool.subscribe();
        let mut tasks = HashMap::new();
        loop {
            let snapshot = self.pool.snapshot();
            self.reconcile(&snapshot, &mut tasks).await;
            drop(snapshot);
            tokio::select! {
                _ = shutdown.changed() => break,
                changed = versions.changed() => if changed.is_err() { break },
            }
        }
        for task in tasks.into_values() {
            task.handle.abort();
        }
    }
}

/// Checks one backend forever: first after a random part of the interval
/// (so a pool's checks do not all fire at once), then every interval plus up
/// to a tenth of it. A check is cut off at its timeout, so a backend that
/// hangs delays nothing but its own next check.
async fn run(
    upstream: String,
    check: Arc<HealthCheck>,
    peer: Arc<PeerTemplate>,
    state: Arc<BackendState>,
    metrics: Arc<Metrics>,
) {
    let probe = Probe::new(
        &check.probe,
        &peer,
        state.address(),
        state.socket_addr(),
        check.timeout,
    );
    let probe = match probe {
        Ok(p) => p,
        Err(e) => {
            log::error!(
                "cannot check backend {} of upstream {upstream}: {e}",
                state.address()
            );
            return;
        }
    };
    let thresholds = (check.healthy_threshold, check.unhealthy_threshold);
    sleep(jitter(check.interval)).await;
    loop {
        let started = Instant::now();
        let began = health::now();
        let (result, message) = match timeout(check.timeout, probe.run()).await {
            Ok(Ok(message)) => (CheckResult::Success, message),
            Ok(Err(message)) => (CheckResult::Failure, message),
            Err(_) => {
                let t = humantime::format_duration(check.timeout);
                (CheckResult::Timeout, format!("no answer within {t}"))
            }
        };
        metrics.observe_check(&upstream, state.address(), result);
        let passed = result == CheckResult::Success;
        let now = health::now();
        if passed {
            if let Some(ejection) = state.health().check_passed(began, now) {
                log::info!(
                    "backend {} of upstream {upstream} is back: a check passed after it was \
                     ejected for {}, so it was restarted",
                    state.address(),
                    ejection.reason
                );
            }
        }
        let change = state
            .health()
            .record_check(passed, message, thresholds, now);
        if let Some(change) = change {
            let verdict = if change.healthy {
                "healthy"
            } else {
                "unhealthy"
            };
            let address = state.address();
            log::warn!(
                "backend {address} of upstream {upstream} is {verdict}: {}",
                change.reason
            );
        }
        sleep_until(started + check.interval + jitter(check.interval / 10)).await;
    }
}

/// A random duration from zero up to `max`.
fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return max;
    }
    rand::thread_rng().gen_range(Duration::ZERO..max)
}

/// Counts and logs what an attempt's outcome did to its backend.
pub fn report_verdict(
    metrics: &Metrics,
    upstream: &str,
    backend: &Arc<BackendState>,
    verdict: Verdict,
) {
    match verdict {
        Verdict::Counted => {}
        Verdict::Ejected(ejection) => report_ejection(metrics, upstream, backend, &ejection),
        Verdict::Capped { why, first } => {
            metrics.observe_ejection_capped(upstream);
            if first {
                log::warn!(
                    "backend {} of upstream {upstream} is not ejected: {why}",
                    backend.address()
                );
            }
        }
    }
}

/// Counts and logs an ejection, and logs the backend's return when it ends
/// (if nothing has ended it early or ejected it again by then).
fn report_ejection(
    metrics: &Metrics,
    upstream: &str,
    backend: &Arc<BackendState>,
    ejection: &Ejection,
) {
    metrics.observe_ejection(upstream, backend.address());
    let length = humantime::format_duration(ejection.length);
    log::warn!(
        "backend {} of upstream {upstream} ejected for {length}: {}",
        backend.address(),
        ejection.reason
    );
    // Weak: a backend removed meanwhile has nothing left to report.
    let (backend, upstream) = (Arc::downgrade(backend), upstream.to_string());
    let until = ejection.until;
    let wait = Duration::from_nanos(until.saturating_sub(health::now()));
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            sleep(wait).await;
            let Some(backend) = backend.upgrade() else {
                return;
            };
            if backend.health().ejected_until() == until {
                log::info!(
                    "backend {} of upstream {upstream} is back from ejection",
                    backend.address()
                );
            }
        });
    }
}
