//! Tunnels (upgraded connections) as Switchyard carries them: counted open
//! and holding their backend's lease while they last, ended by their own
//! idle timeout and not by `read_timeout`, and kept across reloads.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::faulty::{Fault, FaultyBackend};
use crate::support::proxy::{app, metric_sum};
use crate::support::websocket::{WsBackend, WsClient};
use crate::support::{eventually, tunnel, TestProxy, DEADLINE};

const OPEN: &str = "switchyard_tunnels_open";
const TOTAL: &str = "switchyard_tunnels_total";

/// Tunnels open at once in the counting test.
const TUNNELS: usize = 10;

/// WebSockets open across the reload.
const WEBSOCKETS: usize = 200;

/// Waits until `name` for `backend` of `app` adds up to `want`.
async fn wait_metric(proxy: &TestProxy, name: &str, backend: &str, want: usize) {
    let labels = [("upstream", "app"), ("backend", backend)];
    eventually(&format!("{name} to be {want}"), || async {
        let m = proxy.metrics().await;
        (metric_sum(&m, name, &labels) == want as f64).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_tunnels_are_counted_and_hold_their_lease_until_they_close() {
    let backend = FaultyBackend::start(Fault::Switch).await;
    let settings = "balance = \"least_connections\"\n";
    let proxy = TestProxy::start_app(settings, &[backend.addr]).await;
    let address = backend.addr.to_string();
    let mut tunnels = Vec::new();
    for _ in 0..TUNNELS {
        tunnels.push(tunnel::open(proxy.addr).await.unwrap());
    }
    wait_metric(&proxy, OPEN, &address, TUNNELS).await;
    wait_metric(&proxy, TOTAL, &address, TUNNELS).await;
    // Least-connections sees each tunnel as a request in flight.
    assert_eq!(proxy.in_flight(backend.addr).await, TUNNELS as u64);
    for t in &mut tunnels {
        tunnel::echo(t, b"still open").await.unwrap();
    }
    drop(tunnels);
    wait_metric(&proxy, OPEN, &address, 0).await;
    proxy.wait_idle(&[backend.addr]).await;
    let m = proxy.metrics_after(TUNNELS as f64).await;
    let labels = [("backend", address.as_str()), ("code", "101")];
    assert_eq!(
        metric_sum(&m, "switchyard_requests_total", &labels),
        TUNNELS as f64
    );
    assert_eq!(metric_sum(&m, TOTAL, &[]), TUNNELS as f64);
    assert_eq!(backend.open(), 0);
}

/// Client deadlines far shorter than the waits below.
const SHORT_CLIENT_TIMEOUTS: &str = "header_timeout = \"300ms\"\nkeepalive_timeout = \"300ms\"\n\
    send_timeout = \"300ms\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_tunnel_outlives_read_timeout_and_the_client_deadlines() {
    let backend = FaultyBackend::start(Fault::Switch).await;
    let upstream = app("read_timeout = \"300ms\"\n", &[backend.addr]);
    let proxy = TestProxy::start_with(SHORT_CLIENT_TIMEOUTS, &upstream).await;
    let mut t = tunnel::open(proxy.addr).await.unwrap();
    tunnel::echo(&mut t, b"first").await.unwrap();
    // The point of the test: quiet for three of each timeout.
    tokio::time::sleep(Duration::from_millis(900)).await;
    tunnel::echo(&mut t, b"still here").await.unwrap();
}

/// Bytes a client sends without reading, enough to fill every socket
/// buffer on the way and back.
const FLOOD: usize = 16 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_pauses_reading_is_not_cut_by_send_timeout() {
    // A paused reader stalls the proxy's writes to it for longer than
    // send_timeout; in a tunnel only tunnel_idle_timeout may end that.
    let backend = FaultyBackend::start(Fault::Switch).await;
    let proxy = TestProxy::start_with(SHORT_CLIENT_TIMEOUTS, &app("", &[backend.addr])).await;
    let (mut reader, mut writer) = tunnel::open(proxy.addr).await.unwrap().into_split();
    let sent =
        tokio::spawn(async move { writer.write_all(&vec![b'x'; FLOOD]).await.map(|()| writer) });
    tokio::time::sleep(Duration::from_millis(900)).await;
    let echoed = tokio::time::timeout(DEADLINE, async {
        let mut got = 0;
        let mut buf = vec![0; 64 * 1024];
        while got < FLOOD {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        got
    })
    .await
    .expect("the echo comes back in time");
    assert_eq!(echoed, FLOOD, "the tunnel ended after {echoed} bytes");
    assert!(sent.await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_closes_once_idle_for_tunnel_idle_timeout() {
    let backend = FaultyBackend::start(Fault::Switch).await;
    let settings = "tunnel_idle_timeout = \"1s\"\n";
    let proxy = TestProxy::start_app(settings, &[backend.addr]).await;
    let mut t = tunnel::open(proxy.addr).await.unwrap();
    // Bytes every tenth of the timeout keep it open well past it.
    for i in 0..25 {
        tunnel::echo(&mut t, format!("message {i}").as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then quiet: the proxy closes it, and both sides are gone.
    tunnel::closed(&mut t).await.unwrap();
    wait_metric(&proxy, OPEN, &backend.addr.to_string(), 0).await;
    eventually("the backend side to close", || async {
        (backend.open() == 0).then_some(())
    })
    .await;
}

/// Opens `n` WebSockets and checks each echoes once.
async fn websockets(proxy: &TestProxy, n: usize) -> Vec<WsClient> {
    let mut all = Vec::new();
    for i in 0..n {
        let mut ws = WsClient::open(proxy.addr, "/ws").await.unwrap();
        assert_eq!(
            ws.echo(&format!("hello {i}")).await.unwrap(),
            format!("hello {i}")
        );
        all.push(ws);
    }
    all
}

/// Every WebSocket of `all` still echoes.
async fn all_echo(all: &mut [WsClient], what: &str) {
    for (i, ws) in all.iter_mut().enumerate() {
        let message = format!("{what} {i}");
        assert_eq!(ws.echo(&message).await, Ok(message), "WebSocket {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_closes_no_websocket_to_a_backend_that_stays() {
    let (a, b) = (WsBackend::start().await, WsBackend::start().await);
    let proxy = TestProxy::start_with("watch_config = false\n", &app("", &[a.addr])).await;
    let mut open = websockets(&proxy, WEBSOCKETS).await;
    // `a` stays (with another weight), `b` joins, the balance changes.
    let backends = format!(
        "[upstreams.app]\nbalance = \"least_connections\"\nbackends = [\
         {{ address = \"{}\", weight = 3 }}, \"{}\"]\n",
        a.addr, b.addr
    );
    std::fs::write(&proxy.config, proxy.config_text(&backends)).unwrap();
    let (status, body) = proxy.reload().await;
    assert_eq!(status, 200, "{body:#}");
    all_echo(&mut open, "after the reload").await;
    assert_eq!(a.open(), WEBSOCKETS);
    wait_metric(&proxy, OPEN, &a.addr.to_string(), WEBSOCKETS).await;
    // New ones go by the new pool: `b` has none, so it takes the next.
    let mut next = websockets(&proxy, 1).await;
    assert_eq!(b.open(), 1);
    all_echo(&mut next, "new").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_backends_websockets_stay_until_they_end() {
    let (a, b) = (WsBackend::start().await, WsBackend::start().await);
    let proxy = TestProxy::start_with("watch_config = false\n", &app("", &[a.addr])).await;
    let mut open = websockets(&proxy, 5).await;
    std::fs::write(&proxy.config, proxy.config_text(&app("", &[b.addr]))).unwrap();
    let (status, body) = proxy.reload().await;
    assert_eq!(status, 200, "{body:#}");
    all_echo(&mut open, "after the removal").await;
    let a_address = a.addr.to_string();
    wait_metric(&proxy, OPEN, &a_address, 5).await;
    let _new = websockets(&proxy, 1).await;
    assert_eq!((a.open(), b.open()), (5, 1));
    drop(open);
    eventually("the removed backend's series to go", || async {
        let m = proxy.metrics().await;
        let gone = !m
            .samples
            .iter()
            .any(|s| s.metric == OPEN && s.labels.get("backend") == Some(a_address.as_str()));
        gone.then_some(())
    })
    .await;
    eventually("the removed backend's side to close", || async {
        (a.open() == 0).then_some(())
    })
    .await;
}
