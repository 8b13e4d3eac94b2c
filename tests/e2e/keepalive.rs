//! Backends that announce their keep-alive (`Keep-Alive: timeout=2`, then
//! a close 2 s after the last response): under load paced to send requests
//! at the very moment the backend closes, none may reach a connection the
//! backend is closing. The clients POST, which is never sent twice, so a
//! request that hit a closing connection shows at the client as a 502
//! rather than being repeated out of sight.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::support::announcing::{AnnouncingBackend, Seen, KEEPALIVE};
use crate::support::proxy::metric_sum;
use crate::support::{TestProxy, DEADLINE};

/// Clients, each with an upstream and a backend of its own, so each
/// client's requests reuse the one connection its last request used.
const LANES: usize = 4;

/// Requests per client after its first.
const PACED: usize = 10;

/// A reused connection idle this long was one its backend was about to
/// close.
const CLOSING: Duration = Duration::from_millis(1800);

/// Aimed requests are sent this long before the backend's close (a
/// negative value: after it) ...
const AIM_FROM_US: i64 = 3000;

/// ... stepping this much later from one aimed request to the next, over
/// every client, so together they sweep the moment of the close.
const AIM_STEP_US: i64 = 140;

/// How long a client waits before its next request.
#[derive(Clone, Copy, Debug)]
enum Wait {
    /// Until this many microseconds before the backend closes the
    /// connection the last answer came on.
    Aim(i64),
    /// This long after the last answer.
    After(Duration),
}

/// The waits of client `lane`: mostly aimed at the close, each client at
/// other offsets; two plain gaps, one short enough to reuse the
/// connection whatever the hint says, one between 1 and 2 s.
fn schedule(lane: usize) -> Vec<Wait> {
    let mut aimed = 0;
    (0..PACED)
        .map(|i| match i {
            4 => Wait::After(Duration::from_millis(500)),
            9 => Wait::After(Duration::from_millis(1000 + 250 * lane as u64)),
            _ => {
                let n = (aimed * LANES + lane) as i64;
                aimed += 1;
                Wait::Aim(AIM_FROM_US - n * AIM_STEP_US)
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_hint_no_request_on_a_closing_connection() {
    let mut backends = Vec::new();
    let mut upstreams = String::new();
    for lane in 0..LANES {
        let b = AnnouncingBackend::start().await;
        upstreams.push_str(&format!(
            "[upstreams.lane{lane}]\nretries = 0\nbackends = [\"{}\"]\n\
             [[routes]]\npath_prefix = \"/lane{lane}\"\nupstream = \"lane{lane}\"\n",
            b.addr
        ));
        backends.push(b);
    }
    let proxy = TestProxy::start(&upstreams).await;
    let clients: Vec<_> = backends
        .iter()
        .enumerate()
        .map(|(lane, b)| {
            let (addr, seen) = (proxy.addr, b.seen());
            std::thread::spawn(move || paced_client(addr, lane, seen))
        })
        .collect();
    let mut failures = Vec::new();
    for c in clients {
        failures.extend(
            tokio::task::spawn_blocking(move || c.join().expect("a client panicked"))
                .await
                .unwrap(),
        );
    }
    let seen: Vec<Seen> = backends.iter().map(|b| b.seen()).collect();
    let idles: Vec<Duration> = seen.iter().flat_map(|s| s.idles()).collect();
    let closing: Vec<&Duration> = idles.iter().filter(|i| **i >= CLOSING).collect();
    let after_close: usize = seen.iter().map(|s| s.after_close()).sum();
    eprintln!(
        "keepalive: {} requests on {} connections, {} reused; {} reused \
         after {CLOSING:?} idle, {after_close} after the close, {} failed",
        seen.iter().map(|s| s.requests()).sum::<usize>(),
        seen.iter().map(|s| s.connections()).sum::<usize>(),
        idles.len(),
        closing.len(),
        failures.len(),
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {failures:?}",
        failures.len(),
        LANES * (PACED + 1)
    );
    assert!(
        closing.is_empty(),
        "requests reused connections idle for {closing:?}, against a keep-alive of {KEEPALIVE:?}"
    );
    assert_eq!(after_close, 0, "requests came on connections being closed");
    // The hint shortens reuse; it must not end it.
    assert!(!idles.is_empty(), "no connection was ever reused");
    let status = proxy.backend(backends[0].addr).await;
    assert_eq!(status["keepalive_announced_s"], 2, "{status}");
    let m = proxy.metrics().await;
    assert_eq!(
        metric_sum(&m, "switchyard_upstream_failures_total", &[]),
        0.0
    );
}

/// Sends client `lane`'s requests as [`schedule`] paces them, each a POST
/// on a keep-alive connection to the proxy (a new one after a failure).
/// Returns the requests that did not get their 200.
fn paced_client(proxy: SocketAddr, lane: usize, seen: Seen) -> Vec<String> {
    let mut failures = Vec::new();
    let mut client: Option<Client> = None;
    let waits = std::iter::once(None).chain(schedule(lane).into_iter().map(Some));
    let mut last: Option<(Instant, Option<usize>)> = None;
    for (i, wait) in waits.enumerate() {
        if let (Some(wait), Some((answered, connection))) = (wait, last) {
            std::thread::sleep(until(wait, answered, connection, &seen));
        }
        let c = match client.take() {
            Some(c) => c,
            None => Client::connect(proxy),
        };
        match c.post(&format!("/lane{lane}")) {
            Ok((c, status, connection)) => {
                if status != 200 {
                    failures.push(format!("lane {lane} request {i} ({wait:?}): {status}"));
                }
                client = c;
                last = Some((Instant::now(), connection));
            }
            Err(e) => {
                failures.push(format!("lane {lane} request {i} ({wait:?}): {e}"));
                last = Some((Instant::now(), None));
            }
        }
    }
    failures
}

/// How long to sleep for `wait`, the last answer having come at
/// `answered` on the backend's connection `connection`.
fn until(wait: Wait, answered: Instant, connection: Option<usize>, seen: &Seen) -> Duration {
    let target = match (wait, connection.and_then(|n| seen.deadline(n))) {
        (Wait::Aim(before_us), Some(close)) => {
            let close = close.into_std();
            if before_us >= 0 {
                close - Duration::from_micros(before_us as u64)
            } else {
                close + Duration::from_micros(before_us.unsigned_abs())
            }
        }
        (Wait::After(gap), _) => answered + gap,
        // No answer to aim from: a gap of the keep-alive's length.
        (Wait::Aim(_), None) => answered + KEEPALIVE,
    };
    target.saturating_duration_since(Instant::now())
}

/// One keep-alive connection to the proxy, blocking, so that a request
/// goes out within microseconds of when it is meant to.
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(proxy: SocketAddr) -> Client {
        let stream = TcpStream::connect(proxy).expect("connect to the proxy");
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    /// POSTs to `path`: the status, the backend connection it came on
    /// (`X-Connection`), and this client again unless the proxy closes.
    fn post(mut self, path: &str) -> Result<(Option<Client>, u16, Option<usize>), String> {
        let request =
            format!("POST {path} HTTP/1.1\r\nHost: keepalive.test\r\nContent-Length: 2\r\n\r\nhi");
        self.reader
            .get_mut()
            .write_all(request.as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        let mut head = Vec::new();
        // A head has a bounded number of lines; the proxy caps its size.
        for _ in 0..200 {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("the proxy closed before answering".into());
            }
            if line == "\r\n" {
                break;
            }
            head.push(line.trim_end().to_string());
        }
        let status = head
            .first()
            .and_then(|l| l.get(9..12))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line: {head:?}"))?;
        let header = |name: &str| {
            head.iter().skip(1).find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{status} without Content-Length"))?;
        let mut body = vec![0; length];
        self.reader
            .read_exact(&mut body)
            .map_err(|e| format!("{status} body: {e}"))?;
        let connection = header("x-connection").and_then(|v| v.parse().ok());
        let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        Ok(((!close).then_some(self), status, connection))
    }
}
