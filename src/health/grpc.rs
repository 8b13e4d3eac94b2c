//! The gRPC active check: `grpc.health.v1.Health/Check` for one service
//! over HTTP/2 (h2c, or TLS with ALPN h2), passing when the answer is
//! `SERVING`. The two messages are one optional string and one enum, so
//! they are encoded here rather than generated.

use bytes::{BufMut, Bytes, BytesMut};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::protocols::http::client::HttpSession;

/// The method every gRPC health service answers.
const PATH: &str = "/grpc.health.v1.Health/Check";

/// Largest answer read: the real one is 7 bytes.
const MAX_ANSWER: usize = 1024;

/// A ready-to-run gRPC check of one backend.
pub struct GrpcCheck {
    peer: HttpPeer,
    authority: String,
    /// The encoded, framed request.
    request: Bytes,
    /// Keeps one HTTP/2 connection for the checks of this backend.
    connector: Connector,
}

impl GrpcCheck {
    pub fn new(peer: HttpPeer, authority: &str, service: &str) -> GrpcCheck {
        GrpcCheck {
            peer,
            authority: authority.to_string(),
            request: frame(&check_request(service)),
            connector: Connector::new(None),
        }
    }

    /// One check: `Ok` says it is serving, `Err` what it said instead.
    pub async fn run(&self) -> Result<String, String> {
        let (session, _) = self
            .connector
            .get_http_session(&self.peer)
            .await
            .map_err(|e| e.to_string())?;
        let HttpSession::H2(mut h2) = session else {
            return Err("the backend does not speak HTTP/2 (needed for gRPC)".into());
        };
        let mut req = RequestHeader::build("POST", PATH.as_bytes(), None).map_err(text)?;
        for (name, value) in [
            ("host", self.authority.as_str()),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("user-agent", "switchyard-health-check"),
        ] {
            req.insert_header(name, value).map_err(text)?;
        }
        h2.write_request_header(Box::new(req), false)
            .map_err(text)?;
        h2.write_request_body(self.request.clone(), true)
            .await
            .map_err(text)?;
        h2.read_response_header().await.map_err(text)?;
        let header = h2.response_header().ok_or("no response header")?;
        if header.status != 200 {
            return Err(format!("HTTP status {}", header.status.as_u16()));
        }
        // A trailers-only answer carries its status in the header.
        let mut grpc_status = header.headers.get("grpc-status").cloned();
        let mut message = header.headers.get("grpc-message").cloned();
        let mut body = BytesMut::new();
        while let Some(chunk) = h2.read_response_body().await.map_err(text)? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_ANSWER {
                return Err("answer too long for a health check".into());
            }
        }
        if let Some(trailers) = h2.read_trailers().await.map_err(text)? {
            grpc_status = trailers.get("grpc-status").cloned().or(grpc_status);
            message = trailers.get("grpc-message").cloned().or(message);
        }
        match grpc_status.as_ref().map(|v| v.as_bytes()) {
            Some(b"0") => {}
            Some(code) => {
                let code = String::from_utf8_lossy(code);
                let message = message
                    .as_ref()
                    .map(|m| String::from_utf8_lossy(m.as_bytes()));
                return Err(format!(
                    "grpc-status {code}: {}",
                    message.as_deref().unwrap_or("")
                ));
            }
            None => return Err("no grpc-status".into()),
        }
        match serving_status(&body) {
            Some(1) => Ok("SERVING".into()),
            Some(status) => Err(status_name(status).into()),
            None => Err("not a HealthCheckResponse".into()),
        }
    }
}

fn text(e: Box<pingora::Error>) -> String {
    e.to_string()
}

/// `HealthCheckRequest { service }`: field 1, a string, absent when empty.
fn check_request(service: &str) -> Vec<u8> {
    let mut out = Vec::new();
    if !service.is_empty() {
        out.push(0x0a);
        put_varint(&mut out, service.len() as u64);
        out.extend_from_slice(service.as_bytes());
    }
    out
}

/// The gRPC frame of an uncompressed message: a zero byte, the length as
/// four big-endian bytes, the message.
fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// The `status` of a framed `HealthCheckResponse`; 0 (UNKNOWN) when the
/// message leaves it out, as proto3 does for the default.
fn serving_status(body: &[u8]) -> Option<u64> {
    let (&compressed, rest) = body.split_first()?;
    if compressed != 0 || rest.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes(rest[..4].try_into().ok()?) as usize;
    let mut msg = rest.get(4..4 + len)?;
    let mut status = 0;
    while !msg.is_empty() {
        let (key, n) = varint(msg)?;
        msg = &msg[n..];
        match key & 7 {
            0 => {
                let (v, n) = varint(msg)?;
                msg = &msg[n..];
                if key >> 3 == 1 {
                    status = v;
                }
            }
            2 => {
                let (len, n) = varint(msg)?;
                msg = msg.get(n.checked_add(usize::try_from(len).ok()?)?..)?;
            }
            1 => msg = msg.get(8..)?,
            5 => msg = msg.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

fn status_name(status: u64) -> &'static str {
    match status {
        0 => "UNKNOWN",
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "an unknown serving status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_names_its_service_or_is_empty() {
        assert_eq!(&frame(&check_request(""))[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &frame(&check_request("orders"))[..],
            &[0, 0, 0, 0, 8, 0x0a, 6, b'o', b'r', b'd', b'e', b'r', b's']
        );
    }

    #[test]
    fn the_status_is_read_from_the_answer() {
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 1]), Some(1));
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 2]), Some(2));
        assert_eq!(serving_status(&[0, 0, 0, 0, 0]), Some(0));
        // An unknown string field before it is skipped.
        assert_eq!(
            serving_status(&[0, 0, 0, 0, 5, 0x12, 1, b'x', 0x08, 1]),
            Some(1)
        );
        assert_eq!(serving_status(&[0, 0, 0, 0, 9, 0x08]), None);
        assert_eq!(serving_status(&[1, 0, 0, 0, 0]), None);
        assert_eq!(serving_status(&[]), None);
        // A length no message could have.
        let huge = [
            0, 0, 0, 0, 11, 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert_eq!(serving_status(&huge), None);
        // A length no message could have.
        let huge = [
            0, 0, 0, 0, 11, 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert_eq!(serving_status(&huge), None);
    }
}
