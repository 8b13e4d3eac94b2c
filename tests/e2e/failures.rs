//! Failed backends: connect failures are retried on another backend, an
//! upstream with nothing left answers 502, a silent backend 504, and the
//! in-flight count always returns to zero.

use switchyard::pool::health::PASS_OVER_AFTER_CONNECT_FAILURE;

use crate::support::proxy::metric_sum;
use crate::support::raw::{RawBackend, Then};
use crate::support::{client, closed_port, eventually, Behavior, TestBackend, TestProxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_retried_on_another_backend() {
    let dead = closed_port();
    let a = TestBackend::start("a", Behavior::Name).await;
    let b = TestBackend::start("b", Behavior::Name).await;
    let proxy = TestProxy::start_app("retries = 1\n", &[dead, a.addr, b.addr]).await;
    let http = client();
    let started = std::time::Instant::now();
    for _ in 0..30 {
        let body = proxy.get_ok(&http, "/").await;
        assert!(body == "a" || body == "b", "{body}");
    }
    let elapsed = started.elapsed();
    let m = proxy.metrics_after(30.0).await;
    let dead = dead.to_string();
    let connect_failures = metric_sum(
        &m,
        "switchyard_upstream_failures_total",
        &[("backend", &dead), ("kind", "connect")],
    );
    // Round-robin sends the first attempt to the dead backend, costing one
    // retry; its refusal makes balancers pass it over for about a second,
    // then it gets one more try, and so on. Five refusals in a row (the
    // default) would eject it; a run too short for that ejects nothing.
    let passes = elapsed.as_nanos() / u128::from(PASS_OVER_AFTER_CONNECT_FAILURE) + 1;
    assert!(connect_failures >= 1.0, "{connect_failures}");
    assert!(
        connect_failures <= passes as f64,
        "{connect_failures} in {elapsed:?}"
    );
    let ejections = metric_sum(
        &m,
        "switchyard_backend_ejections_total",
        &[("backend", &dead)],
    );
    assert_eq!(ejections, f64::from(connect_failures >= 5.0));
    let retries = metric_sum(&m, "switchyard_retries_total", &[("upstream", "app")]);
    assert_eq!(retries, connect_failures);
    assert_eq!(
        metric_sum(&m, "switchyard_requests_total", &[("code", "200")]),
        30.0
    );
    assert_eq!(metric_sum(&m, "switchyard_local_responses_total", &[]), 0.0);
    let status = proxy.status().await;
    let dead_status = crate::support::proxy::backends(&status)
        .into_iter()
        .find(|b| b["address"] == dead.as_str())
        .unwrap();
    assert_eq!(
        dead_status["failures_total"].as_f64(),
        Some(connect_failures)
    );
    assert_eq!(dead_status["in_flight"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_refusing_gives_502() {
    let (x, y) = (closed_port(), closed_port());
    let proxy = TestProxy::start_app("retries = 3\n", &[x, y]).await;
    let http = client();
    let r = http.get(proxy.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.headers().contains_key("x-request-id"));
    let m = proxy.metrics_after(1.0).await;
    // Both backends tried once each: retries stop when no untried backend is left.
    assert_eq!(
        metric_sum(
            &m,
            "switchyard_upstream_failures_total",
            &[("kind", "connect")]
        ),
        2.0
    );
    assert_eq!(
        metric_sum(&m, "switchyard_local_responses_total", &[("code", "502")]),
        1.0
    );
    assert_eq!(metric_sum(&m, "switchyard_requests_total", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_zero_means_one_attempt() {
    let dead = closed_port();
    let a = TestBackend::start("a", Behavior::Name).await;
    let proxy = TestProxy::start_app("retries = 0\n", &[dead, a.addr]).await;
    let http = client();
    // The first request goes to the dead backend and may not move on.
    assert_eq!(proxy.get(&http, "/").await.0, 502);
    assert_eq!(proxy.get(&http, "/").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_answers_gives_504_after_read_timeout() {
    let silent = TestBackend::start("silent", Behavior::Hang).await;
    let proxy = TestProxy::start_app("read_timeout = \"300ms\"\n", &[silent.addr]).await;
    let http = client();
    let r = http.get(proxy.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    assert_eq!(silent.received(), 1, "a read timeout is not retried");
    eventually("in-flight to return to 0", || async {
        (proxy.in_flight(silent.addr).await == 0).then_some(())
    })
    .await;
    let m = proxy.metrics_after(1.0).await;
    assert_eq!(
        metric_sum(
            &m,
            "switchyard_upstream_failures_total",
            &[("kind", "timeout")]
        ),
        1.0
    );
    assert_eq!(
        metric_sum(&m, "switchyard_local_responses_total", &[("code", "504")]),
        1.0
    );
    assert_eq!(metric_sum(&m, "switchyard_backend_in_flight", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_gives_up_releases_the_lease() {
    let silent = TestBackend::start("silent", Behavior::Hang).await;
    let proxy = TestProxy::start_app("", &[silent.addr]).await;
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_millis(300))
        .build()
        .unwrap();
    assert!(impatient.get(proxy.url("/")).send().await.is_err());
    assert_eq!(silent.received(), 1);
    eventually("in-flight to return to 0 after the client left", || async {
        (proxy.in_flight(silent.addr).await == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_errors_pass_through_and_are_counted_by_code() {
    let failing = TestBackend::start("failing", Behavior::Status(500)).await;
    let proxy = TestProxy::start_app("", &[failing.addr]).await;
    let http = client();
    for _ in 0..3 {
        assert_eq!(proxy.get(&http, "/").await, (500, "failing".to_string()));
    }
    let m = proxy.metrics_after(3.0).await;
    assert_eq!(
        metric_sum(&m, "switchyard_requests_total", &[("code", "500")]),
        3.0
    );
    assert_eq!(metric_sum(&m, "switchyard_local_responses_total", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_hint_then_silence_still_gives_504() {
    let hinting = RawBackend::start(
        b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\n",
        Then::Hang,
    )
    .await;
    let proxy = TestProxy::start_app("read_timeout = \"300ms\"\n", &[hinting.addr]).await;
    let r = client().get(proxy.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    let m = proxy.metrics_after(1.0).await;
    assert_eq!(
        metric_sum(&m, "switchyard_local_responses_total", &[("code", "504")]),
        1.0
    );
    assert_eq!(metric_sum(&m, "switchyard_requests_total", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_short_is_a_failure_not_a_response() {
    let cut = RawBackend::start(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part",
        Then::Close,
    )
    .await;
    let proxy = TestProxy::start_app("", &[cut.addr]).await;
    let r = client().get(proxy.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the header had already gone out");
    assert!(
        r.bytes().await.is_err(),
        "the client must see the body end early"
    );
    let m = eventually("the cut to be counted", || async {
        let m = proxy.metrics().await;
        let resets = metric_sum(
            &m,
            "switchyard_upstream_failures_total",
            &[("kind", "reset")],
        );
        (resets == 1.0).then_some(m)
    })
    .await;
    assert_eq!(metric_sum(&m, "switchyard_requests_total", &[]), 0.0);
    assert_eq!(metric_sum(&m, "switchyard_local_responses_total", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_before_any_answer_is_retried_only_when_idempotent() {
    let closer = RawBackend::start(b"", Then::Close).await;
    let good = TestBackend::start("good", Behavior::Name).await;
    let proxy = TestProxy::start_app("retries = 1\n", &[closer.addr, good.addr]).await;
    let http = client();
    // Rotation sends the first attempt to `closer`, which reads the request
    // and hangs up: a GET may be sent again, so `good` answers it.
    assert_eq!(proxy.get_ok(&http, "/").await, "good");
    // The next turn is `closer`'s again. A POST may have had effects: 502.
    let r = http.post(proxy.url("/")).body("x").send().await.unwrap();
    assert_eq!(r.status(), 502);
    // The 502 is counted before the failure behind it: wait for both.
    let closer = closer.addr.to_string();
    let m = eventually("both resets to be counted", || async {
        let m = proxy.metrics_after(2.0).await;
        let labels = [("backend", closer.as_str()), ("kind", "reset")];
        let resets = metric_sum(&m, "switchyard_upstream_failures_total", &labels);
        (resets == 2.0).then_some(m)
    })
    .await;
    assert_eq!(metric_sum(&m, "switchyard_retries_total", &[]), 1.0);
    assert_eq!(good.received(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_abandoning_its_upload_is_not_the_backends_fault() {
    use tokio::io::AsyncWriteExt;
    let (_gate, gate_rx) = tokio::sync::watch::channel(false);
    let waiting = TestBackend::start("waiting", Behavior::Gated(gate_rx)).await;
    let other = TestBackend::start("other", Behavior::Name).await;
    let proxy = TestProxy::start_app("", &[waiting.addr, other.addr]).await;
    // A PUT (idempotent, so retryable) that promises 1000 bytes, sends 10
    // and hangs up once the backend has the request.
    let mut client = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let head = "PUT /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 1000\r\n\r\n0123456789";
    client.write_all(head.as_bytes()).await.unwrap();
    eventually("the request to reach the backend", || async {
        (waiting.received() == 1).then_some(())
    })
    .await;
    drop(client);
    eventually("the request to end", || async {
        (proxy.in_flight(waiting.addr).await == 0).then_some(())
    })
    .await;
    let m = proxy.metrics().await;
    assert_eq!(
        metric_sum(&m, "switchyard_upstream_failures_total", &[]),
        0.0
    );
    assert_eq!(metric_sum(&m, "switchyard_retries_total", &[]), 0.0);
    assert_eq!(other.received(), 0, "not retried elsewhere");
    let s = proxy.backend(waiting.addr).await;
    assert_eq!(s["consecutive_request_failures"], 0, "{s:#}");
}
