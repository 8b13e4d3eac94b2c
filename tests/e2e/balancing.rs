//! Traffic is spread as configured: exact round-robin counts, the smooth
//! weighted interleave, and least-connections around a busy backend.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::watch;

use crate::support::{client, eventually, Behavior, TestBackend, TestProxy};

fn upstream(balance: &str, backends: &[(&TestBackend, u32)]) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|(b, w)| format!("{{ address = \"{}\", weight = {w} }}", b.addr))
        .collect();
    format!(
        "[upstreams.app]\nbalance = \"{balance}\"\nbackends = [{}]\n",
        list.join(", ")
    )
}

async fn start_named(names: &[&str]) -> Vec<TestBackend> {
    let mut out = Vec::new();
    for n in names {
        out.push(TestBackend::start(n, Behavior::Name).await);
    }
    out
}

/// Sends `n` requests one at a time, each once every backend is idle, so
/// least-connections sees nothing in flight; returns the statuses.
async fn one_at_a_time(proxy: &TestProxy, backends: &[&TestBackend], n: usize) -> Vec<u16> {
    let http = client();
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let mut statuses = Vec::new();
    for _ in 0..n {
        proxy.wait_idle(&addrs).await;
        let response = http.get(proxy.url("/")).send().await.unwrap();
        statuses.push(response.status().as_u16());
    }
    statuses
}

fn assert_each_received(backends: &[&TestBackend], n: usize) {
    for b in backends {
        assert_eq!(b.received(), n, "{} got {}", b.name, b.received());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_equal_weights_gives_exactly_equal_counts() {
    let b = start_named(&["a", "b", "c"]).await;
    let proxy = TestProxy::start(&upstream(
        "round_robin",
        &[(&b[0], 1), (&b[1], 1), (&b[2], 1)],
    ))
    .await;
    let http = client();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..300 {
        *counts.entry(proxy.get_ok(&http, "/").await).or_default() += 1;
    }
    assert_eq!(counts.get("a"), Some(&100), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&100), "{counts:?}");
    assert_eq!(counts.get("c"), Some(&100), "{counts:?}");
    for backend in &b {
        assert_eq!(backend.received(), 100);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_weights_interleave_smoothly() {
    let b = start_named(&["a", "b", "c"]).await;
    let proxy = TestProxy::start(&upstream(
        "round_robin",
        &[(&b[0], 5), (&b[1], 1), (&b[2], 1)],
    ))
    .await;
    let http = client();
    let mut order = String::new();
    for _ in 0..14 {
        order.push_str(&proxy.get_ok(&http, "/").await);
    }
    assert_eq!(order, "aabacaaaabacaa");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_spreads_evenly_without_load() {
    let b = start_named(&["a", "b", "c"]).await;
    let proxy = TestProxy::start(&upstream(
        "least_connections",
        &[(&b[0], 1), (&b[1], 1), (&b[2], 1)],
    ))
    .await;
    let all: Vec<&TestBackend> = b.iter().collect();
    let statuses = one_at_a_time(&proxy, &all, 60).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert_each_received(&all, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_avoids_a_backend_holding_requests() {
    let (open, gate) = watch::channel(false);
    let slow = TestBackend::start("slow", Behavior::Gated(gate)).await;
    let fast = start_named(&["b", "c"]).await;
    let proxy = TestProxy::start(&upstream(
        "least_connections",
        &[(&slow, 1), (&fast[0], 1), (&fast[1], 1)],
    ))
    .await;
    let http = client();

    // Three requests at once: one lands on each backend; the slow one holds its.
    let mut first = Vec::new();
    for _ in 0..3 {
        let (http, url) = (http.clone(), proxy.url("/"));
        first.push(tokio::spawn(async move { http.get(url).send().await }));
    }
    eventually("the slow backend to hold a request", || async {
        (slow.received() == 1).then_some(())
    })
    .await;
    eventually(
        "the /status in-flight count of the slow backend",
        || async { (proxy.in_flight(slow.addr).await == 1).then_some(()) },
    )
    .await;

    // While it holds one, new requests go to the idle backends only. A
    // lease ends just after its response is sent, so before each request
    // wait for the fast ones to be idle again: otherwise a slow machine can
    // show a three-way tie of one in flight each.
    for _ in 0..20 {
        proxy.wait_idle(&[fast[0].addr, fast[1].addr]).await;
        assert_ne!(proxy.get_ok(&http, "/").await, "slow");
    }
    assert_eq!(slow.received(), 1);
    let (b, c) = (fast[0].received(), fast[1].received());
    assert_eq!(b + c, 22);
    assert!(
        b.abs_diff(c) <= 2,
        "idle backends should share evenly: b={b} c={c}"
    );

    open.send(true).unwrap();
    for r in first {
        assert_eq!(r.await.unwrap().unwrap().status(), 200);
    }
    eventually("the lease to be released", || async {
        (proxy.in_flight(slow.addr).await == 0).then_some(())
    })
    .await;
}

/// A backend that answers, only 40 ms late, still gets its turn from
/// round-robin. Least-connections holds it back once it has seen enough of
/// its answers, even with nothing in flight anywhere, and sends it one probe
/// request a second to see whether it has recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_holds_back_a_slow_backend() {
    let slow = TestBackend::start("slow", Behavior::Delay(Duration::from_millis(40))).await;
    let fast = start_named(&["b", "c"]).await;
    let backends = [(&slow, 1), (&fast[0], 1), (&fast[1], 1)];
    let http = client();
    let mut sent_to_slow = HashMap::new();
    for balance in ["round_robin", "least_connections"] {
        let before = slow.received();
        let proxy = TestProxy::start(&upstream(balance, &backends)).await;
        for _ in 0..90 {
            proxy.get_ok(&http, "/").await;
        }
        sent_to_slow.insert(balance, slow.received() - before);
        let status = proxy.backend(slow.addr).await;
        assert!(status["base_latency_ms"]
            .as_f64()
            .is_some_and(|ms| ms > 0.0));
        if balance == "round_robin" {
            assert!(status["held_back"].is_null(), "{status}");
            continue;
        }
        assert_eq!(status["held_back"], true, "{status}");
        let reason = status["reason"].as_str().unwrap();
        assert!(
            reason.contains("held back by least_connections"),
            "{reason}"
        );
        // A second later, the next request is its probe, and only that one.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let before = slow.received();
        let mut answers = Vec::new();
        for _ in 0..10 {
            answers.push(proxy.get_ok(&http, "/").await);
        }
        assert_eq!(answers[0], "slow", "{answers:?}");
        assert_eq!(slow.received() - before, 1, "{answers:?}");
    }
    assert_eq!(sent_to_slow["round_robin"], 30);
    // Eight answers to judge it by, maybe a probe, then nothing.
    let least = sent_to_slow["least_connections"];
    assert!(
        least <= 12,
        "least_connections sent {least} of 90 to the slow backend"
    );
}

/// A backend that fails fast (503 at once) is not the fastest: were its
/// answers timed, the working backends, at 40 ms, would be held back and it
/// would get nearly everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_failing_fast_does_not_hold_back_the_working_ones() {
    let failing = TestBackend::start("failing", Behavior::Status(503)).await;
    let wait = Duration::from_millis(40);
    let b = TestBackend::start("b", Behavior::Delay(wait)).await;
    let c = TestBackend::start("c", Behavior::Delay(wait)).await;
    let proxy = TestProxy::start(&upstream(
        "least_connections",
        &[(&failing, 1), (&b, 1), (&c, 1)],
    ))
    .await;
    one_at_a_time(&proxy, &[&failing, &b, &c], 60).await;
    assert_each_received(&[&failing, &b, &c], 20);
    assert_eq!(proxy.backend(b.addr).await["held_back"], false);
}
