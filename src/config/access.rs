//! The validated `[log]` settings: where the access log goes, in which
//! format, and what it keeps of a request.

use std::path::PathBuf;

pub use crate::access_log::Format;

/// Records the access log's queue holds by default: at one flush every
/// 10 ms, room for 400,000 lines a second, and with the fields a line
/// keeps cut to about 3.3 KiB of client bytes, 13 MiB at most.
pub const DEFAULT_QUEUE_LINES: usize = 4096;
/// Largest `queue_lines`: the queue's slots (a few hundred bytes each)
/// are allocated up front.
pub const MAX_QUEUE_LINES: usize = 65_536;

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AccessTarget {
    Stdout,
    /// Appended to; created if missing; opened again on SIGUSR1. Relative
    /// paths are resolved against the config file's directory.
    File(PathBuf),
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LogConfig {
    /// `access`: `None` when `"off"`, the default.
    pub access: Option<AccessTarget>,
    /// Default [`Format::Json`].
    pub format: Format,
    /// Keep the query string in the logged path. Default false: queries
    /// often carry tokens and personal data.
    pub log_query: bool,
    /// Records waiting to be written, at most; more are dropped and
    /// counted. Default [`DEFAULT_QUEUE_LINES`].
    pub queue_lines: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            access: None,
            format: Format::Json,
            log_query: false,
            queue_lines: DEFAULT_QUEUE_LINES,
        }
    }
}

impl LogConfig {
    /// Where the lines go, for messages: `off`, `stdout` or the path.
    pub fn describe(&self) -> String {
        match &self.access {
            None => "off".to_string(),
            Some(AccessTarget::Stdout) => "stdout".to_string(),
            Some(AccessTarget::File(path)) => path.display().to_string(),
        }
    }
}
