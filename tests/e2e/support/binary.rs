//! The `switchyard` binary as a child process: its config file on free
//! loopback ports, starting it, signalling it and waiting for it to exit.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{closed_port, eventually, temp_dir};

/// A running binary. Kills the child if the test fails before it exits.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A config file for the binary in a directory of its own, on free ports,
/// with one upstream, `app`, and the file watcher off.
pub struct BinaryConfig {
    pub path: PathBuf,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// Lines of `[upstreams.app]` before its backends, and tables after.
    settings: String,
    tables: String,
}

impl BinaryConfig {
    /// `app` with default settings and `backends`, weight 1 each.
    pub fn new(grace_period: &str, backends: &[SocketAddr]) -> BinaryConfig {
        Self::with_settings(grace_period, "", "", backends)
    }

    /// `settings` (lines ending in `\n`) go into `[upstreams.app]`, and
    /// `tables` (sub-tables of `app`) after it.
    pub fn with_settings(
        grace_period: &str,
        settings: &str,
        tables: &str,
        backends: &[SocketAddr],
    ) -> BinaryConfig {
        let (addr, admin) = (closed_port(), closed_port());
        let path = temp_dir("bin").join("proxy.toml");
        let (settings, tables) = (settings.to_string(), tables.to_string());
        let config = BinaryConfig {
            path,
            addr,
            admin,
            settings,
            tables,
        };
        config.write(grace_period, backends);
        config
    }

    /// Writes the file again with these backends.
    pub fn write(&self, grace_period: &str, backends: &[SocketAddr]) {
        let text = format!(
            "[server]\nlisten = [\"{}\"]\nthreads = 1\ngrace_period = \"{grace_period}\"\n\
             watch_config = false\n[admin]\nlisten = \"{}\"\n{}{}",
            self.addr,
            self.admin,
            super::proxy::app(&self.settings, backends),
            self.tables,
        );
        std::fs::write(&self.path, text).unwrap();
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for BinaryConfig {
    fn drop(&mut self) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Starts the binary on `config`, with `--upgrade` if asked.
/// Runs `switchyard check --config config` to its end.
pub fn check(config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "--config"])
        .arg(config)
        .output()
        .expect("run switchyard check")
}

pub fn spawn(config: &Path, upgrade: bool) -> Running {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.arg("--config").arg(config);
    if upgrade {
        cmd.arg("--upgrade");
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Running(child)
}

/// Sends signal `name` (as `kill` spells it: `-HUP`) to the binary.
pub fn signal(running: &Running, name: &str) {
    let pid = running.0.id().to_string();
    let sent = Command::new("kill").args([name, &pid]).status().unwrap();
    assert!(sent.success(), "kill {name} {pid}");
}

/// Waits for the binary to exit and returns how it did.
pub async fn wait_exit(running: &mut Running, what: &str) -> std::process::ExitStatus {
    eventually(what, || {
        let exited = running.0.try_wait().unwrap();
        async move { exited }
    })
    .await
}
