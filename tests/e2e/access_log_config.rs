//! `[log]`: its defaults, each value it takes, and each mistake placed on
//! its line and column with the fix.

use std::path::Path;

use switchyard::config::{
    parse, AccessTarget, ConfigError, ErrorKind, Format, LogConfig, DEFAULT_QUEUE_LINES,
};

use crate::support::temp_dir;

const UPSTREAM: &str = "[upstreams.app]\nbackends = [\"127.0.0.1:4001\"]\n";

/// The file with `log` (the `[log]` table's lines) after one upstream,
/// read as `dir/proxy.toml`.
fn load(dir: &Path, log: &str) -> Result<LogConfig, Box<ConfigError>> {
    let src = format!("{UPSTREAM}[log]\n{log}");
    parse(&dir.join("proxy.toml"), &src).map(|c| c.log)
}

fn error(log: &str) -> ConfigError {
    let dir = temp_dir("log-config");
    match load(&dir, log) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => *e,
    }
}

fn place(e: &ConfigError) -> Option<(usize, usize)> {
    e.position.as_ref().map(|p| (p.line, p.column))
}

fn says(e: &ConfigError, text: &str) {
    let report = e.to_string();
    assert!(report.contains(text), "expected {text:?} in:\n{report}");
}

#[test]
fn off_by_default_json_without_the_query() {
    let config = parse(Path::new("proxy.toml"), UPSTREAM).unwrap();
    assert_eq!(config.log, LogConfig::default());
    assert_eq!(config.log.access, None);
    assert_eq!(config.log.format, Format::Json);
    assert!(!config.log.log_query);
    assert_eq!(config.log.queue_lines, DEFAULT_QUEUE_LINES);
}

#[test]
fn every_value_it_takes() {
    let dir = temp_dir("log-config");
    let log = load(&dir, "access = \"stdout\"\nformat = \"combined\"\n").unwrap();
    assert_eq!(log.access, Some(AccessTarget::Stdout));
    assert_eq!(log.format, Format::Combined);
    assert_eq!(load(&dir, "access = \"off\"\n").unwrap().access, None);
    // Relative to the config file's directory, like certificates.
    let log = load(
        &dir,
        "access = \"./access.log\"\nlog_query = true\nqueue_lines = 16\n",
    )
    .unwrap();
    assert_eq!(
        log.access,
        Some(AccessTarget::File(dir.join("./access.log")))
    );
    assert!(log.log_query);
    assert_eq!(log.queue_lines, 16);
    let absolute = dir.join("a.log");
    let log = load(&dir, &format!("access = \"{}\"\n", absolute.display())).unwrap();
    assert_eq!(log.access, Some(AccessTarget::File(absolute)));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unknown_key_suggests_the_nearest() {
    let e = error("formt = \"json\"\n");
    match &e.kind {
        ErrorKind::UnknownKey {
            key, suggestion, ..
        } => {
            assert_eq!(key, "formt");
            assert_eq!(suggestion.as_deref(), Some("format"));
        }
        other => panic!("expected UnknownKey, got {other:?}"),
    }
    assert_eq!(place(&e), Some((4, 1)), "{e}");
}

#[test]
fn a_bad_format_lists_the_two() {
    let e = error("format = \"xml\"\n");
    assert!(matches!(e.kind, ErrorKind::UnknownChoice { .. }), "{e}");
    assert_eq!(place(&e), Some((4, 10)), "{e}");
    says(&e, "use one of: \"json\", \"combined\"");
}

#[test]
fn a_bare_word_for_access_is_taken_for_a_typo() {
    let e = error("access = \"stdot\"\n");
    assert!(
        matches!(e.kind, ErrorKind::BadValue { key: "access", .. }),
        "{e}"
    );
    assert_eq!(place(&e), Some((4, 10)), "{e}");
    says(&e, "did you mean \"stdout\"?");
    says(&e, "a file path with a `/` in it");
}

#[test]
fn a_file_in_a_missing_directory_or_a_directory_is_refused() {
    let e = error("access = \"/no/such/dir/access.log\"\n");
    assert_eq!(place(&e), Some((4, 10)), "{e}");
    says(&e, "the directory /no/such/dir does not exist");
    let e = error("access = \"/tmp\"\n");
    says(&e, "it is a directory");
}

#[test]
fn queue_lines_is_bounded() {
    for value in ["0", "100000"] {
        let e = error(&format!("queue_lines = {value}\n"));
        assert!(
            matches!(
                e.kind,
                ErrorKind::OutOfRange {
                    key: "queue_lines",
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(place(&e), Some((4, 15)), "{e}");
    }
}

#[test]
fn wrong_types_are_placed() {
    let e = error("log_query = \"yes\"\n");
    assert_eq!(place(&e).map(|p| p.0), Some(4), "{e}");
}

#[test]
fn switchyard_check_names_the_access_log() {
    let dir = temp_dir("log-config");
    let path = dir.join("proxy.toml");
    let log = dir.join("access.log");
    let text = format!(
        "{UPSTREAM}[log]\naccess = \"{}\"\nformat = \"combined\"\n",
        log.display()
    );
    std::fs::write(&path, text).unwrap();
    let out = crate::support::binary::check(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let want = format!("  access log {} (combined)\n", log.display());
    assert!(stdout.contains(&want), "expected {want:?} in:\n{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
