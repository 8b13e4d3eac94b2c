//! One followed name's task: look it up, hand what changed to the pool's
//! snapshot builder, count and log it, show it in `/status`, and sleep
//! until the next lookup, for as long as the config follows the name.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::resolve::{self, Outcome};
use super::schedule::{jitter, Phase, Tracker};
use super::status::{Answer, Board};
use crate::config::{DnsBackend, Lookup, Refresh, Resolver};
use crate::metrics::{DnsResult, Metrics};
use crate::pool::Pool;

/// What a task follows, and how: when any of it changes, the task is
/// started anew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub upstream: String,
    pub dns: DnsBackend,
    pub refresh: Refresh,
    pub resolver: Resolver,
}

/// What every task shares.
pub struct Shared {
    pub pool: Arc<Pool>,
    pub metrics: Arc<Metrics>,
    pub board: Arc<Board>,
}

/// Follows `spec` until aborted.
pub async fn run(spec: Spec, shared: Arc<Shared>) {
    let (upstream, name) = (spec.upstream.as_str(), spec.dns.name.as_str());
    let mut tracker = Tracker::new(spec.refresh, from_name(&shared.pool, upstream, name) > 0);
    // Each name has a resolver of its own, so clearing its cache before a
    // lookup touches no other name.
    let resolver = loop {
        match resolve::resolver(&spec.resolver) {
            Ok(r) => break r,
            Err(e) => {
                let step = tracker.failed();
                note(
                    &spec,
                    &shared,
                    &tracker,
                    Phase::Starting,
                    &Outcome::Failed(e),
                );
                tokio::time::sleep(jitter(step.wait, &spec.refresh)).await;
            }
        }
    };
    // A lookup may ask each nameserver once, and an SRV lookup its targets.
    let servers = spec.resolver.nameservers.len().max(1) as u32;
    let limit = spec.resolver.timeout.saturating_mul(servers + 1);
    loop {
        let outcome = resolve::lookup(&resolver, &spec.dns, limit).await;
        let before = tracker.phase();
        let step = match &outcome {
            Outcome::Found { backends, ttl } => tracker.records(backends.clone(), *ttl),
            Outcome::Empty(_) => tracker.empty(Instant::now()),
            Outcome::Failed(_) => tracker.failed(),
        };
        if let Some(backends) = step.publish {
            if let Some(change) = shared.pool.discovered(upstream, name, backends) {
                shared.metrics.init_series(&shared.pool.snapshot());
                log::info!(
                    "dns {upstream}/{name}: {} (snapshot {})",
                    change.summary(),
                    change.version
                );
            }
        }
        let wait = jitter(step.wait, &spec.refresh);
        note(&spec, &shared, &tracker, before, &outcome);
        shared.board.update(upstream, &spec.dns, |s| {
            s.next_lookup = Some(SystemTime::now() + wait);
        });
        tokio::time::sleep(wait).await;
    }
}

/// Counts, shows and (on a change of state) logs one lookup's outcome.
fn note(spec: &Spec, shared: &Shared, tracker: &Tracker, before: Phase, outcome: &Outcome) {
    let (upstream, name) = (spec.upstream.as_str(), spec.dns.name.as_str());
    let now = SystemTime::now();
    let result = match outcome {
        Outcome::Found { .. } => DnsResult::Success,
        Outcome::Empty(_) => DnsResult::Empty,
        Outcome::Failed(_) => DnsResult::Failure,
    };
    shared.metrics.observe_dns(upstream, name, result, now);
    let phase = tracker.phase();
    let empty_since = tracker
        .empty_since()
        .map(|at| now - at.elapsed().min(Duration::from_secs(u32::MAX.into())));
    shared.board.update(upstream, &spec.dns, |s| {
        s.phase = phase;
        s.lookups += 1;
        s.empty_since = empty_since;
        match outcome {
            Outcome::Found { backends, ttl } => {
                let srv = spec.dns.lookup == Lookup::Srv;
                let shown = backends.iter().map(|b| match srv {
                    true => format!("{} weight {}", b.address, b.weight),
                    false => b.address.clone(),
                });
                s.last_answer = Some(Answer {
                    at: now,
                    backends: shown.collect(),
                    ttl: Some(*ttl),
                    empty: None,
                });
            }
            Outcome::Empty(why) => {
                s.last_answer = Some(Answer {
                    at: now,
                    backends: Vec::new(),
                    ttl: None,
                    empty: Some(why.clone()),
                });
            }
            Outcome::Failed(e) => s.last_error = Some((now, e.clone())),
        }
    });
    if phase == before {
        return;
    }
    let kept = from_name(&shared.pool, upstream, name);
    match (phase, outcome) {
        (Phase::Failing, Outcome::Failed(e)) => log::warn!(
            "dns {upstream}/{name}: lookups failing ({e}); keeping the last {kept} backend(s) \
             and trying again"
        ),
        (Phase::Holding, Outcome::Empty(why)) => log::warn!(
            "dns {upstream}/{name}: {why}; keeping {kept} backend(s) unless it lasts \
             hold_empty ({})",
            humantime::format_duration(spec.refresh.hold_empty)
        ),
        (Phase::Empty, Outcome::Empty(why)) => {
            log::warn!("dns {upstream}/{name}: {why}: no backends from this name")
        }
        (Phase::Answering, _) if before != Phase::Starting => {
            log::info!("dns {upstream}/{name}: answering again")
        }
        _ => {}
    }
}

/// How many of `upstream`'s backends came from `name`, now.
fn from_name(pool: &Pool, upstream: &str, name: &str) -> usize {
    let snapshot = pool.snapshot();
    let Some(u) = snapshot.upstream_named(upstream) else {
        return 0;
    };
    u.listed()
        .filter(|b| b.name.as_deref() == Some(name))
        .count()
}
