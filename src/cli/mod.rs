//! The command line: `switchyard [--config F]` runs, `switchyard check`
//! validates, `switchyard drain` drains a backend of a running instance
//! (`drain.rs`). Pingora's own `Opt` is built from these flags explicitly, never
//! parsed from argv by Pingora.

use std::fmt::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use clap::{Parser, Subcommand};
use pingora::server::configuration::Opt;

use crate::config::{Config, Probe, UpstreamConfig};
use crate::tls::{CertError, EXPIRY_WARNING};

mod drain;

/// `switchyard --version`: the crate's version, and the commit it was
/// built from when the build could ask git.
pub const VERSION: &str = match option_env!("SWITCHYARD_COMMIT") {
    Some(_) => concat!(
        env!("CARGO_PKG_VERSION"),
        " (commit ",
        env!("SWITCHYARD_COMMIT"),
        ")"
    ),
    None => env!("CARGO_PKG_VERSION"),
};

/// Default config path, relative to the working directory.
pub const DEFAULT_CONFIG: &str = "proxy.toml";

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version = VERSION,
    about = "A reverse proxy and load balancer on Pingora"
)]
pub struct Cli {
    /// The config file.
    #[arg(short, long, global = true, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Take over the listening sockets of a running instance (zero-downtime upgrade).
    #[arg(short, long)]
    pub upgrade: bool,
    /// Run in the background.
    #[arg(short, long)]
    pub daemon: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config and load its certificates, print a summary, and
    /// exit 0 (valid) or 1 (not).
    Check,
    /// Print a shell completion script: `switchyard completions bash >
    /// /etc/bash_completion.d/switchyard`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `switchyard man > switchyard.1`.
    Man,
    /// Drain a backend of a running instance through its admin port: no new
    /// requests go to it, those in flight finish. With `--wait`, return once
    /// nothing is left on it: `switchyard drain app 127.0.0.1:3001 --wait`.
    Drain(drain::DrainArgs),
    /// Take a drained backend back: `switchyard undrain app 127.0.0.1:3001`.
    Undrain(drain::Target),
}

/// Runs `drain` or `undrain`, which talk to a running instance and need no
/// config; `None` for any other command.
pub fn run_admin_command(command: &Option<Command>) -> Option<std::process::ExitCode> {
    let mut out = std::io::stdout();
    let done = match command {
        Some(Command::Drain(args)) => drain::drain(args, &mut out),
        Some(Command::Undrain(target)) => drain::undrain(target, &mut out),
        _ => return None,
    };
    Some(match done {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    })
}

/// Writes what `completions` or `man` asks for; `false` for any other
/// command. Neither needs a config.
pub fn print_generated(
    command: &Option<Command>,
    out: &mut dyn std::io::Write,
) -> std::io::Result<bool> {
    use clap::CommandFactory;
    match command {
        Some(Command::Completions { shell }) => {
            clap_complete::generate(*shell, &mut Cli::command(), "switchyard", out);
            Ok(true)
        }
        Some(Command::Man) => {
            clap_mangen::Man::new(Cli::command()).render(out)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

impl Cli {
    /// The Pingora options these flags imply.
    pub fn pingora_opt(&self) -> Opt {
        Opt {
            upgrade: self.upgrade,
            daemon: self.daemon,
            ..Opt::default()
        }
    }
}

/// A short human summary of a valid config, for `switchyard check`.
pub fn summary(config: &Config) -> String {
    let mut out = String::new();
    let listen: Vec<String> = config.server.listen.iter().map(|a| a.to_string()).collect();
    let _ = writeln!(
        out,
        "{}: ok (sha256 {})",
        config.path.display(),
        &config.hash[..12]
    );
    let _ = writeln!(
        out,
        "  listen {}; admin {}; {} worker threads",
        listen.join(", "),
        config.admin.listen,
        config.server.threads
    );
    if config.log.access.is_some() {
        let query = if config.log.log_query {
            ", with queries"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  access log {} ({}{query})",
            config.log.describe(),
            config.log.format.as_str()
        );
    }
    for (i, u) in config.upstreams.iter().enumerate() {
        let default = if Some(i) == config.default_upstream {
            ", default"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  upstream {} ({}, {}, retries {}, connect {:?}, read {:?}{default}): {} backend(s)",
            u.name,
            u.balance.name(),
            transport_summary(u),
            u.retries,
            u.timeouts.connect,
            u.timeouts.read,
            u.backends.len()
        );
        let _ = writeln!(out, "    {}", health_summary(u));
        for b in &u.backends {
            let _ = writeln!(out, "    {} weight {}", b.address, b.weight);
        }
        for d in &u.dns {
            let r = &u.refresh;
            let weight = match d.lookup {
                crate::config::Lookup::Ip { .. } => format!("weight {}", d.weight),
                crate::config::Lookup::Srv => "weights from SRV".to_string(),
            };
            let _ = writeln!(
                out,
                "    follows {}, {weight}; refresh {:?} to {:?}, hold_empty {:?}",
                d.describe(),
                r.min,
                r.max,
                r.hold_empty
            );
        }
    }
    if !config.routes.is_empty() {
        out.push_str(&routes_summary(config));
    }
    if let Some(tls) = &config.server.tls {
        let listen: Vec<String> = tls.listen.iter().map(|a| a.to_string()).collect();
        let h2 = if tls.h2 {
            "h2 and http/1.1"
        } else {
            "http/1.1"
        };
        let _ = writeln!(
            out,
            "  tls listen {}; TLS {}+; ALPN {h2}",
            listen.join(", "),
            tls.min_version.name()
        );
    }
    for w in &config.warnings {
        let _ = writeln!(out, "{w}");
    }
    out
}

/// Each certificate of `config` with its names and expiry, and a warning
/// for one that expires within [`EXPIRY_WARNING`] or has expired; or the
/// first one that cannot be loaded.
pub fn certificates_summary(config: &Config, now: SystemTime) -> Result<String, CertError> {
    let mut out = String::new();
    let Some(tls) = &config.server.tls else {
        return Ok(out);
    };
    let certs = crate::tls::load_all(&tls.certificates)?;
    for (i, c) in certs.iter().enumerate() {
        let expiry = humantime::format_rfc3339_seconds(c.not_after);
        let default = if i == tls.default_certificate {
            ", the default"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  certificate {} ({}{default}): expires {expiry}",
            c.names.join(", "),
            c.files.cert.display()
        );
    }
    for c in &certs {
        let expiry = humantime::format_rfc3339_seconds(c.not_after);
        if c.not_after <= now {
            let _ = writeln!(
                out,
                "warning: {}: the certificate expired at {expiry}; clients will refuse it",
                c.files.cert.display()
            );
        } else if c.expires_within(EXPIRY_WARNING, now) {
            let _ = writeln!(
                out,
                "warning: {}: the certificate expires within 14 days, at {expiry}",
                c.files.cert.display()
            );
        }
    }
    Ok(out)
}

/// The route table in precedence order, one line each, and where the
/// requests no route matches go.
fn routes_summary(config: &Config) -> String {
    let mut out = String::from("  routes, in precedence order:\n");
    let table = crate::route::Table::new(config.routes.clone(), config.default_upstream);
    for (n, r) in table.by_precedence().iter().enumerate() {
        let hosts: Vec<String> = r.hosts.iter().map(ToString::to_string).collect();
        let hosts = if hosts.is_empty() {
            "any host".to_string()
        } else {
            hosts.join(", ")
        };
        let strip = if r.strip_prefix { " (stripped)" } else { "" };
        let headers: Vec<String> = r
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
            .collect();
        let headers = if headers.is_empty() {
            String::new()
        } else {
            format!(", headers {}", headers.join(", "))
        };
        let _ = writeln!(
            out,
            "    {}. {}: {hosts}, path {}{strip}{headers} -> {}",
            n + 1,
            r.name,
            r.path_prefix,
            config.upstreams[r.upstream].name
        );
    }
    let _ = match config.default_upstream() {
        Some(u) => writeln!(out, "    otherwise -> {} (default_upstream)", u.name),
        None => writeln!(out, "    otherwise -> 404 (no default_upstream)"),
    };
    out
}

/// How the backends are spoken to: `http1`, `http2 (h2c)`, or either
/// over TLS with its name and roots.
fn transport_summary(u: &UpstreamConfig) -> String {
    let protocol = match (u.protocol, &u.tls) {
        (crate::config::Protocol::Http2, None) => "http2 (h2c)".to_string(),
        (p, _) => p.name().to_string(),
    };
    let Some(tls) = &u.tls else {
        return protocol;
    };
    let sni = tls.sni.as_deref().unwrap_or("each backend's host");
    let roots = match (&tls.ca, tls.verify) {
        (_, false) => "NOT VERIFIED".to_string(),
        (Some(ca), true) => format!("CA {}", ca.path.display()),
        (None, true) => "system roots".to_string(),
    };
    let mtls = if tls.client.is_some() {
        ", client certificate"
    } else {
        ""
    };
    format!("{protocol} over TLS to {sni}, {roots}{mtls}")
}

/// One line on how an upstream's backends are checked.
fn health_summary(u: &UpstreamConfig) -> String {
    let active = match &u.health_check {
        None => "no active checks".to_string(),
        Some(c) => {
            let what = match &c.probe {
                Probe::Tcp => "tcp connect".to_string(),
                Probe::Http { path, .. } => format!("http GET {path}"),
                Probe::Grpc { service } => format!("grpc Health/Check {service:?}"),
            };
            format!(
                "checks: {what} every {}, down after {}, up after {}",
                humantime::format_duration(c.interval),
                c.unhealthy_threshold,
                c.healthy_threshold
            )
        }
    };
    let p = &u.passive;
    let passive = if p.consecutive_failures == 0 {
        "no ejection".to_string()
    } else {
        let max = p.max_ejected(u.backends.len());
        format!(
            "ejection after {} failures in a row ({}) for {}, at most {max} backend{} at once",
            p.consecutive_failures,
            p.counts.names().join(", "),
            humantime::format_duration(p.ejection_time),
            if max == 1 { "" } else { "s" }
        )
    };
    let slow = u.slow_start.map_or(String::new(), |d| {
        format!("; slow start {}", humantime::format_duration(d))
    });
    format!("{active}; {passive}{slow}")
}
