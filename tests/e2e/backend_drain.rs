//! Draining one backend on the admin port: what is in flight finishes, no
//! new request reaches it (counted at the backends), the drain reports its
//! progress and then `drained: true`, a reload keeps it, undrain takes the
//! backend back, tunnels count, and `[admin] token` guards the endpoints
//! that change something.

use std::net::SocketAddr;

use serde_json::Value;

use crate::support::backend::{Behavior, TestBackend, HOLD_PATH};
use crate::support::proxy::{app, metric_sum, TestProxy};
use crate::support::websocket::{WsBackend, WsClient};
use crate::support::{client, eventually};

pub const TOKEN: &str = "0123456789abcdef-test-token";

fn drain_path(backend: SocketAddr, action: &str) -> String {
    format!("/upstreams/app/backends/{backend}/{action}")
}

/// `METHOD path` on the admin port, with the token if given: the status
/// and the body (JSON where it is).
pub async fn admin(
    proxy: &TestProxy,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut r = client().request(method, proxy.admin_url(path));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.expect("the admin port answers");
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let body = r.text().await.expect("a body");
    let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, json, headers)
}

/// `METHOD` on `backend`'s drain `action` with no token: a 200's JSON.
async fn on_drain(
    proxy: &TestProxy,
    method: reqwest::Method,
    backend: SocketAddr,
    action: &str,
) -> Value {
    let (status, state, _) = admin(proxy, method, &drain_path(backend, action), None).await;
    assert_eq!(status, 200, "{state}");
    state
}

/// Two round-robin backends, `a` holding every request to [`HOLD_PATH`]
/// and `b` answering at once, and one request held at `a`.
pub async fn one_held_at_a(
    admin_lines: &str,
) -> (
    TestProxy,
    TestBackend,
    TestBackend,
    tokio::task::JoinHandle<(u16, String)>,
) {
    let a = TestBackend::start("a", Behavior::Name).await;
    let b = TestBackend::start("b", Behavior::Name).await;
    b.release_held();
    let upstreams = app("balance = \"round_robin\"\n", &[a.addr, b.addr]);
    let proxy = TestProxy::start_with_admin("", admin_lines, &upstreams).await;
    let url = proxy.url(HOLD_PATH);
    // Round-robin sends one of two requests to each backend; `b`'s
    // answers at once, `a`'s is held.
    let mut held = None;
    for _ in 0..2 {
        let url = url.clone();
        let task = tokio::spawn(async move {
            let r = client().get(url).send().await.expect("proxy answers");
            let status = r.status().as_u16();
            (
                status,
                r.text().await.unwrap_or_default().trim().to_string(),
            )
        });
        let to_a = eventually("the request to reach a backend", || async {
            match (a.held(), b.received()) {
                (1, _) if held.is_none() => Some(true),
                (_, n) if n > 0 && task.is_finished() => Some(false),
                _ => None,
            }
        })
        .await;
        if to_a {
            held = Some(task);
        } else {
            assert_eq!(task.await.unwrap(), (200, "b".to_string()));
        }
    }
    let held = held.expect("one of two round-robin requests went to a");
    (proxy, a, b, held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_backend_finishes_its_requests_gets_no_new_ones_and_comes_back() {
    let (proxy, a, b, held) = one_held_at_a("").await;
    let http = client();
    let state = on_drain(&proxy, reqwest::Method::POST, a.addr, "drain").await;
    assert_eq!(state["state"], "draining");
    assert_eq!(
        (state["in_flight"].as_u64(), state["tunnels"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(state["drained"], false);
    assert!(state["draining_since"].is_string(), "{state}");

    let before = (a.received(), b.received());
    for _ in 0..20 {
        assert_eq!(proxy.get(&http, "/").await, (200, "b".to_string()));
    }
    assert_eq!(
        a.received(),
        before.0,
        "no new request reached the drained backend"
    );
    assert_eq!(b.received(), before.1 + 20);

    let s = proxy.backend(a.addr).await;
    assert_eq!(s["state"], "draining", "{s}");
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains("1 requests and 0 tunnels left"),
        "{s}"
    );
    let scrape = proxy.metrics().await;
    let draining = |addr: SocketAddr| {
        let labels = [("upstream", "app"), ("backend", &*addr.to_string())];
        metric_sum(&scrape, "switchyard_backend_draining", &labels)
    };
    assert_eq!((draining(a.addr), draining(b.addr)), (1.0, 0.0));
    let explained = proxy.admin_json("/explain?host=x&path=/").await;
    let listed = explained["upstream"]["backends"]
        .as_array()
        .unwrap()
        .clone();
    let shown = listed
        .iter()
        .find(|x| x["address"] == a.addr.to_string())
        .unwrap();
    assert_eq!(shown["state"], "draining", "{explained}");

    // A reload builds a new snapshot: the drain stays.
    let (status, _) = proxy.reload().await;
    assert_eq!(status, 200);
    for _ in 0..10 {
        assert_eq!(proxy.get(&http, "/").await, (200, "b".to_string()));
    }
    assert_eq!(
        a.received(),
        before.0,
        "nothing new after the reload either"
    );

    a.release_held();
    assert_eq!(
        held.await.unwrap(),
        (200, "a".to_string()),
        "the request in flight finished"
    );
    let done = eventually("the drain to end", || async {
        let s = on_drain(&proxy, reqwest::Method::GET, a.addr, "drain").await;
        Some(s).filter(|s| s["drained"] == true)
    })
    .await;
    assert_eq!(
        (done["state"].as_str(), done["in_flight"].as_u64()),
        (Some("drained"), Some(0))
    );
    assert_eq!(proxy.backend(a.addr).await["state"], "drained");

    let state = on_drain(&proxy, reqwest::Method::POST, a.addr, "undrain").await;
    assert_eq!(state["state"], "active", "{state}");
    let mut to_a = 0;
    for _ in 0..10 {
        to_a += usize::from(proxy.get(&http, "/").await == (200, "a".to_string()));
    }
    assert_eq!(
        to_a, 5,
        "round-robin shares requests with the undrained backend again"
    );
    assert_eq!(proxy.backend(a.addr).await["state"], "healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_waits_for_tunnels_and_refuses_new_ones() {
    let ws = WsBackend::start().await;
    let proxy = TestProxy::start_app("", &[ws.addr]).await;
    let mut tunnel = WsClient::open(proxy.addr, "/chat").await.unwrap();
    assert_eq!(tunnel.echo("hi").await.unwrap(), "hi");
    let state = on_drain(&proxy, reqwest::Method::POST, ws.addr, "drain").await;
    assert_eq!(state["state"], "draining", "{state}");
    assert_eq!(
        (state["in_flight"].as_u64(), state["tunnels"].as_u64()),
        (Some(0), Some(1))
    );
    // The tunnel open before the drain stays open; a new one is refused.
    assert_eq!(tunnel.echo("still").await.unwrap(), "still");
    let refused = WsClient::open(proxy.addr, "/chat").await.err().unwrap();
    assert!(refused.contains("503"), "{refused}");
    drop(tunnel);
    let done = eventually("the drain to end once the tunnel closed", || async {
        let s = on_drain(&proxy, reqwest::Method::GET, ws.addr, "drain").await;
        Some(s).filter(|s| s["drained"] == true)
    })
    .await;
    assert_eq!(done["tunnels"], 0);
    let ready = client()
        .get(proxy.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let why = ready.text().await.unwrap();
    assert!(
        why.contains("every backend of upstream app is drained"),
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_guards_reload_and_drain_but_not_reads() {
    let a = TestBackend::start("a", Behavior::Name).await;
    let b = TestBackend::start("b", Behavior::Name).await;
    let lines = format!("token = \"{TOKEN}\"\n");
    let proxy = TestProxy::start_with_admin("", &lines, &app("", &[a.addr, b.addr])).await;
    let post = reqwest::Method::POST;
    let drain = drain_path(a.addr, "drain");
    for path in ["/reload", drain.as_str(), &drain_path(a.addr, "undrain")] {
        for token in [None, Some("0123456789abcdef-wrong-token"), Some("short")] {
            let (status, body, headers) = admin(&proxy, post.clone(), path, token).await;
            assert_eq!(status, 401, "{path} with {token:?}: {body}");
            assert!(headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer"));
        }
    }
    assert_eq!(
        proxy.backend(a.addr).await["state"],
        "healthy",
        "nothing was drained"
    );
    let (status, body, _) = admin(&proxy, post.clone(), "/reload", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = admin(&proxy, post.clone(), &drain, Some(TOKEN)).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("drained")),
        "{body}"
    );
    // Reading needs no token.
    let (status, body, _) = admin(&proxy, reqwest::Method::GET, &drain, None).await;
    assert_eq!(
        (status, body["drained"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    assert_eq!(proxy.backend(a.addr).await["state"], "drained");
    let undrain = drain_path(a.addr, "undrain");
    let (status, body, _) = admin(&proxy, post.clone(), &undrain, Some(TOKEN)).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("active")),
        "{body}"
    );
    // The scheme is a word in any case.
    let r = client()
        .post(proxy.admin_url(&drain))
        .header("authorization", format!("bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Wrong names and methods say so.
    let (status, body, _) = admin(
        &proxy,
        post.clone(),
        "/upstreams/app/backends/127.0.0.1:9/drain",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body.as_str()
            .unwrap()
            .contains("lists no backend 127.0.0.1:9"),
        "{body}"
    );
    let (status, body, _) = admin(
        &proxy,
        post,
        "/upstreams/api/backends/127.0.0.1:9/drain",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, _, headers) = admin(&proxy, reqwest::Method::PUT, &drain, Some(TOKEN)).await;
    assert_eq!(
        (status, headers["allow"].to_str().unwrap()),
        (405, "POST, GET")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_address_the_file_drops_stays_drained_and_shown() {
    let a = TestBackend::start("a", Behavior::Name).await;
    let b = TestBackend::start("b", Behavior::Name).await;
    let proxy = TestProxy::start_app("", &[a.addr, b.addr]).await;
    let state = on_drain(&proxy, reqwest::Method::POST, a.addr, "drain").await;
    assert_eq!(state["state"], "drained", "nothing was in flight: {state}");
    let write = |backends: &[SocketAddr]| {
        let text = proxy.config_text(&app("", backends));
        std::fs::write(&proxy.config, text).unwrap();
    };
    write(&[b.addr]);
    assert_eq!(proxy.reload().await.0, 200);
    let status = proxy.status().await;
    let unlisted = &status["upstreams"][0]["drained_unlisted"];
    assert_eq!(unlisted[0]["address"], a.addr.to_string(), "{unlisted}");
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let state = on_drain(&proxy, method, a.addr, "drain").await;
        assert_eq!(
            (state["state"].as_str(), state["listed"].as_bool()),
            (Some("drained"), Some(false))
        );
    }
    // Listed again, it comes back drained.
    write(&[a.addr, b.addr]);
    assert_eq!(proxy.reload().await.0, 200);
    assert_eq!(proxy.backend(a.addr).await["state"], "drained");
    let http = client();
    let before = a.received();
    for _ in 0..10 {
        assert_eq!(proxy.get(&http, "/").await, (200, "b".to_string()));
    }
    assert_eq!(a.received(), before);
}
