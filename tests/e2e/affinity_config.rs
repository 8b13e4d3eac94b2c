//! Mistakes in affinity settings, each on its line with the fix.

use std::path::Path;

use switchyard::config::{parse, ConfigError, ErrorKind};

/// `[upstreams.app]` with `lines` after its first line, then one backend.
fn err(lines: &str) -> ConfigError {
    let src = format!("[upstreams.app]\n{lines}backends = [\"127.0.0.1:4001\"]\n");
    match parse(Path::new("proxy.toml"), &src) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => *e,
    }
}

fn says(e: &ConfigError, text: &str) {
    assert!(e.to_string().contains(text), "expected {text:?} in:\n{e}");
}

#[test]
fn consistent_hash_needs_a_key_and_the_key_needs_consistent_hash() {
    let e = err("balance = \"consistent_hash\"\n");
    assert!(matches!(e.kind, ErrorKind::MissingHashKey), "{e}");
    says(&e, "hash_key = \"cookie:sid\"");
    let e = err("balance = \"round_robin\"\nhash_key = \"path\"\n");
    assert!(
        matches!(
            e.kind,
            ErrorKind::OnlyFor {
                key: "hash_key",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.line(), Some(3));
    let e = err("balance = \"consistent_hash\"\nhash_key = \"body:x\"\n");
    assert_eq!(e.line(), Some(3));
    says(&e, "header:NAME, cookie:NAME, query:NAME, client_ip, path");
    let e = err("balance = \"least_connections\"\nlatency_decay = \"5s\"\n");
    assert!(
        matches!(
            e.kind,
            ErrorKind::OnlyFor {
                key: "latency_decay",
                balance: "least_latency"
            }
        ),
        "{e}"
    );
}

#[test]
fn the_balance_factor_is_zero_or_at_least_one() {
    for bad in ["0.5", "-1", "101"] {
        let e = err(&format!(
            "balance = \"consistent_hash\"\nhash_key = \"path\"\nhash_balance_factor = {bad}\n"
        ));
        assert_eq!(e.line(), Some(4), "{bad}");
        says(&e, "write 0 to turn bounded load off");
    }
    for good in ["0", "1", "1.25", "3"] {
        let src = format!(
            "[upstreams.app]\nbalance = \"consistent_hash\"\nhash_key = \"path\"\n\
             hash_balance_factor = {good}\nbackends = [\"127.0.0.1:4001\"]\n"
        );
        assert!(parse(Path::new("p.toml"), &src).is_ok(), "{good}");
    }
}

#[test]
fn hash_and_latency_aliases_suggest_the_balance() {
    for (alias, name) in [
        ("ketama", "consistent_hash"),
        ("maglev", "consistent_hash"),
        ("p2c", "least_latency"),
        ("peak_ewma", "least_latency"),
    ] {
        let e = err(&format!("balance = \"{alias}\"\n"));
        says(&e, &format!("did you mean `{name}`?"));
    }
}

#[test]
fn sticky_cookie_mistakes() {
    let table = |body: &str| {
        let src = format!(
            "[upstreams.app]\nbackends = [\"127.0.0.1:4001\"]\n[upstreams.app.sticky]\n{body}"
        );
        *parse(Path::new("proxy.toml"), &src).expect_err(body)
    };
    let e = table("cookie = \"my cookie\"\n");
    assert_eq!(e.line(), Some(4));
    says(&e, "a cookie name is letters");
    let e = table("same_site = \"none\"\n");
    assert_eq!(e.line(), Some(4));
    says(&e, "add secure = true");
    let e = table("same_site = \"loose\"\n");
    says(&e, "use one of: \"lax\", \"strict\", \"none\"");
    let e = table("path = \"app\"\n");
    says(&e, "a cookie path starts with /");
    let e = table("maxage = \"1h\"\n");
    says(&e, "did you mean `max_age`?");
}
