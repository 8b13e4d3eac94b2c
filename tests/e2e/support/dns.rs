//! A real DNS server on loopback UDP whose answers a test changes: A and
//! SRV records (with the targets' A records in the additional section, as
//! Consul sends them), SERVFAIL, NXDOMAIN, or silence; and a count of the
//! queries for each name, so tests can assert how often Switchyard asked.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

/// How the server answers every query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The records set for the name (none: NOERROR with no answer).
    Answer,
    ServFail,
    NxDomain,
    /// Reads the query and never answers.
    Silent,
}

/// One SRV record: priority, weight, port, target.
pub type Srv = (u16, u16, u16, &'static str);

#[derive(Default)]
struct Zone {
    mode: Option<Mode>,
    ttl: HashMap<String, u32>,
    a: HashMap<String, Vec<Ipv4Addr>>,
    srv: HashMap<String, Vec<Srv>>,
    /// By (name, record type).
    queries: HashMap<(String, RecordType), u64>,
}

/// A running server; stops when dropped.
pub struct TestDns {
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    task: tokio::task::JoinHandle<()>,
}

/// A name as the zone keys it: lower case, no trailing dot.
fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl TestDns {
    /// Starts a server on a free loopback port.
    pub async fn start() -> TestDns {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts a server on `addr`.
    pub async fn start_on(addr: SocketAddr) -> TestDns {
        let socket = UdpSocket::bind(addr).await.expect("bind the DNS port");
        let addr = socket.local_addr().unwrap();
        let zone = Arc::new(Mutex::new(Zone::default()));
        let task = tokio::spawn(serve(socket, Arc::clone(&zone)));
        TestDns { addr, zone, task }
    }

    /// The `[resolver]` table that asks this server, quickly giving up.
    pub fn resolver_table(&self) -> String {
        format!(
            "[resolver]\nnameservers = [\"{}\"]\ntimeout = \"200ms\"\n",
            self.addr
        )
    }

    pub fn set_mode(&self, mode: Mode) {
        self.zone.lock().unwrap().mode = Some(mode);
    }

    /// The TTL of `name`'s records (default 1 second).
    pub fn set_ttl(&self, name: &str, ttl: u32) {
        self.zone.lock().unwrap().ttl.insert(key(name), ttl);
    }

    pub fn set_a(&self, name: &str, ips: &[Ipv4Addr]) {
        self.zone.lock().unwrap().a.insert(key(name), ips.to_vec());
    }

    pub fn set_srv(&self, name: &str, records: &[Srv]) {
        self.zone
            .lock()
            .unwrap()
            .srv
            .insert(key(name), records.to_vec());
    }

    /// Queries of `name` for `kind` so far.
    pub fn queries(&self, name: &str, kind: RecordType) -> u64 {
        let zone = self.zone.lock().unwrap();
        zone.queries.get(&(key(name), kind)).copied().unwrap_or(0)
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(socket: UdpSocket, zone: Arc<Mutex<Zone>>) {
    let mut buf = vec![0u8; 4096];
    while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
        let Ok(query) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let reply = answer(&query, &mut zone.lock().unwrap());
        if let Some(bytes) = reply.and_then(|m| m.to_vec().ok()) {
            let _ = socket.send_to(&bytes, peer).await;
        }
    }
}

fn answer(query: &Message, zone: &mut Zone) -> Option<Message> {
    let q = query.queries.first()?;
    let name = key(&q.name().to_string());
    *zone
        .queries
        .entry((name.clone(), q.query_type()))
        .or_default() += 1;
    let mut reply = Message::response(query.metadata.id, OpCode::Query);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.authoritative = true;
    reply.add_query(q.clone());
    let ttl = zone.ttl.get(&name).copied().unwrap_or(1);
    match zone.mode.unwrap_or(Mode::Answer) {
        Mode::Silent => return None,
        Mode::ServFail => reply.metadata.response_code = ResponseCode::ServFail,
        Mode::NxDomain => reply.metadata.response_code = ResponseCode::NXDomain,
        Mode::Answer => match q.query_type() {
            RecordType::A => {
                for ip in zone.a.get(&name).into_iter().flatten() {
                    reply.add_answer(Record::from_rdata(q.name().clone(), ttl, RData::A(A(*ip))));
                }
            }
            RecordType::SRV => {
                for &(priority, weight, port, target) in zone.srv.get(&name).into_iter().flatten() {
                    let target_name = Name::from_ascii(target).unwrap();
                    let srv = SRV::new(priority, weight, port, target_name.clone());
                    reply.add_answer(Record::from_rdata(q.name().clone(), ttl, RData::SRV(srv)));
                    for ip in zone.a.get(&key(target)).into_iter().flatten() {
                        let a = Record::from_rdata(target_name.clone(), ttl, RData::A(A(*ip)));
                        reply.add_additional(a);
                    }
                }
            }
            _ => {}
        },
    }
    Some(reply)
}
