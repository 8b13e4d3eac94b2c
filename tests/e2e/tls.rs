//! HTTPS for clients: the certificate each name gets (SNI, wildcards, the
//! default), what the backend is told, the redirect from plain HTTP, the
//! handshake metrics and what `/status` lists.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::support::proxy::{app, metric_sum};
use crate::support::tls::{self, Ca, Key};
use crate::support::{
    client, closed_port, eventually, temp_dir, Behavior, TestBackend, TestProxy, DEADLINE,
};

/// Three certificates, one per kind of key: `api.test` (ECDSA), every
/// `*.apps.test` (Ed25519), and `fallback.test` (RSA), the default.
struct Three {
    ca: Ca,
    files: Vec<(PathBuf, PathBuf)>,
}

fn three() -> Three {
    let ca = Ca::new();
    let dir = temp_dir("tls");
    let files = vec![
        ca.issue(&["api.test"], Key::P256).write(&dir, "api"),
        ca.issue(&["*.apps.test"], Key::Ed25519).write(&dir, "apps"),
        ca.issue(&["fallback.test"], Key::Rsa)
            .write(&dir, "fallback"),
    ];
    Three { ca, files }
}

async fn start(three: &Three, server: &str, backend: SocketAddr) -> (TestProxy, SocketAddr) {
    let https = closed_port();
    let default = format!(
        "default_certificate = {:?}\n",
        three.files[2].0.display().to_string()
    );
    let lines = format!("{server}{}", tls::section(https, &three.files, &default));
    let proxy = TestProxy::start_with(&lines, &app("", &[backend])).await;
    (proxy, https)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_name_gets_its_certificate_and_the_rest_the_default() {
    let three = three();
    let backend = TestBackend::start("a", Behavior::Name).await;
    let (proxy, https) = start(&three, "", backend.addr).await;
    let names = ["api.test", "x.apps.test", "fallback.test"];
    let resolve: Vec<(&str, SocketAddr)> = names.iter().map(|n| (*n, https)).collect();
    let trusting = tls::client(&three.ca, &resolve).build().unwrap();
    for (name, served) in [
        ("api.test", "api.test"),
        ("x.apps.test", "*.apps.test"),
        ("fallback.test", "fallback.test"),
    ] {
        let port = https.port();
        let r = trusting
            .get(format!("https://{name}:{port}/"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(r.status(), 200, "{name}");
        assert_eq!(tls::peer_names(&r), [served], "{name}");
    }

    // A name no certificate has, a wildcard one label too deep or too
    // shallow, and no SNI at all (an address): the default, which does
    // not name them, so only a client that checks nothing accepts it.
    let any = ["other.test", "a.b.apps.test", "apps.test"];
    let resolve: Vec<(&str, SocketAddr)> = any.iter().map(|n| (*n, https)).collect();
    let unchecked = tls::client(&three.ca, &resolve)
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    for url in any
        .iter()
        .map(|n| format!("https://{n}:{}/", https.port()))
        .chain([format!("https://{https}/")])
    {
        let r = unchecked.get(&url).send().await.unwrap();
        assert_eq!(tls::peer_names(&r), ["fallback.test"], "{url}");
    }
    let checking = tls::client(&three.ca, &resolve).build().unwrap();
    let refused = checking
        .get(format!("https://other.test:{}/", https.port()))
        .send()
        .await;
    assert!(refused.is_err(), "the default does not name other.test");

    // The proxy learns of the refusal from the client's alert, which may
    // arrive after the client has already reported its error.
    let m = handshakes_counted(&proxy, "failure", 1.0).await;
    let handshakes =
        |result| metric_sum(&m, "switchyard_tls_handshakes_total", &[("result", result)]);
    assert!(handshakes("success") >= 7.0, "{}", handshakes("success"));
    let expiry = |c| {
        metric_sum(
            &m,
            "switchyard_tls_certificate_expiry_timestamp_seconds",
            &[("certificate", c)],
        )
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for cert in ["api.test", "*.apps.test", "fallback.test"] {
        let days = (expiry(cert) - now) / 86400.0;
        assert!(
            (364.0..=366.0).contains(&days),
            "{cert} expires in {days} days"
        );
    }

    let status = proxy.status().await;
    let certs = status["tls"]["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 3);
    assert_eq!(certs[1]["names"][0], "*.apps.test");
    assert_eq!(certs[1]["cert"], three.files[1].0.display().to_string());
    assert_eq!(certs[1]["expires_within_14_days"], false);
    assert!(certs[1]["not_after"].as_str().unwrap().len() >= 20);
    assert!(certs[1]["loaded_at"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_is_told_https_and_responses_carry_hsts() {
    let three = three();
    let backend = TestBackend::start("a", Behavior::Name).await;
    let hsts = "hsts = \"max-age=31536000; includeSubDomains\"\n";
    let https = closed_port();
    let lines = tls::section(https, &three.files, hsts);
    let proxy = TestProxy::start_with(&lines, &app("", &[backend.addr])).await;
    let trusting = tls::client(&three.ca, &[("api.test", https)])
        .build()
        .unwrap();
    let r = trusting
        .get(format!("https://api.test:{}/", https.port()))
        .header("x-forwarded-proto", "http")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    let plain = client().get(proxy.url("/")).send().await.unwrap();
    assert!(plain.headers().get("strict-transport-security").is_none());
    let seen = backend.headers();
    assert_eq!(
        seen[0]["x-forwarded-proto"], "https",
        "what the client claimed is replaced"
    );
    assert_eq!(
        seen[0]["x-forwarded-host"],
        format!("api.test:{}", https.port())
    );
    assert_eq!(seen[1]["x-forwarded-proto"], "http");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_requests_are_redirected_to_the_same_url_on_https() {
    let three = three();
    let backend = TestBackend::start("a", Behavior::Name).await;
    let (proxy, https) = start(&three, "redirect_https = true\n", backend.addr).await;
    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects
        .post(proxy.url("/cart/add?item=7"))
        .header("host", "api.test:8080")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308, "a 308 keeps the method and body");
    assert_eq!(
        r.headers()["location"],
        format!("https://api.test:{}/cart/add?item=7", https.port())
    );
    assert_eq!(backend.received(), 0);

    // Followed, with the client's own redirect handling: served over TLS.
    let following = tls::client(&three.ca, &[("api.test", https)])
        .build()
        .unwrap();
    let r = following
        .get(format!("http://api.test:{}/x", proxy.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.url().as_str(),
        format!("https://api.test:{}/x", https.port())
    );
    assert_eq!(backend.headers()[0]["x-forwarded-proto"], "https");

    // The admin port is not redirected.
    let health = client()
        .get(proxy.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_handshakes_are_counted_and_min_version_holds() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let three = three();
    let backend = TestBackend::start("a", Behavior::Name).await;
    let https = closed_port();
    let lines = tls::section(https, &three.files, "min_version = \"1.3\"\n");
    let proxy = TestProxy::start_with(&lines, &app("", &[backend.addr])).await;

    // Plain HTTP on the TLS port: no handshake, the connection closes.
    let mut raw = tokio::net::TcpStream::connect(https).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = raw.read_to_end(&mut answer).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    let old = tls::client(&three.ca, &[("api.test", https)])
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    let url = format!("https://api.test:{}/", https.port());
    assert!(
        old.get(&url).send().await.is_err(),
        "TLS 1.2 is below min_version"
    );
    let new = tls::client(&three.ca, &[("api.test", https)])
        .build()
        .unwrap();
    assert_eq!(new.get(&url).send().await.unwrap().status(), 200);

    let m = handshakes_counted(&proxy, "failure", 2.0).await;
    let handshakes =
        |result| metric_sum(&m, "switchyard_tls_handshakes_total", &[("result", result)]);
    assert_eq!(handshakes("failure"), 2.0);
    assert_eq!(handshakes("success"), 1.0);
}

/// The metrics once `switchyard_tls_handshakes_total{result}` has reached
/// `at_least`: a failed handshake is counted when the proxy sees it fail,
/// which can be just after the client has.
async fn handshakes_counted(
    proxy: &TestProxy,
    result: &str,
    at_least: f64,
) -> prometheus_parse::Scrape {
    eventually("the handshake count", || async {
        let m = proxy.metrics().await;
        let n = metric_sum(&m, "switchyard_tls_handshakes_total", &[("result", result)]);
        (n >= at_least).then_some(m)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_is_closed_at_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let three = three();
    let backend = TestBackend::start("a", Behavior::Name).await;
    let https = closed_port();
    let lines = format!(
        "header_timeout = \"300ms\"\n{}",
        tls::section(https, &three.files, "")
    );
    let proxy = TestProxy::start_with(&lines, &app("", &[backend.addr])).await;
    // The first bytes of a ClientHello's record, and then nothing.
    let mut raw = tokio::net::TcpStream::connect(https).await.unwrap();
    raw.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(DEADLINE, raw.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection was left open");
    let m = handshakes_counted(&proxy, "failure", 1.0).await;
    let failed = metric_sum(
        &m,
        "switchyard_tls_handshakes_total",
        &[("result", "failure")],
    );
    assert_eq!(failed, 1.0);
    eventually("the stalled connection to be let go", || async {
        let m = proxy.metrics().await;
        (metric_sum(&m, "switchyard_client_connections", &[]) == 0.0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connection_over_max_connections_is_closed_before_the_handshake() {
    use tokio::io::AsyncWriteExt;
    let three = three();
    let backend = TestBackend::start("a", Behavior::Name).await;
    let https = closed_port();
    let lines = format!(
        "max_connections = 1\n{}",
        tls::section(https, &three.files, "")
    );
    let proxy = TestProxy::start_with(&lines, &app("", &[backend.addr])).await;
    let counted = |n: f64| {
        let proxy = &proxy;
        async move {
            eventually(&format!("{n} open connections"), || async {
                let m = proxy.metrics().await;
                (metric_sum(&m, "switchyard_client_connections", &[]) == n).then_some(())
            })
            .await
        }
    };
    counted(0.0).await;
    // One kept-alive plain connection fills the cap.
    let mut held = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    held.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (status, _) = crate::support::wire::read_response(&mut held, &mut Vec::new())
        .await
        .unwrap();
    assert_eq!(status, 200);
    counted(1.0).await;

    let http = tls::client(&three.ca, &[("api.test", https)])
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let url = format!("https://api.test:{}/", https.port());
    assert!(
        http.get(&url).send().await.is_err(),
        "no room: no handshake"
    );
    let m = proxy.metrics().await;
    let refused = metric_sum(&m, "switchyard_client_connections_refused_total", &[]);
    assert_eq!(refused, 1.0);
    let handshakes = metric_sum(&m, "switchyard_tls_handshakes_total", &[]);
    assert_eq!(handshakes, 0.0, "none was begun");

    drop(held);
    counted(0.0).await;
    assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
}
