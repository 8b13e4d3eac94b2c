//! Mistakes in `[[routes]]`, each reported on its line with the fix; what
//! is not a mistake but cannot do what it seems to want, as a warning; and
//! `switchyard check` printing the route table in precedence order.

use std::path::Path;
use std::process::Command;

use switchyard::config::{parse, ConfigError, ErrorKind};

/// Two upstreams, `api` and `web`, on lines 1 to 4; routes follow on line 5.
const UPSTREAMS: &str = "[upstreams.api]\nbackends = [\"127.0.0.1:4001\"]\n\
                         [upstreams.web]\nbackends = [\"127.0.0.1:4002\"]\n";

fn err(routes: &str) -> ConfigError {
    let src = format!("{UPSTREAMS}{routes}");
    match parse(Path::new("proxy.toml"), &src) {
        Ok(config) => panic!("expected an error, got {config:?}\nfrom:\n{src}"),
        Err(e) => *e,
    }
}

fn says(e: &ConfigError, text: &str) {
    let report = e.to_string();
    assert!(report.contains(text), "expected {text:?} in:\n{report}");
}

#[test]
fn an_unknown_upstream_names_the_nearest() {
    let e = err("[[routes]]\npath_prefix = \"/api\"\nupstream = \"apii\"\n");
    assert!(
        matches!(&e.kind, ErrorKind::UnknownRouteUpstream { suggestion: Some(s), .. } if s == "api"),
        "{e}"
    );
    assert_eq!(e.line(), Some(7));
    says(&e, "did you mean `api`?");
}

#[test]
fn malformed_host_patterns_are_refused_where_written() {
    for (pattern, why) in [
        ("a.*.com", "may only stand first"),
        ("", "empty"),
        ("api example.com", "space"),
        ("api.example.com:443", "port"),
    ] {
        let e = err(&format!(
            "[[routes]]\nhosts = [\"ok.com\", \"{pattern}\"]\nupstream = \"api\"\n"
        ));
        assert!(
            matches!(&e.kind, ErrorKind::BadHostPattern { .. }),
            "{pattern}: {e}"
        );
        assert_eq!(e.line(), Some(6), "{pattern}");
        says(&e, why);
        says(&e, "\"*.example.com\"");
    }
}

#[test]
fn a_path_prefix_must_start_with_a_slash_and_be_normalised() {
    let e = err("[[routes]]\npath_prefix = \"api\"\nupstream = \"api\"\n");
    assert_eq!(e.line(), Some(6));
    says(&e, "write \"/api\"");
    let e = err("[[routes]]\npath_prefix = \"/a/../api\"\nupstream = \"api\"\n");
    assert_eq!(e.line(), Some(6));
    says(&e, "write \"/api\"");
}

#[test]
fn two_routes_with_identical_conditions_are_refused() {
    let e = err(
        "[[routes]]\nhosts = [\"a.com\", \"*.b.com\"]\npath_prefix = \"/x\"\nupstream = \"api\"\n\
         [[routes]]\nhosts = [\"*.B.com\", \"a.com\"]\npath_prefix = \"/x\"\nupstream = \"web\"\n",
    );
    assert!(
        matches!(&e.kind, ErrorKind::DuplicateRoute { first_line: 5 }),
        "{e}"
    );
    assert_eq!(e.line(), Some(9));
}

#[test]
fn strip_prefix_needs_a_prefix() {
    let e = err("[[routes]]\nstrip_prefix = true\nupstream = \"api\"\n");
    assert!(matches!(&e.kind, ErrorKind::StripWithoutPrefix), "{e}");
    assert_eq!(e.line(), Some(6));
}

#[test]
fn a_header_name_must_be_a_token() {
    let e = err("[[routes]]\nheaders = { \"x canary\" = \"1\" }\nupstream = \"api\"\n");
    assert!(
        matches!(&e.kind, ErrorKind::BadHeaderName(n) if n == "x canary"),
        "{e}"
    );
    assert_eq!(e.line(), Some(6));
}

#[test]
fn a_route_needs_an_upstream_and_names_are_unique() {
    let e = err("[[routes]]\npath_prefix = \"/x\"\n");
    assert!(
        matches!(&e.kind, ErrorKind::MissingKey(k) if k == "upstream"),
        "{e}"
    );
    assert_eq!(e.line(), Some(5));
    let e = err("[[routes]]\nname = \"r\"\nupstream = \"api\"\n\
         [[routes]]\nname = \"r\"\npath_prefix = \"/x\"\nupstream = \"web\"\n");
    assert!(
        matches!(&e.kind, ErrorKind::DuplicateRouteName { first_line: 5, .. }),
        "{e}"
    );
    assert_eq!(e.line(), Some(8));
}

#[test]
fn unreachable_upstreams_and_shadowed_routes_are_warnings_with_their_lines() {
    let src = format!(
        "{UPSTREAMS}[upstreams.old]\nbackends = [\"127.0.0.1:4003\"]\n\
         [[routes]]\nheaders = {{ \"x-canary\" = \"1\" }}\nupstream = \"api\"\n\
         [[routes]]\nheaders = {{ \"x-canary\" = \"1\", \"x-beta\" = \"1\" }}\nupstream = \"web\"\n"
    );
    let config = parse(Path::new("proxy.toml"), &src).expect("warnings are not errors");
    let lines: Vec<(Option<usize>, &str)> = config
        .warnings
        .iter()
        .map(|w| (w.line(), w.message.as_str()))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(lines[0].0, Some(10));
    assert!(
        lines[0]
            .1
            .contains("route `2-web` can never match: route `1-api` (line 7)"),
        "{lines:#?}"
    );
    assert_eq!(lines[1].0, Some(5));
    assert!(
        lines[1].1.contains("upstream `old` gets no traffic"),
        "{lines:#?}"
    );
    // Without routes nothing changes: one upstream takes everything, and
    // several need a default.
    let plain = parse(
        Path::new("p.toml"),
        "[upstreams.app]\nbackends = [\"127.0.0.1:1\"]\n",
    )
    .unwrap();
    assert_eq!(plain.default_upstream, Some(0));
    assert!(plain.warnings.is_empty());
    let with_routes = parse(
        Path::new("p.toml"),
        &format!("{UPSTREAMS}[[routes]]\nupstream = \"api\"\n"),
    )
    .unwrap();
    assert_eq!(
        with_routes.default_upstream, None,
        "routes make default_upstream optional"
    );
}

#[test]
fn check_prints_the_routes_in_precedence_order_and_the_warnings() {
    let dir = std::env::temp_dir().join(format!("switchyard-route-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("routes.toml");
    let text = format!(
        "{UPSTREAMS}[[routes]]\nupstream = \"web\"\n\
         [[routes]]\nname = \"api\"\nhosts = [\"api.example.com\"]\npath_prefix = \"/v1/\"\n\
         strip_prefix = true\nupstream = \"api\"\n\
         [[routes]]\nname = \"canary\"\nheaders = {{ \"x-canary\" = \"1\" }}\nupstream = \"api\"\n\
         [[routes]]\nname = \"never\"\nupstream = \"api\"\nheaders = {{ \"x-canary\" = \"1\", \"a\" = \"b\" }}\n"
    );
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run switchyard check");
    std::fs::remove_dir_all(&dir).ok();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let expected = [
        "routes, in precedence order:",
        "1. api: api.example.com, path /v1/ (stripped) -> api",
        "2. canary: any host, path /, headers x-canary: 1 -> api",
        "3. never: any host, path /, headers a: b, x-canary: 1 -> api",
        "4. 1-web: any host, path / -> web",
        "otherwise -> 404 (no default_upstream)",
        "warning: route `never` can never match: route `canary` (line 13)",
    ];
    let mut at = 0;
    for line in expected {
        let found = stdout[at..]
            .find(line)
            .unwrap_or_else(|| panic!("{line:?} not in order in:\n{stdout}"));
        at += found + line.len();
    }
}
