//! Service discovery by DNS: a background service that runs one task per
//! followed name (`{ address = "name:port", resolve = true }` for A/AAAA,
//! `{ srv = "name" }` for SRV), each on its own TTL-driven schedule
//! (`schedule.rs`), asking through hickory-resolver (`resolve.rs`).
//!
//! Answers never reach the request path directly: a task hands the
//! backends it found to [`Pool::discovered`], the same builder a reload
//! goes through, which diffs them by address and installs a new snapshot.
//! Failures keep the last good backends; only empty answers that last
//! `hold_empty` take them out.

mod check;
mod resolve;
mod schedule;
mod status;
mod task;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::pool::Pool;

pub use check::check;
pub use resolve::{lookup, resolver, Outcome};
pub use schedule::Phase;
pub use status::{Board, NameStatus};
use task::{Shared, Spec};

/// Runs the tasks of every name the current config follows.
pub struct Discovery {
    shared: Arc<Shared>,
}

impl Discovery {
    pub fn new(pool: Arc<Pool>, metrics: Arc<Metrics>, board: Arc<Board>) -> Self {
        Discovery {
            shared: Arc::new(Shared {
                pool,
                metrics,
                board,
            }),
        }
    }

    /// Makes the running tasks match `config`: starts those of new names,
    /// restarts those whose settings changed, stops those of names it no
    /// longer follows (their status and metric series go with them).
    async fn reconcile(&self, config: &Config, tasks: &mut HashMap<(String, String), Running>) {
        let wanted: HashMap<(String, String), Spec> = specs(config)
            .map(|s| ((s.upstream.clone(), s.dns.name.clone()), s))
            .collect();
        let stale: Vec<(String, String)> = tasks
            .iter()
            .filter(|(key, running)| wanted.get(*key) != Some(&running.spec))
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            let Some(running) = tasks.remove(&key) else {
                continue;
            };
            running.handle.abort();
            // Once it has really stopped, nothing of it can land after this.
            let _ = running.handle.await;
            if !wanted.contains_key(&key) {
                self.shared.metrics.forget_dns(&key.0, &key.1);
            }
        }
        self.shared
            .board
            .retain(|u, n| wanted.contains_key(&(u.to_string(), n.to_string())));
        for (key, spec) in wanted {
            tasks.entry(key).or_insert_with(|| {
                self.shared.metrics.init_dns(&spec.upstream, &spec.dns.name);
                let handle = tokio::spawn(task::run(spec.clone(), Arc::clone(&self.shared)));
                Running { spec, handle }
            });
        }
    }
}

/// A task and what it was started with.
struct Running {
    spec: Spec,
    handle: JoinHandle<()>,
}

/// What `config` follows: one spec per name of each upstream.
fn specs(config: &Config) -> impl Iterator<Item = Spec> + '_ {
    config.upstreams.iter().flat_map(move |u| {
        u.dns.iter().map(move |d| Spec {
            upstream: u.name.clone(),
            dns: d.clone(),
            refresh: u.refresh,
            resolver: config.resolver.clone(),
        })
    })
}

#[async_trait]
impl BackgroundService for Discovery {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut versions = self.shared.pool.subscribe();
        let mut tasks = HashMap::new();
        // DNS answers install snapshots too: only a new config matters here.
        let mut reconciled: Option<Arc<Config>> = None;
        loop {
            let config = Arc::clone(&self.shared.pool.snapshot().config);
            if !reconciled.as_ref().is_some_and(|c| Arc::ptr_eq(c, &config)) {
                self.reconcile(&config, &mut tasks).await;
                reconciled = Some(config);
            }
            tokio::select! {
                _ = shutdown.changed() => break,
                changed = versions.changed() => if changed.is_err() { break },
            }
        }
        for running in tasks.into_values() {
            running.handle.abort();
        }
    }
}
