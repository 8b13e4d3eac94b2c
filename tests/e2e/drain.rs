//! Drains end when done: on SIGTERM the binary exits as soon as nothing is
//! left, well inside a long grace period, which is only the cap (with a
//! request in flight: `binary::sigterm_lets_the_request_in_flight_finish_and_exits_0`).

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::binary::{signal, spawn, wait_exit, BinaryConfig};
use crate::support::{client, eventually, Behavior, TestBackend, DEADLINE};

/// Far longer than [`DEADLINE`](crate::support::DEADLINE), within which
/// `wait_exit` must see the exit.
const GRACE: &str = "300s";

async fn serving(config: &BinaryConfig) {
    let http = client();
    eventually("the binary to serve", || async {
        let r = http.get(config.url()).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nothing_in_flight_sigterm_exits_before_the_grace_period() {
    let a = TestBackend::start("a", Behavior::Name).await;
    let config = BinaryConfig::new(GRACE, &[a.addr]);
    let mut running = spawn(&config.path, false);
    serving(&config).await;
    signal(&running, "-TERM");
    let status = wait_exit(&mut running, "the binary to exit before the grace period").await;
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keepalive_connection_does_not_hold_the_drain() {
    let a = TestBackend::start("a", Behavior::Name).await;
    let config = BinaryConfig::new(GRACE, &[a.addr]);
    let mut running = spawn(&config.path, false);
    serving(&config).await;
    let mut idle = tokio::net::TcpStream::connect(config.addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 1024];
    let n = idle.read(&mut answer).await.unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
    signal(&running, "-TERM");
    let status = wait_exit(
        &mut running,
        "the binary to close the idle connection and exit",
    )
    .await;
    assert!(status.success(), "{status}");
    // Closed, with nothing more sent on it.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(DEADLINE, idle.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the idle connection was left open");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}
