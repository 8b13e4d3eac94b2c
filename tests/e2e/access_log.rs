//! The access log of a running proxy: every request of a mixed run (200s,
//! a 404, a 502, a retry, a WebSocket) has exactly one line with every
//! documented field; a writer that cannot write drops and counts instead
//! of holding requests up; a reload moves the log; and the binary reopens
//! its file on SIGUSR1 and writes its last lines before it exits.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::access_log::{get, lines, log_table, wait_for};
use crate::support::binary::{signal, spawn, wait_exit, BinaryConfig};
use crate::support::grpc::{raw_call, upstream};
use crate::support::proxy::{app, metric_sum};
use crate::support::websocket::{WsBackend, WsClient};
use crate::support::{client, closed_port, eventually, temp_dir, Behavior, TestBackend, TestProxy};

/// Every field of a JSON line, as the README lists them.
const FIELDS: [&str; 17] = [
    "time",
    "request_id",
    "client",
    "method",
    "host",
    "path",
    "protocol",
    "status",
    "bytes_in",
    "bytes_out",
    "duration",
    "upstream_time",
    "route",
    "upstream",
    "backend",
    "attempts",
    "local_reason",
];

fn route(prefix: &str, upstream: &str) -> String {
    format!("[[routes]]\nname = \"{upstream}\"\npath_prefix = \"{prefix}\"\nupstream = \"{upstream}\"\n")
}

/// The one line whose `key` is `value`.
fn only<'a>(all: &'a [Value], key: &str, value: &str) -> &'a Value {
    let found: Vec<&Value> = all.iter().filter(|l| l[key] == value).collect();
    assert_eq!(found.len(), 1, "{key} = {value} in:\n{all:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_of_a_mixed_run_has_one_line_with_every_field() {
    let dir = temp_dir("access-log");
    let log = dir.join("access.log");
    let good = TestBackend::start("good", Behavior::BodyLength).await;
    let second = TestBackend::start("second", Behavior::Name).await;
    let ws = WsBackend::start().await;
    let (dead, refused) = (closed_port(), closed_port());
    let upstreams = [
        app("", &[good.addr]),
        app("", &[dead]).replace("[upstreams.app]", "[upstreams.broken]"),
        // Round-robin tries the refusing backend first, then retries.
        app("retries = 1\n", &[refused, second.addr])
            .replace("[upstreams.app]", "[upstreams.retried]"),
        app("", &[ws.addr]).replace("[upstreams.app]", "[upstreams.ws]"),
    ];
    let routes = [
        route("/app", "app"),
        route("/broken", "broken"),
        route("/retried", "retried"),
        route("/ws", "ws"),
    ];
    let text = format!(
        "{}{}{}",
        log_table(&log, ""),
        upstreams.concat(),
        routes.concat()
    );
    let proxy = TestProxy::start(&text).await;
    let http = client();

    assert_eq!(
        get(&http, proxy.url("/app/a?token=secret"), "ok-1").await,
        200
    );
    let posted = http
        .post(proxy.url("/app/b"))
        .header("x-request-id", "ok-2")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    assert_eq!(posted.text().await.unwrap().trim(), "good 5");
    assert_eq!(get(&http, proxy.url("/nowhere"), "missing").await, 404);
    assert_eq!(get(&http, proxy.url("/broken"), "broken").await, 502);
    assert_eq!(get(&http, proxy.url("/retried"), "retried").await, 200);
    let mut socket = WsClient::open(proxy.addr, "/ws/chat").await.unwrap();
    assert_eq!(socket.echo("hi there").await.unwrap(), "hi there");
    drop(socket);
    // The tunnel's line comes when it closes; one more request after it
    // is the last line, so anything written twice would be there by then.
    eventually("the tunnel's line", || async {
        lines(&log).iter().any(|l| l["status"] == 101).then_some(())
    })
    .await;
    assert_eq!(get(&http, proxy.url("/app/last"), "last").await, 200);
    let all = wait_for(&log, "last").await;
    assert_eq!(all.len(), 7, "{all:#?}");

    for line in &all {
        let keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut want = FIELDS.to_vec();
        want.sort_unstable();
        let mut got = keys.clone();
        got.sort_unstable();
        assert_eq!(got, want, "{line}");
        let time = line["time"].as_str().unwrap();
        assert!(
            humantime::parse_rfc3339(time).is_ok() && time.len() == 24,
            "{time}"
        );
        assert_eq!(line["client"], "127.0.0.1");
        assert_eq!(line["protocol"], "HTTP/1.1");
        assert!(line["duration"].as_f64().unwrap() >= 0.0);
        assert!(line["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    }
    let ok = only(&all, "request_id", "ok-1");
    assert_eq!(ok["path"], "/app/a", "the query is left out by default");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["host"], proxy.addr.to_string());
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["route"], "app");
    assert_eq!(ok["upstream"], "app");
    assert_eq!(ok["backend"], good.addr.to_string());
    assert_eq!(ok["attempts"], 1);
    assert_eq!(ok["local_reason"], Value::Null);
    assert!(ok["upstream_time"].as_f64().is_some());
    assert!(ok["bytes_out"].as_u64().unwrap() > 0);
    let post = only(&all, "request_id", "ok-2");
    assert_eq!(
        (&post["method"], &post["bytes_in"]),
        (&"POST".into(), &5.into())
    );

    let missing = only(&all, "request_id", "missing");
    assert_eq!(missing["status"], 404);
    assert_eq!(missing["local_reason"], "no_route");
    assert_eq!(missing["route"], Value::Null);
    assert_eq!(missing["upstream"], Value::Null);
    assert_eq!(
        (&missing["attempts"], &missing["upstream_time"]),
        (&0.into(), &Value::Null)
    );

    let broken = only(&all, "request_id", "broken");
    assert_eq!(broken["status"], 502);
    assert_eq!(broken["local_reason"], "connect_failed");
    assert_eq!(broken["upstream"], "broken");
    assert_eq!(broken["backend"], dead.to_string());
    assert_eq!(broken["upstream_time"], Value::Null);

    let retried = only(&all, "request_id", "retried");
    assert_eq!(retried["status"], 200);
    assert_eq!(retried["attempts"], 2);
    assert_eq!(retried["backend"], second.addr.to_string());
    assert_eq!(retried["local_reason"], Value::Null);

    let tunnel = only(&all, "path", "/ws/chat");
    assert_eq!(tunnel["status"], 101);
    assert_eq!(tunnel["route"], "ws");
    assert_eq!(tunnel["backend"], ws.addr.to_string());
    // One masked frame of 8 bytes each way: 2 + 4 + 8 in, 2 + 8 out.
    assert!(tunnel["bytes_in"].as_u64().unwrap() >= 14, "{tunnel}");
    assert!(tunnel["bytes_out"].as_u64().unwrap() >= 10, "{tunnel}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_is_kept_when_asked_and_combined_lines_follow_nginx() {
    let dir = temp_dir("access-log");
    let log = dir.join("access.log");
    let backend = TestBackend::start("a", Behavior::Name).await;
    let text = format!(
        "{}{}",
        log_table(&log, "format = \"combined\"\nlog_query = true\n"),
        app("", &[backend.addr])
    );
    let proxy = TestProxy::start(&text).await;
    let r = client()
        .get(proxy.url("/x?q=1"))
        .header("user-agent", "tester/1.0")
        .header("referer", "http://ref.test/\"quoted\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let line = eventually("the combined line", || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines().next().map(str::to_string)
    })
    .await;
    let (head, rest) = line.split_once(" [").unwrap();
    assert_eq!(head, "127.0.0.1 - -");
    let (time, rest) = rest.split_once("] ").unwrap();
    assert!(time.ends_with(" +0000") && time.len() == 26, "{time}");
    assert_eq!(
        rest,
        "\"GET /x?q=1 HTTP/1.1\" 200 2 \"http://ref.test/\\x22quoted\\x22\" \"tester/1.0\""
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_and_counts_instead_of_blocking() {
    let dir = temp_dir("access-log");
    let fifo = dir.join("access.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    let backend = TestBackend::start("a", Behavior::Name).await;
    // Nobody reads the FIFO: the writer waits to open it, and its queue
    // of 4 fills.
    let text = format!(
        "{}{}",
        log_table(&fifo, "queue_lines = 4\n"),
        app("", &[backend.addr])
    );
    let proxy = TestProxy::start(&text).await;
    let http = client();
    const REQUESTS: usize = 50;
    for i in 0..REQUESTS {
        assert_eq!(get(&http, proxy.url("/"), &format!("r{i}")).await, 200);
    }
    // Counted after each response is sent.
    let m = proxy.metrics_after(REQUESTS as f64).await;
    let dropped = metric_sum(&m, "switchyard_access_log_dropped_total", &[]);
    // At most the queue (4), one pass of it (4) and the line that woke
    // the writer were kept.
    assert!(dropped >= (REQUESTS - 9) as f64, "dropped {dropped}");
    // A reader at last: the lines kept are whole.
    let first = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&fifo).unwrap();
        let mut line = String::new();
        std::io::BufReader::new(file).read_line(&mut line).unwrap();
        line
    });
    let first = tokio::time::timeout(crate::support::DEADLINE, first)
        .await
        .expect("the writer goes on once read")
        .unwrap();
    let v: Value = serde_json::from_str(&first).unwrap();
    assert!(v["request_id"]
        .as_str()
        .is_some_and(|id| id.starts_with('r')));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_the_log_and_a_log_that_cannot_be_opened_is_refused() {
    let dir = temp_dir("access-log");
    let (first, second) = (dir.join("first.log"), dir.join("second.log"));
    let backend = TestBackend::start("a", Behavior::Name).await;
    let upstream = app("", &[backend.addr]);
    let proxy = TestProxy::start(&format!("{}{upstream}", log_table(&first, ""))).await;
    let http = client();
    assert_eq!(get(&http, proxy.url("/"), "before").await, 200);
    wait_for(&first, "before").await;

    let moved = proxy.config_text(&format!("{}{upstream}", log_table(&second, "")));
    std::fs::write(&proxy.config, moved).unwrap();
    let (status, answer) = proxy.reload().await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["changes"]["settings_changed"]
            .to_string()
            .contains("[log]"),
        "{answer}"
    );
    assert_eq!(get(&http, proxy.url("/"), "after").await, 200);
    wait_for(&second, "after").await;
    assert!(lines(&first).iter().all(|l| l["request_id"] != "after"));

    let bad = PathBuf::from("/no/such/dir/access.log");
    let refused = proxy.config_text(&format!("{}{upstream}", log_table(&bad, "")));
    std::fs::write(&proxy.config, refused).unwrap();
    let (status, answer) = proxy.reload().await;
    assert_eq!(status, 422, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("proxy.toml:") && error.contains("does not exist"),
        "{error}"
    );
    assert_eq!(get(&http, proxy.url("/"), "kept").await, 200);
    wait_for(&second, "kept").await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The binary with its access log in `log`.
fn binary_config(log: &Path, backend: SocketAddr) -> BinaryConfig {
    BinaryConfig::with_settings("30s", "", &log_table(log, ""), &[backend])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_reopens_the_file_and_the_last_lines_are_written_at_exit() {
    let backend = TestBackend::start("a", Behavior::Name).await;
    let dir = temp_dir("access-log-bin");
    let (log, rotated) = (dir.join("access.log"), dir.join("access.log.1"));
    let config = binary_config(&log, backend.addr);
    let mut running = spawn(&config.path, false);
    let http = client();
    eventually("the binary to answer", || async {
        let r = http.get(config.url()).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert_eq!(get(&http, config.url(), "before").await, 200);
    wait_for(&log, "before").await;

    // logrotate: move the file away, then SIGUSR1.
    std::fs::rename(&log, &rotated).unwrap();
    signal(&running, "-USR1");
    eventually("the file to be opened anew", || async {
        log.exists().then_some(())
    })
    .await;
    assert_eq!(get(&http, config.url(), "after").await, 200);
    wait_for(&log, "after").await;
    let old: Vec<Value> = lines(&rotated);
    assert!(old.iter().any(|l| l["request_id"] == "before"));
    assert!(old.iter().all(|l| l["request_id"] != "after"), "{old:#?}");
    assert!(
        running.0.try_wait().unwrap().is_none(),
        "SIGUSR1 must not stop the process"
    );

    // The last request's line is written before the process exits.
    assert_eq!(get(&http, config.url(), "last").await, 200);
    drop(http);
    signal(&running, "-TERM");
    let status = wait_exit(&mut running, "the binary to exit after SIGTERM").await;
    assert!(status.success(), "{status}");
    assert!(lines(&log).iter().any(|l| l["request_id"] == "last"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_answered_locally_is_logged_as_the_200_it_got_with_its_reason() {
    let dir = temp_dir("access-log");
    let log = dir.join("access.log");
    let text = format!(
        "{}{}",
        log_table(&log, ""),
        upstream("app", &[closed_port()], "")
    );
    let proxy = TestProxy::start_with("h2c = true\n", &text).await;
    let (head, _) = raw_call(
        proxy.addr,
        "/test.Echo/Unary",
        &[("x-request-id", "grpc-1")],
    )
    .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["grpc-status"], "14");
    let all = wait_for(&log, "grpc-1").await;
    let line = only(&all, "request_id", "grpc-1");
    assert_eq!(line["status"], 200);
    assert_eq!(line["local_reason"], "connect_failed");
    assert_eq!(line["protocol"], "HTTP/2.0");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["path"], "/test.Echo/Unary");
    let _ = std::fs::remove_dir_all(&dir);
}
