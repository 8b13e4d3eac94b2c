//! One active check of one backend, over Pingora's own connectors and the
//! upstream's protocol and TLS: a TCP connect, an HTTP GET whose status
//! must match `expect_status`, or a gRPC `grpc.health.v1.Health/Check`
//! (`grpc.rs`) that must answer `SERVING`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pingora::http::RequestHeader;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::Backend;
use pingora::{Error, ErrorType};

use super::grpc::GrpcCheck;
use crate::config::{self, StatusMatch};
use crate::proxy::PeerTemplate;

/// A ready-to-run check of one backend.
pub struct Probe {
    target: Backend,
    kind: Kind,
    /// The status of the last HTTP answer, for the message of a pass.
    status: Arc<AtomicU16>,
}

enum Kind {
    Tcp(Box<TcpHealthCheck>),
    Http(Box<HttpHealthCheck>),
    Grpc(Box<GrpcCheck>),
}

/// The `CustomCode` name of a status `expect_status` does not allow.
const UNEXPECTED_STATUS: &str = "unexpected status";

impl Probe {
    /// `address` is the backend as configured: the default `Host`. The
    /// caller bounds a whole check by `limit`; each step (connect, write,
    /// read) gets twice that, a backstop that never fires first, so a check
    /// cut off by time is always reported as a timeout.
    pub fn new(
        probe: &config::Probe,
        template: &PeerTemplate,
        address: &str,
        socket_addr: SocketAddr,
        limit: Duration,
    ) -> pingora::Result<Probe> {
        let target = Backend::new(&socket_addr.to_string())?;
        let limit = limit.saturating_mul(2);
        let status = Arc::new(AtomicU16::new(0));
        let kind = match probe {
            config::Probe::Tcp => {
                let mut check = TcpHealthCheck::new();
                check.peer_template.options.connection_timeout = Some(limit);
                Kind::Tcp(check)
            }
            config::Probe::Http { path, host, expect } => {
                let host = host.as_deref().unwrap_or(address);
                let mut check = HttpHealthCheck::new(host, false);
                check.peer_template = template.check_peer(address, socket_addr, limit);
                let mut req = RequestHeader::build("GET", path.as_bytes(), None)?;
                req.append_header("Host", host)?;
                req.append_header("User-Agent", "switchyard-health-check")?;
                if !template.http2() {
                    // HTTP/2 has no such header: each check is a stream.
                    req.append_header("Connection", "close")?;
                }
                check.req = req;
                let (expect, last) = (expect.clone(), Arc::clone(&status));
                check.validator = Some(Box::new(move |resp| {
                    let code = resp.status.as_u16();
                    last.store(code, Ordering::Relaxed);
                    if expect.iter().any(|m| m.matches(code)) {
                        return Ok(());
                    }
                    Error::e_explain(
                        ErrorType::CustomCode(UNEXPECTED_STATUS, code),
                        format!("expected {}", expected(&expect)),
                    )
                }));
                Kind::Http(Box::new(check))
            }
            config::Probe::Grpc { service } => {
                let peer = template.check_peer(address, socket_addr, limit);
                Kind::Grpc(Box::new(GrpcCheck::new(peer, address, service)))
            }
        };
        Ok(Probe {
            target,
            kind,
            status,
        })
    }

    /// Runs the check once. `Ok` says what passed, `Err` why it failed.
    pub async fn run(&self) -> Result<String, String> {
        let outcome = match &self.kind {
            Kind::Tcp(check) => check.check(&self.target).await.map(|()| "connected".into()),
            Kind::Http(check) => check
                .check(&self.target)
                .await
                .map(|()| format!("status {}", self.status.load(Ordering::Relaxed))),
            Kind::Grpc(check) => return check.run().await,
        };
        outcome.map_err(|e| describe(&e))
    }
}

fn expected(expect: &[StatusMatch]) -> String {
    let list: Vec<String> = expect.iter().map(ToString::to_string).collect();
    list.join(", ")
}

/// A short reason for `/status` and the log, from Pingora's error.
fn describe(e: &Error) -> String {
    match e.etype() {
        ErrorType::CustomCode(UNEXPECTED_STATUS, code) => {
            let context = e.context.as_ref().map(|c| c.as_str()).unwrap_or_default();
            format!("status {code}, {context}")
        }
        etype => {
            // Pingora's own text carries the whole peer; the root cause
            // ("Connection refused (os error 111)") is what a person needs.
            let root = e.root_cause();
            if std::ptr::addr_eq(root, e) {
                etype.as_str().to_string()
            } else {
                format!("{}: {root}", etype.as_str())
            }
        }
    }
}
