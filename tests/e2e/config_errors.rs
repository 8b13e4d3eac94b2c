//! Config mistakes: each one must be reported with the right kind, on the
//! line (and column) where it was made, with the fix in the message; and the
//! `switchyard check` command must agree, through the real binary.

use std::path::Path;
use std::time::Duration;

use switchyard::config::{parse, ConfigError, ErrorKind, Probe};

use crate::support::binary::check;

/// Parses `src` as `proxy.toml`, expecting an error.
fn err(src: &str) -> ConfigError {
    match parse(Path::new("proxy.toml"), src) {
        Ok(config) => panic!("expected an error, got {config:?}\nfrom:\n{src}"),
        Err(e) => *e,
    }
}

/// The 1-based (line, column) of the error.
fn place(e: &ConfigError) -> (usize, usize) {
    let p = e.position.as_ref().expect("the error has a place");
    (p.line, p.column)
}

/// Asserts the error's kind matches a pattern (bindings are references).
macro_rules! assert_kind {
    ($e:expr, $($pattern:tt)+) => {
        assert!(matches!(&$e.kind, $($pattern)+), "wrong kind: {}", $e)
    };
}

/// Asserts the rendered report contains `text`.
fn says(e: &ConfigError, text: &str) {
    let report = e.to_string();
    assert!(report.contains(text), "expected {text:?} in:\n{report}");
}

fn unknown_key(e: &ConfigError) -> (&str, Option<&str>) {
    match &e.kind {
        ErrorKind::UnknownKey {
            key, suggestion, ..
        } => (key, suggestion.as_deref()),
        other => panic!("expected UnknownKey, got {other:?}: {e}"),
    }
}

#[test]
fn unknown_top_level_key_suggests_upstreams() {
    let e = err(r#"[server]
listen = ["127.0.0.1:8080"]

[upstream.app]
backends = ["127.0.0.1:3001"]
"#);
    assert_eq!(unknown_key(&e), ("upstream", Some("upstreams")));
    assert_eq!(e.line(), Some(4));
    says(&e, "did you mean `upstreams`?");
}

#[test]
fn unknown_key_in_server() {
    let e = err(r#"[server]
listen = ["127.0.0.1:8080"]
thread = 4

[upstreams.app]
backends = ["127.0.0.1:3001"]
"#);
    assert_eq!(unknown_key(&e), ("thread", Some("threads")));
    assert_eq!(place(&e), (3, 1));
    says(&e, "3:1: unknown key `thread`; did you mean `threads`?\n");
}

#[test]
fn unknown_key_in_upstream_suggests_balance() {
    let e = err(r#"[upstreams.app]
balanse = "round_robin"
backends = ["127.0.0.1:3001"]
"#);
    assert_eq!(unknown_key(&e), ("balanse", Some("balance")));
    assert_eq!(place(&e), (2, 1));
    says(&e, "did you mean `balance`?");
}

#[test]
fn unknown_key_in_long_form_backend_suggests_address() {
    let e = err(r#"[upstreams.app]
backends = [
  { address = "127.0.0.1:3001" },
  { adress = "127.0.0.1:3002" },
]
"#);
    assert_eq!(unknown_key(&e), ("adress", Some("address")));
    assert_eq!(e.line(), Some(4));
    says(&e, "did you mean `address`?");
}

/// The unknown key itself is pointed at, as in every other table.
#[test]
fn unknown_key_in_backend_points_at_the_key() {
    let inline = err("[upstreams.app]\nbackends = [\n  { adress = \"127.0.0.1:3002\" },\n]\n");
    assert_eq!(unknown_key(&inline), ("adress", Some("address")));
    assert_eq!(place(&inline), (3, 5), "{inline}");
    let table = err(r#"[[upstreams.app.backends]]
address = "127.0.0.1:3001"

[[upstreams.app.backends]]
adress = "127.0.0.1:3002"
"#);
    assert_eq!(unknown_key(&table), ("adress", Some("address")));
    assert_eq!(place(&table), (5, 1), "{table}");
}

#[test]
fn long_form_backend_without_address() {
    let e = err("[upstreams.app]\nbackends = [\n  { weight = 2 },\n]\n");
    assert_kind!(e, ErrorKind::MissingKey(key) if key == "address");
    assert_eq!(e.line(), Some(3));
}

/// Each bad address, in `backends` line 3, both forms; (value, part of the reason).
const BAD_ADDRESSES: [(&str, &str); 3] = [
    ("127.0.0.1", "no port"),
    ("127.0.0.1:99999", "`99999` is not a port number"),
    ("not a host:80", "`not a host` is not a host name"),
];

fn assert_bad_address(e: &ConfigError, address: &str, reason_part: &str, column: usize) {
    match &e.kind {
        ErrorKind::BadAddress { value, reason } => {
            assert_eq!(value, address);
            assert!(reason.contains(reason_part), "{reason}");
        }
        other => panic!("expected BadAddress for {address:?}, got {other:?}"),
    }
    assert_eq!(place(e), (3, column), "{e}");
    says(e, "write an IP address and port like \"127.0.0.1:3001\"");
}

#[test]
fn bad_address_short_form() {
    for (address, reason) in BAD_ADDRESSES {
        let e = err(&format!(
            "[upstreams.app]\nbackends = [\n  \"{address}\",\n]\n"
        ));
        assert_bad_address(&e, address, reason, 3);
    }
}

#[test]
fn bad_address_long_form() {
    for (address, reason) in BAD_ADDRESSES {
        let e = err(&format!(
            "[upstreams.app]\nbackends = [\n  {{ address = \"{address}\", weight = 2 }},\n]\n"
        ));
        assert_bad_address(&e, address, reason, 15);
    }
}

#[test]
fn zero_weight_inline() {
    let e = err(r#"[upstreams.app]
backends = [
  { address = "127.0.0.1:3001", weight = 0 },
]
"#);
    assert_kind!(e, ErrorKind::ZeroWeight);
    assert_eq!(place(&e), (3, 42));
    says(&e, "write `weight = 1`");
}

#[test]
fn zero_weight_in_array_of_tables() {
    let e = err(r#"[[upstreams.app.backends]]
address = "127.0.0.1:3001"

[[upstreams.app.backends]]
address = "127.0.0.1:3002"
weight = 0
"#);
    assert_kind!(e, ErrorKind::ZeroWeight);
    assert_eq!(place(&e), (6, 10));
}

#[test]
fn duplicate_backend_points_at_second_occurrence() {
    let e = err(r#"[upstreams.app]
backends = [
  "127.0.0.1:3001",
  "127.0.0.1:3002",
  { address = "127.0.0.1:3001", weight = 2 },
]
"#);
    assert_kind!(e, ErrorKind::DuplicateBackend { upstream, address, first_line: 3 }
        if upstream == "app" && address == "127.0.0.1:3001");
    assert_eq!(place(&e), (5, 15));
    says(&e, "(first on line 3); list each address once");
}

#[test]
fn empty_backend_list() {
    let e = err(r#"[upstreams.app]
balance = "round_robin"
backends = []
"#);
    assert_kind!(e, ErrorKind::EmptyBackends(name) if name == "app");
    assert_eq!(place(&e), (3, 12));
    says(&e, "add at least one, e.g. backends = [\"127.0.0.1:3001\"]");
}

#[test]
fn upstream_without_backends_key() {
    let e = err(r#"[server]
listen = ["127.0.0.1:8080"]

[upstreams.app]
balance = "round_robin"
"#);
    assert_kind!(e, ErrorKind::EmptyBackends(name) if name == "app");
    assert_eq!(e.line(), Some(4), "{e}");
}

fn unknown_balance(value: &str) -> (ConfigError, Option<String>) {
    let e = err(&format!(
        "[upstreams.app]\nbackends = [\"127.0.0.1:3001\"]\nbalance = \"{value}\"\n"
    ));
    let suggestion = match &e.kind {
        ErrorKind::UnknownBalance {
            value: v,
            suggestion,
        } if v == value => suggestion.clone(),
        other => panic!("expected UnknownBalance({value}), got {other:?}"),
    };
    assert_eq!(place(&e), (3, 11));
    (e, suggestion)
}

#[test]
fn unknown_balance_leastconn_suggests_least_connections() {
    let (e, suggestion) = unknown_balance("leastconn");
    assert_eq!(suggestion.as_deref(), Some("least_connections"));
    says(&e, "did you mean `least_connections`?");
}

#[test]
fn unknown_balance_typo_suggests_round_robin() {
    let (e, suggestion) = unknown_balance("round_robbin");
    assert_eq!(suggestion.as_deref(), Some("round_robin"));
    says(&e, "did you mean `round_robin`?");
}

fn admin_error(data: &str, admin: &str) -> ConfigError {
    let e = err(&format!(
        "[server]\nlisten = [\"{data}\"]\n\n[admin]\nlisten = \"{admin}\"\n\n{BACKENDS}"
    ));
    assert_kind!(e, ErrorKind::AdminOnDataAddress(a) if a == admin);
    assert_eq!(place(&e), (5, 10));
    says(&e, "give [admin] listen its own port");
    e
}

const BACKENDS: &str = "[upstreams.app]\nbackends = [\"127.0.0.1:3001\"]\n";

#[test]
fn admin_on_same_address_as_data() {
    admin_error("127.0.0.1:8080", "127.0.0.1:8080");
}

#[test]
fn admin_on_port_of_wildcard_data_listener() {
    admin_error("0.0.0.0:8080", "127.0.0.1:8080");
}

fn bad_duration(e: &ConfigError, bad: &str) {
    assert_kind!(e, ErrorKind::BadDuration { value, .. } if value == bad);
    says(e, "write a duration like \"250ms\"");
}

#[test]
fn bad_duration_unit() {
    let e = err(&format!("{BACKENDS}read_timeout = \"2 parsecs\"\n"));
    bad_duration(&e, "2 parsecs");
    assert_eq!(place(&e), (3, 16));
}

#[test]
fn zero_connect_timeout() {
    let e = err(&format!("{BACKENDS}connect_timeout = \"0s\"\n"));
    bad_duration(&e, "0s");
    assert_eq!(place(&e), (3, 19));
    says(&e, "it must be more than zero");
}

#[test]
fn durations_are_capped_at_a_day() {
    let e = err(&format!("{BACKENDS}read_timeout = \"25h\"\n"));
    bad_duration(&e, "25h");
    assert_eq!(place(&e), (3, 16));
    says(&e, "it must be at most 24h");
    let ok = format!("{BACKENDS}read_timeout = \"24h\"\n");
    assert!(parse(Path::new("proxy.toml"), &ok).is_ok());
}

#[test]
fn zero_threads_out_of_range() {
    let e = err(&format!("[server]\nthreads = 0\n\n{BACKENDS}"));
    assert_kind!(e, ErrorKind::OutOfRange { key, value: 0, min: 1, .. } if *key == "threads");
    assert_eq!(place(&e), (2, 11));
}

#[test]
fn toml_syntax_error() {
    let e = err(r#"[server]
listen = ["127.0.0.1:8080"]

[upstreams.app]
balance = "round_robin
backends = ["127.0.0.1:3001"]
"#);
    assert_kind!(e, ErrorKind::Syntax(_));
    assert_eq!(place(&e), (5, 23));
}

#[test]
fn wrong_type_retries() {
    let e = err(&format!("{BACKENDS}retries = \"two\"\n"));
    assert_kind!(e, ErrorKind::WrongType { message } if message.contains("expected i64"));
    assert_eq!(place(&e), (3, 11));
}

const TWO_UPSTREAMS: &str = r#"
[upstreams.api]
backends = ["127.0.0.1:3001"]

[upstreams.web]
balance = "least_connections"
backends = ["127.0.0.1:3002", { address = "127.0.0.1:3003", weight = 3 }]
"#;

#[test]
fn two_upstreams_with_default_parse() {
    let src = format!("[server]\ndefault_upstream = \"web\"\n{TWO_UPSTREAMS}");
    let config = parse(Path::new("proxy.toml"), &src).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = config.upstreams.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["api", "web"]);
    assert_eq!(config.default_upstream().unwrap().name, "web");
    assert_eq!(config.default_upstream().unwrap().backends[1].weight, 3);
}

#[test]
fn two_upstreams_without_default() {
    let e = err(TWO_UPSTREAMS);
    assert_kind!(e, ErrorKind::NoDefaultUpstream { count: 2, names } if names == "api, web");
    // Nothing to point at: the report starts at the top of the file.
    assert_eq!(e.line(), Some(1));
    says(&e, "set [server] default_upstream to one of: api, web");
}

#[test]
fn shipped_configs_pass_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut configs = vec![root.join("proxy.toml")];
    for entry in std::fs::read_dir(root.join("examples")).expect("examples/ exists") {
        let path = entry.expect("read examples/").path();
        if path.extension().is_some_and(|x| x == "toml") {
            configs.push(path);
        }
    }
    assert!(
        configs.len() > 1,
        "examples/ should hold a config: {configs:?}"
    );
    for config in configs {
        make_demo_certificates(&config);
        let out = check(&config);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", config.display());
        assert!(stdout.contains("ok"), "{}: {stdout}", config.display());
    }
}

/// What the demo does for a shipped config with TLS: a self-signed
/// certificate where it names one that does not exist yet.
fn make_demo_certificates(config: &Path) {
    let loaded = switchyard::config::load(config).expect("shipped configs load");
    for files in loaded.server.tls.iter().flat_map(|t| &t.certificates) {
        if files.cert.exists() {
            continue;
        }
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::create_dir_all(files.cert.parent().unwrap()).unwrap();
        std::fs::create_dir_all(files.key.parent().unwrap()).unwrap();
        // Written aside and renamed: a demo or another test may read it now.
        let aside = |path: &Path| {
            let name = path.file_name().unwrap().to_string_lossy();
            path.with_file_name(format!("{name}.{}.tmp", std::process::id()))
        };
        let (cert_tmp, key_tmp) = (aside(&files.cert), aside(&files.key));
        std::fs::write(&key_tmp, made.signing_key.serialize_pem()).unwrap();
        std::fs::write(&cert_tmp, made.cert.pem()).unwrap();
        std::fs::rename(&key_tmp, &files.key).unwrap();
        std::fs::rename(&cert_tmp, &files.cert).unwrap();
    }
}

#[test]
fn broken_config_fails_check_with_place() {
    let name = format!("switchyard-config-errors-{}.toml", std::process::id());
    let path = std::env::temp_dir().join(name);
    std::fs::write(&path, format!("{BACKENDS}balanse = \"round_robin\"\n")).expect("write");
    let out = check(&path);
    std::fs::remove_file(&path).ok();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let place = format!("{}:3:1:", path.display());
    assert!(stderr.contains(&place), "expected {place:?} in:\n{stderr}");
    assert!(stderr.contains("did you mean `balance`?"), "{stderr}");
}

/// `[upstreams.app]` with one backend and then `[upstreams.app.<table>]`
/// holding `body`; the body starts on line 4.
fn with_table(table: &str, body: &str) -> String {
    format!("{BACKENDS}\n[upstreams.app.{table}]\n{body}")
}

#[test]
fn health_check_settings_and_defaults() {
    let src = with_table(
        "health_check",
        "path = \"/healthz\"\ninterval = \"5s\"\nexpect_status = [\"2xx\", 404, \"301\"]\n",
    );
    let config = parse(Path::new("proxy.toml"), &src).expect("valid");
    let up = &config.upstreams[0];
    let hc = up.health_check.as_ref().expect("checks configured");
    assert_eq!(hc.interval.as_secs(), 5);
    assert_eq!(hc.timeout.as_secs(), 1);
    assert_eq!((hc.healthy_threshold, hc.unhealthy_threshold), (2, 3));
    assert!(hc.initial_healthy);
    let Probe::Http { path, host, expect } = &hc.probe else {
        panic!("an http check by default: {hc:?}");
    };
    assert_eq!((path.as_str(), host), ("/healthz", &None));
    let expect: Vec<String> = expect.iter().map(ToString::to_string).collect();
    assert_eq!(expect, ["2xx", "404", "301"]);
    // Passive ejection is on by default; slow start is off.
    assert_eq!(up.passive.consecutive_failures, 5);
    assert_eq!(
        up.passive.counts.names(),
        ["connect", "timeout", "reset", "protocol", "tls"]
    );
    assert_eq!(up.slow_start, None);
}

#[test]
fn unknown_check_type_suggests_http() {
    let e = err(&with_table("health_check", "type = \"htp\"\n"));
    assert_kind!(
        e,
        ErrorKind::UnknownChoice {
            key: "check type",
            ..
        }
    );
    assert_eq!(place(&e), (5, 8));
    says(&e, "did you mean \"http\"?");
}

#[test]
fn unknown_key_in_health_check_suggests_interval() {
    let e = err(&with_table("health_check", "intervall = \"1s\"\n"));
    assert_eq!(unknown_key(&e), ("intervall", Some("interval")));
    assert_eq!(e.line(), Some(5));
}

#[test]
fn http_keys_on_a_tcp_check_are_refused() {
    let e = err(&with_table(
        "health_check",
        "type = \"tcp\"\npath = \"/healthz\"\n",
    ));
    assert_kind!(e, ErrorKind::HttpOnly("path"));
    assert_eq!(place(&e), (6, 8));
    says(&e, "applies only to type = \"http\" checks");
}

#[test]
fn bad_expect_status_points_at_the_entry() {
    let e = err(&with_table(
        "health_check",
        "expect_status = [\"2xx\", \"6xx\"]\n",
    ));
    assert_kind!(
        e,
        ErrorKind::BadValue {
            key: "expect_status",
            ..
        }
    );
    assert_eq!(place(&e), (5, 25));
    says(
        &e,
        "write a class like \"2xx\" or a status code from 100 to 599",
    );
}

#[test]
fn health_check_path_must_start_with_a_slash() {
    let e = err(&with_table("health_check", "path = \"healthz\"\n"));
    assert_kind!(e, ErrorKind::BadValue { key: "path", .. });
    assert_eq!(e.line(), Some(5));
}

#[test]
fn zero_threshold_is_out_of_range() {
    let e = err(&with_table("health_check", "unhealthy_threshold = 0\n"));
    assert_kind!(
        e,
        ErrorKind::OutOfRange {
            key: "unhealthy_threshold",
            value: 0,
            ..
        }
    );
}

#[test]
fn unknown_initial_state_lists_both() {
    let e = err(&with_table("health_check", "initial_state = \"down\"\n"));
    assert_kind!(
        e,
        ErrorKind::UnknownChoice {
            key: "initial_state",
            ..
        }
    );
    says(&e, "use one of: \"healthy\", \"unhealthy\"");
}

#[test]
fn unknown_passive_failure_kind() {
    let e = err(&with_table(
        "passive_health_check",
        "failures = [\"5xx\", \"502\"]\n",
    ));
    assert_kind!(e, ErrorKind::UnknownChoice { key: "failure", .. });
    assert_eq!(place(&e), (5, 20));
    says(&e, "did you mean \"5xx\"?");
    let e = err(&with_table(
        "passive_health_check",
        "failures = [\"refused\"]\n",
    ));
    says(
        &e,
        "use one of: \"connect\", \"timeout\", \"reset\", \"protocol\", \"5xx\"",
    );
}

#[test]
fn max_ejection_time_below_ejection_time() {
    let e = err(&with_table(
        "passive_health_check",
        "ejection_time = \"30s\"\nmax_ejection_time = \"10s\"\n",
    ));
    assert_kind!(
        e,
        ErrorKind::BadValue {
            key: "max_ejection_time",
            ..
        }
    );
    assert_eq!(e.line(), Some(6));
    says(&e, "shorter than ejection_time (30s)");
}

#[test]
fn max_ejection_percent_defaults_to_a_tenth_and_is_a_percentage() {
    let config = parse(Path::new("proxy.toml"), BACKENDS).expect("valid");
    assert_eq!(config.upstreams[0].passive.max_ejection_percent, 10);
    let e = err(&with_table(
        "passive_health_check",
        "max_ejection_percent = 101\n",
    ));
    assert_kind!(
        e,
        ErrorKind::OutOfRange {
            key: "max_ejection_percent",
            value: 101,
            min: 0,
            max: 100,
        }
    );
    assert_eq!(e.line(), Some(5));
}

#[test]
fn retry_budget_settings_and_defaults() {
    let config = parse(Path::new("proxy.toml"), BACKENDS).expect("valid");
    let budget = config.upstreams[0].retry_budget;
    assert_eq!((budget.ratio, budget.min_retries_per_second), (0.2, 3));
    let src = with_table("retry_budget", "ratio = 0\nmin_retries_per_second = 0\n");
    let config = parse(Path::new("proxy.toml"), &src).expect("valid");
    let budget = config.upstreams[0].retry_budget;
    assert_eq!((budget.ratio, budget.min_retries_per_second), (0.0, 0));
    let src = with_table("retry_budget", "ratio = 1\n");
    let config = parse(Path::new("proxy.toml"), &src).expect("an integer ratio is fine");
    assert_eq!(config.upstreams[0].retry_budget.ratio, 1.0);
}

#[test]
fn retry_budget_ratio_must_be_a_fraction() {
    for bad in ["1.5", "-0.1", "nan", "inf"] {
        let e = err(&with_table("retry_budget", &format!("ratio = {bad}\n")));
        assert_kind!(e, ErrorKind::BadValue { key: "ratio", .. });
        assert_eq!(place(&e), (5, 9), "{e}");
        says(&e, "write a fraction from 0 to 1, like 0.2");
    }
    let e = err(&with_table("retry_budget", "ratio = \"20%\"\n"));
    assert_kind!(e, ErrorKind::WrongType { .. });
    assert_eq!(e.line(), Some(5));
}

#[test]
fn retry_budget_floor_out_of_range_and_unknown_keys() {
    let e = err(&with_table(
        "retry_budget",
        "\nmin_retries_per_second = -1\n",
    ));
    assert_kind!(
        e,
        ErrorKind::OutOfRange {
            key: "min_retries_per_second",
            value: -1,
            ..
        }
    );
    assert_eq!(place(&e), (6, 26));
    let e = err(&with_table("retry_budget", "min_retry_per_second = 3\n"));
    assert_eq!(
        unknown_key(&e),
        ("min_retry_per_second", Some("min_retries_per_second"))
    );
    assert_eq!(place(&e), (5, 1));
}

mod any_input {
    //! No input makes the config parser panic: each ends in a config or in
    //! an error placed inside the file. (The fuzz targets in `fuzz/` run
    //! the same check for as long as one likes.)
    use super::*;
    use proptest::prelude::*;

    /// Parses without DNS, and checks an error's place is in the text.
    fn check(src: &str) -> Result<(), TestCaseError> {
        if let Err(e) = switchyard::config::parse_offline(Path::new("f.toml"), src) {
            let lines = src.split('\n').count();
            if let Some(p) = &e.position {
                prop_assert!(p.line >= 1 && p.line <= lines, "line {} of {lines}", p.line);
                prop_assert!(p.column >= 1);
            }
            prop_assert!(!e.to_string().is_empty());
        }
        Ok(())
    }

    fn full_example() -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/full.toml");
        std::fs::read_to_string(path).expect("examples/full.toml")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_text(src in ".{0,400}") {
            check(&src)?;
        }

        /// Valid configs with a few characters replaced, deleted or added
        /// reach far deeper into validation than random text.
        #[test]
        fn mutated_full_example(edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<char>()), 1..6)) {
            let mut chars: Vec<char> = full_example().chars().collect();
            for (at, op, c) in edits {
                let i = at.index(chars.len() + 1);
                match op {
                    0 if i < chars.len() => chars[i] = c,
                    1 if i < chars.len() => { chars.remove(i); }
                    _ => chars.insert(i, c),
                }
            }
            check(&chars.into_iter().collect::<String>())?;
        }
    }
}

#[test]
fn request_limits_are_bounded_by_what_pingora_parses() {
    let e = err(&format!("[server]\nmax_headers = 300\n{BACKENDS}"));
    assert_kind!(
        e,
        ErrorKind::OutOfRange {
            key: "max_headers",
            max: 256,
            ..
        }
    );
    assert_eq!(place(&e), (2, 15));
    let config = parse(
        Path::new("proxy.toml"),
        &format!("[server]\nmax_body_bytes = 0\n{BACKENDS}"),
    )
    .expect("valid");
    assert_eq!(config.server.limits.body_bytes, None, "0 means no limit");
    assert_eq!(config.server.limits.headers, 100);
}

#[test]
fn client_timeouts_and_max_connections_are_checked() {
    let e = err(&format!("[server]\nheader_timeout = \"soon\"\n{BACKENDS}"));
    assert_kind!(e, ErrorKind::BadDuration { .. });
    assert_eq!(place(&e), (2, 18));
    let e = err(&format!("[server]\nsend_timeout = \"0s\"\n{BACKENDS}"));
    assert_kind!(e, ErrorKind::BadDuration { .. });
    let e = err(&format!("[server]\nmax_connections = 0\n{BACKENDS}"));
    assert_kind!(
        e,
        ErrorKind::OutOfRange {
            key: "max_connections",
            min: 1,
            ..
        }
    );
    assert_eq!(place(&e), (2, 19));
    let config = parse(
        Path::new("proxy.toml"),
        &format!("[server]\nkeepalive_timeout = \"0s\"\n{BACKENDS}"),
    )
    .expect("valid");
    let timeouts = config.server.client_timeouts;
    assert_eq!(timeouts.keepalive, None, "0s turns keep-alive off");
    assert_eq!(timeouts.header, Duration::from_secs(10));
    assert_eq!(config.server.max_connections, 10_000);
}
