//! Failed backends: connect failures are retried on another backend, an
//! upstream with nothing left answers 502, a silent backend 504, and the
//! in-flight count always returns to zero.

use crate::support::proxy::metric_sum;
use crate::support::{client, closed_port, eventually, Behavior, TestBackend, TestProxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_retried_on_another_backend() {
    let dead = closed_port();
    let a = TestBackend::start("a", Behavior::Name).await;
    let b = TestBackend::start("b", Behavior::Name).await;
    let proxy = TestProxy::start(&format!(
        "[upstreams.app]\nretries = 1\nbackends = [\"{dead}\", \"{}\", \"{}\"]\n",
        a.addr, b.addr
    ))
    .await;
    let http = client();
    for _ in 0..30 {
        let (status, body) = proxy.get(&http, "/").await;
        assert_eq!(status, 200, "body: {body}");
        assert!(body == "a" || body == "b", "{body}");
    }
    let m = proxy.metrics().await;
    let dead = dead.to_string();
    let connect_failures = metric_sum(
        &m,
        "switchyard_upstream_failures_total",
        &[("backend", &dead), ("kind", "connect")],
    );
    // Round-robin keeps sending a share of first attempts to the dead
    // backend (there are no health checks yet); each failure costs one retry.
    assert!(connect_failures >= 10.0, "{connect_failures}");
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
    let proxy = TestProxy::start(&format!(
        "[upstreams.app]\nretries = 3\nbackends = [\"{x}\", \"{y}\"]\n"
    ))
    .await;
    let http = client();
    let r = http.get(proxy.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.headers().contains_key("x-request-id"));
    let m = proxy.metrics().await;
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
    let proxy = TestProxy::start(&format!(
        "[upstreams.app]\nretries = 0\nbackends = [\"{dead}\", \"{}\"]\n",
        a.addr
    ))
    .await;
    let http = client();
    // The first request goes to the dead backend and may not move on.
    assert_eq!(proxy.get(&http, "/").await.0, 502);
    assert_eq!(proxy.get(&http, "/").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_answers_gives_504_after_read_timeout() {
    let silent = TestBackend::start("silent", Behavior::Hang).await;
    let proxy = TestProxy::start(&format!(
        "[upstreams.app]\nread_timeout = \"300ms\"\nbackends = [\"{}\"]\n",
        silent.addr
    ))
    .await;
    let http = client();
    let r = http.get(proxy.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    assert_eq!(silent.received(), 1, "a read timeout is not retried");
    eventually("in-flight to return to 0", || async {
        (proxy.in_flight(silent.addr).await == 0).then_some(())
    })
    .await;
    let m = proxy.metrics().await;
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
    let proxy = TestProxy::start(&format!(
        "[upstreams.app]\nbackends = [\"{}\"]\n",
        silent.addr
    ))
    .await;
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
    let proxy = TestProxy::start(&format!(
        "[upstreams.app]\nbackends = [\"{}\"]\n",
        failing.addr
    ))
    .await;
    let http = client();
    for _ in 0..3 {
        assert_eq!(proxy.get(&http, "/").await, (500, "failing".to_string()));
    }
    let m = proxy.metrics().await;
    assert_eq!(
        metric_sum(&m, "switchyard_requests_total", &[("code", "500")]),
        3.0
    );
    assert_eq!(metric_sum(&m, "switchyard_local_responses_total", &[]), 0.0);
}
