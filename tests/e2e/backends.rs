//! Broken backends, one case each: what the client sees (a clean 502 or 504
//! while nothing was sent, an aborted connection once the head was), and
//! that the connection that failed is never used again: the next request
//! reaches the backend on a new connection.

use crate::support::faulty::{Fault, FaultyBackend};
use crate::support::wire::{header, request, Reply};
use crate::support::{closed_port, TestProxy};

/// One attempt, and a short wait for a head.
const SETTINGS: &str = "retries = 0\nread_timeout = \"500ms\"\n";

/// A GET that leaves the proxy free to keep its backend connection.
const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n";

/// Sends a GET to a proxy in front of a backend with `fault`, then a good
/// GET, and returns what the client saw of the first. Asserts that the
/// good one came on a connection the backend had not used before.
async fn first_then_good(fault: Fault) -> Reply {
    let backend = FaultyBackend::start(fault).await;
    let proxy = TestProxy::start_app(SETTINGS, &[backend.addr]).await;
    let reply = request(proxy.addr, &format!("{fault:?}"), GET).await;
    proxy.wait_idle(&[backend.addr]).await;
    backend.set(Fault::Normal);
    let good = request(proxy.addr, "the good request", GET).await;
    assert_eq!(good.status, Some(200), "{fault:?}, then: {good:?}");
    let seen = backend.seen();
    let last = seen.last().expect("the good request was seen");
    assert!(
        seen[..seen.len() - 1]
            .iter()
            .all(|s| s.connection != last.connection),
        "{fault:?}: the failed connection was used again: {seen:?}"
    );
    reply
}

/// Asserts a local answer with `status`, complete, from the proxy.
fn assert_local(reply: &Reply, status: u16) {
    assert_eq!(reply.status, Some(status), "{reply:?}");
    assert!(reply.complete, "{reply:?}");
    let body = String::from_utf8_lossy(&reply.body);
    assert!(body.starts_with(&status.to_string()), "{reply:?}");
}

/// Asserts a `200` head followed by a body that ends before its end.
fn assert_cut(reply: &Reply) {
    assert_eq!(reply.status, Some(200), "{reply:?}");
    assert!(!reply.complete, "a cut body looks complete: {reply:?}");
    assert_eq!(reply.body, b"0123456789", "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_connection_is_reused() {
    // The check every case below relies on: without a failure, the second
    // request comes on the first one's connection.
    let backend = FaultyBackend::start(Fault::Normal).await;
    let proxy = TestProxy::start_app(SETTINGS, &[backend.addr]).await;
    for _ in 0..2 {
        assert_eq!(request(proxy.addr, "good", GET).await.status, Some(200));
        proxy.wait_idle(&[backend.addr]).await;
    }
    let connections: Vec<usize> = backend.seen().iter().map(|s| s.connection).collect();
    assert_eq!(connections, [0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_gives_502() {
    let proxy = TestProxy::start_app(SETTINGS, &[closed_port()]).await;
    assert_local(&request(proxy.addr, "refused", GET).await, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_before_the_head_gives_502() {
    assert_local(&first_then_good(Fault::ResetBeforeHead).await, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_before_the_head_gives_502() {
    assert_local(&first_then_good(Fault::CloseBeforeHead).await, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_whose_backend_closes_without_answering_is_retried() {
    let closer = FaultyBackend::start(Fault::CloseBeforeHead).await;
    let good = FaultyBackend::start(Fault::Normal).await;
    let proxy = TestProxy::start_app("retries = 1\n", &[closer.addr, good.addr]).await;
    // Rotation starts with `closer`.
    let reply = request(proxy.addr, "retried", GET).await;
    assert_eq!(reply.status, Some(200), "{reply:?}");
    assert_eq!(reply.body, b"ok\n");
    assert_eq!(closer.seen().len(), 1);
    assert_eq!(good.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_after_a_length_framed_head_aborts_the_response() {
    assert_cut(&first_then_good(Fault::ResetAfterHead).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_mid_chunks_aborts_the_response() {
    assert_cut(&first_then_good(Fault::ResetMidChunks).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_mid_unframed_body_aborts_the_response() {
    assert_cut(&first_then_good(Fault::ResetMidUnframed).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_status_line_gives_502() {
    assert_local(&first_then_good(Fault::GarbageStatus).await, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_content_lengths_give_502() {
    assert_local(&first_then_good(Fault::ConflictingLengths).await, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_chunked_is_framed_once_by_chunks() {
    // RFC 9112 section 6.3: chunked overrides the length, and a proxy that
    // forwards such a response must drop the length first. The client gets
    // one framing. (Pingora drops the length before any hook runs, so
    // Switchyard cannot tell this response from a plain chunked one.)
    let backend = FaultyBackend::start(Fault::LengthAndChunked).await;
    let proxy = TestProxy::start_app(SETTINGS, &[backend.addr]).await;
    let reply = request(proxy.addr, "CL and TE", GET).await;
    assert_eq!(reply.status, Some(200), "{reply:?}");
    assert_eq!(header(&reply.head, "content-length"), None, "{reply:?}");
    assert_eq!(
        header(&reply.head, "transfer-encoding").as_deref(),
        Some("chunked")
    );
    assert!(reply.complete, "{reply:?}");
    assert_eq!(reply.body, b"hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsolicited_101_gives_502() {
    assert_local(&first_then_good(Fault::Switch).await, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_response_head_gives_502() {
    assert_local(&first_then_good(Fault::HugeHead).await, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_hangs_gives_504() {
    assert_local(&first_then_good(Fault::Hang).await, 504);
}
