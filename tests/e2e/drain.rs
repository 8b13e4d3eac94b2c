//! Drains end when done: on SIGTERM the binary exits as soon as nothing is
//! left, well inside a long grace period, which is only the cap.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_finishes_then_the_binary_exits() {
    let (open, gate) = watch::channel(false);
    let held = TestBackend::start("held", Behavior::Gated(gate)).await;
    let config = BinaryConfig::new(GRACE, &[held.addr]);
    let mut running = spawn(&config.path, false);
    let http = client();
    eventually("the data port", || async {
        tokio::net::TcpStream::connect(config.addr).await.ok()
    })
    .await;
    let request = tokio::spawn({
        let (http, url) = (http.clone(), config.url());
        async move { http.get(url).send().await?.text().await }
    });
    eventually("the request to be held", || async {
        (held.received() == 1).then_some(())
    })
    .await;
    signal(&running, "-TERM");
    open.send(true).unwrap();
    assert_eq!(request.await.unwrap().unwrap().trim(), "held");
    let status = wait_exit(&mut running, "the binary to exit once the request is done").await;
    assert!(status.success(), "{status}");
}
