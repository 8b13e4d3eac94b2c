//! SIGUSR1 reopens the access log file, as logrotate's `postrotate`
//! expects. Listening is a background service of the server; Pingora's
//! own signals (SIGTERM, SIGINT, SIGQUIT) are left to it. The same service
//! starts the writer thread: services start after Pingora has forked to
//! run as a daemon, threads started before would not be in the daemon.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use super::AccessLog;

/// Reopens the access log on every SIGUSR1.
pub struct Reopen(pub Arc<AccessLog>);

#[async_trait]
impl BackgroundService for Reopen {
    /// Listens until the process ends, drain included: a logrotate run
    /// while the process drains still gets its file reopened (the runtime
    /// drops this task when Pingora stops it).
    async fn start(&self, _shutdown: ShutdownWatch) {
        self.0.run();
        let mut usr1 = match signal(SignalKind::user_defined1()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot listen for SIGUSR1 (access log reopening): {e}");
                return;
            }
        };
        while usr1.recv().await.is_some() {
            self.0.reopen();
        }
    }
}
