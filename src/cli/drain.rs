//! `switchyard drain` and `switchyard undrain`: the admin port's backend
//! drain from a deploy script. `drain --wait` blocks until nothing is left
//! on the backend, printing progress once a second, so the script can stop
//! the backend the moment the command returns.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::Value;

use crate::config::DEFAULT_ADMIN_LISTEN;

/// How long one admin request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How often `--wait` asks how the drain stands.
const POLL: Duration = Duration::from_millis(200);

/// Where the admin port is and which backend to act on.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The admin listener, `host:port`.
    #[arg(long, default_value = DEFAULT_ADMIN_LISTEN)]
    pub admin: String,
    /// The `[admin] token`, if the config sets one.
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The upstream, as named in the config.
    pub upstream: String,
    /// The backend's address, as the config or DNS gives it (`ip:port`).
    pub backend: String,
}

/// `switchyard drain`'s own flags.
#[derive(Debug, Clone, Args)]
pub struct DrainArgs {
    #[command(flatten)]
    pub target: Target,
    /// Block until no request and no tunnel is left on the backend.
    #[arg(long)]
    pub wait: bool,
    /// With `--wait`: give up (exit 1) after this long, e.g. `90s`, `10m`.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Drains the backend; with `--wait`, until it is drained. `Err` says why
/// not, for the exit status 1.
pub fn drain(args: &DrainArgs, out: &mut dyn Write) -> Result<(), String> {
    let t = &args.target;
    let mut state = t.call("POST", "drain")?;
    let _ = writeln!(out, "{}", line(&state));
    if !args.wait {
        return Ok(());
    }
    let began = Instant::now();
    let mut shown = began;
    while !state["drained"].as_bool().unwrap_or(false) {
        if began.elapsed() >= args.timeout {
            return Err(format!(
                "not drained after {}: {}",
                humantime::format_duration(args.timeout),
                line(&state)
            ));
        }
        std::thread::sleep(POLL);
        state = t.call("GET", "drain")?;
        if shown.elapsed() >= Duration::from_secs(1) {
            shown = Instant::now();
            let _ = writeln!(out, "{}", line(&state));
        }
    }
    let _ = writeln!(
        out,
        "drained {} {} in {:.1} s: nothing left on it, safe to stop",
        t.upstream,
        state["backend"].as_str().unwrap_or(&t.backend),
        began.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Takes the backend back.
pub fn undrain(t: &Target, out: &mut dyn Write) -> Result<(), String> {
    let state = t.call("POST", "undrain")?;
    let _ = writeln!(out, "{}", line(&state));
    Ok(())
}

/// One line for a drain's JSON state:
/// `draining app 127.0.0.1:3001: 3 requests, 1 tunnels left`.
fn line(state: &Value) -> String {
    let what = state["state"].as_str().unwrap_or("unknown");
    let upstream = state["upstream"].as_str().unwrap_or_default();
    let backend = state["backend"].as_str().unwrap_or_default();
    match what {
        "draining" => format!(
            "draining {upstream} {backend}: {} requests, {} tunnels left",
            state["in_flight"], state["tunnels"]
        ),
        "drained" => format!("drained {upstream} {backend}: nothing left"),
        _ => format!("{upstream} {backend}: {what}, takes requests"),
    }
}

impl Target {
    /// `METHOD /upstreams/U/backends/B/ACTION` on the admin port: the JSON
    /// answer of a 200, or why there was none.
    fn call(&self, method: &str, action: &str) -> Result<Value, String> {
        let path = format!(
            "/upstreams/{}/backends/{}/{action}",
            encode(&self.upstream),
            encode(&self.backend)
        );
        let (status, body) = self.request(method, &path)?;
        let text = String::from_utf8_lossy(&body);
        if status != 200 {
            return Err(format!("{method} {path}: {status}: {}", text.trim()));
        }
        serde_json::from_str(&text).map_err(|e| format!("{method} {path}: not JSON: {e}"))
    }

    /// One HTTP/1.1 request on a connection of its own: status and body.
    fn request(&self, method: &str, path: &str) -> Result<(u16, Vec<u8>), String> {
        let fail = |e: std::io::Error| format!("admin {}: {e}", self.admin);
        // Each address the name has, in turn (`localhost` may be `::1`
        // first, and the admin port on 127.0.0.1 only).
        let mut last = None;
        let mut connected = None;
        for addr in self.admin.to_socket_addrs().map_err(fail)? {
            match TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT) {
                Ok(s) => {
                    connected = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let mut stream = match (connected, last) {
            (Some(s), _) => s,
            (None, Some(e)) => return Err(fail(e)),
            (None, None) => return Err(format!("admin {}: no address", self.admin)),
        };
        stream
            .set_read_timeout(Some(REQUEST_TIMEOUT))
            .map_err(fail)?;
        stream
            .set_write_timeout(Some(REQUEST_TIMEOUT))
            .map_err(fail)?;
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Length: 0\r\n\
             Connection: close\r\n\r\n",
            self.admin
        );
        stream.write_all(head.as_bytes()).map_err(fail)?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).map_err(fail)?;
        parse_response(&answer).ok_or_else(|| format!("admin {}: not an HTTP answer", self.admin))
    }
}

/// The status and body of a whole HTTP/1.1 response read to its end: the
/// body is `Content-Length` long (the admin port always sends it), or what
/// follows the head if it has none; a chunked answer is not one.
fn parse_response(answer: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&answer[..end]).ok()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let field = |name: &str| {
        head.split("\r\n").skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    };
    if field("transfer-encoding").is_some() {
        return None;
    }
    let body = &answer[end + 4..];
    let len = match field("content-length") {
        Some(n) => n.parse().ok().filter(|&n| n <= body.len())?,
        None => body.len(),
    };
    Some((status, body[..len].to_vec()))
}

/// Percent-encodes what may not stand as written in a path segment.
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded_and_answers_parsed() {
        assert_eq!(encode("[::1]:3001"), "%5B::1%5D:3001");
        assert_eq!(encode("app/x y"), "app%2Fx%20y");
        let answer = b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno\n";
        assert_eq!(parse_response(answer), Some((404, b"no\n".to_vec())));
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\n"), None);
        let longer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}junk";
        assert_eq!(parse_response(longer), Some((200, b"{}".to_vec())));
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}";
        assert_eq!(parse_response(short), None);
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), None);
        let state = serde_json::json!({
            "state": "draining", "upstream": "app", "backend": "127.0.0.1:3001",
            "in_flight": 3, "tunnels": 1,
        });
        assert_eq!(
            line(&state),
            "draining app 127.0.0.1:3001: 3 requests, 1 tunnels left"
        );
    }
}
