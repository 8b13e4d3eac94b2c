//! Health: active HTTP and TCP checks take backends out and bring them back
//! at exactly their thresholds, a hanging check delays no other, a killed
//! backend costs no request, passive ejection grows, panic mode and
//! readiness, and slow start.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::support::backend::HANG;
use crate::support::proxy::{app, metric_sum};
use crate::support::{client, closed_port, eventually, Behavior, TestBackend, TestProxy, DEADLINE};

/// A `[upstreams.app.health_check]` table checking `/healthz` every 20ms,
/// with `extra` lines after the defaults (later keys may not repeat them).
fn checks(extra: &str) -> String {
    format!("[upstreams.app.health_check]\npath = \"/healthz\"\ninterval = \"20ms\"\n{extra}")
}

async fn start(backends: &[SocketAddr], settings: &str, tables: &str) -> TestProxy {
    TestProxy::start(&format!("{}{tables}", app(settings, backends))).await
}

/// Requests `n` times, one at a time, each once no earlier request is
/// still counted in flight (so least-connections sees no stale load);
/// returns how many answers came from each name.
async fn spread(proxy: &TestProxy, n: usize) -> std::collections::BTreeMap<String, usize> {
    let http = client();
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..n {
        proxy.wait_all_idle().await;
        *seen.entry(proxy.get_ok(&http, "/").await).or_insert(0) += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_take_a_backend_out_and_back_at_exactly_the_thresholds() {
    let a = TestBackend::start("a", Behavior::Name).await;
    let b = TestBackend::start("b", Behavior::Name).await;
    let tables = checks("timeout = \"500ms\"\nhealthy_threshold = 2\nunhealthy_threshold = 3\n");
    let proxy = start(&[a.addr, b.addr], "", &tables).await;
    eventually("a few checks of b", || async {
        (b.checks() >= 3).then_some(())
    })
    .await;

    // Two failures in a row are one short of the threshold: b stays in.
    let before = b.checks();
    b.fail_checks(2);
    eventually("two failed checks of b and two passes after", || async {
        (b.checks() >= before + 4).then_some(())
    })
    .await;
    let s = proxy.backend(b.addr).await;
    assert_eq!(s["state"], "healthy", "{s:#}");
    assert_eq!(s["checks"]["last_change"], serde_json::Value::Null, "{s:#}");
    let m = proxy.metrics().await;
    let failed = [
        ("backend", b.addr.to_string()),
        ("result", "failure".into()),
    ];
    let failed: Vec<(&str, &str)> = failed.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        metric_sum(&m, "switchyard_health_checks_total", &failed),
        2.0
    );

    // The third failure in a row takes it out, with the reason.
    b.set_health(500);
    let s = proxy.wait_state(b.addr, "unhealthy").await;
    let reason = s["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("3 checks failed in a row, last: status 500"),
        "{reason}"
    );
    assert_eq!(s["healthy"], false);
    assert_eq!(s["checks"]["last_result"], "failure");
    let m = proxy.metrics().await;
    let b_label = b.addr.to_string();
    let healthy = metric_sum(&m, "switchyard_backend_healthy", &[("backend", &b_label)]);
    assert_eq!(healthy, 0.0);

    // No request goes to it while it is out.
    let sent_to_b = b.received();
    let seen = spread(&proxy, 20).await;
    assert_eq!(seen.get("a"), Some(&20), "{seen:?}");
    assert_eq!(b.received(), sent_to_b);

    // Two passes bring it back, and traffic with it.
    b.set_health(200);
    let s = proxy.wait_state(b.addr, "healthy").await;
    assert_eq!(s["reason"], "2 checks passed in a row", "{s:#}");
    let seen = spread(&proxy, 10).await;
    assert_eq!(seen.get("b"), Some(&5), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_check_times_out_and_the_others_keep_their_schedule() {
    let a = TestBackend::start("a", Behavior::Name).await;
    let b = TestBackend::start("b", Behavior::Name).await;
    let c = TestBackend::start("c", Behavior::Name).await;
    b.set_health(HANG);
    let tables = checks("timeout = \"300ms\"\nunhealthy_threshold = 3\n");
    let (a0, c0) = (a.checks(), c.checks());
    let proxy = start(&[a.addr, b.addr, c.addr], "", &tables).await;

    let s = proxy.wait_state(b.addr, "unhealthy").await;
    let reason = s["reason"].as_str().unwrap();
    assert!(reason.contains("no answer within 300ms"), "{reason}");
    // Three timeouts of b took at least 900ms. Had the checks of a and c
    // waited behind them, each would have had about 4 in that time; on
    // their own 20ms schedule they have dozens (8 leaves room for a slow
    // machine).
    for (name, backend, start) in [("a", &a, a0), ("c", &c, c0)] {
        let n = backend.checks() - start;
        assert!(n >= 8, "{name} was checked only {n} times while b hung");
    }
    let m = proxy.metrics().await;
    let b_label = b.addr.to_string();
    let labels = [("backend", b_label.as_str()), ("result", "timeout")];
    assert!(metric_sum(&m, "switchyard_health_checks_total", &labels) >= 3.0);
    let seen = spread(&proxy, 10).await;
    assert_eq!(seen.get("b"), None, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_backend_costs_no_request() {
    let a = TestBackend::start("a", Behavior::Name).await;
    let b = TestBackend::start("b", Behavior::Name).await;
    let c = TestBackend::start("c", Behavior::Name).await;
    let b_addr = b.addr;
    let tables = checks("timeout = \"200ms\"\nunhealthy_threshold = 2\n");
    let proxy = Arc::new(start(&[a.addr, b.addr, c.addr], "retries = 2\n", &tables).await);

    // Four clients on keep-alive connections, 600 requests in all.
    const TOTAL: usize = 600;
    let done = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (proxy, done) = (Arc::clone(&proxy), Arc::clone(&done));
        clients.spawn(async move {
            let http = client();
            let mut failures = Vec::new();
            let deadline = tokio::time::Instant::now() + DEADLINE;
            while done.fetch_add(1, Ordering::SeqCst) < TOTAL
                && tokio::time::Instant::now() < deadline
            {
                let (status, body) = proxy.get(&http, "/").await;
                if status != 200 {
                    failures.push(format!("{status} {body}"));
                }
            }
            failures
        });
    }
    eventually("a third of the requests", || async {
        (done.load(Ordering::SeqCst) >= TOTAL / 3).then_some(())
    })
    .await;
    drop(b); // its listener and every connection close, mid-run
    let mut failures = Vec::new();
    while let Some(result) = clients.join_next().await {
        failures.extend(result.unwrap());
    }
    assert!(
        done.load(Ordering::SeqCst) >= TOTAL,
        "the clients ran out of time"
    );
    assert!(failures.is_empty(), "clients saw failures: {failures:?}");

    let s = proxy.wait_state(b_addr, "unhealthy").await;
    assert!(
        s["reason"].as_str().unwrap().contains("failed in a row"),
        "{s:#}"
    );
    // The kill did cost attempts; the retries hid them.
    assert!(s["failures_total"].as_u64().unwrap() >= 1, "{s:#}");
    let m = proxy.metrics().await;
    assert!(metric_sum(&m, "switchyard_retries_total", &[]) >= 1.0);
    let seen = spread(&proxy, 10).await;
    assert_eq!(seen.values().sum::<usize>(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_checks_mark_a_closed_port_down_and_an_open_one_up() {
    let open = TestBackend::start("open", Behavior::Name).await;
    let closed = closed_port();
    let tables = "[upstreams.app.health_check]\ntype = \"tcp\"\ninterval = \"20ms\"\n\
                  healthy_threshold = 1\nunhealthy_threshold = 2\n";
    let proxy = start(&[open.addr, closed], "", tables).await;
    let s = proxy.wait_state(closed, "unhealthy").await;
    assert!(
        s["reason"].as_str().unwrap().contains("2 checks failed"),
        "{s:#}"
    );
    let s = proxy.backend(open.addr).await;
    assert_eq!(
        (&s["state"], &s["checks"]["last_result"]),
        (&"healthy".into(), &"success".into())
    );
    assert_eq!(open.checks(), 0, "a TCP check sends no request");
    let seen = spread(&proxy, 6).await;
    assert_eq!(seen.get("open"), Some(&6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_state_unhealthy_holds_traffic_until_a_check_passes() {
    let port = closed_port();
    let tables = "[upstreams.app.health_check]\ntype = \"tcp\"\ninterval = \"20ms\"\n\
                  healthy_threshold = 2\ninitial_state = \"unhealthy\"\n";
    let proxy = start(&[port], "", tables).await;
    let http = client();
    // Nothing has passed yet: no traffic, not even in panic mode.
    let s = proxy.backend(port).await;
    assert_eq!(s["state"], "pending", "{s:#}");
    let r = http.get(proxy.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("x-request-id"));
    let m = proxy.metrics_after(1.0).await;
    let local = metric_sum(&m, "switchyard_local_responses_total", &[("code", "503")]);
    assert_eq!(local, 1.0);
    let ready = http.get(proxy.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("app"));
    assert_eq!(proxy.status().await["upstreams"][0]["panic"], false);

    let backend = TestBackend::start_on(port, "late", Behavior::Name)
        .await
        .expect("the port is still free");
    let s = proxy.wait_state(port, "healthy").await;
    assert_eq!(s["reason"], "2 checks passed in a row");
    assert_eq!(proxy.get_ok(&http, "/").await, "late");
    let ready = http.get(proxy.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    drop(backend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_ejection_on_5xx_grows_and_tries_again() {
    let bad = TestBackend::start("bad", Behavior::Status(500)).await;
    let good = TestBackend::start("good", Behavior::Name).await;
    let tables = "[upstreams.app.passive_health_check]\nconsecutive_failures = 2\n\
                  failures = [\"5xx\"]\nejection_time = \"2s\"\nmax_ejection_time = \"10s\"\n";
    let proxy = start(&[bad.addr, good.addr], "", tables).await;
    let http = client();
    // Round-robin: the 1st and 3rd requests reach `bad`; its 500s pass
    // through to the client, and the second ejects it.
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(proxy.get(&http, "/").await.0);
        }
        v
    };
    assert_eq!(statuses, [500, 200, 500]);
    let s = proxy.wait_state(bad.addr, "ejected").await;
    assert_eq!(s["ejection"]["length_ms"], 2000, "{s:#}");
    assert_eq!(s["ejection"]["in_row"], 1);
    let reason = s["reason"].as_str().unwrap();
    assert!(
        reason.contains("2 failed requests in a row, last: 5xx response"),
        "{reason}"
    );
    let sent_to_bad = bad.received();
    for _ in 0..4 {
        assert_eq!(proxy.get_ok(&http, "/").await, "good");
    }
    assert_eq!(bad.received(), sent_to_bad, "no traffic while ejected");

    // When the ejection ends it is tried again, fails at once, and is out
    // for twice as long.
    eventually("bad to be tried again", || async {
        proxy.get(&http, "/").await;
        (bad.received() > sent_to_bad).then_some(())
    })
    .await;
    let s = proxy.wait_state(bad.addr, "ejected").await;
    assert_eq!(s["ejection"]["length_ms"], 4000, "{s:#}");
    assert_eq!(s["ejection"]["in_row"], 2);
    assert!(s["reason"]
        .as_str()
        .unwrap()
        .contains("first request after an ejection"));
    let m = proxy.metrics().await;
    let label = bad.addr.to_string();
    let ejections = metric_sum(
        &m,
        "switchyard_backend_ejections_total",
        &[("backend", &label)],
    );
    assert_eq!(ejections, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_backend_down_panic_mode_still_serves() {
    let a = TestBackend::start("a", Behavior::Name).await;
    let b = TestBackend::start("b", Behavior::Name).await;
    a.set_health(503);
    b.set_health(503);
    let tables = checks("unhealthy_threshold = 1\n");
    let proxy = start(&[a.addr, b.addr], "", &tables).await;
    proxy.wait_state(a.addr, "unhealthy").await;
    proxy.wait_state(b.addr, "unhealthy").await;

    let status = proxy.status().await;
    let upstream = &status["upstreams"][0];
    assert_eq!(upstream["panic"], true, "{upstream:#}");
    assert!(upstream["panic_reason"]
        .as_str()
        .unwrap()
        .contains("least bad"));
    let seen = spread(&proxy, 10).await;
    assert_eq!((seen.get("a"), seen.get("b")), (Some(&5), Some(&5)));

    let http = client();
    let ready = http.get(proxy.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("upstream app"));
    let m = proxy.metrics().await;
    assert_eq!(
        metric_sum(&m, "switchyard_upstream_panic", &[("upstream", "app")]),
        1.0
    );
    assert_eq!(metric_sum(&m, "switchyard_backend_healthy", &[]), 0.0);

    a.set_health(200);
    proxy.wait_state(a.addr, "healthy").await;
    assert_eq!(proxy.status().await["upstreams"][0]["panic"], false);
    let seen = spread(&proxy, 4).await;
    assert_eq!(
        seen.get("a"),
        Some(&4),
        "panic is over: only the healthy one"
    );
}

async fn slow_start_after_recovery(balance: &str) {
    let a = TestBackend::start("a", Behavior::Name).await;
    let b = TestBackend::start("b", Behavior::Name).await;
    let settings = format!("balance = \"{balance}\"\nslow_start = \"4s\"\n");
    let tables = checks("healthy_threshold = 1\nunhealthy_threshold = 1\n");
    let proxy = start(&[a.addr, b.addr], &settings, &tables).await;
    b.set_health(500);
    proxy.wait_state(b.addr, "unhealthy").await;
    b.set_health(200);
    let s = proxy.wait_state(b.addr, "healthy").await;
    assert!(s["effective_weight"].as_f64().unwrap() < 1.0, "{s:#}");
    assert!(
        s["reason"].as_str().unwrap().contains("slow start"),
        "{s:#}"
    );

    // Right after recovery b gets about a tenth of what a gets (2 of 20;
    // 6 leaves room for a slow machine), far from its half.
    let seen = spread(&proxy, 20).await;
    let early = seen.get("b").copied().unwrap_or(0);
    assert!(early <= 6, "b got {early} of 20 right after recovery");

    // Once slow start is over, its full half.
    eventually("b at full weight", || async {
        let s = proxy.backend(b.addr).await;
        (s["effective_weight"] == 1.0).then_some(())
    })
    .await;
    let seen = spread(&proxy, 20).await;
    assert_eq!(seen.get("b"), Some(&10), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_ramps_a_recovered_backend_with_round_robin() {
    slow_start_after_recovery("round_robin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_ramps_a_recovered_backend_with_least_connections() {
    slow_start_after_recovery("least_connections").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_check_sends_path_and_host() {
    let a = TestBackend::start("a", Behavior::Name).await;
    let tables = checks("host = \"app.internal\"\nexpect_status = [\"2xx\", 404]\n");
    let proxy = start(&[a.addr], "", &tables).await;
    a.set_health(404);
    eventually("checks passing on 404", || async {
        let s = proxy.backend(a.addr).await;
        let passes = s["checks"]["consecutive_passes"].as_u64().unwrap_or(0);
        (passes >= 3).then_some(())
    })
    .await;
    a.set_health(302);
    let s = proxy.wait_state(a.addr, "unhealthy").await;
    let reason = s["reason"].as_str().unwrap();
    assert!(reason.contains("status 302, expected 2xx, 404"), "{reason}");
    assert_eq!(a.check_host().as_deref(), Some("app.internal"));
    assert_eq!(a.received(), 0, "checks are not counted as requests");
}
