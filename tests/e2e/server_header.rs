//! `[server] server_header`: every response the proxy makes itself says
//! it, Pingora's own 400 for a head it cannot parse included (never
//! `Server: Pingora`); `""` means none; a backend's answer keeps the
//! backend's own `Server`.

use std::net::SocketAddr;

use crate::support::raw::{RawBackend, Then};
use crate::support::wire::{request, two_answers};
use crate::support::{client, closed_port, h2c_client, TestProxy};

const BACKEND_REPLY: &[u8] =
    b"HTTP/1.1 200 OK\r\nServer: backend/7\r\nContent-Length: 3\r\n\r\nok\n";

const LIMITS: &str = "max_header_bytes = 2048\nmax_headers = 20\nmax_uri_bytes = 256\n\
                      max_body_bytes = 100\n";

/// Routes to a backend that answers, one refusing connections (502), one
/// never answering (504, and without a deadline to speak of as `sink`)
/// and one held unhealthy (503); anything else 404.
fn upstreams(ok: SocketAddr, slow: SocketAddr) -> String {
    let dead = closed_port();
    format!(
        "[[routes]]\npath_prefix = \"/ok\"\nupstream = \"ok\"\n\
         [[routes]]\npath_prefix = \"/dead\"\nupstream = \"dead\"\n\
         [[routes]]\npath_prefix = \"/slow\"\nupstream = \"slow\"\n\
         [[routes]]\npath_prefix = \"/down\"\nupstream = \"down\"\n\
         [[routes]]\npath_prefix = \"/sink\"\nupstream = \"sink\"\n\
         [upstreams.ok]\nread_timeout = \"30s\"\nbackends = [\"{ok}\"]\n\
         [upstreams.dead]\nretries = 0\nbackends = [\"{dead}\"]\n\
         [upstreams.slow]\nread_timeout = \"300ms\"\nbackends = [\"{slow}\"]\n\
         [upstreams.sink]\nread_timeout = \"30s\"\nbackends = [\"{slow}\"]\n\
         [upstreams.down]\nbackends = [\"{dead}\"]\n\
         [upstreams.down.health_check]\ntype = \"tcp\"\ninterval = \"1h\"\n\
         initial_state = \"unhealthy\"\n"
    )
}

/// Each case's name, bytes and the status it must get.
fn cases() -> Vec<(&'static str, Vec<u8>, u16)> {
    let get = |target: &str, extra: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: a\r\n{extra}\r\n").into_bytes()
    };
    let many: String = (0..25).map(|i| format!("X-H{i}: v\r\n")).collect();
    vec![
        ("a backend's answer", get("/ok", ""), 200),
        ("no route", get("/nowhere", ""), 404),
        ("backend refusing", get("/dead", ""), 502),
        ("no healthy backend", get("/down", ""), 503),
        ("backend silent", get("/slow", ""), 504),
        (
            "unparsable head (Pingora's 400)",
            b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            400,
        ),
        ("no Host", b"GET /ok HTTP/1.1\r\n\r\n".to_vec(), 400),
        (
            "malformed chunked body",
            b"POST /sink HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;ext=1\nhello\r\n0\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            "CONNECT",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n".to_vec(),
            405,
        ),
        (
            "body too large",
            get("/ok", "Content-Length: 101\r\n")
                .into_iter()
                .chain([b'x'; 101])
                .collect(),
            413,
        ),
        (
            "target too long",
            get(&format!("/ok/{}", "u".repeat(300)), ""),
            414,
        ),
        ("too many headers", get("/ok", &many), 431),
    ]
}

/// Runs every case against a proxy started with `setting` and checks each
/// local answer says `expected` (`None`: no `Server` at all).
async fn check(setting: &str, expected: Option<&str>) {
    let ok = RawBackend::start(BACKEND_REPLY, Then::Hang).await;
    let slow = RawBackend::start(b"", Then::Hang).await;
    let server = format!("{LIMITS}{setting}");
    let proxy = TestProxy::start_with(&server, &upstreams(ok.addr, slow.addr)).await;
    let mut failed = Vec::new();
    for (name, bytes, status) in cases() {
        let reply = request(proxy.addr, name, &bytes).await;
        let servers: Vec<&str> = reply
            .head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.eq_ignore_ascii_case("server"))
            .map(|(_, v)| v.trim())
            .collect();
        let want: Vec<&str> = match status {
            200 => vec!["backend/7"],
            _ => expected.into_iter().collect(),
        };
        if reply.status != Some(status) || servers != want {
            failed.push(format!(
                "{name}: {:?} {servers:?}, want {status} {want:?}",
                reply.status
            ));
        }
    }
    let admin = client()
        .get(proxy.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    let admin_server = admin.headers().get("server").map(|v| v.to_str().unwrap());
    if admin_server != expected {
        failed.push(format!("admin: {admin_server:?}"));
    }
    assert!(
        failed.is_empty(),
        "with {setting:?}:\n{}",
        failed.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_answers_say_switchyard_by_default() {
    check("", Some("switchyard")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_answers_say_the_configured_server() {
    check(
        "server_header = \"edge/1.0 (test)\"\n",
        Some("edge/1.0 (test)"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_server_header_sends_none() {
    check("server_header = \"\"\n", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_answers_say_it_and_a_reload_changes_it() {
    let ok = RawBackend::start(BACKEND_REPLY, Then::Hang).await;
    let slow = RawBackend::start(b"", Then::Hang).await;
    let server = "h2c = true\nserver_header = \"one\"\n";
    let proxy = TestProxy::start_with(server, &upstreams(ok.addr, slow.addr)).await;
    let h2 = h2c_client();
    let server_of = |r: &reqwest::Response| {
        let v = r
            .headers()
            .get("server")
            .map(|v| v.to_str().unwrap().to_string());
        (r.status().as_u16(), v)
    };
    let r = h2.get(proxy.url("/nowhere")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(server_of(&r), (404, Some("one".into())));
    let r = h2.get(proxy.url("/dead")).send().await.unwrap();
    assert_eq!(server_of(&r), (502, Some("one".into())));

    let text = std::fs::read_to_string(&proxy.config).unwrap();
    std::fs::write(&proxy.config, text.replace("\"one\"", "\"two\"")).unwrap();
    let (status, answer) = proxy.reload().await;
    assert_eq!(status, 200, "{answer:#}");
    let r = client().get(proxy.url("/nowhere")).send().await.unwrap();
    assert_eq!(server_of(&r), (404, Some("two".into())));
    let reply = request(
        proxy.addr,
        "Pingora's 400",
        b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert!(reply.head.contains("\r\nServer: two\r\n"), "{}", reply.head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pingoras_400_for_a_pipelined_head_says_it_too() {
    let ok = RawBackend::start(BACKEND_REPLY, Then::Hang).await;
    let slow = RawBackend::start(b"", Then::Hang).await;
    let proxy = TestProxy::start_with("", &upstreams(ok.addr, slow.addr)).await;
    let both = b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\nG@T / HTTP/1.1\r\nHost: a\r\n\r\n";
    let (first, head) = two_answers(proxy.addr, both).await;
    assert_eq!(first, 200);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(head.contains("\r\nServer: switchyard\r\n"), "{head}");
    assert!(!head.contains("Pingora"), "{head}");
}
