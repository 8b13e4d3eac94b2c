//! The `switchyard` binary itself: it serves a config file, and SIGTERM
//! makes it exit cleanly.

use std::process::{Child, Command, Stdio};

use crate::support::{client, closed_port, eventually, Behavior, TestBackend};

/// Kills the child if the test fails before it exits.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
