//! Shutdown closes tunnels spread over the grace period, not in one wave:
//! the real binary, twenty tunnels, SIGTERM, and the instant each one
//! closes.

use std::time::Duration;

use tokio::time::Instant;

use crate::support::binary::{signal, spawn, wait_exit, BinaryConfig};
use crate::support::faulty::{Fault, FaultyBackend};
use crate::support::{eventually, tunnel};

const TUNNELS: usize = 20;

/// Whole seconds, as Pingora rounds the grace period up.
const GRACE: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_tunnels_spread_over_the_grace_period() {
    let backend = FaultyBackend::start(Fault::Switch).await;
    let grace = format!("{}s", GRACE.as_secs());
    let config = BinaryConfig::new(&grace, &[backend.addr]);
    let mut running = spawn(&config.path, false);
    let first = eventually("the binary to open a tunnel", || async {
        tunnel::open(config.addr).await.ok()
    })
    .await;
    let mut tunnels = vec![first];
    while tunnels.len() < TUNNELS {
        tunnels.push(tunnel::open(config.addr).await.unwrap());
    }
    for t in &mut tunnels {
        tunnel::echo(t, b"open").await.unwrap();
    }
    let mut closes = tokio::task::JoinSet::new();
    for mut t in tunnels {
        closes.spawn(async move { tunnel::closed(&mut t).await.map(|()| Instant::now()) });
    }
    signal(&running, "-TERM");
    let mut at = Vec::new();
    while let Some(closed) = closes.join_next().await {
        at.push(
            closed
                .unwrap()
                .expect("every tunnel closes within the grace period"),
        );
    }
    at.sort();
    let span = at[TUNNELS - 1] - at[0];
    assert!(
        span >= GRACE / 3,
        "closed within {span:?} of each other, not spread over {GRACE:?}"
    );
    let mut millis: Vec<_> = at.iter().map(|t| (*t - at[0]).as_millis()).collect();
    millis.dedup();
    assert!(millis.len() >= TUNNELS / 2, "closed at only {millis:?} ms");
    let status = wait_exit(&mut running, "the binary to exit after SIGTERM").await;
    assert!(status.success(), "{status}");
}
