//! Slow, idle and too many clients: each of `[server]`'s client timeouts
//! closes the connection it is for, a slowloris attack is shed while other
//! clients are served, and connections over `max_connections` get a 503.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::support::proxy::{app, metric_sum};
use crate::support::raw::{RawBackend, Then};
use crate::support::wire::read_response;
use crate::support::{
    client, eventually, Behavior, RecordingBackend, TestBackend, TestProxy, DEADLINE,
};

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: app\r\n\r\n";

async fn timeouts(proxy: &TestProxy, timeout: &str) -> f64 {
    let scrape = proxy.metrics().await;
    metric_sum(
        &scrape,
        "switchyard_client_timeouts_total",
        &[("timeout", timeout)],
    )
}

/// Reads until the proxy closes the connection (EOF or reset); returns
/// what arrived. Fails the test if it stays open past [`DEADLINE`].
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 65536];
    let read_all = async {
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            seen.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(DEADLINE, read_all)
        .await
        .expect("the proxy closes the connection");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_that_never_completes_is_cut_off() {
    let backend = TestBackend::start("a", Behavior::Name).await;
    let proxy =
        TestProxy::start_with("header_timeout = \"300ms\"\n", &app("", &[backend.addr])).await;

    let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: app\r\n")
        .await
        .unwrap();
    let seen = until_closed(&mut slow).await;

    assert!(seen.is_empty(), "nothing is answered: {seen:?}");
    assert_eq!(timeouts(&proxy, "header").await, 1.0);
    assert_eq!(backend.received(), 0, "the partial request was not sent on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keepalive_connection_is_closed_and_a_busy_one_is_not() {
    let (open, gate) = watch::channel(false);
    let backend = TestBackend::start("a", Behavior::Gated(gate)).await;
    let server = "keepalive_timeout = \"300ms\"\nheader_timeout = \"300ms\"\n";
    let proxy = TestProxy::start_with(server, &app("", &[backend.addr])).await;

    // A request the backend holds for longer than both timeouts is still
    // answered: they bound waiting for a request, not serving one.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let mut buf = Vec::new();
    stream.write_all(GET).await.unwrap();
    eventually("the backend to hold the request", || async {
        (backend.received() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    open.send(true).unwrap();
    for _ in 0..3 {
        let (status, _) = read_response(&mut stream, &mut buf).await.unwrap();
        assert_eq!(status, 200);
        stream.write_all(GET).await.unwrap();
    }
    let (status, _) = read_response(&mut stream, &mut buf).await.unwrap();
    assert_eq!(status, 200);

    // Then, left idle, it is closed.
    let seen = until_closed(&mut stream).await;
    assert!(seen.is_empty() && buf.is_empty(), "nothing more is sent");
    assert_eq!(timeouts(&proxy, "keepalive").await, 1.0);
    assert_eq!(timeouts(&proxy, "header").await, 0.0);
    assert_eq!(backend.received(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_timeout_zero_closes_after_each_response() {
    let backend = TestBackend::start("a", Behavior::Name).await;
    let proxy =
        TestProxy::start_with("keepalive_timeout = \"0s\"\n", &app("", &[backend.addr])).await;

    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(GET).await.unwrap();
    let seen = String::from_utf8_lossy(&until_closed(&mut stream).await).to_string();
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(
        seen.to_ascii_lowercase().contains("connection: close"),
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_gets_408() {
    // A backend that reads the whole body before answering.
    let backend = RecordingBackend::start().await;
    let proxy =
        TestProxy::start_with("body_timeout = \"300ms\"\n", &app("", &[backend.addr])).await;

    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 10\r\n\r\nab")
        .await
        .unwrap();
    let seen = String::from_utf8_lossy(&until_closed(&mut stream).await).to_string();
    assert!(seen.starts_with("HTTP/1.1 408"), "{seen}");
    assert_eq!(timeouts(&proxy, "body").await, 1.0);
    assert!(
        backend.requests().is_empty(),
        "no complete request reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_at_send_timeout() {
    // Far more than loopback socket buffers hold, so the proxy's writes
    // block once the client stops reading.
    const BODY: usize = 64 << 20;
    let mut reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n").into_bytes();
    reply.resize(reply.len() + BODY, b'x');
    let backend = RawBackend::start(Box::leak(reply.into_boxed_slice()), Then::Close).await;
    let proxy =
        TestProxy::start_with("send_timeout = \"300ms\"\n", &app("", &[backend.addr])).await;

    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(GET).await.unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // Now read nothing: the proxy gives up on the client.
    eventually("the send timeout", || async {
        (timeouts(&proxy, "send").await == 1.0).then_some(())
    })
    .await;
    let rest = until_closed(&mut stream).await;
    assert!(
        rest.len() < BODY,
        "the response was cut short, not completed"
    );
    eventually("the connection to be released", || async {
        let scrape = proxy.metrics().await;
        (metric_sum(&scrape, "switchyard_client_connections", &[]) == 0.0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_attack_is_shed_while_other_clients_are_served() {
    const ATTACKERS: usize = 300;
    let backend = TestBackend::start("a", Behavior::Name).await;
    let proxy = TestProxy::start_with("header_timeout = \"1s\"\n", &app("", &[backend.addr])).await;

    // Each attacker sends a header line byte by byte, never finishing the
    // head, for at most 100 bytes (far longer than the timeout allows).
    let mut attackers = tokio::task::JoinSet::new();
    for i in 0..ATTACKERS {
        let addr = proxy.addr;
        attackers.spawn(async move {
            let mut stream = TcpStream::connect(addr).await.ok()?;
            let line = format!("GET /{i} HTTP/1.1\r\nHost: app\r\nX-Slow: ");
            stream.write_all(line.as_bytes()).await.ok()?;
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if stream.write_all(b"a").await.is_err() {
                    return Some(());
                }
            }
            // Still open after 10 s: not shed.
            None
        });
    }
    eventually("the attackers to be connected", || async {
        let scrape = proxy.metrics().await;
        let open = metric_sum(&scrape, "switchyard_client_connections", &[]);
        (open >= ATTACKERS as f64).then_some(())
    })
    .await;

    // Meanwhile, ordinary clients, each on a new connection, are answered.
    for _ in 0..20 {
        assert_eq!(proxy.get_ok(&client(), "/").await, "a");
    }

    let mut shed = 0;
    while let Some(result) = attackers.join_next().await {
        if result.expect("an attacker task panicked").is_some() {
            shed += 1;
        }
    }
    assert_eq!(shed, ATTACKERS, "every slow connection was closed");
    assert_eq!(timeouts(&proxy, "header").await, ATTACKERS as f64);
    assert_eq!(
        backend.received(),
        20,
        "no slow request reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_max_connections_get_503_and_are_closed() {
    let backend = TestBackend::start("a", Behavior::Name).await;
    let proxy = TestProxy::start_with("max_connections = 3\n", &app("", &[backend.addr])).await;
    // The connection that found the port open is closed, and no longer
    // counted, before the test's own.
    eventually("no connection open", || async {
        let scrape = proxy.metrics().await;
        (metric_sum(&scrape, "switchyard_client_connections", &[]) == 0.0).then_some(())
    })
    .await;

    // Three kept-alive connections, each proven accepted by an answer.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream.write_all(GET).await.unwrap();
        let (status, _) = read_response(&mut stream, &mut Vec::new()).await.unwrap();
        assert_eq!(status, 200);
        held.push(stream);
    }

    let mut fourth = TcpStream::connect(proxy.addr).await.unwrap();
    fourth.write_all(GET).await.unwrap();
    let seen = String::from_utf8_lossy(&until_closed(&mut fourth).await).to_string();
    assert!(seen.starts_with("HTTP/1.1 503"), "{seen}");
    assert!(seen.contains("Retry-After: 1"), "{seen}");
    assert!(seen.contains("\r\nServer: switchyard\r\n"), "{seen}");
    let scrape = proxy.metrics().await;
    assert_eq!(
        metric_sum(&scrape, "switchyard_client_connections_refused_total", &[]),
        1.0
    );
    assert_eq!(
        metric_sum(&scrape, "switchyard_client_connections", &[]),
        3.0
    );
    assert_eq!(backend.received(), 3, "the refused request was not sent on");

    // Once one closes, a new client gets in.
    drop(held.pop());
    let http = client();
    eventually("a free connection slot", || async {
        let r = http.get(proxy.url("/")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
}
