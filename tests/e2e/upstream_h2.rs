//! `protocol = "http2"`: HTTP/1.1 and HTTP/2 clients reaching backends
//! that speak only HTTP/2 (h2c), `te: trailers` passed on, streams shared
//! on few connections as `max_streams_per_connection` allows, and a
//! refused stream sent to another backend whatever its method.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::support::grpc::upstream;
use crate::support::h2backend::{refusing_backend, H2Backend};
use crate::support::proxy::metric_sum;
use crate::support::{client, eventually, h2c_client, TestProxy, DEADLINE};

/// Sends `head` (a whole HTTP/1.1 request without body) on a new
/// connection and reads the answer until the proxy closes.
async fn raw(proxy: SocketAddr, head: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut out))
        .await
        .expect("the proxy closes")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_http2_clients_reach_an_http2_only_backend() {
    let backend = H2Backend::start("h2", watch::channel(true).1).await;
    let server = "h2c = true\n";
    let proxy = TestProxy::start_with(server, &upstream("app", &[backend.addr], "")).await;
    let url = format!("http://{}/x", proxy.addr);

    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "h2 HTTP/2.0 te= len=0");
    // A body, and back.
    let body = vec![7u8; 200_000];
    let r = client().post(&url).body(body).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "h2 HTTP/2.0 te= len=200000");
    // HTTP/1.1 hop-by-hop headers do not reach HTTP/2; `te: trailers` does.
    let head = "GET /x HTTP/1.1\r\nHost: app\r\nTE: gzip, trailers\r\nConnection: TE, close\r\n\
         Keep-Alive: timeout=5\r\n\r\n";
    let answer = raw(proxy.addr, head).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.ends_with("h2 HTTP/2.0 te=trailers len=0"),
        "{answer}"
    );

    let r = h2c_client()
        .get(&url)
        .header("te", "trailers")
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.text().await.unwrap(), "h2 HTTP/2.0 te=trailers len=0");
}

/// Sends `n` requests over one HTTP/2 client connection to a backend
/// that holds them until all have reached it; returns the connections the
/// backend saw.
async fn connections_for(n: usize, max_streams: Option<u32>) -> usize {
    let (open, gate) = watch::channel(false);
    let backend = H2Backend::start("h2", gate).await;
    let extra = max_streams.map_or(String::new(), |m| {
        format!("max_streams_per_connection = {m}\n")
    });
    let proxy =
        TestProxy::start_with("h2c = true\n", &upstream("app", &[backend.addr], &extra)).await;
    let client = h2c_client();
    let url = format!("http://{}/", proxy.addr);
    // One at a time, each held at the backend before the next is sent,
    // so that each finds the connections the earlier ones opened.
    let mut calls = Vec::new();
    for i in 0..n {
        calls.push(tokio::spawn(client.get(&url).send()));
        eventually("the request to reach the backend", || async {
            (backend.arrived() == i + 1).then_some(())
        })
        .await;
    }
    open.send(true).unwrap();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(backend.requests(), n);
    backend.connections()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_share_connections_up_to_max_streams_per_connection() {
    // Without the setting, 100 streams a connection: 40 requests fit on
    // one. One stream a connection, Pingora's own default, would take 40.
    let shared = connections_for(40, None).await;
    assert_eq!(shared, 1, "{shared} connections for 40 requests");
    // Two streams a connection: 20.
    let split = connections_for(40, Some(2)).await;
    assert!(
        split >= 20,
        "{split} connections for 40 requests, 2 streams each"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_to_an_http2_backend_goes_as_a_plain_request() {
    let backend = H2Backend::start("h2", watch::channel(true).1).await;
    let passive = "[upstreams.app.passive_health_check]\nconsecutive_failures = 1\n";
    let proxy = TestProxy::start_with("", &upstream("app", &[backend.addr], passive)).await;
    let head = "GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let want = b"h2 HTTP/2.0 te= len=0";
    let read = async {
        let mut chunk = [0u8; 1024];
        while !answer.ends_with(want) {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("an answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("h2 HTTP/2.0 te= len=0"), "{answer}");
    let b = proxy.backend(backend.addr).await;
    assert_eq!(b["state"], "healthy", "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_refusing_streams_is_not_ejected_for_it() {
    let (refuser, refused, _task) = refusing_backend().await;
    let passive = "[upstreams.app.passive_health_check]\nconsecutive_failures = 1\n";
    let proxy = TestProxy::start_with("", &upstream("app", &[refuser], passive)).await;
    let url = format!("http://{}/", proxy.addr);
    for _ in 0..3 {
        assert_eq!(client().get(&url).send().await.unwrap().status(), 502);
    }
    // Each request is sent again to the same backend, within `retries` (2).
    assert_eq!(refused.load(std::sync::atomic::Ordering::SeqCst), 9);
    let b = proxy.backend(refuser).await;
    assert_eq!(b["state"], "healthy", "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stream_goes_to_another_backend_whatever_its_method() {
    let (refuser, refused, _task) = refusing_backend().await;
    let good = H2Backend::start("good", watch::channel(true).1).await;
    let proxy =
        TestProxy::start_with("h2c = true\n", &upstream("app", &[refuser, good.addr], "")).await;
    let url = format!("http://{}/orders", proxy.addr);
    for i in 0..10 {
        let r = client()
            .post(&url)
            .body(format!("order {i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "POST {i}");
        let len = format!("order {i}").len();
        let text = r.text().await.unwrap();
        assert_eq!(text, format!("good HTTP/2.0 te= len={len}"));
    }
    assert!(
        refused.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "no stream was refused"
    );
    let m = proxy.metrics().await;
    assert!(metric_sum(&m, "switchyard_retries_total", &[]) >= 1.0);
}
