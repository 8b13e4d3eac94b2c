//! The `switchyard` binary itself: it serves a config file, SIGTERM makes
//! it exit cleanly after in-flight requests, SIGHUP reloads, and `--upgrade`
//! with SIGQUIT hands the sockets over without losing a request.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use crate::support::binary::{signal, spawn, wait_exit, BinaryConfig, Running};
use crate::support::{
    client, closed_port, eventually, no_failures, Behavior, TestBackend, DEADLINE,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_its_config_and_exits_on_sigterm() {
    let backend = TestBackend::start("a", Behavior::Name).await;
    let (addr, admin) = (closed_port(), closed_port());
    let dir = std::env::temp_dir().join(format!("switchyard-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("proxy.toml");
    let config = format!(
        "[server]\nlisten = [\"{addr}\"]\nthreads = 1\ngrace_period = \"0s\"\n\
         [admin]\nlisten = \"{admin}\"\n[upstreams.app]\nbackends = [\"{}\"]\n",
        backend.addr
    );
    std::fs::write(&path, config).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut running = Running(child);

    let http = client();
    let url = format!("http://{addr}/");
    let body = eventually("the binary to proxy", || async {
        let r = http.get(&url).send().await.ok()?;
        r.text().await.ok()
    })
    .await;
    assert_eq!(body.trim(), "a");
    let metrics_url = format!("http://{admin}/metrics");
    eventually("the request to be counted on the admin port", || async {
        let text = http
            .get(&metrics_url)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.contains("switchyard_requests_total{").then_some(())
    })
    .await;

    let pid = running.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = eventually("the binary to exit after SIGTERM", || {
        let exited = running.0.try_wait().unwrap();
        async move { exited }
    })
    .await;
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits until the binary answers with `name`.
async fn answers(config: &BinaryConfig, name: &str) {
    let http = client();
    eventually(&format!("the binary to answer {name}"), || async {
        let r = http.get(config.url()).send().await.ok()?;
        (r.text().await.ok()?.trim() == name).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_file() {
    let a = TestBackend::start("a", Behavior::Name).await;
    let b = TestBackend::start("b", Behavior::Name).await;
    let config = BinaryConfig::new("0s", &[a.addr]);
    let running = spawn(&config.path, false);
    answers(&config, "a").await;
    // With the watcher off, only SIGHUP can apply this; it must not kill
    // the process either.
    config.write("0s", &[b.addr]);
    signal(&running, "-HUP");
    answers(&config, "b").await;
    let status = format!("http://{}/status", config.admin);
    let s: serde_json::Value = serde_json::from_str(
        &client()
            .get(&status)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(s["config"]["snapshot_version"], 2, "{s:#}");
    assert_eq!(s["config"]["last_reload"]["trigger"], "SIGHUP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_request_in_flight_finish_and_exits_0() {
    let (open, gate) = watch::channel(false);
    let held = TestBackend::start("held", Behavior::Gated(gate)).await;
    // A grace period far past `wait_exit`'s deadline: the exit comes once
    // the request is done, not at the end of it.
    let config = BinaryConfig::new("300s", &[held.addr]);
    let mut running = spawn(&config.path, false);
    let http = client();
    eventually("the admin port", || async {
        let url = format!("http://{}/healthz", config.admin);
        http.get(url).send().await.ok()
    })
    .await;
    // The data listener may start a moment after the admin port.
    eventually("the data port", || async {
        tokio::net::TcpStream::connect(config.addr).await.ok()
    })
    .await;
    let request = tokio::spawn({
        let (http, url) = (http.clone(), config.url());
        async move { http.get(url).send().await?.text().await }
    });
    eventually("the request to be held", || async {
        (held.received() == 1).then_some(())
    })
    .await;
    // An admin connection opened before the drain is answered once more
    // (then closed, as every connection is in a drain): `/status` says
    // what the drain waits for.
    let mut admin = tokio::net::TcpStream::connect(config.admin).await.unwrap();
    signal(&running, "-TERM");
    eventually("the listeners to stop", || async {
        tokio::net::TcpStream::connect(config.addr).await.err()
    })
    .await;
    let drain = status_over(&mut admin).await["drain"].clone();
    assert_eq!(drain["draining"], true, "{drain}");
    assert_eq!(
        (drain["requests"].as_u64(), drain["tunnels"].as_u64()),
        (Some(1), Some(0)),
        "{drain}"
    );
    // Let it be answered well inside the grace period.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        running.0.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );
    open.send(true).unwrap();
    assert_eq!(request.await.unwrap().unwrap().trim(), "held");
    let status = wait_exit(&mut running, "the binary to exit after SIGTERM").await;
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_and_sigquit_hand_over_without_a_failed_request() {
    let a = TestBackend::start("a", Behavior::Name).await;
    let config = BinaryConfig::new("1s", &[a.addr]);
    let mut old = spawn(&config.path, false);
    answers(&config, "a").await;

    // Clients on keep-alive connections, and new connections, throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for fresh in [false, false, true] {
        let (stop, url) = (Arc::clone(&stop), config.url());
        clients.spawn(async move {
            let (mut sent, mut failures) = (0usize, Vec::new());
            let deadline = tokio::time::Instant::now() + DEADLINE;
            let mut http = client();
            while !stop.load(Ordering::SeqCst) && tokio::time::Instant::now() < deadline {
                if fresh {
                    http = client();
                }
                match http.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {}
                    Ok(r) => failures.push(format!("status {}", r.status())),
                    Err(e) => failures.push(format!("{e:?}")),
                }
                sent += 1;
            }
            (sent, failures)
        });
    }
    // The new process waits on the upgrade socket for the old one's
    // listeners; the old one retries until the new one listens there.
    let mut new = spawn(&config.path, true);
    signal(&old, "-QUIT");
    let status = wait_exit(&mut old, "the old process to exit").await;
    assert!(status.success(), "{status}");
    answers(&config, "a").await;
    stop.store(true, Ordering::SeqCst);
    no_failures(clients).await;
    assert!(
        new.0.try_wait().unwrap().is_none(),
        "the new process serves on"
    );
    signal(&new, "-TERM");
    wait_exit(&mut new, "the new process to exit").await;
}

/// `GET /status` on an open connection, read to its close.
async fn status_over(stream: &mut tokio::net::TcpStream) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = b"GET /status HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    let (_, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// With `--daemon` Pingora forks once its services are built: the access
/// log's writer and the drain's watcher are started after that, so the
/// daemon writes its lines and exits as soon as SIGTERM's drain is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_a_daemon_it_logs_and_exits_once_drained() {
    use crate::support::access_log::{get, log_table, wait_for};
    use sha2::Digest;
    let backend = TestBackend::start("app", Behavior::Name).await;
    let log = crate::support::temp_dir("daemon").join("access.log");
    let config = BinaryConfig::with_settings("300s", "", &log_table(&log, ""), &[backend.addr]);
    let started = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--daemon")
        .arg("--config")
        .arg(&config.path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(started.success(), "{started}");
    // Its pid file, where the server puts it for this config path.
    let path = std::path::absolute(&config.path).unwrap();
    let digest = sha2::Sha256::digest(path.as_os_str().as_encoded_bytes());
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    let pid_file = format!("/tmp/switchyard-{hex}.pid");
    let http = client();
    eventually("the daemon to answer", || async {
        let r = http.get(config.url()).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert_eq!(get(&http, config.url(), "daemon-1").await, 200);
    let lines = wait_for(&log, "daemon-1").await;
    assert_eq!(lines.last().unwrap()["status"], 200);
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    drop(http);
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    // The grace period is 300 s: gone well before means the drain ended it.
    eventually("the daemon to exit after SIGTERM", || async {
        let alive = std::process::Command::new("kill")
            .args(["-0", &pid])
            .status()
            .unwrap();
        (!alive.success()).then_some(())
    })
    .await;
}
