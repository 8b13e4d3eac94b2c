//! `[server]` request limits: a long target gets 414, too many or too
//! large headers 431, a body too large 413 (declared or counted as it
//! arrives); each answer closes the connection, and nothing of the refused
//! request reaches the backend complete.

use crate::support::wire::exchange;
use crate::support::{RecordingBackend, TestProxy};

const LIMITS: &str = "max_header_bytes = 2048\nmax_headers = 20\nmax_uri_bytes = 256\n\
                      max_body_bytes = 100\n";

async fn start() -> (RecordingBackend, TestProxy) {
    let backend = RecordingBackend::start().await;
    let upstream = format!("[upstreams.app]\nbackends = [\"{}\"]\n", backend.addr);
    let proxy = TestProxy::start_with(LIMITS, &upstream).await;
    (backend, proxy)
}

fn request(target: &str, extra: &str, body: &str) -> Vec<u8> {
    format!("POST {target} HTTP/1.1\r\nHost: app\r\n{extra}\r\n{body}").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_limits_are_refused_and_closed() {
    let (backend, proxy) = start().await;
    let many: String = (0..25).map(|i| format!("X-H{i}: v\r\n")).collect();
    let big = format!("X-Big: {}\r\n", "b".repeat(3000));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "long target",
            request(
                &format!("/{}", "u".repeat(300)),
                "Content-Length: 0\r\n",
                "",
            ),
            414,
        ),
        (
            "too many headers",
            request("/", &format!("{many}Content-Length: 0\r\n"), ""),
            431,
        ),
        (
            "header too large",
            request("/", &format!("{big}Content-Length: 0\r\n"), ""),
            431,
        ),
        (
            "declared body too large",
            request("/", "Content-Length: 101\r\n", &"x".repeat(101)),
            413,
        ),
    ];
    for (name, bytes, status) in cases {
        let got = exchange(proxy.addr, name, &bytes).await;
        assert_eq!(got.status, Some(status), "{name}");
        assert!(got.closed, "{name}: the connection must close");
    }
    assert!(backend.requests().is_empty(), "{:?}", backend.requests());

    // Just inside every limit: forwarded.
    let fine = request(
        &format!("/{}", "u".repeat(200)),
        "Content-Length: 100\r\n",
        &"x".repeat(100),
    );
    let got = exchange(proxy.addr, "inside the limits", &fine).await;
    assert_eq!(got.status, Some(200));
    // (The exchange follows up with a probe request, forwarded too.)
    let first = &backend.requests()[0];
    assert_eq!((first.target.len(), first.body.len()), (201, 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_is_counted_as_it_arrives() {
    let (backend, proxy) = start().await;
    let chunk = "x".repeat(60);
    let body = format!("3c\r\n{chunk}\r\n3c\r\n{chunk}\r\n0\r\n\r\n");
    let bytes = request("/upload", "Transfer-Encoding: chunked\r\n", &body);
    let got = exchange(proxy.addr, "chunked body too large", &bytes).await;
    assert_eq!(got.status, Some(413));
    assert!(got.closed);
    // The backend may have seen the head, never a complete request.
    assert!(backend.requests().is_empty(), "{:?}", backend.requests());
}
