//! Assembles the Pingora server: the proxy service on the data addresses,
//! the admin service on its own, and the health checker in the background,
//! sharing one pool and one registry.

use std::sync::Arc;

use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::Admin;
use crate::config::{Config, MAX_RETRIES};
use crate::health::Checker;
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::proxy::Proxy;

/// Seconds the runtime gets to stop after the grace period.
const SHUTDOWN_TIMEOUT_SECS: u64 = 5;

/// A built server and handles to the state it serves from.
pub struct Switchyard {
    /// Run it with `run_forever()` (the binary) or `run(RunArgs)` (tests).
    pub server: Server,
    pub pool: Arc<Pool>,
    pub metrics: Arc<Metrics>,
}

/// Builds the server for `config`. `opt` carries the process-level flags
/// (`--upgrade`, `--daemon`); tests pass `Opt::default()`.
pub fn build_server(config: Config, opt: Opt) -> Switchyard {
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(&config));
    server.bootstrap();
    let metrics = Arc::new(Metrics::new());
    let pool = Arc::new(Pool::new(config.clone()));
    metrics.init_series(&pool.snapshot());

    let proxy = Proxy::new(Arc::clone(&pool), Arc::clone(&metrics));
    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        proxy,
        "switchyard proxy",
    );
    for addr in &config.server.listen {
        proxy.add_tcp(&addr.to_string());
    }

    let mut admin = Service::new(
        "switchyard admin".to_string(),
        Admin::new(Arc::clone(&pool), Arc::clone(&metrics)),
    );
    admin.threads = Some(1);
    admin.add_tcp(&config.admin.listen.to_string());

    let checker = background_service(
        "switchyard health checks",
        Checker::new(Arc::clone(&pool), Arc::clone(&metrics)),
    );

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(checker);
    Switchyard {
        server,
        pool,
        metrics,
    }
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
        pid_file: "/tmp/switchyard.pid".to_string(),
        upgrade_sock: "/tmp/switchyard_upgrade.sock".to_string(),
        ..ServerConf::default()
    }
}
