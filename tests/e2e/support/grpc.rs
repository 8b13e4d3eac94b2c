//! A real gRPC backend for tests, on tonic: `test.Echo` (a unary and a
//! server-streaming call that say which backend answered, echo the
//! client's metadata, and can be told to wait or fail) next to tonic's own
//! `grpc.health.v1.Health`, and a client for `test.Echo`. The messages are
//! written with prost's derive, so no protoc is needed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::Stream;
use tonic::codegen::{http, BoxFuture, Context, Poll, Service};
use tonic::server::{NamedService, ServerStreamingService, UnaryService};
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tonic_prost::ProstCodec;

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub message: String,
    /// Replies a streaming call sends.
    #[prost(uint32, tag = "2")]
    pub count: u32,
    /// Wait before each reply.
    #[prost(uint64, tag = "3")]
    pub delay_ms: u64,
    /// Non-zero: end with this status (after the replies of a stream).
    #[prost(int32, tag = "4")]
    pub fail_code: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    #[prost(string, tag = "1")]
    pub message: String,
    #[prost(string, tag = "2")]
    pub backend: String,
    #[prost(uint32, tag = "3")]
    pub index: u32,
}

/// A running gRPC backend.
pub struct GrpcBackend {
    pub addr: SocketAddr,
    pub name: String,
    /// Calls to `test.Echo` it received.
    pub calls: Arc<AtomicUsize>,
    pub health: HealthReporter,
    stop: Option<oneshot::Sender<()>>,
}

impl GrpcBackend {
    /// Starts one on a loopback port, serving.
    pub async fn start(name: &str) -> GrpcBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_service_status("", ServingStatus::Serving).await;
        let calls = Arc::new(AtomicUsize::new(0));
        let echo = Echo(Arc::new(Inner {
            name: name.to_string(),
            calls: Arc::clone(&calls),
        }));
        let (stop, stopped) = oneshot::channel::<()>();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health_service)
                .add_service(echo)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                }),
        );
        GrpcBackend {
            addr,
            name: name.to_string(),
            calls,
            health,
            stop: Some(stop),
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// What the whole server (`""`) tells health checks.
    pub async fn set_serving(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.health.set_service_status("", status).await;
    }
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

struct Inner {
    name: String,
    calls: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct Echo(Arc<Inner>);

impl NamedService for Echo {
    const NAME: &'static str = "test.Echo";
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

/// What the server sends back of the client's metadata.
fn echoed<T>(req: &Request<EchoRequest>, mut resp: Response<T>, name: &str) -> Response<T> {
    if let Some(v) = req.metadata().get("x-custom") {
        resp.metadata_mut().insert("x-custom-echo", v.clone());
    }
    resp.metadata_mut()
        .insert("x-backend", name.parse().unwrap());
    resp
}

/// The status a request asked to end with, with trailing metadata.
fn failure(code: i32) -> Status {
    let mut md = tonic::metadata::MetadataMap::new();
    md.insert("x-trailer", "t".parse().unwrap());
    Status::with_metadata(Code::from(code), "asked to fail", md)
}

impl UnaryService<EchoRequest> for Echo {
    type Response = EchoReply;
    type Future = BoxFuture<Response<EchoReply>, Status>;

    fn call(&mut self, req: Request<EchoRequest>) -> Self::Future {
        let inner = Arc::clone(&self.0);
        Box::pin(async move {
            inner.calls.fetch_add(1, Ordering::SeqCst);
            let m = req.get_ref().clone();
            tokio::time::sleep(Duration::from_millis(m.delay_ms)).await;
            if m.fail_code != 0 {
                return Err(failure(m.fail_code));
            }
            let reply = EchoReply {
                message: m.message,
                backend: inner.name.clone(),
                index: 0,
            };
            Ok(echoed(&req, Response::new(reply), &inner.name))
        })
    }
}

impl ServerStreamingService<EchoRequest> for Echo {
    type Response = EchoReply;
    type ResponseStream = ReplyStream;
    type Future = BoxFuture<Response<ReplyStream>, Status>;

    fn call(&mut self, req: Request<EchoRequest>) -> Self::Future {
        let inner = Arc::clone(&self.0);
        Box::pin(async move {
            inner.calls.fetch_add(1, Ordering::SeqCst);
            let m = req.get_ref().clone();
            let name = inner.name.clone();
            let stream = async_stream(m, name.clone());
            Ok(echoed(&req, Response::new(stream), &name))
        })
    }
}

/// `m.count` replies, each after `m.delay_ms`, then `m.fail_code`'s status
/// if it has one.
fn async_stream(m: EchoRequest, name: String) -> ReplyStream {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        for index in 0..m.count {
            tokio::time::sleep(Duration::from_millis(m.delay_ms)).await;
            let reply = EchoReply {
                message: m.message.clone(),
                backend: name.clone(),
                index,
            };
            if tx.send(Ok(reply)).await.is_err() {
                return;
            }
        }
        if m.fail_code != 0 {
            let _ = tx.send(Err(failure(m.fail_code))).await;
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
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
            let mut grpc =
                tonic::server::Grpc::new(ProstCodec::<EchoReply, EchoRequest>::default());
            Ok(match req.uri().path() {
                "/test.Echo/Unary" => grpc.unary(echo, req).await,
                "/test.Echo/Stream" => grpc.server_streaming(echo, req).await,
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

/// A `test.Echo` client over one channel (one HTTP/2 connection) to `addr`.
pub struct EchoClient {
    grpc: tonic::client::Grpc<Channel>,
}

impl EchoClient {
    pub async fn connect(addr: SocketAddr) -> EchoClient {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        EchoClient {
            grpc: tonic::client::Grpc::new(channel),
        }
    }

    pub async fn unary(
        &mut self,
        req: Request<EchoRequest>,
    ) -> Result<Response<EchoReply>, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unknown(e.to_string()))?;
        let path = http::uri::PathAndQuery::from_static("/test.Echo/Unary");
        self.grpc.unary(req, path, ProstCodec::default()).await
    }

    pub async fn stream(
        &mut self,
        req: Request<EchoRequest>,
    ) -> Result<Response<tonic::Streaming<EchoReply>>, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unknown(e.to_string()))?;
        let path = http::uri::PathAndQuery::from_static("/test.Echo/Stream");
        self.grpc
            .server_streaming(req, path, ProstCodec::default())
            .await
    }
}

/// `[upstreams.NAME]` over HTTP/2 to `backends`, with `extra` lines.
pub fn upstream(name: &str, backends: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = backends.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[upstreams.{name}]\nprotocol = \"http2\"\nbackends = [{}]\n{extra}",
        list.join(", ")
    )
}

/// An HTTP/2 server that takes every stream and never answers: a backend
/// that leaves a deadline to the proxy.
pub async fn silent_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(stream).await else {
                    return;
                };
                let mut held = Vec::new();
                while let Some(Ok(stream)) = conn.accept().await {
                    held.push(stream);
                }
            });
        }
    });
    (addr, task)
}

/// A unary request saying `message`, with the `x-custom` metadata.
pub fn request(message: &str) -> Request<EchoRequest> {
    let mut req = Request::new(EchoRequest {
        message: message.to_string(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("x-custom", "from-the-client".parse().unwrap());
    req
}

/// A gRPC call written by hand over a new HTTP/2 connection to `addr`,
/// with `extra` headers and an empty message: the answer's head and its
/// trailers (none for a trailers-only answer). A tonic client would keep
/// some deadlines itself; this one keeps none.
pub async fn raw_call(
    addr: SocketAddr,
    path: &str,
    extra: &[(&str, &str)],
) -> (http::response::Parts, Option<http::HeaderMap>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let (resp, mut body) = send.send_request(req.body(()).unwrap(), false).unwrap();
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .unwrap();
    let (parts, mut recv) = resp.await.unwrap().into_parts();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.unwrap();
        let _ = recv.flow_control().release_capacity(chunk.len());
    }
    let trailers = recv.trailers().await.unwrap();
    (parts, trailers)
}
