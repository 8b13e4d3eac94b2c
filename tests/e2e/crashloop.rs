//! Crash-looping backends: processes that die and are restarted a moment
//! later by their supervisor, as Node.js cluster workers, PM2 or
//! Kubernetes do. Clients that never retry must lose nothing while any
//! backend is up, whatever the balancer, with or without active checks;
//! with every backend down at once they get a quick 502 or 503, and
//! traffic resumes as soon as a check sees a backend back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::support::proxy::{app, metric_sum};
use crate::support::wire::KeepAlive;
use crate::support::{no_failures, Behavior, TestBackend, TestProxy};

/// Keep-alive clients sending at once.
const CLIENTS: usize = 8;
/// Kill-and-restart rounds; each kills the next backend in turn.
const ROUNDS: usize = 8;
/// How long a killed backend stays down, and how long all are up between
/// two kills.
const DOWN: Duration = Duration::from_millis(250);
const UP: Duration = Duration::from_millis(150);

/// Backends on fixed loopback ports that the test kills (listener and
/// every connection closed at once, as the kernel does for a killed
/// process) and restarts on the same port.
struct Fleet {
    addrs: Vec<SocketAddr>,
    running: Mutex<Vec<Option<TestBackend>>>,
}

impl Fleet {
    async fn start(n: usize) -> Fleet {
        let mut running = Vec::new();
        for i in 0..n {
            running.push(Some(
                TestBackend::start(&format!("b{i}"), Behavior::Name).await,
            ));
        }
        let addrs = running.iter().flatten().map(|b| b.addr).collect();
        Fleet {
            addrs,
            running: Mutex::new(running),
        }
    }

    async fn kill(&self, i: usize) {
        self.running.lock().await[i] = None;
    }

    async fn restart(&self, i: usize) {
        let name = format!("b{i}");
        let backend = TestBackend::start_on(self.addrs[i], &name, Behavior::Name)
            .await
            .expect("the killed backend's port is free again");
        self.running.lock().await[i] = Some(backend);
    }

    /// Health requests the running instance of backend `i` has had.
    async fn checks(&self, i: usize) -> usize {
        self.running.lock().await[i]
            .as_ref()
            .map_or(0, TestBackend::checks)
    }
}

/// TCP checks every 100 ms, one failure out, one pass back in: as tight as
/// the settings allow, which is what crash-looping fleets are told to use.
const TCP_CHECKS: &str = "[upstreams.app.health_check]\ntype = \"tcp\"\ninterval = \"100ms\"\n\
                          timeout = \"100ms\"\nhealthy_threshold = 1\nunhealthy_threshold = 1\n";

/// Clients that send GETs on keep-alive connections until `stop`, never
/// retrying: each answer that is not a whole 200 is a failure.
fn clients(
    proxy: SocketAddr,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinSet<(usize, Vec<String>)> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let stop = Arc::clone(stop);
        set.spawn(async move {
            let mut conn = KeepAlive::connect(proxy)
                .await
                .expect("connect to the proxy");
            let (mut sent, mut failures) = (0, Vec::new());
            // Bounded by the crash loop, which sets `stop`, and by count.
            while !stop.load(Ordering::SeqCst) && sent < 1_000_000 {
                sent += 1;
                let answer = conn.get("/").await;
                match &answer {
                    Ok((200, _)) => {}
                    Ok((status, body)) => failures.push(format!("{status} {body}")),
                    Err(e) => failures.push(e.clone()),
                }
                if answer.is_err() || conn.closed() {
                    match KeepAlive::connect(proxy).await {
                        Ok(c) => conn = c,
                        Err(_) => break,
                    }
                }
            }
            (sent, failures)
        });
    }
    set
}

async fn no_request_lost(balance: &str, tables: &str) {
    let fleet = Fleet::start(3).await;
    let settings = format!("balance = \"{balance}\"\n");
    let proxy = TestProxy::start(&format!("{}{tables}", app(&settings, &fleet.addrs))).await;
    let stop = Arc::new(AtomicBool::new(false));
    let clients = clients(proxy.addr, &stop);
    for round in 0..ROUNDS {
        tokio::time::sleep(UP).await;
        let victim = round % fleet.addrs.len();
        fleet.kill(victim).await;
        tokio::time::sleep(DOWN).await;
        fleet.restart(victim).await;
    }
    tokio::time::sleep(UP).await;
    stop.store(true, Ordering::SeqCst);
    let sent = no_failures(clients).await;
    // The kills cost attempts, and retries hid them: else this test
    // tested nothing.
    let m = proxy.metrics().await;
    let connect = [("kind", "connect")];
    let failed = metric_sum(&m, "switchyard_upstream_failures_total", &connect)
        + metric_sum(
            &m,
            "switchyard_upstream_failures_total",
            &[("kind", "reset")],
        );
    assert!(
        failed >= 1.0,
        "{balance}: no attempt failed in {sent} requests"
    );
    assert!(metric_sum(&m, "switchyard_retries_total", &[]) >= 1.0);
    assert!(sent >= 100, "{balance}: only {sent} requests in the run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_robin_with_checks_loses_nothing() {
    no_request_lost("round_robin", TCP_CHECKS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn least_connections_with_checks_loses_nothing() {
    no_request_lost("least_connections", TCP_CHECKS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_robin_without_checks_loses_nothing() {
    no_request_lost("round_robin", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn least_connections_without_checks_loses_nothing() {
    no_request_lost("least_connections", "").await;
}

/// Every backend down at once: each request gets a 502 or 503 as soon as
/// the attempts are refused, and once a backend is back, the first check
/// that sees it brings traffic back: every request sent after its second
/// check (so the first one's verdict is in) succeeds.
async fn every_backend_down_then_one_back(balance: &str) {
    let fleet = Fleet::start(3).await;
    let settings = format!("balance = \"{balance}\"\n");
    let tables = "[upstreams.app.health_check]\npath = \"/healthz\"\ninterval = \"100ms\"\n\
                  timeout = \"100ms\"\nhealthy_threshold = 1\nunhealthy_threshold = 1\n";
    let proxy = TestProxy::start(&format!("{}{tables}", app(&settings, &fleet.addrs))).await;
    for i in 0..fleet.addrs.len() {
        fleet.kill(i).await;
    }
    for &addr in &fleet.addrs {
        proxy.wait_state(addr, "unhealthy").await;
    }
    let mut conn = KeepAlive::connect(proxy.addr).await.unwrap();
    for _ in 0..20 {
        let (status, _) = conn.get("/").await.expect("an answer, not a hang");
        assert!(
            status == 502 || status == 503,
            "{balance}: {status} with every backend down"
        );
        if conn.closed() {
            conn = KeepAlive::connect(proxy.addr).await.unwrap();
        }
    }

    fleet.restart(1).await;
    let mut served_after_check = 0;
    let deadline = tokio::time::Instant::now() + crate::support::DEADLINE;
    while served_after_check < 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{balance}: checks never came"
        );
        let checked = fleet.checks(1).await >= 2;
        let answer = conn.get("/").await;
        if checked {
            assert_eq!(answer, Ok((200, "b1".to_string())), "{balance}");
            served_after_check += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if conn.closed() || answer.is_err() {
            conn = KeepAlive::connect(proxy.addr).await.unwrap();
        }
    }
    let m = proxy.metrics().await;
    let local = metric_sum(&m, "switchyard_local_responses_total", &[]);
    assert!(local >= 20.0, "{balance}: {local} local responses");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_robin_answers_at_once_with_every_backend_down_and_resumes_with_the_first_check() {
    every_backend_down_then_one_back("round_robin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn least_connections_answers_at_once_with_every_backend_down_and_resumes_with_the_first_check(
) {
    every_backend_down_then_one_back("least_connections").await;
}

/// A backend ejected for refused connections, and then seen accepting by a
/// check, was restarted: the ejection ends there, rather than keeping a
/// working process out for `ejection_time` (a minute here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_check_ends_an_ejection_for_refused_connections() {
    let fleet = Fleet::start(2).await;
    let tables = "[upstreams.app.health_check]\ntype = \"tcp\"\ninterval = \"50ms\"\n\
                  healthy_threshold = 1\nunhealthy_threshold = 100\n\
                  [upstreams.app.passive_health_check]\nconsecutive_failures = 1\n\
                  ejection_time = \"60s\"\nmax_ejection_percent = 50\n";
    let proxy = TestProxy::start(&format!("{}{tables}", app("", &fleet.addrs))).await;
    let http = crate::support::client();
    fleet.kill(0).await;
    // Requests find it refusing (the checks need 100 failures to say so).
    let s = crate::support::eventually("b0 to be ejected", || async {
        assert_eq!(proxy.get_ok(&http, "/").await, "b1");
        Some(proxy.backend(fleet.addrs[0]).await).filter(|b| b["state"] == "ejected")
    })
    .await;
    assert_eq!(s["ejection"]["length_ms"], 60_000, "{s:#}");
    assert!(
        s["reason"].as_str().unwrap().contains("connect failure"),
        "{s:#}"
    );

    fleet.restart(0).await;
    let s = proxy.wait_state(fleet.addrs[0], "healthy").await;
    assert_eq!(s["ejection"], serde_json::Value::Null, "{s:#}");
    crate::support::eventually("traffic back on b0", || async {
        (proxy.get_ok(&http, "/").await == "b0").then_some(())
    })
    .await;
    // The doubling starts over: the next ejection is a first one again.
    fleet.kill(0).await;
    let s = crate::support::eventually("b0 to be ejected again", || async {
        proxy.get(&http, "/").await;
        Some(proxy.backend(fleet.addrs[0]).await).filter(|b| b["state"] == "ejected")
    })
    .await;
    assert_eq!(s["ejection"]["in_row"], 1, "{s:#}");
}

/// Ejection never takes out more than `max_ejection_percent` of the pool
/// (at least one backend): with two of three backends refusing, one is
/// ejected and the other stays in, passed over while it refuses, with the
/// reason in `/status` and the refusals counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejection_stops_at_the_cap() {
    let fleet = Fleet::start(3).await;
    let tables = "[upstreams.app.passive_health_check]\nconsecutive_failures = 1\n\
                  ejection_time = \"60s\"\n";
    let proxy = TestProxy::start(&format!("{}{tables}", app("retries = 2\n", &fleet.addrs))).await;
    let http = crate::support::client();
    fleet.kill(0).await;
    fleet.kill(1).await;
    // Past the pass-over after each refusal, both get tried again.
    let capped = crate::support::eventually("a refusal over the cap", || async {
        assert_eq!(proxy.get_ok(&http, "/").await, "b2");
        let m = proxy.metrics().await;
        let capped = metric_sum(
            &m,
            "switchyard_ejections_capped_total",
            &[("upstream", "app")],
        );
        (capped >= 1.0).then_some(())
    })
    .await;
    let _: () = capped;
    let states = [
        proxy.backend(fleet.addrs[0]).await,
        proxy.backend(fleet.addrs[1]).await,
    ];
    let ejected = states.iter().filter(|s| s["state"] == "ejected").count();
    assert_eq!(ejected, 1, "{states:#?}");
    let kept = states.iter().find(|s| s["state"] != "ejected").unwrap();
    let reason = kept["reason"].as_str().unwrap();
    assert!(reason.contains("max_ejection_percent = 10"), "{kept:#}");
    let m = proxy.metrics().await;
    assert_eq!(
        metric_sum(&m, "switchyard_backend_ejections_total", &[]),
        1.0
    );
    assert_eq!(metric_sum(&m, "switchyard_upstream_panic", &[]), 0.0);
}
