//! What reaches the backend: `X-Forwarded-*`, `X-Request-Id` and the
//! client's own `Host`.

use crate::support::{client, Behavior, TestBackend, TestProxy};

async fn one_backend() -> (TestBackend, TestProxy) {
    let b = TestBackend::start("a", Behavior::Name).await;
    let proxy = TestProxy::start_app("", &[b.addr]).await;
    (b, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_and_a_generated_request_id_reach_the_backend() {
    let (backend, proxy) = one_backend().await;
    let r = client()
        .get(proxy.url("/path?q=1"))
        .header("host", "shop.example")
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let returned = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let seen = backend.headers().pop().unwrap();
    let get = |k: &str| seen.get(k).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        get("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(get("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(get("x-forwarded-host").as_deref(), Some("shop.example"));
    assert_eq!(get("host").as_deref(), Some("shop.example"));
    assert_eq!(get("x-request-id"), Some(returned.clone()));
    assert_eq!(returned.len(), 36, "a generated id is a UUID: {returned}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_client_request_id_is_kept_and_an_invalid_one_replaced() {
    let (backend, proxy) = one_backend().await;
    let http = client();
    let with_id = |id: &'static str| http.get(proxy.url("/")).header("x-request-id", id).send();
    let r = with_id("trace-42").await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-42");
    assert_eq!(backend.headers()[0]["x-request-id"], "trace-42");

    let r = with_id("bad id; with spaces").await.unwrap();
    let replaced = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_ne!(replaced, "bad id; with spaces");
    assert_eq!(backend.headers()[1]["x-request-id"], replaced.as_str());
    assert!(backend.headers()[0].get("x-forwarded-for").is_some());
}
