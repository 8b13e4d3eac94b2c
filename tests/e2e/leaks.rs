//! Nothing leaks when backends break: each kind of failure, repeated
//! against the real binary, leaves its open file descriptors and in-flight
//! leases where they were before, and the process serving.

use std::net::SocketAddr;

use crate::support::binary::{spawn, BinaryConfig, Running};
use crate::support::faulty::{Fault, FaultyBackend};
use crate::support::proxy::metric_sum;
use crate::support::wire::{request, Reply};
use crate::support::{closed_port, eventually};

/// Times each case runs.
const ROUNDS: usize = 20;

/// One attempt, a short wait for a head, and no ejection, so that every
/// round meets the fault.
const SETTINGS: &str = "retries = 0\nread_timeout = \"200ms\"\n";
const TABLES: &str = "[upstreams.app.passive_health_check]\nconsecutive_failures = 0\n";

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n";

/// Each fault and the status the client sees (the head of a cut body is
/// a 200 that has already gone out).
const CASES: [(Fault, u16); 11] = [
    (Fault::ResetBeforeHead, 502),
    (Fault::ResetAfterHead, 200),
    (Fault::ResetMidChunks, 200),
    (Fault::ResetMidUnframed, 200),
    (Fault::CloseBeforeHead, 502),
    (Fault::GarbageStatus, 502),
    (Fault::ConflictingLengths, 502),
    (Fault::LengthAndChunked, 200),
    (Fault::Switch, 502),
    (Fault::HugeHead, 502),
    (Fault::Hang, 504),
];

/// The binary on its own config, watched through `/proc` and `/metrics`.
struct Watched {
    config: BinaryConfig,
    running: Running,
}

impl Watched {
    /// Starts the binary in front of `backend` and waits until it answers
    /// on both ports.
    async fn start(backend: SocketAddr) -> Watched {
        let config = BinaryConfig::with_settings("0s", SETTINGS, TABLES, &[backend]);
        let running = spawn(&config.path, false);
        let watched = Watched { config, running };
        eventually("the binary to listen", || async {
            let data = tokio::net::TcpStream::connect(watched.config.addr).await;
            let admin = tokio::net::TcpStream::connect(watched.config.admin).await;
            (data.is_ok() && admin.is_ok()).then_some(())
        })
        .await;
        watched
    }

    /// One GET on a new connection, closed on both sides when this returns.
    async fn get(&self, name: &str) -> Reply {
        request(self.config.addr, name, GET).await
    }

    /// Open file descriptors of the process.
    fn fds(&self) -> usize {
        let dir = format!("/proc/{}/fd", self.running.0.id());
        std::fs::read_dir(dir).expect("the process runs").count()
    }

    /// Leases held (`switchyard_backend_in_flight`, summed) plus client
    /// connections still open, each a task of its own: 0 once every
    /// request's state and task has ended.
    async fn busy(&self) -> f64 {
        let get = b"GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n";
        let reply = request(self.config.admin, "/metrics", get).await;
        assert_eq!(reply.status, Some(200), "{reply:?}");
        let text = String::from_utf8_lossy(&reply.body).into_owned();
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("/metrics parses");
        metric_sum(&scrape, "switchyard_backend_in_flight", &[])
            + metric_sum(&scrape, "switchyard_client_connections", &[])
    }

    /// Waits until the process holds `fds` descriptors, no lease and no
    /// client connection.
    async fn settle(&self, fds: usize, after: &str) {
        eventually(
            &format!("{fds} fds, no lease and no client task after {after}"),
            || async { (self.fds() == fds && self.busy().await == 0.0).then_some(()) },
        )
        .await;
    }

    /// The process has not exited and answers with `status`.
    async fn alive(&mut self, status: u16) {
        assert!(self.running.0.try_wait().unwrap().is_none(), "it exited");
        assert_eq!(self.get("the last request").await.status, Some(status));
    }
}

/// Settled descriptors: counted once the count is stable and no lease is held.
async fn baseline(watched: &Watched) -> usize {
    eventually("a settled descriptor count", || async {
        let before = watched.fds();
        let idle = watched.busy().await == 0.0;
        (idle && watched.fds() == before).then_some(before)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_backends_leak_no_descriptors_or_leases() {
    let backend = FaultyBackend::start(Fault::Normal).await;
    let mut watched = Watched::start(backend.addr).await;
    // The warm-up leaves one idle backend connection in the pool; every
    // case ends the same way, with a good request, so the count compares.
    assert_eq!(watched.get("warm-up").await.status, Some(200));
    let fds = baseline(&watched).await;
    for (fault, status) in CASES {
        backend.set(fault);
        for round in 0..ROUNDS {
            let reply = watched.get(&format!("{fault:?}")).await;
            assert_eq!(
                reply.status,
                Some(status),
                "{fault:?}, round {round}: {reply:?}"
            );
        }
        backend.set(Fault::Normal);
        assert_eq!(
            watched.get("good").await.status,
            Some(200),
            "after {fault:?}"
        );
        watched.settle(fds, &format!("{fault:?}")).await;
    }
    watched.alive(200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_leak_no_descriptors_or_leases() {
    let mut watched = Watched::start(closed_port()).await;
    assert_eq!(watched.get("warm-up").await.status, Some(502));
    let fds = baseline(&watched).await;
    for _ in 0..ROUNDS {
        assert_eq!(watched.get("refused").await.status, Some(502));
    }
    watched.settle(fds, "refused connections").await;
    watched.alive(502).await;
}
