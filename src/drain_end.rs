//! The end of a drain: once the process has begun to shut down (SIGTERM)
//! or to hand over to a new one (an upgrade's SIGQUIT), it exits as soon
//! as no client connection is left (so no request and no tunnel either),
//! rather than sleeping out the whole grace period, which stays the cap.
//! Idle keep-alive connections close at the drain's linger (at most 2 s),
//! tunnels at their own instants within the grace period.

use std::sync::Arc;
use std::time::Duration;

use crate::drain::Draining;
use crate::metrics::Metrics;
use crate::pool::Pool;

/// How often the drain looks at what is left.
const POLL: Duration = Duration::from_millis(20);

/// How long nothing must be left before the process exits: a connection
/// accepted as the listeners stopped is counted within it.
const SETTLE: Duration = Duration::from_millis(60);

/// What a drain still waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Left {
    pub connections: i64,
    /// Requests in flight to backends, tunnels not included.
    pub requests: u64,
    pub tunnels: i64,
}

impl Left {
    /// Now, as the metrics and the pool count them.
    pub fn now(metrics: &Metrics, pool: &Pool) -> Left {
        let in_flight: u64 = pool
            .snapshot()
            .upstreams()
            .iter()
            .flat_map(|u| u.listed())
            .map(|b| b.state.in_flight() as u64)
            .sum();
        let tunnels = metrics.tunnels_open_total();
        Left {
            connections: metrics.client_connections.get(),
            // Each open tunnel holds its backend's lease.
            requests: in_flight.saturating_sub(u64::try_from(tunnels).unwrap_or(0)),
            tunnels,
        }
    }

    /// `/status`'s account of the process's drain: whether it has begun
    /// (and for how long), and what is left.
    pub fn to_json(self, draining: &Draining) -> serde_json::Value {
        let began = draining.began_at();
        serde_json::json!({
            "draining": began.is_some(),
            "for_ms": began.map(|b| super::admin::millis(b.elapsed())),
            "connections": self.connections,
            "requests": self.requests,
            "tunnels": self.tunnels,
        })
    }

    /// Nothing is left: every client connection has closed.
    pub fn done(self) -> bool {
        self.connections <= 0
    }
}

/// Resolves once `draining` has begun and nothing is left, logging what is
/// left once a second meanwhile. For an upgrade, `draining` must begin
/// only once the sockets are the new process's: an old process that
/// exited before would take them with it.
pub async fn drained(draining: &Draining, metrics: &Metrics, pool: &Pool) {
    let began = draining.began().await;
    let mut logged = began;
    let mut empty_since = None;
    loop {
        let left = Left::now(metrics, pool);
        if !left.done() {
            empty_since = None;
        } else if empty_since
            .get_or_insert_with(tokio::time::Instant::now)
            .elapsed()
            >= SETTLE
        {
            log::info!(
                "drained in {:.3} s: nothing left, exiting",
                began.elapsed().as_secs_f64()
            );
            return;
        }
        if logged.elapsed() >= Duration::from_secs(1) {
            logged = tokio::time::Instant::now();
            log::info!(
                "draining: {} connections, {} requests, {} tunnels left",
                left.connections,
                left.requests,
                left.tunnels
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// For the binary: a service that starts [`exit_when_drained`]'s thread,
/// once Pingora runs its services (after it has forked, with `--daemon`:
/// a thread started before would not be in the daemon).
pub struct ExitWhenDrained<F> {
    pub draining: Arc<Draining>,
    pub metrics: Arc<Metrics>,
    pub pool: Arc<Pool>,
    pub before_exit: std::sync::Mutex<Option<F>>,
}

#[async_trait::async_trait]
impl<F: FnOnce() + Send + 'static> pingora::services::background::BackgroundService
    for ExitWhenDrained<F>
{
    async fn start(&self, _shutdown: pingora::server::ShutdownWatch) {
        let before_exit = self
            .before_exit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(before_exit) = before_exit {
            let (d, m, p) = (&self.draining, &self.metrics, &self.pool);
            exit_when_drained(Arc::clone(d), Arc::clone(m), Arc::clone(p), before_exit);
        }
    }
}

/// For the binary: a thread of its own that exits the process once drained,
/// after `before_exit` (which writes out the access log). Not for tests
/// that run the server in-process.
pub fn exit_when_drained(
    draining: Arc<Draining>,
    metrics: Arc<Metrics>,
    pool: Arc<Pool>,
    before_exit: impl FnOnce() + Send + 'static,
) {
    std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                log::warn!("drain watcher not started ({e}): shutdown waits the grace period");
                return;
            }
        };
        runtime.block_on(drained(&draining, &metrics, &pool));
        before_exit();
        std::process::exit(0);
    });
}
