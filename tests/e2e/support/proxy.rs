//! The real Switchyard server, built by `switchyard::build_server` and run
//! in a thread of the test process on free loopback ports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::server::configuration::Opt;
use pingora::server::{RunArgs, ShutdownSignal, ShutdownSignalWatch};
use switchyard::pool::Pool;
use tokio::sync::oneshot;

use super::{client, eventually};

/// A running proxy; shut down when dropped.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// The live pool, for tests that change backend state directly.
    pub pool: Arc<Pool>,
    /// Its config file, alone in a directory of its own.
    pub config: PathBuf,
    /// The `[server]` and `[admin]` part of the file.
    head: String,
    stop: Option<oneshot::Sender<()>>,
}

/// Tells Pingora to stop when the test drops its [`TestProxy`].
struct StopOnDrop(Mutex<Option<oneshot::Receiver<()>>>);

#[async_trait]
impl ShutdownSignalWatch for StopOnDrop {
    async fn recv(&self) -> ShutdownSignal {
        let rx = self.0.lock().unwrap().take();
        if let Some(rx) = rx {
            let _ = rx.await;
        }
        ShutdownSignal::FastShutdown
    }
}

impl TestProxy {
    /// Starts Switchyard with `upstreams` (the `[upstreams.*]` part of a
    /// config) on free loopback ports, and waits until it answers.
    pub async fn start(upstreams: &str) -> TestProxy {
        Self::start_with("", upstreams).await
    }

    /// Like [`start`](Self::start), with `server` lines added to `[server]`.
    pub async fn start_with(server: &str, upstreams: &str) -> TestProxy {
        Self::start_with_admin(server, "", upstreams).await
    }

    /// Like [`start_with`](Self::start_with), with `admin` lines added to
    /// `[admin]`.
    pub async fn start_with_admin(server: &str, admin_lines: &str, upstreams: &str) -> TestProxy {
        let (addr, admin) = (super::closed_port(), super::closed_port());
        let head = format!(
            "[server]\nlisten = [\"{addr}\"]\nthreads = 2\ngrace_period = \"0s\"\n{server}\
             [admin]\nlisten = \"{admin}\"\n{admin_lines}"
        );
        let dir = super::temp_dir("proxy");
        let path = dir.join("proxy.toml");
        std::fs::write(&path, format!("{head}{upstreams}")).expect("write the test config");
        let config = switchyard::config::load(&path)
            .unwrap_or_else(|e| panic!("test config is invalid:\n{e}"));
        let built = switchyard::build_server(config, Opt::default())
            .unwrap_or_else(|e| panic!("the test certificates do not load: {e}"));
        let pool = Arc::clone(&built.pool);
        let (stop, stopped) = oneshot::channel();
        let signal = StopOnDrop(Mutex::new(Some(stopped)));
        std::thread::spawn(move || {
            built.server.run(RunArgs {
                shutdown_signal: Box::new(signal),
            })
        });
        let proxy = TestProxy {
            addr,
            admin,
            pool,
            config: path,
            head,
            stop: Some(stop),
        };
        proxy.wait_ready().await;
        proxy
    }

    /// Starts Switchyard with one upstream, `app`: `settings` (lines ending
    /// in `\n`, may be empty) and these backends, weight 1 each.
    pub async fn start_app(settings: &str, backends: &[SocketAddr]) -> TestProxy {
        Self::start(&app(settings, backends)).await
    }

    async fn wait_ready(&self) {
        let http = client();
        let healthz = format!("http://{}/healthz", self.admin);
        eventually("the admin port", || async {
            http.get(&healthz)
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
        })
        .await;
        let data = self.addr;
        eventually("the data port", || async {
            tokio::net::TcpStream::connect(data).await.ok()
        })
        .await;
    }

    /// The whole file text with `upstreams` after the test's own
    /// `[server]` and `[admin]` (which a reload may not change).
    pub fn config_text(&self, upstreams: &str) -> String {
        format!("{}{upstreams}", self.head)
    }

    /// `http://ADDR/path` on the data port.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://ADMIN/path` on the admin port.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// GETs `path` and returns (status, body trimmed).
    pub async fn get(&self, http: &reqwest::Client, path: &str) -> (u16, String) {
        let r = http
            .get(self.url(path))
            .send()
            .await
            .expect("proxy answers");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap().trim().to_string())
    }

    /// GETs `path`, asserts a 200, and returns the body trimmed.
    pub async fn get_ok(&self, http: &reqwest::Client, path: &str) -> String {
        let (status, body) = self.get(http, path).await;
        assert_eq!(status, 200, "body: {body}");
        body
    }

    /// The body of a 200 from the admin port.
    async fn admin_text(&self, path: &str) -> String {
        let r = client().get(self.admin_url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.text().await.unwrap()
    }

    /// The JSON answer of `GET path` on the admin port, whatever its status.
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        let r = client().get(self.admin_url(path)).send().await.unwrap();
        let body = r.text().await.unwrap();
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: not JSON: {body}"))
    }

    /// The parsed `/status` document.
    pub async fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.admin_text("/status").await).expect("/status is JSON")
    }

    /// The parsed `/metrics` scrape.
    pub async fn metrics(&self) -> prometheus_parse::Scrape {
        let text = self.admin_text("/metrics").await;
        let lines = text.lines().map(|l| Ok(l.to_string()));
        prometheus_parse::Scrape::parse(lines).expect("/metrics parses as Prometheus text")
    }

    /// The scrape once `requests` finished requests are counted (answered by
    /// a backend or by the proxy): counting happens after the response is
    /// sent, so a scrape right after the last response may be early.
    pub async fn metrics_after(&self, requests: f64) -> prometheus_parse::Scrape {
        eventually("every request to be counted", || async {
            let m = self.metrics().await;
            let counted = metric_sum(&m, "switchyard_requests_total", &[])
                + metric_sum(&m, "switchyard_local_responses_total", &[]);
            (counted == requests).then_some(m)
        })
        .await
    }

    /// `POST /reload`: the status and the JSON answer.
    pub async fn reload(&self) -> (u16, serde_json::Value) {
        let r = client()
            .post(self.admin_url("/reload"))
            .send()
            .await
            .expect("the admin port answers");
        let status = r.status().as_u16();
        let body = r.text().await.expect("a body");
        let json = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
        (status, json)
    }

    /// What `/status` says of `backend`.
    pub async fn backend(&self, backend: SocketAddr) -> serde_json::Value {
        let status = self.status().await;
        backends(&status)
            .into_iter()
            .find(|b| b["address"] == backend.to_string())
            .expect("backend listed in /status")
    }

    /// Polls `/status` until `backend` is in `state` ("healthy",
    /// "unhealthy", "ejected", "pending"); returns what it says then.
    pub async fn wait_state(&self, backend: SocketAddr, state: &str) -> serde_json::Value {
        eventually(&format!("{backend} to be {state}"), || async {
            Some(self.backend(backend).await).filter(|b| b["state"] == state)
        })
        .await
    }

    /// Waits until none of `backends` has a request in flight. A lease ends
    /// just after its response is sent, so a client's next request can
    /// otherwise still see the last one counted.
    pub async fn wait_idle(&self, backends: &[SocketAddr]) {
        eventually("the backends to be idle", || async {
            for b in backends {
                if self.in_flight(*b).await != 0 {
                    return None;
                }
            }
            Some(())
        })
        .await;
    }

    /// [`wait_idle`](Self::wait_idle) for every backend.
    pub async fn wait_all_idle(&self) {
        eventually("every backend to be idle", || async {
            let status = self.status().await;
            backends(&status)
                .iter()
                .all(|b| b["in_flight"] == 0)
                .then_some(())
        })
        .await;
    }

    /// In-flight count of `backend` as `/status` reports it.
    pub async fn in_flight(&self, backend: SocketAddr) -> u64 {
        self.backend(backend).await["in_flight"]
            .as_u64()
            .expect("in_flight is a number")
    }
}

/// The `[upstreams.app]` table with `settings` (lines ending in `\n`, may
/// be empty) and these backends, weight 1 each. Sub-tables of `app` may
/// follow it.
pub fn app(settings: &str, backends: &[SocketAddr]) -> String {
    let list: Vec<String> = backends.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[upstreams.app]\n{settings}backends = [{}]\n",
        list.join(", ")
    )
}

/// Every backend object in a `/status` document.
pub fn backends(status: &serde_json::Value) -> Vec<serde_json::Value> {
    status["upstreams"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|u| u["backends"].as_array().cloned().unwrap_or_default())
        .collect()
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(dir) = self.config.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Sum of the samples of metric `name` whose labels include all of `labels`.
pub fn metric_sum(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}
