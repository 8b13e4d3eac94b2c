//! HTTP/2 from clients, over TLS (ALPN) and with prior knowledge (h2c), to
//! HTTP/1.1 backends: requests spread one by one, bodies both ways, many
//! streams on one connection, the limits, and the stream cap.

use std::collections::HashMap;
use std::net::SocketAddr;

use reqwest::Version;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::backend::large_body;
use crate::support::h2raw::{self, Conn};
use crate::support::proxy::{app, metric_sum};
use crate::support::tls::{self, Ca, Key};
use crate::support::{
    client, closed_port, eventually, h2c_client, temp_dir, Behavior, TestBackend, TestProxy,
    DEADLINE,
};

async fn three_backends() -> Vec<TestBackend> {
    let mut backends = Vec::new();
    for name in ["a", "b", "c"] {
        backends.push(TestBackend::start(name, Behavior::Name).await);
    }
    backends
}

fn addrs(backends: &[TestBackend]) -> Vec<SocketAddr> {
    backends.iter().map(|b| b.addr).collect()
}

/// Sends `n` requests at once on `http` and counts the answers by body.
async fn spread(http: &reqwest::Client, url: &str, n: usize) -> HashMap<String, usize> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (http, url) = (http.clone(), url.to_string());
        set.spawn(async move {
            let r = http.get(url).send().await.unwrap();
            assert_eq!(r.version(), Version::HTTP_2);
            assert_eq!(r.status(), 200);
            r.text().await.unwrap().trim().to_string()
        });
    }
    let mut counts = HashMap::new();
    while let Some(body) = set.join_next().await {
        *counts.entry(body.unwrap()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_alpn_picks_h2_and_each_request_is_balanced() {
    let ca = Ca::new();
    let files = [ca
        .issue(&["api.test"], Key::P256)
        .write(&temp_dir("h2"), "api")];
    let backends = three_backends().await;
    let https = closed_port();
    let proxy = TestProxy::start_with(
        &tls::section(https, &files, ""),
        &app("", &addrs(&backends)),
    )
    .await;
    let http = tls::client(&ca, &[("api.test", https)]).build().unwrap();
    let url = format!("https://api.test:{}/", https.port());
    let first = http.get(&url).send().await.unwrap();
    assert_eq!(first.version(), Version::HTTP_2, "ALPN chose h2");

    // Round-robin per request, though all share one connection.
    let counts = spread(&http, &url, 99).await;
    assert_eq!(counts.len(), 3, "{counts:?}");
    for (backend, n) in &counts {
        assert!((32..=34).contains(n), "{backend}: {n} of 99, {counts:?}");
    }
    // Requests are counted once answered: wait for the last.
    let m = proxy.metrics_after(100.0).await;
    let handshakes = metric_sum(
        &m,
        "switchyard_tls_handshakes_total",
        &[("result", "success")],
    );
    assert_eq!(handshakes, 1.0, "every request on one connection");
    let h2 = metric_sum(
        &m,
        "switchyard_requests_by_protocol_total",
        &[("protocol", "h2")],
    );
    assert_eq!(h2, 100.0);
    let seen = backends[0].headers();
    assert_eq!(seen[0]["x-forwarded-proto"], "https");
    assert_eq!(seen[0]["host"], format!("api.test:{}", https.port()));
    assert!(seen[0].get("x-request-id").is_some());

    // With `h2 = false` ALPN offers only HTTP/1.1.
    let https = closed_port();
    let proxy = TestProxy::start_with(
        &tls::section(https, &files, "h2 = false\n"),
        &app("", &addrs(&backends)),
    )
    .await;
    let http = tls::client(&ca, &[("api.test", https)]).build().unwrap();
    let r = http
        .get(format!("https://api.test:{}/", https.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), Version::HTTP_11);
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_serves_prior_knowledge_next_to_http1() {
    let backends = three_backends().await;
    let proxy = TestProxy::start_with("h2c = true\n", &app("", &addrs(&backends))).await;
    let counts = spread(&h2c_client(), &proxy.url("/"), 30).await;
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        [10, 10, 10],
        "{counts:?}"
    );
    // HTTP/1.1 on the same port, and a request shorter than the HTTP/2
    // preface is answered without waiting for more bytes.
    let r = client().get(proxy.url("/")).send().await.unwrap();
    assert_eq!(r.version(), Version::HTTP_11);
    let mut raw = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, raw.read_to_end(&mut answer))
        .await
        .expect("answered and closed")
        .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let m = proxy.metrics_after(32.0).await;
    let by = |p| {
        metric_sum(
            &m,
            "switchyard_requests_by_protocol_total",
            &[("protocol", p)],
        )
    };
    assert_eq!((by("h2"), by("http1")), (30.0, 2.0));

    // Without h2c the preface is not HTTP/1.1 either: refused.
    let plain = TestProxy::start_app("", &addrs(&backends)).await;
    let refused = h2c_client().get(plain.url("/")).send().await;
    assert!(refused.is_err(), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_limits_and_routes_hold_for_http2() {
    let body = TestBackend::start("body", Behavior::BodyLength).await;
    let large = TestBackend::start("large", Behavior::Large(8 << 20)).await;
    let upstreams = format!(
        "{}[upstreams.large]\nbackends = [\"{}\"]\n\
         [[routes]]\nhosts = [\"large.test\"]\nupstream = \"large\"\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"app\"\n",
        app("", &[body.addr]),
        large.addr
    );
    let server = "h2c = true\nmax_body_bytes = 2000000\nmax_headers = 20\n";
    let proxy = TestProxy::start_with(server, &upstreams).await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(DEADLINE)
        .http2_prior_knowledge()
        .resolve("large.test", proxy.addr)
        .build()
        .unwrap();

    let sent = vec![7u8; 1 << 20];
    let r = http
        .post(proxy.url("/upload"))
        .body(sent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), Version::HTTP_2);
    assert_eq!(r.text().await.unwrap().trim(), "body 1048576");

    // Routed by `:authority`, with no Host header at all.
    let r = http
        .get(format!("http://large.test:{}/", proxy.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = r.bytes().await.unwrap();
    assert!(
        got == large_body(8 << 20),
        "8 MiB arrive whole and in order"
    );

    let r = http
        .post(proxy.url("/upload"))
        .body(vec![0u8; 3_000_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let mut many = http.get(proxy.url("/"));
    for i in 0..30 {
        many = many.header(format!("x-h{i}"), "v");
    }
    assert_eq!(many.send().await.unwrap().status(), 431);
    // The connection outlives the refusals.
    let r = http.post(proxy.url("/")).body("abc").send().await.unwrap();
    assert_eq!(r.text().await.unwrap().trim(), "body 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_share_one_connection() {
    // The backend answers none until it holds all 100: they can only get
    // there side by side.
    let (open, gate) = tokio::sync::watch::channel(false);
    let backend = TestBackend::start("gated", Behavior::Gated(gate)).await;
    let proxy = TestProxy::start_with("h2c = true\n", &app("", &[backend.addr])).await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (h2, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut h2 = h2.ready().await.unwrap();
    let mut streams = Vec::new();
    for i in 0..100 {
        let req = http::Request::get(format!("http://proxy.test/{i}"))
            .body(())
            .unwrap();
        let (resp, _) = h2.send_request(req, true).unwrap();
        streams.push(resp);
        h2 = h2.ready().await.unwrap();
    }
    eventually("all 100 streams at the backend at once", || async {
        (backend.received() == 100).then_some(())
    })
    .await;
    assert_eq!(backend.max_in_flight(), 100);
    open.send(true).unwrap();
    for resp in streams {
        let resp = tokio::time::timeout(DEADLINE, resp).await.unwrap().unwrap();
        assert_eq!(resp.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_over_the_limit_is_refused_and_the_others_are_served() {
    let (open, gate) = tokio::sync::watch::channel(false);
    let backend = TestBackend::start("gated", Behavior::Gated(gate)).await;
    let server = "h2c = true\nh2_max_streams = 2\n";
    let proxy = TestProxy::start_with(server, &app("", &[backend.addr])).await;
    let mut conn = Conn::open(proxy.addr).await.unwrap();
    for stream in [1, 3, 5] {
        conn.send(&h2raw::get(stream, "proxy.test", true))
            .await
            .unwrap();
    }
    let refused = conn
        .read_until(DEADLINE, |f| f.kind == h2raw::RST_STREAM)
        .await
        .unwrap();
    assert_eq!(refused.stream, 5);
    assert_eq!(refused.error_code(), Some(h2raw::REFUSED_STREAM));
    open.send(true).unwrap();
    let mut answered = Vec::new();
    while answered.len() < 2 {
        let f = conn
            .read_until(DEADLINE, |f| f.kind == h2raw::HEADERS)
            .await
            .unwrap();
        answered.push(f.stream);
    }
    answered.sort();
    assert_eq!(answered, [1, 3]);
    assert_eq!(backend.received(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_taking_a_response_is_cut_off_after_send_timeout() {
    let backend = TestBackend::start("large", Behavior::Large(1 << 20)).await;
    let server = "h2c = true\nsend_timeout = \"300ms\"\n";
    let proxy = TestProxy::start_with(server, &app("", &[backend.addr])).await;
    // A window of 0: the proxy may send headers, never a byte of body,
    // while the socket itself is read as fast as it comes.
    let mut conn = Conn::open_with(proxy.addr, &[(h2raw::SETTINGS_INITIAL_WINDOW_SIZE, 0)])
        .await
        .unwrap();
    conn.send(&h2raw::get(1, "proxy.test", true)).await.unwrap();
    let head = conn
        .read_until(DEADLINE, |f| f.kind == h2raw::HEADERS && f.stream == 1)
        .await
        .unwrap();
    assert_eq!(head.payload[0], 0x88, "a 200 from the static table");
    let ended = conn
        .read_until(DEADLINE, |f| {
            f.kind == h2raw::RST_STREAM || f.kind == h2raw::GOAWAY
        })
        .await;
    // Reset, or the connection closed: anything but still waiting.
    if let Err(e) = ended {
        assert_ne!(
            e.kind(),
            std::io::ErrorKind::TimedOut,
            "the stream was never cut off"
        );
    }
    proxy.wait_all_idle().await;
    let m = proxy.metrics().await;
    let send = metric_sum(
        &m,
        "switchyard_client_timeouts_total",
        &[("timeout", "send")],
    );
    assert_eq!(send, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_with_no_stream_closes_after_keepalive_timeout() {
    let backend = TestBackend::start("a", Behavior::Name).await;
    let server = "h2c = true\nkeepalive_timeout = \"300ms\"\n";
    let proxy = TestProxy::start_with(server, &app("", &[backend.addr])).await;
    let mut conn = Conn::open(proxy.addr).await.unwrap();
    conn.send(&h2raw::get(1, "proxy.test", true)).await.unwrap();
    let answered = conn
        .read_until(DEADLINE, |f| {
            f.kind == h2raw::DATA && f.flags & h2raw::END_STREAM != 0
        })
        .await;
    assert!(answered.is_ok(), "{answered:?}");
    // Then nothing: the proxy closes it (a GOAWAY, or the socket).
    let closed = conn.read_until(DEADLINE, |f| f.kind == h2raw::GOAWAY).await;
    if let Err(e) = closed {
        assert_ne!(e.kind(), std::io::ErrorKind::TimedOut, "still open");
    }
}
