//! The demo: small backends on the addresses of every upstream in the
//! config (`proxy.toml` by default), each answering with its own name, and
//! Switchyard in front of them.
//!
//! ```text
//! cargo run --release --example demo
//! curl localhost:8080            # backend-1, backend-2, backend-3, backend-1, ...
//! curl localhost:9901/metrics    # switchyard_requests_total counts them
//! ```
//!
//! A different config: `cargo run --release --example demo -- --config other.toml`;
//! `examples/routes.toml` puts two services behind one address, and
//! `examples/tls.toml` adds HTTPS and HTTP/2 (the demo makes a self-signed
//! certificate for `localhost` where the config names one that does not
//! exist).

#[allow(dead_code)]
#[path = "../tests/e2e/support/backend.rs"]
mod backend;

use std::process::ExitCode;

use backend::{Behavior, TestBackend};
use clap::Parser;
use switchyard::cli::Cli;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let config = match switchyard::config::load(&cli.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = make_missing_certificates(&config) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    // Each backend answers with its name: `backend-N` with one upstream,
    // `UPSTREAM-N` with several, so that routing shows in the answers.
    let single = config.upstreams.len() == 1;
    let addrs: Vec<_> = config
        .upstreams
        .iter()
        .flat_map(|u| {
            u.backends.iter().enumerate().map(move |(i, b)| {
                let name = if single { "backend" } else { u.name.as_str() };
                (format!("{name}-{}", i + 1), b.socket_addr)
            })
        })
        .collect();

    let (started, ready) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
        rt.block_on(async move {
            let mut backends = Vec::new();
            for (name, addr) in addrs {
                match TestBackend::start_on(addr, &name, Behavior::Name).await {
                    Ok(b) => backends.push(b),
                    Err(e) => {
                        let _ = started.send(Err(format!("cannot start {name} on {addr}: {e}")));
                        return;
                    }
                }
            }
            let _ = started.send(Ok(()));
            std::future::pending::<()>().await;
        });
    });
    if let Ok(Err(e)) | Err(e) = ready.recv().map_err(|e| e.to_string()) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }

    let admin = config.admin.listen;
    for listen in &config.server.listen {
        println!("demo backends up; Switchyard on http://{listen}, admin on http://{admin}");
        println!("try:  curl {listen}   and   curl {admin}/metrics");
    }
    for listen in config.server.tls.iter().flat_map(|t| &t.listen) {
        println!(
            "and HTTPS on {listen}:  curl -k https://localhost:{}",
            listen.port()
        );
    }
    match switchyard::build_server(config, cli.pingora_opt()) {
        Ok(built) => built.server.run_forever(),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes a self-signed certificate for `localhost` (and 127.0.0.1) to
/// every certificate and key path of `config` where neither file exists.
fn make_missing_certificates(config: &switchyard::config::Config) -> Result<(), String> {
    let Some(tls) = &config.server.tls else {
        return Ok(());
    };
    for files in &tls.certificates {
        if files.cert.exists() || files.key.exists() {
            continue;
        }
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let made = rcgen::generate_simple_self_signed(names).map_err(|e| e.to_string())?;
        for (path, pem) in [
            (&files.cert, made.cert.pem()),
            (&files.key, made.signing_key.serialize_pem()),
        ] {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            std::fs::write(path, pem).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        println!(
            "demo: made a self-signed certificate for localhost at {} (not for production)",
            files.cert.display()
        );
    }
    Ok(())
}
