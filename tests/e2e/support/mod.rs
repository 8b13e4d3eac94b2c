//! What the end-to-end tests share: real backends, the real proxy started
//! in-process on loopback, an HTTP client, and deadline polling.

#![allow(dead_code)]

pub mod access_log;
pub mod announcing;
pub mod backend;
pub mod binary;
pub mod dns;
pub mod faulty;
pub mod grpc;
pub mod h2backend;
pub mod h2raw;
pub mod promql;
pub mod proxy;
pub mod raw;
pub mod recording;
pub mod tls;
pub mod tunnel;
pub mod websocket;
pub mod wire;

use std::future::Future;
use std::time::Duration;

pub use backend::{Behavior, TestBackend};
pub use proxy::TestProxy;
pub use recording::RecordingBackend;

/// How long any poll waits before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Polls `check` until it returns `Some`, failing the test after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A client that never uses an environment proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(DEADLINE)
        .build()
        .unwrap()
}

/// An HTTP/2-only client with prior knowledge, for h2c.
pub fn h2c_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(DEADLINE)
        .http2_prior_knowledge()
        .build()
        .unwrap()
}

/// A loopback port that nothing listens on (bound, then released).
pub fn closed_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A new empty directory under the system's temp dir, unique to this test
/// process and call.
pub fn temp_dir(what: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("switchyard-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}

/// `clients` tasks that GET `/` from `proxy` one after the other and never
/// retry: each answer but a 200 is a failure. They stop once `stop` is
/// set, after 20,000 requests each, or after twice [`DEADLINE`]; each
/// request is counted in `total` as it ends. See [`no_failures`].
pub fn load(
    proxy: &std::sync::Arc<TestProxy>,
    clients: usize,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    total: &std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> tokio::task::JoinSet<(usize, Vec<String>)> {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (proxy, stop, total) = (Arc::clone(proxy), Arc::clone(stop), Arc::clone(total));
        set.spawn(async move {
            let http = client();
            let (mut sent, mut failures) = (0, Vec::new());
            let deadline = tokio::time::Instant::now() + DEADLINE * 2;
            while !stop.load(Ordering::SeqCst)
                && sent < 20_000
                && tokio::time::Instant::now() < deadline
            {
                let (status, body) = proxy.get(&http, "/").await;
                sent += 1;
                total.fetch_add(1, Ordering::SeqCst);
                if status != 200 {
                    failures.push(format!("{status} {body}"));
                }
            }
            (sent, failures)
        });
    }
    set
}

/// Waits until `total` (see [`load`]) has grown by `n`.
pub async fn sent_more(total: &std::sync::atomic::AtomicUsize, n: usize) {
    use std::sync::atomic::Ordering;
    let until = total.load(Ordering::SeqCst) + n;
    eventually("the clients to send more", || async {
        (total.load(Ordering::SeqCst) >= until).then_some(())
    })
    .await;
}

/// Waits for client tasks that each return (requests sent, failures), and
/// asserts that none failed. Returns how many requests they sent in all.
pub async fn no_failures(mut clients: tokio::task::JoinSet<(usize, Vec<String>)>) -> usize {
    let (mut sent, mut failures) = (0, Vec::new());
    while let Some(result) = clients.join_next().await {
        let (n, f) = result.expect("a client task panicked");
        sent += n;
        failures.extend(f);
    }
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed: {failures:?}",
        failures.len()
    );
    sent
}
