//! Assembles the Pingora server: the proxy service on the data addresses,
//! the admin service on its own, and the health checker, DNS discovery and
//! the access log's SIGUSR1 listener in the background, sharing one pool,
//! one registry and one access log.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::server::{ExecutionPhase, ShutdownWatch};
use pingora::services::background::BackgroundService;
use tokio::sync::broadcast;

use pingora::apps::HttpServerOptions;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use sha2::{Digest, Sha256};

use crate::access_log::{AccessLog, Reopen};
use crate::admin::Admin;
use crate::config::{Config, MAX_RETRIES};
use crate::discovery::{Board, Discovery};
use crate::downstream::Connections;
use crate::drain::Draining;
use crate::health::Checker;
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::proxy::Proxy;
use crate::reload::{Reloader, Triggers};
use crate::tls::{CertError, Tls};

/// Seconds the runtime gets to stop after the grace period.
const SHUTDOWN_TIMEOUT_SECS: u64 = 5;

/// A built server and handles to the state it serves from.
pub struct Switchyard {
    /// Run it with `run_forever()` (the binary) or `run(RunArgs)` (tests).
    pub server: Server,
    pub pool: Arc<Pool>,
    pub metrics: Arc<Metrics>,
    /// Set when the process begins to shut down, or has handed its
    /// sockets over: from then on it may exit once drained.
    pub handed_over: Arc<Draining>,
    /// Flushed before the process exits.
    pub access_log: Arc<AccessLog>,
}

/// Why the server could not be built; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Certificate(#[from] CertError),
    #[error("cannot open the access log {path}: {source}; fix its permissions, or set [log] access to another file, \"stdout\" or \"off\"")]
    AccessLog {
        path: String,
        source: std::io::Error,
    },
}

/// Builds the server for `config`. `opt` carries the process-level flags
/// (`--upgrade`, `--daemon`); tests pass `Opt::default()`. Fails, naming
/// the file, if a certificate or the access log cannot be opened.
pub fn build_server(config: Config, opt: Opt) -> Result<Switchyard, BuildError> {
    let metrics = Arc::new(Metrics::new());
    let access_log =
        AccessLog::start(&config.log, metrics.access_log_dropped.clone()).map_err(|source| {
            BuildError::AccessLog {
                path: config.log.describe(),
                source,
            }
        })?;
    let access_log = Arc::new(access_log);
    let tls = match &config.server.tls {
        Some(t) => Some(Arc::new(Tls::new(t, Arc::clone(&metrics))?)),
        None => None,
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(&config));
    server.bootstrap();
    let pool = Arc::new(Pool::new(config.clone()));
    metrics.init_series(&pool.snapshot());

    let draining = Arc::new(Draining::new());
    let handed_over = Arc::new(Draining::new());
    let drain = background_service(
        "switchyard drain",
        Drain {
            phases: Mutex::new(Some(server.watch_execution_phase())),
            draining: Arc::clone(&draining),
            handed_over: Arc::clone(&handed_over),
        },
    );
    let proxy = Proxy::new(
        Arc::clone(&pool),
        Arc::clone(&metrics),
        Arc::clone(&draining),
        Arc::clone(&access_log),
    );
    let mut http_proxy = pingora::proxy::http_proxy(&server.configuration, proxy);
    // CONNECT reaches the proxy's hooks, which refuse it with a 405 of
    // their own (Pingora's says `Server: Pingora`, HTTP/2's included).
    let mut options = HttpServerOptions::default();
    options.allow_connect_method_proxying = true;
    http_proxy.server_options = Some(options);
    let proxy = Connections::new(
        http_proxy,
        Arc::clone(&pool),
        Arc::clone(&metrics),
        tls.clone(),
        config.server.h2.h2c,
    );
    let mut proxy = Service::new("switchyard proxy".to_string(), proxy);
    // TLS listeners are plain TCP ones to Pingora: the handshake happens
    // in `downstream`, where the connection is counted and timed.
    let tls_listen = config.server.tls.iter().flat_map(|t| &t.listen);
    for addr in config.server.listen.iter().chain(tls_listen) {
        let listener = ListenerConfig::tcp(addr.to_string()).l4_buffer(client_buffers());
        proxy.endpoints().add_listener(listener);
    }

    let reloader = Arc::new(Reloader::new(
        Arc::clone(&pool),
        Arc::clone(&metrics),
        tls,
        Arc::clone(&access_log),
        config.path.clone(),
    ));
    let board = Arc::new(Board::default());
    let mut admin = Service::new(
        "switchyard admin".to_string(),
        Admin::new(
            Arc::clone(&pool),
            Arc::clone(&metrics),
            Arc::clone(&reloader),
            Arc::clone(&board),
            Arc::clone(&draining),
        ),
    );
    admin.threads = Some(1);
    admin.add_tcp(&config.admin.listen.to_string());

    let checker = background_service(
        "switchyard health checks",
        Checker::new(Arc::clone(&pool), Arc::clone(&metrics)),
    );

    let discovery = background_service(
        "switchyard dns discovery",
        Discovery::new(Arc::clone(&pool), Arc::clone(&metrics), board),
    );

    let triggers = background_service(
        "switchyard reload",
        Triggers::new(reloader, config.server.watch_config),
    );

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(checker);
    server.add_service(discovery);
    server.add_service(triggers);
    server.add_service(drain);
    server.add_service(background_service(
        "switchyard access log reopen",
        Reopen(Arc::clone(&access_log)),
    ));
    Ok(Switchyard {
        server,
        pool,
        metrics,
        handed_over,
        access_log,
    })
}

/// Client connections read straight from the socket, with no read buffer
/// of their own (Pingora's default is 64 KiB, held for the connection's whole
/// life, idle or not). Each request's first bytes are read by
/// [`downstream`](crate::downstream) into a buffer that lives only while the
/// request does, which holds a whole ordinary request head, so the parser
/// seldom reads again.
fn client_buffers() -> L4BufferSettings {
    L4BufferSettings::default().read(0)
}

fn server_conf(config: &Config) -> ServerConf {
    let grace = config.server.grace_period;
    ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(grace.as_secs() + u64::from(grace.subsec_nanos() > 0)),
        graceful_shutdown_timeout_seconds: Some(SHUTDOWN_TIMEOUT_SECS),
        // Each upstream's `retries` decides in `fail_to_connect`; this is
        // only Pingora's outer bound on attempts.
        max_retries: MAX_RETRIES + 1,
        // Idle backend connections kept for reuse, per worker thread
        // (Pingora multiplies by `threads`). Each client connection holds
        // at most one backend connection, so up to `max_connections` in
        // all: a burst's connections are all kept for the next one rather
        // than closed and opened again (128, Pingora's default, churned
        // thousands per second at 1,000 concurrent clients).
        upstream_keepalive_pool_size: config
            .server
            .max_connections
            .div_ceil(config.server.threads.max(1)),
        pid_file: format!("{}.pid", runtime_path(config)),
        upgrade_sock: format!("{}.upgrade.sock", runtime_path(config)),
        ..ServerConf::default()
    }
}

/// `/tmp/switchyard-<hash>`, where the hash is of the config file's full
/// path: an `--upgrade` started with the same config finds the running
/// instance's socket, and instances with other configs never collide.
fn runtime_path(config: &Config) -> String {
    // Absolute, but symlinks not followed: a Kubernetes-style swap must
    // not move the socket away from the one the running process uses.
    let path = std::path::absolute(&config.path).unwrap_or_else(|_| config.path.clone());
    let digest = Sha256::digest(path.as_os_str().as_encoded_bytes());
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("/tmp/switchyard-{hex}")
}

/// Begins the drain when the process starts to hand its sockets to a new
/// one (SIGQUIT) or to shut down (SIGTERM). Pingora keeps serving for a
/// while after either; while draining, responses close their connections,
/// so keep-alive clients move to new connections before the idle ones are
/// dropped, and tunnels close spread over the grace period.
struct Drain {
    phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
    draining: Arc<Draining>,
    /// Begins once the process may exit when drained: it accepts no more
    /// connections, and its sockets, if an upgrade asked for them, are the
    /// new process's already.
    handed_over: Arc<Draining>,
}

#[async_trait]
impl BackgroundService for Drain {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let phases = self.phases.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(mut phases) = phases else {
            return;
        };
        loop {
            let phase = tokio::select! {
                _ = shutdown.changed() => {
                    // Pingora signals shutdown before it announces the phase.
                    self.draining.begin();
                    self.handed_over.begin();
                    break;
                }
                phase = phases.recv() => phase,
            };
            match phase {
                Ok(
                    ExecutionPhase::GracefulUpgradeTransferringFds
                    | ExecutionPhase::GracefulUpgradeCloseTimeout
                    | ExecutionPhase::GracefulTerminate,
                ) => {
                    log::info!("draining: responses now close their connections");
                    self.draining.begin();
                }
                Ok(ExecutionPhase::ShutdownStarted) => {
                    // The listeners have stopped (after an upgrade's
                    // sockets went to the new process): what is open now
                    // is all there will be.
                    self.draining.begin();
                    self.handed_over.begin();
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    }
}
