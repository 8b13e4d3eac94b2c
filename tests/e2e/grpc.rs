//! gRPC through Switchyard with real tonic clients and servers over h2c:
//! calls balanced one by one over one client connection, streams holding
//! their backend, metadata and trailers intact, the proxy's own errors as
//! gRPC statuses, deadlines, and the gRPC health check.

use std::collections::HashMap;
use std::time::Duration;

use tonic::Code;

use crate::support::grpc::{raw_call, request, silent_backend, upstream, EchoClient, GrpcBackend};
use crate::support::proxy::metric_sum;
use crate::support::{closed_port, eventually, TestProxy};

const H2C: &str = "h2c = true\n";

async fn three() -> Vec<GrpcBackend> {
    vec![
        GrpcBackend::start("g0").await,
        GrpcBackend::start("g1").await,
        GrpcBackend::start("g2").await,
    ]
}

fn grpc_count(m: &prometheus_parse::Scrape, status: &str) -> f64 {
    metric_sum(
        m,
        "switchyard_grpc_responses_total",
        &[("grpc_status", status)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_on_one_channel_spread_over_every_backend_with_metadata_and_trailers() {
    let backends = three().await;
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let proxy = TestProxy::start_with(H2C, &upstream("app", &addrs, "")).await;
    let mut client = EchoClient::connect(proxy.addr).await;

    let mut by_backend: HashMap<String, usize> = HashMap::new();
    for i in 0..30 {
        let resp = client.unary(request(&format!("hello {i}"))).await.unwrap();
        let echo = resp
            .metadata()
            .get("x-custom-echo")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(
            echo.as_deref(),
            Some("from-the-client"),
            "metadata to and fro"
        );
        let reply = resp.into_inner();
        assert_eq!(reply.message, format!("hello {i}"));
        *by_backend.entry(reply.backend).or_default() += 1;
    }
    for b in &backends {
        assert_eq!(by_backend.get(&b.name), Some(&10), "{by_backend:?}");
        assert_eq!(b.calls(), 10);
    }

    // Server streams: every reply, in order, from one backend, then the
    // trailers (a clean end, or a status with trailing metadata).
    let mut streamed: HashMap<String, usize> = HashMap::new();
    for _ in 0..6 {
        let mut req = request("stream");
        req.get_mut().count = 3;
        let mut stream = client.stream(req).await.unwrap().into_inner();
        let mut seen = Vec::new();
        while let Some(reply) = stream.message().await.unwrap() {
            seen.push((reply.index, reply.backend));
        }
        assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(seen.iter().all(|s| s.1 == seen[0].1), "{seen:?}");
        *streamed.entry(seen[0].1.clone()).or_default() += 1;
    }
    assert_eq!(streamed.len(), 3, "{streamed:?}");
    let mut req = request("stream then fail");
    req.get_mut().count = 2;
    req.get_mut().fail_code = Code::AlreadyExists as i32;
    let mut stream = client.stream(req).await.unwrap().into_inner();
    assert!(stream.message().await.unwrap().is_some());
    assert!(stream.message().await.unwrap().is_some());
    let status = stream.message().await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert_eq!(status.message(), "asked to fail");
    assert_eq!(
        status
            .metadata()
            .get("x-trailer")
            .map(|v| v.to_str().unwrap()),
        Some("t"),
        "trailing metadata passes"
    );
    // A trailers-only error from the backend.
    let mut req = request("fail");
    req.get_mut().fail_code = Code::AlreadyExists as i32;
    let status = client.unary(req).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");

    let m = eventually("every call to be counted", || async {
        let m = proxy.metrics().await;
        (grpc_count(&m, "OK") + grpc_count(&m, "ALREADY_EXISTS") == 38.0).then_some(m)
    })
    .await;
    assert_eq!(grpc_count(&m, "OK"), 36.0);
    assert_eq!(grpc_count(&m, "ALREADY_EXISTS"), 2.0);
    let by_protocol = metric_sum(
        &m,
        "switchyard_requests_by_protocol_total",
        &[("protocol", "h2")],
    );
    assert_eq!(by_protocol, 38.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_stream_holds_its_backend_for_least_connections() {
    let backends = three().await;
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let settings = "balance = \"least_connections\"\n";
    let proxy = TestProxy::start_with(H2C, &upstream("app", &addrs, settings)).await;
    let mut client = EchoClient::connect(proxy.addr).await;
    let mut req = request("long");
    req.get_mut().count = 1;
    req.get_mut().delay_ms = 60_000;
    let long = client.stream(req).await.unwrap().into_inner();
    let holder = eventually("the stream to hold a backend", || async {
        for (i, a) in addrs.iter().enumerate() {
            if proxy.in_flight(*a).await == 1 {
                return Some(i);
            }
        }
        None
    })
    .await;
    for i in 0..8 {
        let reply = client.unary(request(&format!("{i}"))).await.unwrap();
        assert_ne!(
            reply.into_inner().backend,
            backends[holder].name,
            "least-connections sent a call to the backend holding the stream"
        );
    }
    assert_eq!(proxy.in_flight(addrs[holder]).await, 1);
    drop(long);
    proxy.wait_idle(&addrs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_backend_up_the_call_is_unavailable() {
    let down = [closed_port(), closed_port()];
    let proxy = TestProxy::start_with(H2C, &upstream("app", &down, "")).await;
    let mut client = EchoClient::connect(proxy.addr).await;
    let status = client.unary(request("anyone?")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("backend"), "{}", status.message());
    let m = eventually("the error to be counted", || async {
        let m = proxy.metrics().await;
        (grpc_count(&m, "UNAVAILABLE") == 1.0).then_some(m)
    })
    .await;
    let failures = metric_sum(
        &m,
        "switchyard_upstream_failures_total",
        &[("kind", "connect")],
    );
    assert_eq!(failures, 2.0, "both backends were tried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_and_a_short_grpc_timeout_are_deadline_exceeded() {
    // A backend slower than read_timeout.
    let slow = GrpcBackend::start("slow").await;
    let (silent, _task) = silent_backend().await;
    let upstreams = format!(
        "{}{}",
        upstream("slow", &[slow.addr], "read_timeout = \"300ms\"\n"),
        upstream("silent", &[silent], "")
    );
    let routes = "[[routes]]\nheaders = { x-to = \"silent\" }\nupstream = \"silent\"\n";
    let server = format!("{H2C}default_upstream = \"slow\"\n");
    let proxy = TestProxy::start_with(&server, &format!("{upstreams}{routes}")).await;
    let mut client = EchoClient::connect(proxy.addr).await;
    let mut req = request("slow");
    req.get_mut().delay_ms = 5_000;
    let status = client.unary(req).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");

    // A backend that never answers, and a client deadline far shorter
    // than read_timeout (30 s): the proxy answers at the deadline, with a
    // trailers-only gRPC error.
    let started = std::time::Instant::now();
    let (head, trailers) = raw_call(
        proxy.addr,
        "/test.Echo/Unary",
        &[("grpc-timeout", "300m"), ("x-to", "silent")],
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-type"], "application/grpc");
    assert_eq!(head.headers["grpc-status"], "4", "{head:?}");
    let message = head.headers["grpc-message"].to_str().unwrap();
    assert!(message.contains("deadline"), "{message}");
    assert!(trailers.is_none(), "trailers-only: {trailers:?}");

    let m = eventually("both to be counted", || async {
        let m = proxy.metrics().await;
        (grpc_count(&m, "DEADLINE_EXCEEDED") == 2.0).then_some(m)
    })
    .await;
    let local = metric_sum(&m, "switchyard_local_responses_total", &[("code", "504")]);
    assert_eq!(local, 2.0, "the proxy answered both");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_deadline_that_runs_out_does_not_count_against_the_backend() {
    let (silent, _task) = silent_backend().await;
    let passive = "[upstreams.app.passive_health_check]\nconsecutive_failures = 1\n";
    let proxy = TestProxy::start_with(H2C, &upstream("app", &[silent], passive)).await;
    for _ in 0..3 {
        let (head, _) = raw_call(proxy.addr, "/test.Echo/Unary", &[("grpc-timeout", "50m")]).await;
        assert_eq!(head.headers["grpc-status"], "4");
    }
    let b = proxy.backend(silent).await;
    assert_eq!(b["state"], "healthy", "{b}");
    let m = proxy.metrics().await;
    let timeouts = metric_sum(
        &m,
        "switchyard_upstream_failures_total",
        &[("kind", "timeout")],
    );
    assert_eq!(timeouts, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_check_takes_out_a_not_serving_backend_and_brings_it_back() {
    let backends = [GrpcBackend::start("a").await, GrpcBackend::start("b").await];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let check = "[upstreams.app.health_check]\ntype = \"grpc\"\ninterval = \"100ms\"\n\
                 timeout = \"1s\"\nhealthy_threshold = 1\nunhealthy_threshold = 1\n";
    let proxy = TestProxy::start_with(H2C, &upstream("app", &addrs, check)).await;
    eventually("a passing gRPC check", || async {
        let b = proxy.backend(addrs[1]).await;
        (b["checks"]["last_message"] == "SERVING").then_some(())
    })
    .await;
    backends[1].set_serving(false).await;
    let down = proxy.wait_state(addrs[1], "unhealthy").await;
    assert!(down.to_string().contains("NOT_SERVING"), "{down}");
    let mut client = EchoClient::connect(proxy.addr).await;
    for i in 0..6 {
        let reply = client.unary(request(&format!("{i}"))).await.unwrap();
        assert_eq!(reply.into_inner().backend, "a");
    }
    backends[1].set_serving(true).await;
    proxy.wait_state(addrs[1], "healthy").await;
    let mut seen_b = false;
    for i in 0..6 {
        let reply = client.unary(request(&format!("{i}"))).await.unwrap();
        seen_b |= reply.into_inner().backend == "b";
    }
    assert!(seen_b, "the backend took calls again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_answers_eject_when_listed() {
    let backend = GrpcBackend::start("a").await;
    let passive = "[upstreams.app.passive_health_check]\nconsecutive_failures = 2\n\
                   failures = [\"grpc_unavailable\"]\n";
    let proxy = TestProxy::start_with(H2C, &upstream("app", &[backend.addr], passive)).await;
    let mut client = EchoClient::connect(proxy.addr).await;
    for _ in 0..2 {
        let mut req = request("unavailable");
        req.get_mut().fail_code = Code::Unavailable as i32;
        let status = client.unary(req).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status.message(),
            "asked to fail",
            "the backend's own status"
        );
    }
    let ejected = proxy.wait_state(backend.addr, "ejected").await;
    assert!(
        ejected.to_string().contains("gRPC UNAVAILABLE"),
        "{ejected}"
    );
}
