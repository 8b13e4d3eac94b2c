//! Small real HTTP/1.1 backends for tests and the demo: each answers with its
//! own name, and can be told to hold requests, hang, or fail. `GET /healthz`
//! is their health endpoint, which tests can make fail or hang.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How a test backend answers.
#[derive(Clone)]
pub enum Behavior {
    /// 200 with its name as the body.
    Name,
    /// Like `Name`, but only once the gate opens.
    Gated(watch::Receiver<bool>),
    /// Reads the request and never answers.
    Hang,
    /// Answers with this status and its name.
    Status(u16),
    /// 200 with its name and the length of the request body it read.
    BodyLength,
    /// Like `Name`, after this long.
    Delay(std::time::Duration),
    /// 200 with a body of this many bytes: [`large_body`].
    Large(usize),
}

/// The body a [`Behavior::Large`] backend sends: bytes that say where they
/// are, so a body cut, doubled or shifted anywhere does not compare equal.
pub fn large_body(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// A running backend. Stops when dropped.
pub struct TestBackend {
    pub addr: SocketAddr,
    pub name: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// The path of the health endpoint.
pub const HEALTH_PATH: &str = "/healthz";

/// A request to this path waits for [`TestBackend::release_held`], then
/// is answered as any other.
pub const HOLD_PATH: &str = "/hold";

/// `set_health` value that makes the health endpoint never answer.
pub const HANG: u16 = 0;

struct Shared {
    received: AtomicUsize,
    /// Requests being answered now, and the most there ever were.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    headers: Mutex<Vec<HeaderMap>>,
    /// Status of the health endpoint; [`HANG`] to never answer.
    health: AtomicU16,
    /// Health requests answered 500 before `health` applies again.
    failing_checks: AtomicUsize,
    checks: AtomicUsize,
    check_host: Mutex<Option<String>>,
    /// Requests to [`HOLD_PATH`] received, and what lets them go.
    held: AtomicUsize,
    release: watch::Sender<bool>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            received: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            headers: Mutex::new(Vec::new()),
            health: AtomicU16::new(200),
            failing_checks: AtomicUsize::new(0),
            checks: AtomicUsize::new(0),
            check_host: Mutex::new(None),
            held: AtomicUsize::new(0),
            release: watch::Sender::new(false),
        }
    }
}

impl TestBackend {
    /// Starts a backend on a free loopback port.
    pub async fn start(name: &str, behavior: Behavior) -> TestBackend {
        Self::start_on("127.0.0.1:0".parse().unwrap(), name, behavior)
            .await
            .expect("bind a loopback port")
    }

    /// Starts a backend on `addr`.
    pub async fn start_on(
        addr: SocketAddr,
        name: &str,
        behavior: Behavior,
    ) -> std::io::Result<TestBackend> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(serve(
            listener,
            name.to_string(),
            behavior,
            Arc::clone(&shared),
        ));
        Ok(TestBackend {
            addr,
            name: name.to_string(),
            shared,
            task,
        })
    }

    /// Starts one backend on each of `ips` (loopback addresses), all on
    /// the same free port: what an A record's addresses with one port in
    /// the config need.
    pub async fn fleet(ips: &[std::net::Ipv4Addr], behavior: Behavior) -> Vec<TestBackend> {
        'port: for _ in 0..20 {
            let first = SocketAddr::from((ips[0], 0));
            let Ok(a) = Self::start_on(first, &ips[0].to_string(), behavior.clone()).await else {
                continue;
            };
            let mut fleet = vec![a];
            for ip in &ips[1..] {
                let addr = SocketAddr::from((*ip, fleet[0].addr.port()));
                match Self::start_on(addr, &ip.to_string(), behavior.clone()).await {
                    Ok(b) => fleet.push(b),
                    Err(_) => continue 'port,
                }
            }
            return fleet;
        }
        panic!("no port free on all of {ips:?}");
    }

    /// Requests to [`HOLD_PATH`] received so far.
    pub fn held(&self) -> usize {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// Lets every request to [`HOLD_PATH`] go, and those to come.
    pub fn release_held(&self) {
        self.shared.release.send_replace(true);
    }

    /// Makes the health endpoint answer `status` ([`HANG`]: never answer).
    pub fn set_health(&self, status: u16) {
        self.shared.health.store(status, Ordering::SeqCst);
    }

    /// Makes the next `n` health requests get 500, then `set_health`'s
    /// status again.
    pub fn fail_checks(&self, n: usize) {
        self.shared.failing_checks.store(n, Ordering::SeqCst);
    }

    /// Health requests received.
    pub fn checks(&self) -> usize {
        self.shared.checks.load(Ordering::SeqCst)
    }

    /// The `Host` of the last health request.
    pub fn check_host(&self) -> Option<String> {
        self.shared.check_host.lock().unwrap().clone()
    }

    /// Requests this backend has received (answered or not), health
    /// requests not included.
    pub fn received(&self) -> usize {
        self.shared.received.load(Ordering::SeqCst)
    }

    /// The most requests this backend was answering at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// The headers of every request received, in order.
    pub fn headers(&self) -> Vec<HeaderMap> {
        self.shared.headers.lock().unwrap().clone()
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, name: String, behavior: Behavior, shared: Arc<Shared>) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let (name, behavior, shared) = (name.clone(), behavior.clone(), Arc::clone(&shared));
        let service = service_fn(move |req: Request<Incoming>| {
            answer(req, name.clone(), behavior.clone(), Arc::clone(&shared))
        });
        connections.spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    name: String,
    behavior: Behavior,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == HEALTH_PATH {
        let host = req.headers().get("host").and_then(|h| h.to_str().ok());
        *shared.check_host.lock().unwrap() = host.map(str::to_string);
        return Ok(health(&shared).await);
    }
    shared.headers.lock().unwrap().push(req.headers().clone());
    shared.received.fetch_add(1, Ordering::SeqCst);
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _answering = Answering(&shared.in_flight);
    if req.uri().path() == HOLD_PATH {
        shared.held.fetch_add(1, Ordering::SeqCst);
        let _ = shared.release.subscribe().wait_for(|go| *go).await;
    }
    if let Behavior::BodyLength = behavior {
        use http_body_util::BodyExt;
        let length = match req.into_body().collect().await {
            Ok(body) => body.to_bytes().len().to_string(),
            Err(e) => format!("error: {e}"),
        };
        let body = Bytes::from(format!("{name} {length}\n"));
        return Ok(Response::new(Full::new(body)));
    }
    if let Behavior::Large(len) = behavior {
        return Ok(Response::new(Full::new(large_body(len))));
    }
    let status = match behavior {
        Behavior::Name | Behavior::BodyLength | Behavior::Large(_) => 200,
        Behavior::Status(code) => code,
        Behavior::Gated(mut gate) => {
            let _ = gate.wait_for(|open| *open).await;
            200
        }
        Behavior::Hang => std::future::pending().await,
        Behavior::Delay(wait) => {
            tokio::time::sleep(wait).await;
            200
        }
    };
    let mut resp = Response::new(Full::new(Bytes::from(format!("{name}\n"))));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    resp.headers_mut()
        .insert("x-backend", name.parse().unwrap());
    Ok(resp)
}

/// Counts a request as answered when it ends, however it ends.
struct Answering<'a>(&'a AtomicUsize);

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn health(shared: &Shared) -> Response<Full<Bytes>> {
    shared.checks.fetch_add(1, Ordering::SeqCst);
    let failing = shared
        .failing_checks
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let status = match shared.health.load(Ordering::SeqCst) {
        _ if failing => 500,
        HANG => std::future::pending().await,
        status => status,
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(b"health\n")));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    resp
}
