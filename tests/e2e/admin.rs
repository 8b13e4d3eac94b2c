//! The admin port: metrics that parse and match the traffic, `/status`
//! JSON, health and readiness, and 404/405 for the rest.

use crate::support::proxy::metric_sum;
use crate::support::{client, Behavior, TestBackend, TestProxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_count_the_requests_sent() {
    let a = TestBackend::start("a", Behavior::Name).await;
    let b = TestBackend::start("b", Behavior::Status(404)).await;
    let proxy = TestProxy::start(&format!(
        "[upstreams.web]\nbackends = [\"{}\", {{ address = \"{}\", weight = 3 }}]\n",
        a.addr, b.addr
    ))
    .await;
    let http = client();
    for _ in 0..40 {
        proxy.get(&http, "/").await;
    }
    let m = proxy.metrics_after(40.0).await;
    let (sa, sb) = (a.addr.to_string(), b.addr.to_string());
    let requests = "switchyard_requests_total";
    assert_eq!(
        metric_sum(
            &m,
            requests,
            &[("upstream", "web"), ("backend", &sa), ("code", "200")]
        ),
        10.0
    );
    assert_eq!(
        metric_sum(
            &m,
            requests,
            &[("upstream", "web"), ("backend", &sb), ("code", "404")]
        ),
        30.0
    );
    assert_eq!(
        metric_sum(&m, "switchyard_request_duration_seconds_count", &[]),
        40.0
    );
    assert_eq!(
        metric_sum(&m, "switchyard_backend_weight", &[("backend", &sb)]),
        3.0
    );
    assert_eq!(metric_sum(&m, "switchyard_backend_healthy", &[]), 2.0);
    assert_eq!(metric_sum(&m, "switchyard_backend_in_flight", &[]), 0.0);
    assert_eq!(metric_sum(&m, "switchyard_build_info", &[]), 1.0);
    let names: std::collections::HashSet<&str> = m.docs.keys().map(String::as_str).collect();
    for name in [
        requests,
        "switchyard_request_duration_seconds",
        "switchyard_upstream_failures_total",
        "switchyard_retries_total",
        "switchyard_local_responses_total",
        "switchyard_backend_in_flight",
        "switchyard_backend_healthy",
        "switchyard_backend_weight",
        "switchyard_build_info",
    ] {
        assert!(names.contains(name), "{name} has no HELP line: {names:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_json_describing_every_backend() {
    let a = TestBackend::start("a", Behavior::Name).await;
    let proxy = TestProxy::start(&format!(
        "[upstreams.app]\nbalance = \"least_connections\"\nbackends = [{{ address = \"{}\", weight = 4 }}]\n",
        a.addr
    ))
    .await;
    proxy.get(&client(), "/").await;
    proxy.metrics_after(1.0).await;
    let s = proxy.status().await;
    assert_eq!(s["config"]["default_upstream"], "app");
    assert_eq!(s["config"]["sha256"].as_str().map(str::len), Some(64));
    let up = &s["upstreams"][0];
    assert_eq!(up["name"], "app");
    assert_eq!(up["balance"], "least_connections");
    assert_eq!(up["ready"], true);
    let b = &up["backends"][0];
    assert_eq!(b["address"], a.addr.to_string());
    assert_eq!(b["weight"], 4);
    assert_eq!(b["healthy"], true);
    assert_eq!(b["in_flight"], 0);
    assert_eq!(b["responses_total"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_unknown_paths() {
    let a = TestBackend::start("a", Behavior::Name).await;
    let proxy = TestProxy::start_app("", &[a.addr]).await;
    let http = client();
    let status = |path: &'static str| {
        let (http, url) = (http.clone(), proxy.admin_url(path));
        async move { http.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("/healthz").await, 200);
    assert_eq!(status("/readyz").await, 200);
    assert_eq!(status("/nope").await, 404);
    let post = http.post(proxy.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET");
    // The admin port is not the data port: proxying does not happen there.
    assert_eq!(status("/").await, 404);
    assert_eq!(a.received(), 0);
}
