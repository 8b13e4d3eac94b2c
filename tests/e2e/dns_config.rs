//! Config mistakes in what follows DNS, each placed on its line and
//! column with the fix; and the configs that must keep loading.

use std::path::Path;

use switchyard::config::{parse_offline, ConfigError, ErrorKind, Lookup, Refresh};

fn err(src: &str) -> ConfigError {
    match parse_offline(Path::new("proxy.toml"), src) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(e) => *e,
    }
}

fn at(e: &ConfigError) -> (usize, usize) {
    let p = e.position.as_ref().expect("placed");
    (p.line, p.column)
}

#[test]
fn dns_entries_load_with_their_defaults() {
    let src = "[resolver]\nnameservers = [\"127.0.0.1:8600\", \"127.0.0.2\"]\n\
               [upstreams.app]\nbackends = [\n  { address = \"app.svc:3000\", resolve = true, weight = 3 },\n  \
               { srv = \"_web._tcp.service.consul\" },\n]\n";
    let config = parse_offline(Path::new("proxy.toml"), src).unwrap();
    let u = &config.upstreams[0];
    assert!(u.backends.is_empty());
    assert_eq!(u.dns.len(), 2);
    assert_eq!(u.dns[0].name, "app.svc");
    assert_eq!(u.dns[0].lookup, Lookup::Ip { port: 3000 });
    assert_eq!(u.dns[0].weight, 3);
    assert_eq!(u.dns[1].lookup, Lookup::Srv);
    assert_eq!(u.refresh, Refresh::default());
    let ns: Vec<String> = config
        .resolver
        .nameservers
        .iter()
        .map(|a| a.to_string())
        .collect();
    assert_eq!(ns, ["127.0.0.1:8600", "127.0.0.2:53"]);
    // `resolve = false` is the address as before.
    let old = "[upstreams.app]\nbackends = [{ address = \"127.0.0.1:3001\", resolve = false }]\n";
    let config = parse_offline(Path::new("proxy.toml"), old).unwrap();
    assert_eq!(config.upstreams[0].backends.len(), 1);
    assert!(config.upstreams[0].dns.is_empty());
}

#[test]
fn each_dns_mistake_is_placed_and_says_the_fix() {
    let cases: [(&str, (usize, usize), &str); 7] = [
        (
            "[upstreams.a]\nbackends = [{ srv = \"_x._tcp.a\", weight = 2 }]\n",
            (2, 43),
            "SRV records give each target its weight; remove `weight`",
        ),
        (
            "[upstreams.a]\nbackends = [{ srv = \"_x._tcp.a\", address = \"a:1\" }]\n",
            (2, 44),
            "remove `address`",
        ),
        (
            "[upstreams.a]\nbackends = [{ address = \"10.0.0.1:80\", resolve = true }]\n",
            (2, 25),
            "nothing to resolve; remove `resolve = true`",
        ),
        (
            "[upstreams.a]\nbackends = [{ srv = \"_x._tcp.a:80\" }]\n",
            (2, 21),
            "an SRV name has no port",
        ),
        (
            "[upstreams.a]\nbackends = [\n{ srv = \"a.b\" },\n{ srv = \"a.b\" },\n]\n",
            (4, 9),
            "`a.b` is followed twice in upstream `a` (first on line 3)",
        ),
        (
            "[upstreams.a]\nmin_refresh = \"10s\"\nmax_refresh = \"1s\"\nbackends = [{ srv = \"a.b\" }]\n",
            (2, 15),
            "make min_refresh at most max_refresh",
        ),
        (
            "[resolver]\nnameservers = [\"dns.local\"]\n[upstreams.a]\nbackends = [{ srv = \"a.b\" }]\n",
            (2, 16),
            "as an IP address and port like \"127.0.0.1:53\"",
        ),
    ];
    for (src, place, fix) in cases {
        let e = err(src);
        assert_eq!(at(&e), place, "{e}");
        assert!(e.to_string().contains(fix), "expected {fix:?} in {e}");
    }
    let e = err("[upstreams.a]\nbackends = [{ address = \"a..b:80\", resolve = true }]\n");
    assert!(matches!(e.kind, ErrorKind::BadDnsName { .. }), "{e}");
    let e = err("[upstreams.a]\nbackends = [{ srv = \"a.b\", ttl = 3 }]\n");
    assert!(
        matches!(&e.kind, ErrorKind::UnknownKey { key, .. } if key == "ttl"),
        "{e}"
    );
}

#[test]
fn an_upstream_of_addresses_still_needs_one() {
    let e = err("[upstreams.a]\nbackends = []\n");
    assert!(matches!(e.kind, ErrorKind::EmptyBackends(_)), "{e}");
}
