//! Socket.IO for real: a Node.js Socket.IO server on three processes behind
//! Switchyard, and fifty Socket.IO clients that start on long-polling, as
//! Socket.IO does by default. With the sticky cookie every client's polls
//! reach its own process and it upgrades to a WebSocket; without it, the
//! servers see polls for sessions they do not hold ("Session ID unknown").
//! Needs Node.js and npm; the packages install once per test run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use crate::support::proxy::app;
use crate::support::{closed_port, eventually, TestProxy};

const CLIENTS: usize = 50;
const MESSAGES: usize = 5;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/socketio")
}

/// The example's `node_modules`, installed by `npm ci` into the target
/// directory once per process (never into the source tree).
fn node_modules() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/socketio-npm");
        std::fs::create_dir_all(&dir).expect("create the npm directory");
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(example().join(file), dir.join(file)).expect("copy the package files");
        }
        let out = Command::new("timeout")
            .args([
                "300",
                "npm",
                "ci",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ])
            .current_dir(&dir)
            .output()
            .expect("npm runs (Node.js and npm must be installed)");
        assert!(
            out.status.success(),
            "npm ci failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir.join("node_modules")
    })
}

/// A Socket.IO server process and every line it printed. Killed when dropped.
struct Server {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(port: u16, name: &str) -> Server {
        let mut child = Command::new("node")
            .arg(example().join("server.js"))
            .args([port.to_string(), name.to_string()])
            .env("NODE_PATH", node_modules())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("piped stdout");
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Server { child, lines }
    }

    fn count(&self, prefix: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three servers behind Switchyard (with `tables` after the upstream), the
/// clients' summary, and how many "Session ID unknown" the servers saw.
/// `timeout_ms`: how long a client waits for anything before it gives up.
async fn run(tables: &str, timeout_ms: u64) -> (serde_json::Value, usize) {
    let ports: Vec<_> = (0..3).map(|_| closed_port()).collect();
    let servers: Vec<Server> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| Server::start(p.port(), &format!("s{i}")))
        .collect();
    eventually("the Socket.IO servers", || async {
        servers.iter().all(|s| s.count("READY") == 1).then_some(())
    })
    .await;
    let proxy = TestProxy::start(&format!("{}{tables}", app("", &ports))).await;
    let url = proxy.url("");
    let summary = tokio::task::spawn_blocking(move || {
        let out = Command::new("timeout")
            .args(["120", "node"])
            .arg(example().join("client.js"))
            .args([
                url,
                CLIENTS.to_string(),
                MESSAGES.to_string(),
                timeout_ms.to_string(),
            ])
            .env("NODE_PATH", node_modules())
            .output()
            .expect("run the Socket.IO clients");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "clients failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str::<serde_json::Value>(stdout.trim())
            .unwrap_or_else(|_| panic!("not JSON: {stdout}"))
    })
    .await
    .unwrap();
    let unknown = servers
        .iter()
        .map(|s| s.count("ERROR Session ID unknown"))
        .sum();
    (summary, unknown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_sticky_cookie_every_client_polls_upgrades_and_echoes() {
    let (s, unknown) = run("[upstreams.app.sticky]\n", 10_000).await;
    assert_eq!(unknown, 0, "{s}");
    assert_eq!(s["errors"], serde_json::json!([]), "{s}");
    assert_eq!(s["connected"], CLIENTS, "{s}");
    assert_eq!(s["upgraded"], CLIENTS, "{s}");
    assert_eq!(s["echoed"], CLIENTS * MESSAGES, "{s}");
    assert_eq!(s["most_servers_per_client"], 1, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_stickiness_the_polls_land_on_the_wrong_process() {
    // Failing clients wait out their timeout: keep it short.
    let (s, unknown) = run("", 2_000).await;
    assert!(
        unknown > 0,
        "no \"Session ID unknown\" without stickiness: {s}"
    );
    assert!(s["connected"].as_u64().unwrap() < CLIENTS as u64, "{s}");
}
