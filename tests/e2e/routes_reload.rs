//! Routes reload with the pool, all or nothing: under a load that never
//! retries, routes are added, removed and retargeted twenty times with no
//! request failed and each change seen by the next request; and a retry
//! whose upstream a reload removed fails cleanly.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::support::faulty::{Fault, FaultyBackend};
use crate::support::{client, no_failures, Behavior, TestBackend, TestProxy, DEADLINE};

fn upstream(name: &str, backends: &[SocketAddr]) -> String {
    let list: Vec<String> = backends.iter().map(|a| format!("\"{a}\"")).collect();
    format!("[upstreams.{name}]\nbackends = [{}]\n", list.join(", "))
}

/// Version `k` of the routes: `/x` alternates between a and b, and `/y`
/// (to a) is there two times in three; the rest goes to c.
fn routes(k: usize) -> String {
    let x = if k.is_multiple_of(2) { "a" } else { "b" };
    let mut out = format!("[[routes]]\nname = \"x\"\npath_prefix = \"/x\"\nupstream = \"{x}\"\n");
    if !k.is_multiple_of(3) {
        out += "[[routes]]\nname = \"y\"\npath_prefix = \"/y\"\nupstream = \"a\"\n";
    }
    out
}

async fn get(proxy: &TestProxy, http: &reqwest::Client, path: &str) -> String {
    proxy.get_ok(http, path).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_route_reloads_under_load_lose_nothing_and_show_at_once() {
    let a = TestBackend::start("a", Behavior::Name).await;
    let b = TestBackend::start("b", Behavior::Name).await;
    let c = TestBackend::start("c", Behavior::Name).await;
    let upstreams = format!(
        "{}{}{}",
        upstream("a", &[a.addr]),
        upstream("b", &[b.addr]),
        upstream("c", &[c.addr])
    );
    let proxy = Arc::new(
        TestProxy::start_with(
            "default_upstream = \"c\"\nwatch_config = false\n",
            &format!("{upstreams}{}", routes(0)),
        )
        .await,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..4 {
        let (proxy, stop) = (Arc::clone(&proxy), Arc::clone(&stop));
        clients.spawn(async move {
            let http = client();
            let deadline = tokio::time::Instant::now() + DEADLINE;
            let (mut sent, mut failures) = (0, Vec::new());
            while !stop.load(Ordering::SeqCst) && tokio::time::Instant::now() < deadline {
                let path = ["/x/1", "/y/2", "/z/3"][(sent + i) % 3];
                let (status, body) = proxy.get(&http, path).await;
                if status != 200 {
                    failures.push(format!("{path}: {status} {body}"));
                }
                sent += 1;
            }
            (sent, failures)
        });
    }
    let http = client();
    for k in 1..=20 {
        let text = proxy.config_text(&format!("{upstreams}{}", routes(k)));
        std::fs::write(&proxy.config, text).unwrap();
        let (status, answer) = proxy.reload().await;
        assert_eq!(status, 200, "reload {k}: {answer:#}");
        let changes = &answer["changes"];
        if k.is_multiple_of(3) {
            assert_eq!(
                changes["routes_removed"],
                serde_json::json!(["y"]),
                "{answer:#}"
            );
        } else if k % 3 == 1 {
            assert_eq!(
                changes["routes_added"],
                serde_json::json!(["y"]),
                "{answer:#}"
            );
        }
        assert_eq!(
            changes["routes_changed"],
            serde_json::json!(["x: upstream"]),
            "{answer:#}"
        );
        // The next request sees the change.
        let x = if k.is_multiple_of(2) { "a" } else { "b" };
        let y = if !k.is_multiple_of(3) { "a" } else { "c" };
        assert_eq!(get(&proxy, &http, "/x").await, x, "reload {k}");
        assert_eq!(get(&proxy, &http, "/y").await, y, "reload {k}");
        assert_eq!(get(&proxy, &http, "/z").await, "c", "reload {k}");
    }
    stop.store(true, Ordering::SeqCst);
    let sent = no_failures(clients).await;
    assert!(sent >= 20, "only {sent} requests during the reloads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_whose_upstream_a_reload_removed_gets_503() {
    let hang = FaultyBackend::start(Fault::Hang).await;
    let spare = TestBackend::start("spare", Behavior::Name).await;
    let other = TestBackend::start("other", Behavior::Name).await;
    let routes = |to: &str| format!("[[routes]]\npath_prefix = \"/x\"\nupstream = \"{to}\"\n");
    let before = format!(
        "{}{}{}",
        upstream("app", &[hang.addr, spare.addr]),
        upstream("other", &[other.addr]),
        routes("app")
    );
    let proxy = TestProxy::start_with("default_upstream = \"other\"\n", &before).await;
    let url = proxy.url("/x");
    let pending = tokio::spawn(async move { client().get(url).send().await.unwrap().status() });
    crate::support::eventually("the request to reach `hang`", || async {
        (!hang.seen().is_empty()).then_some(())
    })
    .await;
    let after = format!("{}{}", upstream("other", &[other.addr]), routes("other"));
    std::fs::write(&proxy.config, proxy.config_text(&after)).unwrap();
    let (status, answer) = proxy.reload().await;
    assert_eq!(status, 200, "{answer:#}");
    drop(hang);
    assert_eq!(pending.await.unwrap(), 503);
    assert_eq!(spare.received(), 0, "the removed upstream got nothing more");
    assert_eq!(proxy.get_ok(&client(), "/x").await, "other");
}
