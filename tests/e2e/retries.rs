//! Which failed attempts are sent again: a request that already went to a
//! backend only when it is idempotent (by method or `Idempotency-Key`), its
//! body fits the replay buffer and no response byte reached the client;
//! and every retry only while the upstream's retry budget lasts.

use std::net::SocketAddr;

use crate::support::proxy::{app, metric_sum};
use crate::support::raw::{RawBackend, Then};
use crate::support::{client, eventually, Behavior, TestBackend, TestProxy};

/// Pingora holds this much of a request body for a replay.
const REPLAY_BUFFER: usize = 64 * 1024;

/// A proxy over `first` and `second`, with `retries = 1`. Round-robin sends
/// the first attempt to `first`; a retry then goes to `second`.
async fn proxy(first: SocketAddr, second: SocketAddr, tables: &str) -> TestProxy {
    TestProxy::start(&format!(
        "{}{tables}",
        app("retries = 1\n", &[first, second])
    ))
    .await
}

/// The scrape once `resets` broken connections of `backend` are counted
/// (the failure behind a 502 is counted after the 502 is sent).
async fn after_resets(
    proxy: &TestProxy,
    backend: SocketAddr,
    resets: f64,
) -> prometheus_parse::Scrape {
    let backend = backend.to_string();
    eventually("the resets to be counted", || async {
        let m = proxy.metrics().await;
        let labels = [("backend", backend.as_str()), ("kind", "reset")];
        (metric_sum(&m, "switchyard_upstream_failures_total", &labels) == resets).then_some(m)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_sent_again_only_with_an_idempotency_key() {
    // `closer` reads each whole request and hangs up without a word.
    let closer = RawBackend::start(b"", Then::Close).await;
    let good = TestBackend::start("good", Behavior::BodyLength).await;
    let proxy = proxy(closer.addr, good.addr, "").await;
    let http = client();
    let keyed = http
        .post(proxy.url("/orders"))
        .header("Idempotency-Key", "order-7f3a")
        .body("order-1")
        .send()
        .await
        .unwrap();
    assert_eq!(keyed.status(), 200);
    assert_eq!(
        keyed.text().await.unwrap().trim(),
        "good 7",
        "the whole body again"
    );
    // Rotation is back at `closer`. Without a key, a POST is not repeated.
    let plain = http
        .post(proxy.url("/orders"))
        .body("order-2")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 502);
    let m = after_resets(&proxy, closer.addr, 2.0).await;
    assert_eq!(closer.received(), 2);
    assert_eq!(good.received(), 1, "only the keyed POST reached `good`");
    assert_eq!(metric_sum(&m, "switchyard_retries_total", &[]), 1.0);
    assert_eq!(
        metric_sum(&m, "switchyard_local_responses_total", &[("code", "502")]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_body_that_fits_the_replay_buffer_is_sent_again() {
    let closer = RawBackend::start(b"", Then::Close).await;
    let good = TestBackend::start("good", Behavior::BodyLength).await;
    let proxy = proxy(closer.addr, good.addr, "").await;
    let http = client();
    let put = |size: usize| http.put(proxy.url("/blob")).body(vec![b'x'; size]).send();
    // The backend read all of it before hanging up, so the proxy had read
    // all of it from the client: held whole, it is sent again.
    let small = put(REPLAY_BUFFER).await.unwrap();
    assert_eq!(small.status(), 200);
    assert_eq!(
        small.text().await.unwrap().trim(),
        format!("good {REPLAY_BUFFER}")
    );
    // One byte more and the buffer no longer holds it: 502.
    let large = put(REPLAY_BUFFER + 1).await.unwrap();
    assert_eq!(large.status(), 502);
    let m = after_resets(&proxy, closer.addr, 2.0).await;
    assert_eq!(closer.received(), 2);
    assert_eq!(good.received(), 1);
    assert_eq!(metric_sum(&m, "switchyard_retries_total", &[]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_sent_again_once_a_response_byte_reached_the_client() {
    let good = TestBackend::start("good", Behavior::Name).await;
    let cases: [(&[u8], u16); 2] = [
        // A final response cut short: the client has its header.
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part",
            200,
        ),
        // An interim response, then a hang-up: the client has the 103.
        (
            b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\n",
            502,
        ),
    ];
    for (reply, status) in cases {
        let failing = RawBackend::start(reply, Then::Close).await;
        let proxy = proxy(failing.addr, good.addr, "").await;
        let r = client().get(proxy.url("/")).send().await.unwrap();
        assert_eq!(r.status(), status);
        if status == 200 {
            assert!(r.bytes().await.is_err(), "the body ends early");
        }
        let m = after_resets(&proxy, failing.addr, 1.0).await;
        assert_eq!(metric_sum(&m, "switchyard_retries_total", &[]), 0.0);
        assert_eq!(good.received(), 0, "not sent again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_budget_leaves_a_broken_connection_unretried() {
    let closer = RawBackend::start(b"", Then::Close).await;
    let good = TestBackend::start("good", Behavior::Name).await;
    let none = "[upstreams.app.retry_budget]\nratio = 0\nmin_retries_per_second = 0\n";
    let proxy = proxy(closer.addr, good.addr, none).await;
    let (status, _) = proxy.get(&client(), "/").await;
    assert_eq!(status, 502, "the answer without a retry");
    let m = after_resets(&proxy, closer.addr, 1.0).await;
    assert_eq!(good.received(), 0);
    assert_eq!(metric_sum(&m, "switchyard_retries_total", &[]), 0.0);
    let exhausted = [("upstream", "app")];
    assert_eq!(
        metric_sum(&m, "switchyard_retry_budget_exhausted_total", &exhausted),
        1.0
    );
}

/// Clients sending at once in the burst, and requests each sends.
const CLIENTS: usize = 4;
const EACH: usize = 15;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_bounds_the_retries_of_a_burst() {
    // `closer` takes each request and hangs up without a word: a broken
    // connection, retried since GET is safe to repeat. (A refusing backend
    // would not do: balancers pass it over after its first refusal.)
    let closer = RawBackend::start(b"", Then::Close).await;
    let good = TestBackend::start("good", Behavior::Name).await;
    // No ejection, so `closer` keeps taking first attempts; a budget of 1
    // retry per second: 10 over the 10 s window.
    let tables = "[upstreams.app.passive_health_check]\nconsecutive_failures = 0\n\
                  [upstreams.app.retry_budget]\nratio = 0\nmin_retries_per_second = 1\n";
    let proxy = proxy(closer.addr, good.addr, tables).await;
    let started = std::time::Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let (http, url) = (client(), proxy.url("/"));
        clients.spawn(async move {
            let mut statuses = Vec::with_capacity(EACH);
            for _ in 0..EACH {
                let r = http.get(&url).send().await.expect("the proxy answers");
                statuses.push(r.status().as_u16());
            }
            statuses
        });
    }
    let mut statuses = Vec::new();
    while let Some(done) = clients.join_next().await {
        statuses.extend(done.expect("a client task panicked"));
    }
    let elapsed = started.elapsed();
    let total = (CLIENTS * EACH) as f64;
    let m = proxy.metrics_after(total).await;
    let closer = closer.addr.to_string();
    let failed_first = metric_sum(
        &m,
        "switchyard_upstream_failures_total",
        &[("backend", &closer), ("kind", "reset")],
    );
    let retries = metric_sum(&m, "switchyard_retries_total", &[]);
    let exhausted = metric_sum(&m, "switchyard_retry_budget_exhausted_total", &[]);
    let refused = statuses.iter().filter(|&&s| s == 502).count() as f64;
    let ok = statuses.iter().filter(|&&s| s == 200).count() as f64;
    // Round-robin sends about half the first attempts to `closer`: far
    // more than the budget.
    assert!(failed_first > 10.0 + CLIENTS as f64, "{failed_first}");
    // Each of those was either retried on `good` or refused by the budget.
    assert_eq!(retries + exhausted, failed_first);
    assert_eq!(refused, exhausted);
    assert_eq!(ok + refused, total);
    assert_eq!(
        metric_sum(&m, "switchyard_local_responses_total", &[("code", "502")]),
        refused
    );
    // A retry is refused only once 10 were taken within the window.
    assert!(retries >= 10.0, "{retries}");
    if elapsed.as_secs() < 9 {
        // All in one window: at most 10, plus what racing requests at a
        // second's turn could take before seeing each other's count.
        assert!(retries <= 10.0 + (CLIENTS - 1) as f64, "{retries}");
    } else {
        // A slow run spans windows; each allows 10 more.
        let windows = elapsed.as_secs() / 10 + 2;
        assert!(
            retries <= (10 * windows + CLIENTS as u64) as f64,
            "{retries}"
        );
    }
}
