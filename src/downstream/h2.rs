//! The application Pingora's HTTP/2 server sees: the proxy, with the
//! HTTP/2 settings each new connection is offered read from the serving
//! config, so a reload changes them for the connections that follow.
//!
//! The settings that bound what one client can make the proxy hold:
//!
//! - `h2_max_streams` concurrent streams (`SETTINGS_MAX_CONCURRENT_STREAMS`);
//!   a stream opened beyond it is refused with `REFUSED_STREAM`, as RFC 9113
//!   section 5.1.2 says;
//! - `max_header_bytes` and `max_headers` as `SETTINGS_MAX_HEADER_LIST_SIZE`
//!   (a field costs its name and value plus 32 bytes there);
//! - streams the client resets before the proxy has taken them (rapid
//!   reset, CVE-2023-44487): a few are normal, more than
//!   [`MAX_PENDING_RESETS`] waiting at once end the connection with
//!   `ENHANCE_YOUR_CALM`;
//! - streams the proxy has to reset because the client broke the protocol
//!   on them (MadeYouReset, CVE-2025-8671): more than
//!   [`MAX_PROTOCOL_RESETS`] over a connection's life end it the same way.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::protocols::http::v2::server::{default_h2_options, H2Options};
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;

use crate::config::ServerConfig;
use crate::pool::Pool;

/// Reset streams a connection may have waiting to be taken at once.
pub const MAX_PENDING_RESETS: usize = 20;

/// Streams the proxy may reset for a client's protocol errors over one
/// connection's life.
pub const MAX_PROTOCOL_RESETS: usize = 100;

/// The proxy as Pingora's HTTP servers see it.
pub struct App<A> {
    proxy: Arc<A>,
    pool: Arc<Pool>,
    options: HttpServerOptions,
}

impl<A> App<A> {
    /// `h2c`: HTTP/2 with prior knowledge on plain listeners.
    pub fn new(proxy: A, pool: Arc<Pool>, h2c: bool) -> App<A> {
        let server = &pool.snapshot().config.server;
        let timeouts = server.client_timeouts;
        let mut options = HttpServerOptions::default();
        options.h2c = h2c;
        // An HTTP/2 connection with no stream open closes as an idle
        // HTTP/1.1 one does.
        options.h2_idle_timeout = Some(timeouts.keepalive.unwrap_or(timeouts.header));
        App {
            proxy: Arc::new(proxy),
            pool,
            options,
        }
    }
}

/// The HTTP/2 settings for a connection accepted under `server`.
pub fn h2_options(server: &ServerConfig) -> H2Options {
    let limits = &server.limits;
    let header_list = limits.header_bytes + 32 * limits.headers;
    let mut options = default_h2_options();
    options
        .max_concurrent_streams(server.h2.max_streams)
        .max_header_list_size(u32::try_from(header_list).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
        .max_local_error_reset_streams(Some(MAX_PROTOCOL_RESETS));
    options
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> HttpServerApp for App<A> {
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        self.proxy.process_new_http(session, shutdown).await
    }

    fn h2_options(&self) -> Option<H2Options> {
        Some(h2_options(&self.pool.snapshot().config.server))
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.options)
    }

    async fn http_cleanup(&self) {
        self.proxy.http_cleanup().await
    }
}
