//! Config errors: one variant per mistake, each saying how to fix it, and a
//! wrapper that places it in the file (path, line, column, the line itself).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// What is wrong, independent of where. Every message ends with the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("{0}")]
    Syntax(String),
    #[error("unknown key `{key}`{}", suggest(.suggestion, .valid))]
    UnknownKey {
        key: String,
        suggestion: Option<String>,
        valid: Vec<String>,
    },
    #[error("missing key `{0}`; add it")]
    MissingKey(String),
    #[error("{message}")]
    WrongType { message: String },
    #[error("bad address `{value}`: {reason}; write an IP address and port like \"127.0.0.1:3001\" (or host:port)")]
    BadAddress { value: String, reason: String },
    #[error("bad listen address `{value}`: {reason}; write an IP address and port like \"0.0.0.0:8080\"")]
    BadListen { value: String, reason: String },
    #[error("weight must be at least 1; remove the backend to stop sending it traffic, or write `weight = 1`")]
    ZeroWeight,
    #[error("backend `{address}` is listed twice in upstream `{upstream}` (first on line {first_line}); list each address once and use `weight` to give it more traffic")]
    DuplicateBackend {
        upstream: String,
        address: String,
        first_line: usize,
    },
    #[error(
        "upstream `{0}` has no backends; add at least one, e.g. backends = [\"127.0.0.1:3001\"]"
    )]
    EmptyBackends(String),
    #[error("unknown balance `{value}`{}", suggest(.suggestion, &crate::config::Balance::NAMES.map(String::from)))]
    UnknownBalance {
        value: String,
        suggestion: Option<String>,
    },
    #[error("admin address {0} is also a data address; give [admin] listen its own port, e.g. \"127.0.0.1:9901\"")]
    AdminOnDataAddress(String),
    #[error("listen address {0} is listed twice; list each address once")]
    DuplicateListen(String),
    #[error("bad duration `{value}`: {reason}; write a duration like \"250ms\", \"2s\" or \"1m\"")]
    BadDuration { value: String, reason: String },
    #[error("`{key}` must be between {min} and {max}, not {value}")]
    OutOfRange {
        key: &'static str,
        value: i64,
        min: i64,
        max: i64,
    },
    #[error("no upstreams; add one, e.g.\n  [upstreams.app]\n  backends = [\"127.0.0.1:3001\"]")]
    NoUpstreams,
    #[error("{count} upstreams and no default; set [server] default_upstream to one of: {names}, or add [[routes]] to choose by host and path")]
    NoDefaultUpstream { count: usize, names: String },
    #[error("route upstream `{value}` is not defined{}; define it under [upstreams.{value}], or use one of: {names}", suggest_name(.suggestion))]
    UnknownRouteUpstream {
        value: String,
        suggestion: Option<String>,
        names: String,
    },
    #[error("bad host `{value}` in hosts: {reason}; write a name like \"api.example.com\" or a wildcard like \"*.example.com\"")]
    BadHostPattern { value: String, reason: String },
    #[error("`{0}` is not a valid header name; use letters, digits and !#$%&'*+-.^_`|~ only, like \"x-canary\"")]
    BadHeaderName(String),
    #[error(
        "strip_prefix = true needs a path_prefix to strip; add path_prefix, or remove strip_prefix"
    )]
    StripWithoutPrefix,
    #[error("this route has the same hosts, path_prefix and headers as the route on line {first_line}, which takes all of its requests; change its conditions, or remove one of them")]
    DuplicateRoute { first_line: usize },
    #[error("balance = \"consistent_hash\" needs hash_key, what to hash: add hash_key = \"cookie:sid\" (or header:NAME, query:NAME, client_ip, path)")]
    MissingHashKey,
    #[error("`{key}` applies only to balance = \"{balance}\"; remove it, or set balance = \"{balance}\"")]
    OnlyFor {
        key: &'static str,
        balance: &'static str,
    },
    #[error("route name `{name}` is used twice (first on line {first_line}); give each route its own name")]
    DuplicateRouteName { name: String, first_line: usize },
    #[error("default_upstream `{value}` is not defined; use one of: {names}")]
    UnknownUpstream { value: String, names: String },
    #[error("unknown {key} `{value}`; {}", choose(.suggestion, .valid))]
    UnknownChoice {
        key: &'static str,
        value: String,
        suggestion: Option<String>,
        valid: Vec<&'static str>,
    },
    #[error("bad {key} `{value}`: {fix}")]
    BadValue {
        key: &'static str,
        value: String,
        fix: String,
    },
    #[error("`{0}` applies only to type = \"http\" checks; remove it, or set type = \"http\"")]
    HttpOnly(&'static str),
    #[error("`{key}` applies only to {only}; remove it, or set {only}")]
    OnlyWith {
        key: &'static str,
        only: &'static str,
    },
    #[error("{0}")]
    Certificate(String),
    #[error("{0}")]
    Needs(String),
    #[error("bad DNS name `{value}`: {reason}; write a name like \"app.default.svc.cluster.local\" (with resolve = true, add \":PORT\")")]
    BadDnsName { value: String, reason: String },
    #[error("`{0}` is an IP address: there is nothing to resolve; remove `resolve = true`, or write a host name")]
    NothingToResolve(String),
    #[error("`{key}` does not go with `srv`: {why}; remove `{key}`")]
    NotWithSrv {
        key: &'static str,
        why: &'static str,
    },
    #[error("`{name}` is followed twice in upstream `{upstream}` (first on line {first_line}); list each name once")]
    DuplicateDnsName {
        upstream: String,
        name: String,
        first_line: usize,
    },
    #[error("min_refresh ({min}) is longer than max_refresh ({max}); make min_refresh at most max_refresh")]
    RefreshOrder { min: String, max: String },
}

fn suggest(suggestion: &Option<String>, valid: &[String]) -> String {
    match suggestion {
        Some(s) => format!("; did you mean `{s}`?"),
        None if valid.is_empty() => "; this table takes no keys".to_string(),
        None => format!("; valid keys here: {}", valid.join(", ")),
    }
}

fn suggest_name(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map_or(String::new(), |s| format!(" (did you mean `{s}`?)"))
}

fn choose(suggestion: &Option<String>, valid: &[&str]) -> String {
    match suggestion {
        Some(s) => format!("did you mean \"{s}\"?"),
        None => {
            let quoted: Vec<String> = valid.iter().map(|v| format!("\"{v}\"")).collect();
            format!("use one of: {}", quoted.join(", "))
        }
    }
}

/// A config error placed in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based line and column; `None` when the error has no place (I/O).
    pub position: Option<Position>,
    pub kind: ErrorKind,
}

/// Where in the file, with the line's text for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
    pub text: String,
    pub width: usize,
}

impl Position {
    /// Turns a byte span of `source` into a line, a column (in characters)
    /// and the text of that line.
    pub fn locate(source: &str, span: Range<usize>) -> Position {
        let start = floor_char_boundary(source, span.start);
        let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = source[start..]
            .find('\n')
            .map_or(source.len(), |i| start + i);
        let text = source[line_start..line_end].trim_end_matches('\r');
        let end = floor_char_boundary(source, span.end.clamp(start, line_end));
        Position {
            line: source[..start].matches('\n').count() + 1,
            column: source[line_start..start].chars().count() + 1,
            text: text.to_string(),
            width: source[start..end].chars().count().max(1),
        }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl ConfigError {
    pub fn at(path: &Path, source: &str, span: Range<usize>, kind: ErrorKind) -> Self {
        ConfigError {
            path: path.to_path_buf(),
            position: Some(Position::locate(source, span)),
            kind,
        }
    }

    /// The 1-based line of the error, if it has one.
    pub fn line(&self) -> Option<usize> {
        self.position.as_ref().map(|p| p.line)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(p) = &self.position else {
            return write!(f, "{}: {}", self.path.display(), self.kind);
        };
        writeln!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            p.line,
            p.column,
            self.kind
        )?;
        let gutter = " ".repeat(p.line.to_string().len());
        writeln!(f, "{gutter} |")?;
        writeln!(f, "{} | {}", p.line, p.text)?;
        write!(
            f,
            "{gutter} | {}{}",
            " ".repeat(p.column - 1),
            "^".repeat(p.width)
        )
    }
}

impl std::error::Error for ConfigError {}

/// Something in a valid config worth telling its author: it loads, but
/// part of it cannot have the effect it seems to want.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub path: PathBuf,
    pub position: Option<Position>,
    pub message: String,
}

impl Warning {
    pub fn at(path: &Path, source: &str, span: Range<usize>, message: String) -> Self {
        Warning {
            path: path.to_path_buf(),
            position: Some(Position::locate(source, span)),
            message,
        }
    }

    /// The 1-based line of the warning, if it has one.
    pub fn line(&self) -> Option<usize> {
        self.position.as_ref().map(|p| p.line)
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.position {
            None => write!(f, "{}: warning: {}", self.path.display(), self.message),
            Some(p) => write!(
                f,
                "{}:{}:{}: warning: {}",
                self.path.display(),
                p.line,
                p.column,
                self.message
            ),
        }
    }
}

/// A failure to load: the file could not be read, or it is wrong.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(#[from] Box<ConfigError>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_line_and_column() {
        let src = "a = 1\nbb = \"x\"\n";
        let p = Position::locate(src, 11..14);
        assert_eq!((p.line, p.column, p.width), (2, 6, 3));
        assert_eq!(p.text, "bb = \"x\"");
    }

    #[test]
    fn report_shows_line_and_caret() {
        let src = "[server]\nthreads = 0\n";
        let e = ConfigError::at(
            Path::new("proxy.toml"),
            src,
            19..20,
            ErrorKind::OutOfRange {
                key: "threads",
                value: 0,
                min: 1,
                max: 1024,
            },
        );
        let text = e.to_string();
        assert!(
            text.starts_with("proxy.toml:2:11: `threads` must be"),
            "{text}"
        );
        assert!(text.ends_with("2 | threads = 0\n  |           ^"), "{text}");
    }
}
