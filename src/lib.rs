//! Switchyard: a reverse proxy and load balancer on Pingora.
//!
//! [`build_server`] turns a validated [`config::Config`] into a Pingora
//! server with the proxy and admin services; `main`, the tests and the
//! examples all start Switchyard through it.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms, unused_must_use)]

pub mod access_log;
pub mod admin;
pub mod cli;
pub mod config;
pub mod discovery;
pub mod downstream;
pub mod drain;
pub mod drain_end;
pub mod health;
pub mod metrics;
pub mod pool;
pub mod proxy;
pub mod reload;
pub mod route;
mod server;
pub mod tls;

pub use server::{build_server, BuildError, Switchyard};
