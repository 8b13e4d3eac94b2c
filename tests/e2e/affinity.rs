//! Affinity end to end: consistent hashing keeps every key on its backend
//! and holds a hot key to the load bound, the sticky cookie pins a client
//! and never shows an address, and least_latency prefers the quicker
//! backend.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::support::proxy::{app, metric_sum};
use crate::support::{client, eventually, Behavior, TestBackend, TestProxy};

async fn backends(n: usize, behavior: Behavior) -> Vec<TestBackend> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(TestBackend::start(&format!("b{i}"), behavior.clone()).await);
    }
    out
}

fn addrs(bs: &[TestBackend]) -> Vec<SocketAddr> {
    bs.iter().map(|b| b.addr).collect()
}

async fn get_with(proxy: &TestProxy, http: &reqwest::Client, header: (&str, &str)) -> String {
    let r = http
        .get(proxy.url("/"))
        .header(header.0, header.1)
        .send()
        .await
        .expect("the proxy answers");
    assert_eq!(r.status(), 200);
    r.text().await.unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_keys_each_reach_the_same_backend_every_time() {
    let bs = backends(4, Behavior::Name).await;
    let settings = "balance = \"consistent_hash\"\nhash_key = \"header:x-user\"\n";
    let proxy = TestProxy::start_app(settings, &addrs(&bs)).await;
    let http = client();
    let mut first = BTreeMap::new();
    for k in 0..1000 {
        let user = format!("user-{k}");
        first.insert(
            user.clone(),
            get_with(&proxy, &http, ("x-user", &user)).await,
        );
    }
    for (user, backend) in &first {
        assert_eq!(
            &get_with(&proxy, &http, ("x-user", user)).await,
            backend,
            "{user}"
        );
    }
    // Keys spread over every backend.
    let used: BTreeSet<&String> = first.values().collect();
    assert_eq!(used.len(), 4, "{used:?}");
    // A request without the key is balanced round-robin, and counted.
    let r = http.get(proxy.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let m = proxy.metrics_after(2001.0).await;
    let missing = metric_sum(
        &m,
        "switchyard_hash_key_missing_total",
        &[("upstream", "app")],
    );
    assert_eq!(missing, 1.0);
    let status = proxy.status().await;
    let hash = &status["upstreams"][0]["consistent_hash"];
    assert_eq!(hash["requests_without_key"], 1, "{hash:#}");
    assert_eq!(hash["hash_key"], "header:x-user");
    // /explain says where a key goes, and that it is the owner.
    let user = first.keys().next().unwrap().clone();
    let e = proxy
        .admin_json(&format!("/explain?header=x-user:{user}"))
        .await;
    let owner = e["consistent_hash"]["backend"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        e["consistent_hash"]["why"], "the owner of the key's point",
        "{e:#}"
    );
    let name = &first[&user];
    let expected = bs
        .iter()
        .find(|b| &b.name == name)
        .unwrap()
        .addr
        .to_string();
    assert_eq!(owner, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hot_key_never_puts_more_than_the_bound_on_one_backend() {
    let bs = backends(3, Behavior::Delay(Duration::from_millis(20))).await;
    let settings = "balance = \"consistent_hash\"\nhash_key = \"query:tenant\"\n";
    let proxy = Arc::new(TestProxy::start_app(settings, &addrs(&bs)).await);
    // 30 clients at once, every request the same key.
    const CLIENTS: usize = 30;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let proxy = Arc::clone(&proxy);
        set.spawn(async move {
            let http = client();
            for _ in 0..10 {
                let (status, _) = proxy.get(&http, "/?tenant=acme").await;
                assert_eq!(status, 200);
            }
        });
    }
    while let Some(done) = set.join_next().await {
        done.expect("a client failed");
    }
    // ceil(1.25 × (in flight + 1) / 3), with at most 29 others in flight.
    let bound = (1.25 * CLIENTS as f64 / 3.0).ceil() as usize;
    for b in &bs {
        assert!(
            b.max_in_flight() <= bound,
            "{} had {} at once",
            b.name,
            b.max_in_flight()
        );
    }
    // The key did move on when its owner was full.
    let serving = bs.iter().filter(|b| b.received() > 0).count();
    assert!(serving >= 2, "only one backend served the hot key");
}

/// The sticky cookie's value in a response, if it sets one.
fn set_cookie(r: &reqwest::Response) -> Option<String> {
    let v = r.headers().get("set-cookie")?.to_str().ok()?.to_string();
    assert!(v.starts_with("sy_affinity="), "{v}");
    Some(v)
}

async fn sticky_get(proxy: &TestProxy, cookie: Option<&str>) -> (String, Option<String>) {
    let mut req = client().get(proxy.url("/"));
    if let Some(c) = cookie {
        req = req.header("cookie", format!("theme=dark; sy_affinity={c}"));
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let set = set_cookie(&r);
    (r.text().await.unwrap().trim().to_string(), set)
}

fn value(set_cookie: &str) -> String {
    set_cookie["sy_affinity=".len()..]
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_cookie_pins_a_client_and_follows_it_when_its_backend_goes() {
    let bs = backends(3, Behavior::Name).await;
    let tables = format!(
        "{}[upstreams.app.sticky]\nmax_age = \"1h\"\n[upstreams.app.health_check]\n\
         path = \"/healthz\"\ninterval = \"50ms\"\nunhealthy_threshold = 1\nhealthy_threshold = 1\n",
        app("", &addrs(&bs))
    );
    let proxy = TestProxy::start(&tables).await;
    // The first answer sets it, naming the backend that answered by an id
    // that is not its address.
    let (first, set) = sticky_get(&proxy, None).await;
    let set = set.expect("the first answer sets the cookie");
    assert!(
        set.contains("Max-Age=3600") && set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    let id = value(&set);
    for b in &bs {
        let port = b.addr.port().to_string();
        assert!(
            !set.contains("127.0.0.1") && !set.contains(&port),
            "an address in {set}"
        );
    }
    // Round-robin would move on; the cookie keeps the client, and is not
    // set again.
    for _ in 0..10 {
        let (again, set) = sticky_get(&proxy, Some(&id)).await;
        assert_eq!((again.as_str(), set), (first.as_str(), None));
    }
    // A forged cookie is a miss: a new pick and a new cookie.
    let (_, set) = sticky_get(&proxy, Some("0123456789abcdef")).await;
    assert!(set.is_some(), "a forged cookie is replaced");
    // Its backend failing its checks: another takes the client, and the
    // cookie is rewritten to name that one.
    let pinned = bs.iter().find(|b| b.name == first).unwrap();
    pinned.set_health(500);
    proxy.wait_state(pinned.addr, "unhealthy").await;
    let (moved, set) = sticky_get(&proxy, Some(&id)).await;
    assert_ne!(moved, first);
    let new_id = value(&set.expect("rewritten"));
    assert_ne!(new_id, id);
    let (stays, set) = sticky_get(&proxy, Some(&new_id)).await;
    assert_eq!((stays, set), (moved, None));
    // /status and /explain know the ids.
    let e = proxy
        .admin_json(&format!("/explain?header=cookie:sy_affinity={new_id}"))
        .await;
    assert!(e["sticky"]["backend"].as_str().is_some(), "{e:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn least_latency_prefers_the_quicker_backend() {
    let quick = TestBackend::start("quick", Behavior::Name).await;
    let slow = TestBackend::start("slow", Behavior::Delay(Duration::from_millis(30))).await;
    let settings = "balance = \"least_latency\"\nlatency_decay = \"5s\"\n";
    let proxy = Arc::new(TestProxy::start_app(settings, &[quick.addr, slow.addr]).await);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let proxy = Arc::clone(&proxy);
        set.spawn(async move {
            let http = client();
            for _ in 0..50 {
                proxy.get_ok(&http, "/").await;
            }
        });
    }
    while let Some(done) = set.join_next().await {
        done.expect("a client failed");
    }
    let (q, s) = (quick.received(), slow.received());
    assert_eq!(q + s, 200);
    assert!(q >= 3 * s, "quick {q}, slow {s}");
    let status = eventually("latencies in /status", || async {
        let st = proxy.status().await;
        st["upstreams"][0]["backends"][1]["latency_ewma_ms"]
            .as_f64()
            .filter(|&ms| ms > 0.0)
            .map(|_| st)
    })
    .await;
    let ewma = |i: usize| {
        status["upstreams"][0]["backends"][i]["latency_ewma_ms"]
            .as_f64()
            .unwrap()
    };
    assert!(ewma(1) > ewma(0), "{status:#}");
}
