//! Routing end to end: each precedence rule with real backends, prefixes
//! and strip_prefix as the backend sees them, path normalisation over raw
//! sockets, 404 without a default, /explain agreeing with real requests,
//! and reloads that change routes under load.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::support::faulty::{Fault, FaultyBackend};
use crate::support::proxy::metric_sum;
use crate::support::recording::RecordingBackend;
use crate::support::wire;
use crate::support::{client, Behavior, TestBackend, TestProxy};

/// An upstream named `name` with these backends.
fn upstream(name: &str, backends: &[SocketAddr]) -> String {
    let list: Vec<String> = backends.iter().map(|a| format!("\"{a}\"")).collect();
    format!("[upstreams.{name}]\nbackends = [{}]\n", list.join(", "))
}

/// Backends named after their upstreams, one upstream each.
struct Services {
    backends: BTreeMap<&'static str, TestBackend>,
}

impl Services {
    async fn start(names: &[&'static str]) -> Services {
        let mut backends = BTreeMap::new();
        for &name in names {
            backends.insert(name, TestBackend::start(name, Behavior::Name).await);
        }
        Services { backends }
    }

    /// Every upstream's table.
    fn upstreams(&self) -> String {
        self.backends
            .iter()
            .map(|(name, b)| upstream(name, &[b.addr]))
            .collect()
    }
}

/// GETs `path` with `Host: host` and these headers; returns who answered.
async fn who(proxy: &TestProxy, host: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let mut req = client().get(proxy.url(path)).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("the proxy answers");
    let status = r.status().as_u16();
    let body = r.text().await.unwrap().trim().to_string();
    if status == 200 {
        body
    } else {
        format!("{status}")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_host_beats_wildcard_beats_none() {
    let s = Services::start(&["exact", "wild", "longer_wild", "plain"]).await;
    let routes = "[[routes]]\nupstream = \"plain\"\n\
                  [[routes]]\nhosts = [\"*.example.com\"]\nupstream = \"wild\"\n\
                  [[routes]]\nhosts = [\"API.example.com\"]\nupstream = \"exact\"\n\
                  [[routes]]\nhosts = [\"*.v1.example.com\"]\nupstream = \"longer_wild\"\n";
    let proxy = TestProxy::start(&format!("{}{routes}", s.upstreams())).await;
    assert_eq!(who(&proxy, "api.example.com", "/", &[]).await, "exact");
    assert_eq!(who(&proxy, "Api.Example.Com:8080", "/", &[]).await, "exact");
    assert_eq!(who(&proxy, "www.example.com", "/", &[]).await, "wild");
    assert_eq!(
        who(&proxy, "a.v1.example.com", "/", &[]).await,
        "longer_wild"
    );
    assert_eq!(who(&proxy, "example.com", "/", &[]).await, "plain");
    assert_eq!(who(&proxy, "localhost", "/x", &[]).await, "plain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longer_prefix_wins_and_prefixes_respect_segments() {
    let s = Services::start(&["root", "api", "api_v2", "static_files"]).await;
    let routes = "[[routes]]\npath_prefix = \"/\"\nupstream = \"root\"\n\
                  [[routes]]\npath_prefix = \"/api\"\nupstream = \"api\"\n\
                  [[routes]]\npath_prefix = \"/api/v2/\"\nupstream = \"api_v2\"\n\
                  [[routes]]\npath_prefix = \"/static/\"\nupstream = \"static_files\"\n";
    let proxy = TestProxy::start(&format!("{}{routes}", s.upstreams())).await;
    for (path, want) in [
        ("/api", "api"),
        ("/api/users", "api"),
        ("/apix", "root"),
        ("/api/v2", "api"),
        ("/api/v2/", "api_v2"),
        ("/api/v2/users?page=2", "api_v2"),
        ("/static", "root"),
        ("/static/app.js", "static_files"),
        ("/", "root"),
    ] {
        assert_eq!(who(&proxy, "h", path, &[]).await, want, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_route_beats_a_plain_one_and_file_order_breaks_a_tie() {
    let s = Services::start(&["stable", "canary", "beta", "api"]).await;
    let routes = "[[routes]]\nupstream = \"stable\"\n\
                  [[routes]]\nheaders = { \"x-canary\" = \"1\" }\nupstream = \"canary\"\n\
                  [[routes]]\nheaders = { \"x-beta\" = \"1\" }\nupstream = \"beta\"\n\
                  [[routes]]\npath_prefix = \"/api\"\nupstream = \"api\"\n";
    let proxy = TestProxy::start(&format!("{}{routes}", s.upstreams())).await;
    assert_eq!(who(&proxy, "h", "/", &[]).await, "stable");
    assert_eq!(who(&proxy, "h", "/", &[("x-canary", "1")]).await, "canary");
    assert_eq!(
        who(&proxy, "h", "/", &[("x-canary", "yes")]).await,
        "stable"
    );
    assert_eq!(who(&proxy, "h", "/", &[("x-beta", "1")]).await, "beta");
    // Both header routes match: the first in the file takes it.
    let both = [("x-beta", "1"), ("x-canary", "1")];
    assert_eq!(who(&proxy, "h", "/", &both).await, "canary");
    // A longer prefix beats a header condition.
    assert_eq!(
        who(&proxy, "h", "/api/x", &[("x-canary", "1")]).await,
        "api"
    );
    // Each route counts its requests.
    let m = proxy.metrics_after(6.0).await;
    let canary = [("route", "2-canary"), ("code", "200")];
    assert_eq!(
        metric_sum(&m, "switchyard_route_requests_total", &canary),
        2.0
    );
    let stable = [("route", "1-stable")];
    assert_eq!(
        metric_sum(&m, "switchyard_route_requests_total", &stable),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_default_an_unmatched_request_gets_404() {
    let s = Services::start(&["api"]).await;
    let routes = "[[routes]]\nname = \"api\"\nhosts = [\"api.localhost\"]\nupstream = \"api\"\n";
    let proxy = TestProxy::start(&format!("{}{routes}", s.upstreams())).await;
    assert_eq!(who(&proxy, "api.localhost", "/", &[]).await, "api");
    let r = client()
        .get(proxy.url("/"))
        .header("host", "other.localhost")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(r.text().await.unwrap(), "404 Not Found\n");
    let m = proxy.metrics_after(2.0).await;
    assert_eq!(
        metric_sum(&m, "switchyard_local_responses_total", &[("code", "404")]),
        1.0
    );
    let status = proxy.status().await;
    assert_eq!(status["unmatched_requests"], "404: no default_upstream");
    assert_eq!(status["routes"][0]["name"], "api");
}

/// Sends `target` raw and returns the status and, if forwarded, what the
/// recording backend received as the request target.
async fn raw(proxy: &TestProxy, backend: &RecordingBackend, target: &str) -> (u16, Option<String>) {
    let before = backend.requests().len();
    let bytes = format!("GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    let reply = wire::request(proxy.addr, target, bytes.as_bytes()).await;
    let forwarded = backend.requests().get(before).map(|r| r.target.clone());
    (reply.status.unwrap_or(0), forwarded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_means_one_thing_to_the_router_and_the_backend() {
    let public = RecordingBackend::start().await;
    let admin = RecordingBackend::start().await;
    let config = format!(
        "{}{}[[routes]]\npath_prefix = \"/public/\"\nupstream = \"public\"\n\
         [[routes]]\npath_prefix = \"/admin\"\nupstream = \"admin\"\n",
        upstream("public", &[public.addr]),
        upstream("admin", &[admin.addr]),
    );
    let proxy = TestProxy::start(&config).await;
    // Dot segments are removed, and routed on: the admin backend gets it,
    // with exactly the path it was routed on.
    let (status, got) = raw(&proxy, &admin, "/public/../admin/users?x=1").await;
    assert_eq!((status, got.as_deref()), (200, Some("/admin/users?x=1")));
    let (status, got) = raw(&proxy, &admin, "/public/%2e%2E/admin").await;
    assert_eq!((status, got.as_deref()), (200, Some("/admin")));
    // Unreserved characters are decoded, nothing else is merged.
    let (status, got) = raw(&proxy, &public, "/public/%7Euser//a%2Fb%41").await;
    assert_eq!(
        (status, got.as_deref()),
        (200, Some("/public/~user//a%2FbA"))
    );
    let (status, got) = raw(&proxy, &admin, "/%61dmin").await;
    assert_eq!((status, got.as_deref()), (200, Some("/admin")));
    // An encoded slash is not a separator: no dot segment to remove.
    let (status, got) = raw(&proxy, &public, "/public/..%2Fadmin").await;
    assert_eq!((status, got.as_deref()), (200, Some("/public/..%2Fadmin")));
    // Escaping the root, a NUL, a backslash: 400, nothing forwarded.
    for bad in [
        "/../admin",
        "/public/../../admin",
        "/public/%00",
        "/public\\..\\admin",
    ] {
        let before = public.requests().len() + admin.requests().len();
        let (status, _) = raw(&proxy, &public, bad).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(
            public.requests().len() + admin.requests().len(),
            before,
            "{bad}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_prefix_and_x_forwarded_prefix() {
    let api = RecordingBackend::start().await;
    let v2 = RecordingBackend::start().await;
    let config = format!(
        "{}{}[[routes]]\npath_prefix = \"/api/\"\nstrip_prefix = true\nupstream = \"api\"\n\
         [[routes]]\npath_prefix = \"/v2\"\nstrip_prefix = true\nupstream = \"v2\"\n",
        upstream("api", &[api.addr]),
        upstream("v2", &[v2.addr]),
    );
    let proxy = TestProxy::start(&config).await;
    let get = |path: &str| {
        let bytes = format!(
            "GET {path} HTTP/1.1\r\nHost: Shop.Example:8080\r\nX-Forwarded-Prefix: /evil\r\n\
             Connection: close\r\n\r\n"
        );
        let addr = proxy.addr;
        async move { wire::request(addr, "strip", bytes.as_bytes()).await.status }
    };
    for (path, backend, want) in [
        ("/api/users?id=7", &api, "/users?id=7"),
        ("/api/", &api, "/"),
        ("/v2", &v2, "/"),
        ("/v2/orders/1", &v2, "/orders/1"),
        ("/v2?q=1", &v2, "/?q=1"),
    ] {
        assert_eq!(get(path).await, Some(200), "{path}");
        let last = backend.requests().pop().expect("forwarded");
        assert_eq!(last.target, want, "{path}");
        let prefix = if path.starts_with("/api") {
            "/api"
        } else {
            "/v2"
        };
        assert_eq!(last.header("x-forwarded-prefix"), Some(prefix), "{path}");
        // Host reaches the backend as the client sent it.
        assert_eq!(last.header("host"), Some("Shop.Example:8080"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_agrees_with_real_requests_for_every_route() {
    let s = Services::start(&["api", "app", "canary", "static_files", "web"]).await;
    let table = "[[routes]]\nname = \"api\"\nhosts = [\"api.example.com\"]\nupstream = \"api\"\n\
                 [[routes]]\nname = \"static\"\npath_prefix = \"/static/\"\nstrip_prefix = true\n\
                 upstream = \"static_files\"\n\
                 [[routes]]\nname = \"canary\"\nhosts = [\"*.example.com\"]\n\
                 headers = { \"x-canary\" = \"1\" }\nupstream = \"canary\"\n\
                 [[routes]]\nname = \"web\"\nhosts = [\"*.example.com\"]\nupstream = \"web\"\n";
    let proxy = TestProxy::start_with(
        "default_upstream = \"app\"\n",
        &format!("{}{table}", s.upstreams()),
    )
    .await;
    // (host, path, header, the route that should take it; "" for none)
    type Case<'a> = (&'a str, &'a str, Option<(&'a str, &'a str)>, &'a str);
    let cases: [Case<'_>; 6] = [
        ("api.example.com", "/users", None, "api"),
        ("h", "/static/app.js", None, "static"),
        ("www.example.com", "/", Some(("x-canary", "1")), "canary"),
        ("www.example.com", "/", None, "web"),
        ("other", "/", None, ""),
        // A host route outranks any route without hosts, prefix or not.
        (
            "www.example.com",
            "/static/x",
            Some(("x-canary", "1")),
            "canary",
        ),
    ];
    for (host, path, header, route) in cases {
        let headers: Vec<(&str, &str)> = header.into_iter().collect();
        let answered = who(&proxy, host, path, &headers).await;
        let mut url = format!("/explain?host={host}&path={path}");
        if let Some((k, v)) = header {
            url += &format!("&header={k}:{v}");
        }
        let e = proxy.admin_json(&url).await;
        let upstream = e["upstream"]["name"].as_str().unwrap();
        assert_eq!(upstream, answered, "{host}{path}: {e:#}");
        if route.is_empty() {
            assert_eq!(e["route"], serde_json::Value::Null, "{e:#}");
            assert_eq!(e["decision"], "default_upstream: no route matches");
        } else {
            assert_eq!(e["route"], route, "{e:#}");
        }
        // Every route listed before the taken one says why it did not match.
        let listed = e["routes"].as_array().unwrap();
        for r in listed.iter().take_while(|r| r["verdict"] != "taken") {
            assert!(r["why"].as_str().is_some_and(|w| !w.is_empty()), "{r:#}");
        }
        let backends = e["upstream"]["backends"].as_array().unwrap();
        assert_eq!(backends[0]["state"], "healthy");
    }
    let e = proxy
        .admin_json("/explain?host=h&path=/static/a/../b?v=1")
        .await;
    assert_eq!(e["normalised_path"], "/static/b");
    assert_eq!(e["backend_path"], "/b?v=1");
    assert_eq!(e["forwarded_prefix"], "/static");
    let bad = proxy.admin_json("/explain?path=/../x").await;
    assert!(
        bad["decision"].as_str().unwrap().starts_with("400"),
        "{bad:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_keeps_its_route_and_a_retry_takes_the_new_upstream_of_its_name() {
    // `hang` takes the first request and holds it; dropping it closes the
    // connection before any answer, which a GET retries elsewhere.
    let hang = FaultyBackend::start(Fault::Hang).await;
    let (old, new) = (
        TestBackend::start("old", Behavior::Name).await,
        TestBackend::start("new", Behavior::Name).await,
    );
    let other = TestBackend::start("other", Behavior::Name).await;
    let routes = "[[routes]]\npath_prefix = \"/x\"\nupstream = \"app\"\n";
    let before = format!(
        "{}{}{routes}",
        upstream("app", &[hang.addr, old.addr]),
        upstream("other", &[other.addr])
    );
    let proxy = TestProxy::start_with("default_upstream = \"other\"\n", &before).await;
    let url = proxy.url("/x");
    let pending = tokio::spawn(async move { client().get(url).send().await.unwrap().text().await });
    crate::support::eventually("the request to reach `hang`", || async {
        (!hang.seen().is_empty()).then_some(())
    })
    .await;
    // The reload replaces `old` with `new` in upstream app.
    let after = format!(
        "{}{}{routes}",
        upstream("app", &[hang.addr, new.addr]),
        upstream("other", &[other.addr])
    );
    std::fs::write(&proxy.config, proxy.config_text(&after)).unwrap();
    let (status, _) = proxy.reload().await;
    assert_eq!(status, 200);
    drop(hang);
    let body = pending.await.unwrap().unwrap();
    assert_eq!(
        body.trim(),
        "new",
        "the retry chose from the new snapshot's app"
    );
    assert_eq!(old.received(), 0);
}
