//! End-to-end tests: real backends and the real proxy on loopback, real HTTP.
//! One test binary, so the suite links Pingora once.

mod support;

mod access_log;
mod access_log_config;
mod admin;
mod affinity;
mod affinity_config;
mod backends;
mod balancing;
mod binary;
mod cli;
mod clients;
mod config_errors;
mod crashloop;
mod dns;
mod dns_config;
mod dns_failures;
mod drain;
mod failures;
mod grpc;
mod h2;
mod h2_abuse;
mod headers;
mod health;
mod leaks;
mod limits;
mod observability;
mod reload;
mod retries;
mod route_config;
mod routes;
mod routes_reload;
mod smuggling;
mod socketio;
mod tls;
mod tls_config;
mod tls_reload;
mod tunnel_config;
mod tunnel_drain;
mod tunnels;
mod upgrade;
mod upstream_h2;
mod upstream_tls;
