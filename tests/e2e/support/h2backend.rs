//! Backends that speak HTTP/2 for tests of `protocol = "http2"` and of TLS
//! to backends, on hyper: with prior knowledge (h2c), or over TLS with
//! ALPN (h2 or http/1.1). Each answers `name version te=... len=N` (the
//! version it was spoken to in, the `te` it got, the body length it read)
//! and counts the connections it accepted. And one that refuses every
//! stream with `REFUSED_STREAM`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A running HTTP/2 (or TLS) backend.
pub struct H2Backend {
    pub addr: SocketAddr,
    /// Connections it accepted (TLS: whose handshake succeeded).
    pub connections: Arc<AtomicUsize>,
    /// Requests that reached it (answered or still held), and those it
    /// answered.
    counts: Arc<[AtomicUsize; 2]>,
    task: tokio::task::JoinHandle<()>,
}

impl H2Backend {
    /// h2c with prior knowledge; requests wait until `gate` is true.
    pub async fn start(name: &str, gate: watch::Receiver<bool>) -> H2Backend {
        Self::serve(name, gate, None).await
    }

    /// TLS with this certificate and key (PEM); ALPN h2 and http/1.1.
    /// With `client_ca` (PEM), only clients with a certificate it issued
    /// complete the handshake.
    pub async fn start_tls(
        name: &str,
        cert_pem: &str,
        key_pem: &str,
        client_ca: Option<&str>,
    ) -> H2Backend {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                    roots.add(c.unwrap()).unwrap();
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(certs, key).unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Self::serve(name, watch::channel(true).1, Some(acceptor)).await
    }

    async fn serve(
        name: &str,
        gate: watch::Receiver<bool>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> H2Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counts = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let (name, conns, reqs) = (
            name.to_string(),
            Arc::clone(&connections),
            Arc::clone(&counts),
        );
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (name, gate, tls) = (name.clone(), gate.clone(), tls.clone());
                let (conns, reqs) = (Arc::clone(&conns), Arc::clone(&reqs));
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        answer(req, name.clone(), gate.clone(), Arc::clone(&reqs))
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            conns.fetch_add(1, Ordering::SeqCst);
                            let _ = builder
                                .http2_only()
                                .serve_connection(TokioIo::new(tcp), service)
                                .await;
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(tcp).await else {
                                return;
                            };
                            conns.fetch_add(1, Ordering::SeqCst);
                            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            let builder = if h2 {
                                builder.http2_only()
                            } else {
                                builder.http1_only()
                            };
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        H2Backend {
            addr,
            connections,
            counts,
            task,
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Requests it has received, answered or not.
    pub fn arrived(&self) -> usize {
        self.counts[0].load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.counts[1].load(Ordering::SeqCst)
    }
}

impl Drop for H2Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    req: Request<Incoming>,
    name: String,
    mut gate: watch::Receiver<bool>,
    counts: Arc<[AtomicUsize; 2]>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    counts[0].fetch_add(1, Ordering::SeqCst);
    let version = format!("{:?}", req.version());
    let te = req
        .headers()
        .get("te")
        .map(|v| v.to_str().unwrap_or("?").to_string())
        .unwrap_or_default();
    let body = req.into_body().collect().await.map(|b| b.to_bytes().len());
    let _ = gate.wait_for(|open| *open).await;
    counts[1].fetch_add(1, Ordering::SeqCst);
    let len = body.unwrap_or(0);
    Ok(Response::new(Full::new(Bytes::from(format!(
        "{name} {version} te={te} len={len}"
    )))))
}

/// An HTTP/2 server that resets every stream with `REFUSED_STREAM`; it
/// counts the streams it refused.
pub async fn refusing_backend() -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let refused = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&refused);
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                while let Some(Ok((_, mut respond))) = conn.accept().await {
                    count.fetch_add(1, Ordering::SeqCst);
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                }
            });
        }
    });
    (addr, refused, task)
}
