//! The `switchyard` binary: parse the command line, load the config, then
//! check it or build the server and run it.

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use switchyard::cli::{self, Cli, Command};

/// The longest the access log may take to write its last lines at exit.
const EXIT_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli::print_generated(&cli.command, &mut std::io::stdout()) {
        Ok(true) => return ExitCode::SUCCESS,
        Ok(false) => {}
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Some(code) = cli::run_admin_command(&cli.command) {
        return code;
    }
    let config = match switchyard::config::load(&cli.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if cli.command.is_none() {
        for w in &config.warnings {
            log::warn!("{w}");
        }
    }
    match cli.command {
        Some(
            Command::Completions { .. } | Command::Man | Command::Drain(_) | Command::Undrain(_),
        ) => ExitCode::SUCCESS,
        Some(Command::Check) => {
            print!("{}", cli::summary(&config));
            for warning in switchyard::discovery::check(&config) {
                println!("{warning}");
            }
            match cli::certificates_summary(&config, std::time::SystemTime::now()) {
                Ok(certs) => {
                    print!("{certs}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => match switchyard::build_server(config, cli.pingora_opt()) {
            Ok(mut built) => {
                // The grace period is only the cap: exit once drained, with
                // the access log's last lines written.
                let access_log = std::sync::Arc::clone(&built.access_log);
                let exit = switchyard::drain_end::ExitWhenDrained {
                    draining: std::sync::Arc::clone(&built.handed_over),
                    metrics: std::sync::Arc::clone(&built.metrics),
                    pool: std::sync::Arc::clone(&built.pool),
                    before_exit: std::sync::Mutex::new(Some(move || {
                        access_log.flush(EXIT_FLUSH);
                    })),
                };
                let exit =
                    pingora::services::background::background_service("switchyard drain end", exit);
                built.server.add_service(exit);
                built.server.run_forever()
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
