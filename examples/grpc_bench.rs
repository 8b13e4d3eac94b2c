//! A gRPC load tool for `benches/compare.sh`: a tonic backend with one
//! unary method, and a bounded client that drives unary calls through a
//! proxy and prints one JSON line. The messages are written with prost's
//! derive and the service by hand, so no protoc is needed.
//!
//! ```text
//! cargo run --release --example grpc_bench -- server --listen 127.0.0.1:50051
//! cargo run --release --example grpc_bench -- load --target 127.0.0.1:8080 \
//!     --connections 16 --concurrency 160 --duration 10
//! ```
//!
//! Both run on one thread (a current-thread runtime), as the other load
//! tools and backends of the benchmark do. The client opens `--connections`
//! HTTP/2 connections up front and keeps `--concurrency` calls in flight,
//! spread evenly over them, until `--duration` seconds have passed or
//! `--max-calls` calls have started; a call that takes longer than
//! `--timeout-ms` counts as an error.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tonic::codegen::{http, BoxFuture, Context, Poll, Service};
use tonic::server::{NamedService, UnaryService};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

/// The one method the backend serves.
const METHOD: &str = "/bench.Echo/Unary";

#[derive(Clone, PartialEq, prost::Message)]
struct EchoRequest {
    #[prost(string, tag = "1")]
    message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EchoReply {
    #[prost(string, tag = "1")]
    message: String,
    /// The address of the backend that answered, so the client can tell
    /// how the proxy spread its calls.
    #[prost(string, tag = "2")]
    backend: String,
}

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Serve `bench.Echo/Unary` on ADDR.
    Server {
        #[arg(long)]
        listen: SocketAddr,
        /// Exit after this many seconds, whatever happens.
        #[arg(long, default_value_t = 3600)]
        hold: u64,
    },
    /// Make unary calls to ADDR and print one JSON line of results.
    Load {
        #[arg(long)]
        target: SocketAddr,
        /// HTTP/2 connections, opened before the clock starts.
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Calls in flight in all, spread evenly over the connections.
        #[arg(long, default_value_t = 160)]
        concurrency: usize,
        /// Seconds during which new calls start.
        #[arg(long)]
        duration: u64,
        /// Calls started at most.
        #[arg(long, default_value_t = 5_000_000)]
        max_calls: u64,
        /// A call that has no answer after this many milliseconds fails.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match cli.mode {
        Mode::Server { listen, hold } => runtime.block_on(serve(listen, hold)),
        Mode::Load {
            target,
            connections,
            concurrency,
            duration,
            max_calls,
            timeout_ms,
        } => {
            let plan = Plan {
                connections: connections.max(1),
                concurrency: concurrency.max(connections).max(1),
                duration: Duration::from_secs(duration),
                max_calls,
                timeout: Duration::from_millis(timeout_ms),
            };
            runtime.block_on(load(target, plan))
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Serves until `hold` seconds have passed (or a signal ends the process).
async fn serve(listen: SocketAddr, hold: u64) -> Result<(), String> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let echo = Echo(Arc::new(listen.to_string()));
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    println!("READY {listen}");
    tonic::transport::Server::builder()
        .add_service(echo)
        .serve_with_incoming_shutdown(incoming, tokio::time::sleep(Duration::from_secs(hold)))
        .await
        .map_err(|e| format!("server failed: {e}"))
}

/// The backend: answers every call with the request's message and its own
/// address.
#[derive(Clone)]
struct Echo(Arc<String>);

impl NamedService for Echo {
    const NAME: &'static str = "bench.Echo";
}

impl UnaryService<EchoRequest> for Echo {
    type Response = EchoReply;
    type Future = BoxFuture<Response<EchoReply>, Status>;

    fn call(&mut self, req: Request<EchoRequest>) -> Self::Future {
        let backend = self.0.as_ref().clone();
        Box::pin(async move {
            let message = req.into_inner().message;
            Ok(Response::new(EchoReply { message, backend }))
        })
    }
}

impl<B> Service<http::Request<B>> for Echo
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let echo = self.clone();
        Box::pin(async move {
            if req.uri().path() != METHOD {
                return Ok(Status::unimplemented("no such method").into_http());
            }
            let mut grpc =
                tonic::server::Grpc::new(ProstCodec::<EchoReply, EchoRequest>::default());
            Ok(grpc.unary(echo, req).await)
        })
    }
}

/// How hard and how long the client pushes.
struct Plan {
    connections: usize,
    concurrency: usize,
    duration: Duration,
    max_calls: u64,
    timeout: Duration,
}

/// What one caller saw.
#[derive(Default)]
struct Tally {
    /// Microseconds of each call that succeeded.
    latencies_us: Vec<u32>,
    errors: u64,
    backends: HashMap<String, u64>,
}

async fn load(target: SocketAddr, plan: Plan) -> Result<(), String> {
    let endpoint = Endpoint::from_shared(format!("http://{target}"))
        .map_err(|e| format!("bad target {target}: {e}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5));
    let mut channels = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {target}: {e}"))?;
        channels.push(channel);
    }
    let started = Arc::new(AtomicU64::new(0));
    let plan = Arc::new(plan);
    let t0 = Instant::now();
    let deadline = t0 + plan.duration;
    let callers: Vec<_> = (0..plan.concurrency)
        .map(|i| {
            let grpc = tonic::client::Grpc::new(channels[i % channels.len()].clone());
            tokio::spawn(caller(
                grpc,
                deadline,
                Arc::clone(&plan),
                Arc::clone(&started),
            ))
        })
        .collect();
    let mut all = Tally::default();
    for caller in callers {
        let tally = caller.await.map_err(|e| format!("a caller failed: {e}"))?;
        all.latencies_us.extend(tally.latencies_us);
        all.errors += tally.errors;
        for (backend, n) in tally.backends {
            *all.backends.entry(backend).or_default() += n;
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    println!("{}", report(all, elapsed));
    Ok(())
}

/// Calls one after another on `grpc` until the deadline or the shared
/// count of started calls reaches the plan's maximum.
async fn caller(
    mut grpc: tonic::client::Grpc<Channel>,
    deadline: Instant,
    plan: Arc<Plan>,
    started: Arc<AtomicU64>,
) -> Tally {
    let mut tally = Tally::default();
    let path = http::uri::PathAndQuery::from_static(METHOD);
    while Instant::now() < deadline && started.fetch_add(1, Ordering::Relaxed) < plan.max_calls {
        let t = Instant::now();
        let call = async {
            grpc.ready()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            let req = Request::new(EchoRequest {
                message: "ping".to_string(),
            });
            grpc.unary::<_, EchoReply, _>(req, path.clone(), ProstCodec::default())
                .await
        };
        match tokio::time::timeout(plan.timeout, call).await {
            Ok(Ok(reply)) => {
                let us = u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX);
                tally.latencies_us.push(us);
                *tally
                    .backends
                    .entry(reply.into_inner().backend)
                    .or_default() += 1;
            }
            _ => tally.errors += 1,
        }
    }
    tally
}

/// The JSON line: calls that succeeded, errors, calls/s over the whole
/// run (last answer included), nearest-rank p50 and p99 in microseconds,
/// and the calls each backend answered.
fn report(mut all: Tally, elapsed_s: f64) -> serde_json::Value {
    all.latencies_us.sort_unstable();
    let ok = all.latencies_us.len();
    serde_json::json!({
        "ok": ok,
        "errors": all.errors,
        "seconds": elapsed_s,
        "calls_per_s": if elapsed_s > 0.0 { ok as f64 / elapsed_s } else { 0.0 },
        "p50_us": percentile(&all.latencies_us, 50.0),
        "p99_us": percentile(&all.latencies_us, 99.0),
        "backends": all.backends,
    })
}

/// Nearest-rank percentile of an ascending list; `None` when it is empty.
fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}
