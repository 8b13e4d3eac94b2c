//! HTTP/2 clients out to hurt: one that opens streams and resets them at
//! once (rapid reset, CVE-2023-44487), and one that makes the proxy reset
//! them by breaking the protocol on each (MadeYouReset, CVE-2025-8671).
//! Against the real binary, so its memory can be read: neither may stall
//! other clients (each served within a second) or grow memory without
//! bound. Every attack is bounded in streams and in time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::binary::{spawn, Running};
use crate::support::h2raw::{self, Conn};
use crate::support::{closed_port, eventually, temp_dir, Behavior, TestBackend};

/// Streams one attack round opens, and the longest it may take.
const ROUND_STREAMS: usize = 200_000;
const ROUND_TIME: Duration = Duration::from_secs(3);

/// Streams written per batch, each batch in one write.
const BATCH: usize = 100;

/// The slowest a bystander's request may be answered during an attack.
const SERVED_WITHIN: Duration = Duration::from_secs(1);

/// The binary with h2c on, in front of `backend`.
async fn start(backend: SocketAddr) -> (Running, SocketAddr) {
    let (addr, admin) = (closed_port(), closed_port());
    let path = temp_dir("abuse").join("proxy.toml");
    let text = format!(
        "[server]\nlisten = [\"{addr}\"]\nthreads = 2\nh2c = true\nwatch_config = false\n\
         [admin]\nlisten = \"{admin}\"\n[upstreams.app]\nbackends = [\"{backend}\"]\n"
    );
    std::fs::write(&path, text).unwrap();
    let running = spawn(&path, false);
    eventually("the binary to listen", || async {
        tokio::net::TcpStream::connect(addr).await.ok()
    })
    .await;
    (running, addr)
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// What an attack round did.
#[derive(Debug, Default)]
struct Round {
    streams: usize,
    connections: usize,
    /// GOAWAY error codes the proxy sent.
    goaways: Vec<u32>,
    /// RST_STREAM frames the proxy sent.
    resets: usize,
}

/// Opens streams on `addr` in batches, each stream's frames made by
/// `frames(stream)`, reconnecting whenever the proxy closes the connection;
/// until `ROUND_STREAMS` streams or `ROUND_TIME`.
async fn attack(addr: SocketAddr, frames: fn(u32) -> Vec<u8>) -> Round {
    use tokio::io::AsyncWriteExt;
    let mut round = Round::default();
    let started = tokio::time::Instant::now();
    let going = |round: &Round| round.streams < ROUND_STREAMS && started.elapsed() < ROUND_TIME;
    while going(&round) {
        let Ok(Conn {
            frames: mut from_proxy,
            mut writer,
        }) = Conn::open(addr).await
        else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        round.connections += 1;
        let reading = tokio::spawn(async move {
            let (mut goaways, mut resets) = (Vec::new(), 0);
            while let Ok(f) = from_proxy.read(ROUND_TIME).await {
                match f.kind {
                    h2raw::GOAWAY => goaways.extend(f.error_code()),
                    h2raw::RST_STREAM => resets += 1,
                    _ => {}
                }
            }
            (goaways, resets)
        });
        let mut stream = 1u32;
        while going(&round) {
            let mut batch = Vec::new();
            for _ in 0..BATCH {
                batch.extend(frames(stream));
                stream += 2;
            }
            match tokio::time::timeout(ROUND_TIME, writer.write_all(&batch)).await {
                Ok(Ok(())) => round.streams += BATCH,
                _ => break,
            }
        }
        let _ = writer.shutdown().await;
        drop(writer);
        let (goaways, resets) = reading.await.unwrap();
        round.goaways.extend(goaways);
        round.resets += resets;
    }
    round
}

/// Sends requests one after another on its own connection until `stop`,
/// and returns how many it sent, the slowest answer, and the failures.
async fn bystander(url: String, stop: Arc<AtomicBool>) -> (usize, Duration, Vec<String>) {
    let http = crate::support::client();
    let (mut sent, mut slowest, mut failures) = (0, Duration::ZERO, Vec::new());
    while !stop.load(Ordering::SeqCst) && sent < 5_000 {
        let began = tokio::time::Instant::now();
        match http.get(&url).send().await {
            Ok(r) if r.status() == 200 => {}
            Ok(r) => failures.push(format!("status {}", r.status())),
            Err(e) => failures.push(format!("{e:?}")),
        }
        slowest = slowest.max(began.elapsed());
        sent += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (sent, slowest, failures)
}

/// Runs `rounds` of the attack with a bystander alongside each; returns
/// the rounds and the proxy's memory before and after each (KiB).
async fn under_attack(
    frames: fn(u32) -> Vec<u8>,
    rounds: usize,
) -> (Vec<Round>, Vec<u64>, TestBackend) {
    let backend = TestBackend::start("app", Behavior::Name).await;
    let (running, addr) = start(backend.addr).await;
    let pid = running.0.id();
    let url = format!("http://{addr}/");
    // Warm up: the memory a served proxy holds anyway.
    let http = crate::support::client();
    for _ in 0..50 {
        assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    }
    let mut rss = vec![rss_kib(pid)];
    let mut done = Vec::new();
    for _ in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let watching = tokio::spawn(bystander(url.clone(), Arc::clone(&stop)));
        let round = attack(addr, frames).await;
        stop.store(true, Ordering::SeqCst);
        let (sent, slowest, failures) = watching.await.unwrap();
        assert!(
            failures.is_empty(),
            "{} of {sent} bystander requests failed: {failures:?}",
            failures.len()
        );
        assert!(sent >= 3, "the bystander kept sending: {sent}");
        assert!(
            slowest < SERVED_WITHIN,
            "a bystander request took {slowest:?} during {round:?}"
        );
        eprintln!(
            "round: {} streams on {} connections, {} resets and GOAWAYs {:?} from the proxy; \
             bystander: {sent} requests, slowest {slowest:?}",
            round.streams,
            round.connections,
            round.resets,
            dedup(&round.goaways)
        );
        rss.push(rss_kib(pid));
        done.push(round);
    }
    eprintln!(
        "proxy RSS (KiB) before and after each round: {rss:?}; backend received {}",
        backend.received()
    );
    drop(running);
    (done, rss, backend)
}

fn dedup(codes: &[u32]) -> Vec<(u32, usize)> {
    let mut counts: Vec<(u32, usize)> = Vec::new();
    for c in codes {
        match counts.iter_mut().find(|(k, _)| k == c) {
            Some((_, n)) => *n += 1,
            None => counts.push((*c, 1)),
        }
    }
    counts
}

/// Memory after the last round is within `bound` KiB of where it began,
/// and the last round added no more than the slack: it does not grow with
/// the number of streams attacked with.
fn bounded(rss: &[u64], bound: u64, slack: u64) {
    let (first, last) = (rss[0], rss[rss.len() - 1]);
    assert!(
        last <= first + bound,
        "RSS grew from {first} to {last} KiB: {rss:?}"
    );
    let before_last = rss[rss.len() - 2];
    assert!(
        last <= before_last + slack,
        "the last round added {} KiB: {rss:?}",
        last.saturating_sub(before_last)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_neither_stalls_others_nor_grows_memory() {
    let (rounds, rss, backend) = under_attack(
        |stream| {
            [
                h2raw::get(stream, "victim.test", true),
                h2raw::rst(stream, h2raw::CANCEL),
            ]
            .concat()
        },
        3,
    )
    .await;
    for round in &rounds {
        assert!(round.streams >= 1_000, "{round:?}");
        assert!(
            round.goaways.contains(&h2raw::ENHANCE_YOUR_CALM),
            "connections resetting streams that fast are told to calm down: {round:?}"
        );
    }
    let attacked: usize = rounds.iter().map(|r| r.streams).sum();
    assert!(
        backend.received() < attacked / 10,
        "{} of {attacked} reset streams reached the backend",
        backend.received()
    );
    bounded(&rss, 64 * 1024, 8 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_you_reset_ends_the_connection_and_stalls_no_one() {
    let (rounds, rss, _backend) = under_attack(
        // A window update no stream's window can take: a stream error the
        // proxy answers with RST_STREAM, while the backend request goes on.
        |stream| {
            [
                h2raw::get(stream, "victim.test", false),
                h2raw::window_update(stream, 0x7fff_ffff),
            ]
            .concat()
        },
        3,
    )
    .await;
    for round in &rounds {
        assert!(round.streams >= 1_000, "{round:?}");
        assert!(
            round.goaways.contains(&h2raw::ENHANCE_YOUR_CALM),
            "{round:?}"
        );
        // The proxy resets a bounded number per connection, then ends it.
        let per_connection = round.resets / round.connections.max(1);
        assert!(
            per_connection <= switchyard::downstream::MAX_PROTOCOL_RESETS + 1,
            "{round:?}"
        );
    }
    bounded(&rss, 64 * 1024, 8 * 1024);
}
