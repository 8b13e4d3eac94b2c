//! The access log: one line per request (and per tunnel, when it closes),
//! as JSON or in the "combined" format, to stdout or a file.
//!
//! The proxy gathers each request's facts into a [`Record`] and hands it
//! over with [`Sink::send`], which never waits: records go through a
//! bounded queue to a writer thread (`writer.rs`) that formats
//! (`format.rs`) and writes them. A full queue drops the record and counts
//! it in `switchyard_access_log_dropped_total`. SIGUSR1 reopens the file
//! (after logrotate); a reload that changes `[log]` starts a writer for
//! the new settings and lets the old one finish its queue and close.
//! Independent of the HTTP engine: only `signal.rs`, the SIGUSR1
//! listener, is a Pingora background service.

mod format;
mod record;
mod signal;
mod writer;

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use prometheus::IntCounter;

use crate::config::LogConfig;

pub use format::Format;
pub use record::{path_of, protocol, LocalReason, Record};
pub use signal::Reopen;
pub use writer::FLUSH_INTERVAL;

/// The access log of one server: off, or a sink with its writer.
pub struct AccessLog {
    sink: ArcSwapOption<Sink>,
    /// The settings the current sink was made from.
    settings: Mutex<LogConfig>,
    dropped: IntCounter,
}

/// Where the requests' records go now, with what the request path needs
/// to know of the settings.
pub struct Sink {
    writer: writer::Writer,
    format: Format,
    log_query: bool,
}

/// A sink made for settings a reload brings, not yet serving.
pub struct Prepared {
    settings: LogConfig,
    sink: Option<Arc<Sink>>,
}

impl AccessLog {
    /// Starts the access log `settings` describe (nothing for `off`),
    /// counting lost lines in `dropped`. Fails if its file cannot be
    /// opened.
    ///
    /// Its writer thread starts with [`run`](Self::run), from a service
    /// of the server: after Pingora has forked, with `--daemon`.
    pub fn start(settings: &LogConfig, dropped: IntCounter) -> io::Result<AccessLog> {
        let sink = Sink::start(settings, &dropped, false)?;
        Ok(AccessLog {
            sink: ArcSwapOption::new(sink),
            settings: Mutex::new(settings.clone()),
            dropped,
        })
    }

    /// The sink to send this request's record to; `None` when off.
    pub fn sink(&self) -> Option<Arc<Sink>> {
        self.sink.load_full()
    }

    /// For a reload: a sink for `settings` if they differ from those
    /// serving (`None` if not). Fails, changing nothing, if the new file
    /// cannot be opened.
    pub fn prepare(&self, settings: &LogConfig) -> io::Result<Option<Prepared>> {
        if *self.settings() == *settings {
            return Ok(None);
        }
        Ok(Some(Prepared {
            settings: settings.clone(),
            sink: Sink::start(settings, &self.dropped, true)?,
        }))
    }

    /// Puts a prepared sink in service. The one it replaces writes what
    /// it has queued and closes once the requests holding it are done.
    pub fn commit(&self, prepared: Prepared) {
        *self.settings() = prepared.settings;
        self.sink.store(prepared.sink);
    }

    /// Starts the writer thread of the sink [`start`](Self::start) made.
    pub fn run(&self) {
        if let Some(sink) = self.sink.load().as_ref() {
            if let Err(e) = sink.writer.spawn() {
                log::error!("the access log's writer did not start ({e}): its lines are dropped");
            }
        }
    }

    /// Opens the file again (SIGUSR1, after logrotate moved it).
    pub fn reopen(&self) {
        if let Some(sink) = self.sink.load().as_ref() {
            sink.writer.reopen();
        }
    }

    /// Waits, at most `timeout`, until every line queued so far is
    /// written: before the process exits. Whether they were.
    pub fn flush(&self, timeout: Duration) -> bool {
        self.sink
            .load()
            .as_ref()
            .is_none_or(|sink| sink.writer.flush(timeout))
    }

    fn settings(&self) -> std::sync::MutexGuard<'_, LogConfig> {
        self.settings.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Sink {
    /// `run`: start its writer thread now, rather than at `AccessLog::run`.
    fn start(
        settings: &LogConfig,
        dropped: &IntCounter,
        run: bool,
    ) -> io::Result<Option<Arc<Sink>>> {
        let Some(target) = &settings.access else {
            return Ok(None);
        };
        let (format, lines) = (settings.format, settings.queue_lines);
        let writer = writer::Writer::open(target, format, lines, dropped.clone())?;
        if run {
            writer.spawn()?;
        }
        Ok(Some(Arc::new(Sink {
            writer,
            format: settings.format,
            log_query: settings.log_query,
        })))
    }

    /// Queues `record` for writing; drops and counts it if the queue is
    /// full. Never waits.
    pub fn send(&self, record: Record) {
        self.writer.send(record);
    }

    /// Whether the lines show `Referer` and `User-Agent` (combined).
    pub fn wants_agent(&self) -> bool {
        self.format == Format::Combined
    }

    /// Whether the logged path keeps its query.
    pub fn log_query(&self) -> bool {
        self.log_query
    }
}

#[cfg(test)]
mod tests;
