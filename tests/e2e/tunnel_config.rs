//! `tunnel_idle_timeout`: its default, and its mistakes placed on their
//! line and column like every other duration.

use std::path::Path;
use std::time::Duration;

use switchyard::config::{parse, ConfigError, ErrorKind, DEFAULT_TUNNEL_IDLE_TIMEOUT};

/// `[upstreams.app]` with `lines` after its first line, then one backend.
fn load(lines: &str) -> Result<switchyard::config::Config, Box<ConfigError>> {
    let src = format!("[upstreams.app]\n{lines}backends = [\"127.0.0.1:4001\"]\n");
    parse(Path::new("proxy.toml"), &src)
}

fn tunnel_idle(lines: &str) -> Duration {
    let config = load(lines).unwrap_or_else(|e| panic!("{e}"));
    config.upstreams[0].timeouts.tunnel_idle
}

#[test]
fn an_hour_by_default_and_apart_from_read_timeout() {
    assert_eq!(DEFAULT_TUNNEL_IDLE_TIMEOUT, Duration::from_secs(3600));
    assert_eq!(tunnel_idle(""), DEFAULT_TUNNEL_IDLE_TIMEOUT);
    assert_eq!(
        tunnel_idle("read_timeout = \"5s\"\n"),
        DEFAULT_TUNNEL_IDLE_TIMEOUT
    );
    assert_eq!(
        tunnel_idle("tunnel_idle_timeout = \"90s\"\n"),
        Duration::from_secs(90)
    );
}

#[test]
fn a_bad_or_zero_value_is_placed_with_the_fix() {
    for (value, reason) in [
        ("\"soon\"", "write a duration like \"250ms\""),
        ("\"0s\"", "it must be more than zero"),
        ("\"25h\"", "it must be at most 24h"),
    ] {
        let e = load(&format!("tunnel_idle_timeout = {value}\n")).unwrap_err();
        assert!(matches!(e.kind, ErrorKind::BadDuration { .. }), "{e}");
        let place = e.position.as_ref().map(|p| (p.line, p.column));
        assert_eq!(place, Some((2, 23)), "{e}");
        assert!(
            e.to_string().contains(reason),
            "expected {reason:?} in:\n{e}"
        );
    }
}

#[test]
fn a_misspelt_key_gets_the_right_one() {
    let e = load("tunnel_idle_timout = \"1m\"\n").unwrap_err();
    match &e.kind {
        ErrorKind::UnknownKey { suggestion, .. } => {
            assert_eq!(suggestion.as_deref(), Some("tunnel_idle_timeout"), "{e}")
        }
        other => panic!("expected UnknownKey, got {other:?}"),
    }
}
