//! TLS to backends: the right CA and SNI work, over HTTP/1.1 and HTTP/2 by
//! ALPN; a wrong CA or name fails cleanly (502, counted as `tls`, ejected);
//! a client certificate for backends that ask for one; `verify = false`
//! warned about; and every bad file an error at its key.

use std::net::SocketAddr;
use std::path::Path;

use switchyard::config::parse;

use crate::support::h2backend::H2Backend;
use crate::support::proxy::metric_sum;
use crate::support::tls::{Ca, Key};
use crate::support::{client, eventually, temp_dir, TestProxy};

/// `[upstreams.NAME]` over TLS to `backend`, with these TLS lines and
/// upstream lines.
fn tls_upstream(name: &str, backend: SocketAddr, upstream: &str, tls: &str) -> String {
    format!(
        "[upstreams.{name}]\nbackends = [\"{backend}\"]\n{upstream}[upstreams.{name}.tls]\n{tls}"
    )
}

fn route(header: &str, upstream: &str) -> String {
    format!("[[routes]]\nheaders = {{ x-to = \"{header}\" }}\nupstream = \"{upstream}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_ca_and_name_work_and_a_wrong_one_fails_cleanly() {
    let (ca, other) = (Ca::new(), Ca::new());
    let leaf = ca.issue(&["backend.test"], Key::P256);
    let backend = H2Backend::start_tls("tls", &leaf.cert, &leaf.key, None).await;
    let dir = temp_dir("upstream-tls");
    std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
    std::fs::write(dir.join("other.pem"), &other.pem).unwrap();
    let ca_file = dir.join("ca.pem").display().to_string();
    let other_file = dir.join("other.pem").display().to_string();
    let trusted = format!("sni = \"backend.test\"\nca = \"{ca_file}\"\n");
    let eject = "[upstreams.BAD.passive_health_check]\nconsecutive_failures = 1\n";
    let upstreams = [
        tls_upstream("h1", backend.addr, "", &trusted),
        tls_upstream("h2", backend.addr, "protocol = \"http2\"\n", &trusted),
        tls_upstream(
            "wrongca",
            backend.addr,
            "",
            &format!(
                "sni = \"backend.test\"\nca = \"{other_file}\"\n{}",
                eject.replace("BAD", "wrongca")
            ),
        ),
        tls_upstream(
            "wrongname",
            backend.addr,
            "",
            &format!("sni = \"other.test\"\nca = \"{ca_file}\"\n"),
        ),
        route("h2", "h2"),
        route("wrongca", "wrongca"),
        route("wrongname", "wrongname"),
    ]
    .concat();
    let proxy = TestProxy::start_with("default_upstream = \"h1\"\n", &upstreams).await;
    let url = format!("http://{}/", proxy.addr);
    let get = |to: &'static str| client().get(&url).header("x-to", to).send();

    let r = get("h1").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "tls HTTP/1.1 te= len=0");
    let r = get("h2").await.unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        "tls HTTP/2.0 te= len=0",
        "ALPN chose h2"
    );

    let r = get("wrongca").await.unwrap();
    assert_eq!(r.status(), 502);
    let r = get("wrongname").await.unwrap();
    assert_eq!(r.status(), 502);
    let m = proxy.metrics().await;
    let tls_failures = |u: &str| {
        metric_sum(
            &m,
            "switchyard_upstream_failures_total",
            &[("upstream", u), ("kind", "tls")],
        )
    };
    assert_eq!(tls_failures("wrongca"), 1.0);
    assert_eq!(tls_failures("wrongname"), 1.0);
    assert_eq!(tls_failures("h1"), 0.0);
    let status = proxy.status().await;
    let wrongca = status["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "wrongca")
        .unwrap();
    let b = &wrongca["backends"][0];
    assert_eq!(b["state"], "ejected", "{b}");
    assert!(b.to_string().contains("TLS handshake failure"), "{b}");
    // Only the handshakes that succeeded reached the backend.
    assert_eq!(backend.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_for_a_backend_that_asks_for_one() {
    let ca = Ca::new();
    let leaf = ca.issue(&["backend.test"], Key::P256);
    let backend = H2Backend::start_tls("mtls", &leaf.cert, &leaf.key, Some(&ca.pem)).await;
    let dir = temp_dir("upstream-mtls");
    std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
    let (cert, key) = ca
        .issue(&["switchyard.test"], Key::Ed25519)
        .write(&dir, "client");
    let ca_file = dir.join("ca.pem").display().to_string();
    let base = format!("sni = \"backend.test\"\nca = \"{ca_file}\"\n");
    let with_cert = format!(
        "{base}cert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let upstreams = [
        tls_upstream("with", backend.addr, "", &with_cert),
        tls_upstream("without", backend.addr, "", &base),
        route("without", "without"),
    ]
    .concat();
    let proxy = TestProxy::start_with("default_upstream = \"with\"\n", &upstreams).await;
    let url = format!("http://{}/", proxy.addr);
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "mtls HTTP/1.1 te= len=0");
    let r = client()
        .get(&url)
        .header("x-to", "without")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502, "the backend refuses a client without one");
    // TLS 1.3 refuses the certificate after the client's side of the
    // handshake is done: still a TLS failure, not a reset.
    let m = eventually("the failure to be counted", || async {
        let m = proxy.metrics().await;
        let all = metric_sum(
            &m,
            "switchyard_upstream_failures_total",
            &[("upstream", "without")],
        );
        (all > 0.0).then_some(m)
    })
    .await;
    let kind = |k| {
        metric_sum(
            &m,
            "switchyard_upstream_failures_total",
            &[("upstream", "without"), ("kind", k)],
        )
    };
    assert_eq!(
        (kind("tls"), kind("reset"), kind("protocol")),
        (1.0, 0.0, 0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reads_a_replaced_ca_file_even_when_the_config_is_unchanged() {
    let (ca, other) = (Ca::new(), Ca::new());
    let leaf = ca.issue(&["backend.test"], Key::P256);
    let backend = H2Backend::start_tls("tls", &leaf.cert, &leaf.key, None).await;
    let dir = temp_dir("upstream-ca-reload");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &other.pem).unwrap();
    let tls = format!("sni = \"backend.test\"\nca = \"{}\"\n", ca_file.display());
    let eject = "[upstreams.app.passive_health_check]\nconsecutive_failures = 0\n";
    let upstream = format!("{}{eject}", tls_upstream("app", backend.addr, "", &tls));
    let proxy = TestProxy::start_with("watch_config = false\n", &upstream).await;
    let url = format!("http://{}/", proxy.addr);
    assert_eq!(client().get(&url).send().await.unwrap().status(), 502);
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let (code, answer) = proxy.reload().await;
    assert_eq!(code, 200, "{answer}");
    assert!(answer.to_string().contains("tls"), "{answer}");
    assert_eq!(client().get(&url).send().await.unwrap().status(), 200);
}

#[test]
fn bad_tls_files_and_keys_are_errors_where_written_and_verify_off_is_a_warning() {
    let ca = Ca::new();
    let dir = temp_dir("upstream-tls-config");
    std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
    std::fs::write(dir.join("junk.pem"), "not a certificate").unwrap();
    let (cert, _) = ca.issue(&["c.test"], Key::P256).write(&dir, "client");
    let (_, other_key) = ca.issue(&["d.test"], Key::P256).write(&dir, "other");
    let head = "[upstreams.app]\nbackends = [\"127.0.0.1:3001\"]\n[upstreams.app.tls]\n";
    let path = dir.join("proxy.toml");
    let load = |tls: &str| parse(&path, &format!("{head}{tls}"));
    let cases = [
        ("ca = \"missing.pem\"\n", 4, "missing.pem: cannot read it"),
        ("ca = \"junk.pem\"\n", 4, "junk.pem: no PEM certificate"),
        (
            &format!("cert = \"{}\"\n", cert.display()),
            4,
            "missing key `key`",
        ),
        (
            &format!(
                "cert = \"{}\"\nkey = \"{}\"\n",
                cert.display(),
                other_key.display()
            ),
            5,
            "does not belong to the certificate",
        ),
        ("sni = \"not a name\"\n", 4, "bad sni"),
        ("verify = \"no\"\n", 4, "bool"),
    ];
    let grpc_on_http1 = parse(
        &path,
        "[upstreams.app]\nbackends = [\"127.0.0.1:3001\"]\n[upstreams.app.health_check]\ntype = \"grpc\"\n",
    )
    .expect_err("a grpc check needs http2");
    let text = grpc_on_http1.to_string();
    assert!(
        text.contains(":4:") && text.contains("protocol = \"http2\""),
        "{text}"
    );
    let dns_without_sni = parse(
        &path,
        "[upstreams.app]\nbackends = [{ address = \"app.internal:443\", resolve = true }]\n\
         [upstreams.app.tls]\nverify = true\n",
    )
    .expect_err("backends from DNS need sni");
    assert!(
        dns_without_sni.to_string().contains("`sni`"),
        "{dns_without_sni}"
    );
    for (tls, line, says) in cases {
        let e = load(tls).expect_err(tls);
        let text = e.to_string();
        assert!(text.contains(says), "{tls}: {text}");
        assert_eq!(
            e.position.as_ref().map(|p| p.line),
            Some(line),
            "{tls}: {text}"
        );
    }
    // Relative to the config's directory, and read at load.
    let ok = load("ca = \"ca.pem\"\n").unwrap();
    let tls = ok.upstreams[0].tls.as_ref().unwrap();
    assert_eq!(tls.ca.as_ref().unwrap().certs.len(), 1);
    assert!(tls.verify);
    let off = load("verify = false\n").unwrap();
    let warned = off
        .warnings
        .iter()
        .map(|w| w.to_string())
        .collect::<Vec<_>>();
    assert!(
        warned.iter().any(|w| w.contains("verify = false")),
        "{warned:?}"
    );
    let e = parse(
        Path::new("proxy.toml"),
        "[upstreams.app]\nbackends = [\"127.0.0.1:3001\"]\nmax_streams_per_connection = 5\n",
    )
    .expect_err("http1 has no streams");
    assert!(e.to_string().contains("protocol = \"http2\""), "{e}");
}
