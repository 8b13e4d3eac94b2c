//! DNS discovery when DNS misbehaves: failures keep the last good
//! backends, empty answers take them out only after hold_empty, backend
//! state survives an update that keeps the backend, and a proxy started
//! with its DNS server down fills its upstream once it answers.

use std::net::SocketAddr;

use hickory_proto::rr::RecordType;

use crate::dns::{follows, from_dns, lookups, loopback, upstream_of};
use crate::support::dns::{Mode, TestDns};
use crate::support::{client, eventually, Behavior, TestBackend, TestProxy};

/// An upstream `name` following `name.test` on `port`, with `settings`.
fn following(name: &str, port: u16, settings: &str) -> String {
    format!(
        "[upstreams.{name}]\nretries = 0\nmin_refresh = \"100ms\"\nmax_refresh = \"1s\"\n\
         {settings}backends = [{{ address = \"{name}.test:{port}\", resolve = true }}]\n"
    )
}

/// The upstream `app` following `app.test` on `port`, asking a nameserver
/// on a loopback UDP port nothing listens on (returned, to start one on).
fn unanswered(port: u16) -> (SocketAddr, String) {
    let dns = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = dns.local_addr().unwrap();
    let config = format!(
        "[resolver]\nnameservers = [\"{addr}\"]\ntimeout = \"200ms\"\n{}",
        following("app", port, "")
    );
    (addr, config)
}

/// `GET /readyz`: status and body.
async fn readyz(proxy: &TestProxy) -> (u16, String) {
    let r = client()
        .get(proxy.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Waits for `more` lookups of `upstream`'s names ending in `result`.
async fn more_lookups(proxy: &TestProxy, upstream: &str, result: &str, more: f64) {
    let start = lookups(proxy, upstream, result).await;
    eventually(&format!("{more} more {result} lookups"), || async {
        (lookups(proxy, upstream, result).await >= start + more).then_some(())
    })
    .await;
}

/// Asserts every one of `n` requests to `path` is answered 200.
async fn all_served(proxy: &TestProxy, path: &str, n: usize) {
    let http = client();
    for _ in 0..n {
        proxy.get_ok(&http, path).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_and_silence_keep_the_last_good_backends() {
    let fleet = TestBackend::fleet(&loopback(&[2, 3, 4]), Behavior::Name).await;
    let addrs: Vec<SocketAddr> = fleet.iter().map(|b| b.addr).collect();
    let dns = TestDns::start().await;
    dns.set_a("app.test", &loopback(&[2, 3]));
    let config = format!(
        "{}{}",
        dns.resolver_table(),
        following("app", addrs[0].port(), "")
    );
    let proxy = TestProxy::start(&config).await;
    follows(&proxy, "app", &addrs[..2]).await;

    for mode in [Mode::ServFail, Mode::Silent] {
        dns.set_mode(mode);
        // Several refresh periods of failures: nothing changes.
        more_lookups(&proxy, "app", "failure", 3.0).await;
        assert_eq!(from_dns(&proxy, "app").await.len(), 2, "{mode:?}");
        all_served(&proxy, "/", 10).await;
        let status = proxy.status().await;
        let name = &upstream_of(&status, "app")["dns"]["names"][0];
        assert_eq!(name["state"], "failing", "{mode:?}");
        assert!(name["last_error"]["message"].is_string(), "{name}");
        assert!(name["next_lookup"].is_string(), "{name}");
        assert_eq!(
            readyz(&proxy).await.0,
            200,
            "failures keep the upstream ready"
        );
    }

    // Answers again, with a third address: followed at once.
    dns.set_a("app.test", &loopback(&[2, 3, 4]));
    dns.set_mode(Mode::Answer);
    follows(&proxy, "app", &addrs).await;
    let status = proxy.status().await;
    assert_eq!(
        upstream_of(&status, "app")["dns"]["names"][0]["state"],
        "answering"
    );
    assert!(lookups(&proxy, "app", "failure").await >= 6.0);
    let m = proxy.metrics().await;
    let last = crate::support::proxy::metric_sum(
        &m,
        "switchyard_dns_last_success_timestamp_seconds",
        &[("upstream", "app"), ("name", "app.test")],
    );
    assert!(last > 1.0e9, "last success: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_answers_empty_an_upstream_only_after_hold_empty() {
    let fleet = TestBackend::fleet(&loopback(&[2, 3]), Behavior::Name).await;
    let addrs: Vec<SocketAddr> = fleet.iter().map(|b| b.addr).collect();
    let port = addrs[0].port();
    let dns = TestDns::start().await;
    for name in ["short.test", "long.test"] {
        dns.set_a(name, &loopback(&[2, 3]));
    }
    // The same NXDOMAIN answers: shorter than long's hold_empty, longer
    // than short's.
    let config = format!(
        "{}{}{}[[routes]]\npath_prefix = \"/short\"\nupstream = \"short\"\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"long\"\n",
        dns.resolver_table(),
        following("short", port, "hold_empty = \"300ms\"\n"),
        following("long", port, "hold_empty = \"1m\"\n"),
    );
    let proxy = TestProxy::start(&config).await;
    follows(&proxy, "short", &addrs).await;
    follows(&proxy, "long", &addrs).await;

    dns.set_mode(Mode::NxDomain);
    let (_, why) = eventually("short to be emptied", || async {
        let (status, body) = readyz(&proxy).await;
        (status == 503).then_some((status, body))
    })
    .await;
    assert!(why.contains("upstream short has no backends"), "{why}");
    assert!(why.contains("NXDOMAIN"), "{why}");
    assert!(!why.contains("upstream long"), "{why}");
    let (status, _) = proxy.get(&client(), "/short/x").await;
    assert_eq!(status, 503);
    // long saw the same empty answers, and changed nothing.
    more_lookups(&proxy, "long", "empty", 2.0).await;
    assert_eq!(from_dns(&proxy, "long").await.len(), 2);
    all_served(&proxy, "/", 4).await;
    let status = proxy.status().await;
    assert_eq!(
        upstream_of(&status, "long")["dns"]["names"][0]["state"],
        "holding"
    );
    assert_eq!(
        upstream_of(&status, "short")["dns"]["names"][0]["state"],
        "empty"
    );

    dns.set_mode(Mode::Answer);
    follows(&proxy, "short", &addrs).await;
    assert_eq!(readyz(&proxy).await.0, 200);
    all_served(&proxy, "/short/x", 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_that_keeps_a_backend_keeps_its_state() {
    let fleet = TestBackend::fleet(&loopback(&[2, 3, 4]), Behavior::Name).await;
    let addrs: Vec<SocketAddr> = fleet.iter().map(|b| b.addr).collect();
    let port = addrs[0].port();
    // Nothing listens on .9 at that port: requests to it fail at once.
    let dead: SocketAddr = ([127, 0, 0, 9], port).into();
    let dns = TestDns::start().await;
    dns.set_a("checked.test", &loopback(&[2, 3]));
    dns.set_a("ejecting.test", &loopback(&[2, 9]));
    // Back only after 1000 passing checks; ejected for an hour.
    let checks = "[upstreams.checked.health_check]\ntype = \"http\"\npath = \"/healthz\"\n\
                  interval = \"100ms\"\ntimeout = \"100ms\"\nunhealthy_threshold = 1\n\
                  healthy_threshold = 1000\n";
    let ejection = "[upstreams.ejecting.passive_health_check]\nconsecutive_failures = 1\n\
                    ejection_time = \"1h\"\nmax_ejection_percent = 100\n";
    let config = format!(
        "{}{}{checks}{}{ejection}[[routes]]\npath_prefix = \"/e\"\nupstream = \"ejecting\"\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"checked\"\n",
        dns.resolver_table(),
        following("checked", port, ""),
        following("ejecting", port, ""),
    );
    let proxy = TestProxy::start(&config).await;
    follows(&proxy, "checked", &addrs[..2]).await;
    follows(&proxy, "ejecting", &[addrs[0], dead]).await;

    // .3 fails a check, then passes again: it stays out (1000 passes due).
    fleet[1].set_health(500);
    proxy.wait_state(addrs[1], "unhealthy").await;
    fleet[1].set_health(200);
    // The dead one is ejected by the requests sent to it.
    let http = client();
    eventually("the dead backend to be ejected", || async {
        proxy.get(&http, "/e").await;
        let status = proxy.status().await;
        let b = &upstream_of(&status, "ejecting")["backends"];
        let dead = b
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["address"] == dead.to_string());
        (dead.unwrap()["state"] == "ejected").then_some(())
    })
    .await;

    dns.set_a("checked.test", &loopback(&[2, 3, 4]));
    dns.set_a("ejecting.test", &loopback(&[2, 9, 4]));
    follows(&proxy, "checked", &addrs).await;
    follows(&proxy, "ejecting", &[addrs[0], dead, addrs[2]]).await;
    let status = proxy.status().await;
    let state = |upstream: &str, addr: SocketAddr| {
        let b = &upstream_of(&status, upstream)["backends"];
        let b = b
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["address"] == addr.to_string());
        b.unwrap().clone()
    };
    let checked = state("checked", addrs[1]);
    assert_eq!(checked["state"], "unhealthy", "{checked}");
    assert_eq!(checked["dns_name"], "checked.test");
    let ejected = state("ejecting", dead);
    assert_eq!(ejected["state"], "ejected", "{ejected}");
    assert_eq!(ejected["ejections_total"], 1);
    // And the new ones start as a config-added backend does.
    assert_eq!(state("checked", addrs[2])["state"], "healthy");
    assert_eq!(state("ejecting", addrs[2])["state"], "healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_with_dns_down_the_upstream_fills_when_it_answers() {
    let b = TestBackend::fleet(&loopback(&[2]), Behavior::Name).await;
    let (port, config) = unanswered(b[0].addr.port());
    let proxy = TestProxy::start(&config).await;
    more_lookups(&proxy, "app", "failure", 1.0).await;
    let (status, why) = readyz(&proxy).await;
    assert_eq!(status, 503);
    assert!(
        why.contains("upstream app has no backends (dns app.test: no answer yet"),
        "{why}"
    );
    let (status, _) = proxy.get(&client(), "/").await;
    assert_eq!(status, 503);

    let dns = TestDns::start_on(port).await;
    dns.set_a("app.test", &loopback(&[2]));
    follows(&proxy, "app", &[b[0].addr]).await;
    assert_eq!(readyz(&proxy).await.0, 200);
    all_served(&proxy, "/", 4).await;
    assert!(dns.queries("app.test", RecordType::A) >= 1);
}

#[test]
fn check_warns_of_a_name_it_cannot_resolve_and_passes() {
    let dir = crate::support::temp_dir("dns-check");
    let path = dir.join("proxy.toml");
    let (_, config) = unanswered(3000);
    std::fs::write(&path, config).unwrap();
    let out = crate::support::binary::check(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("follows app.test:3000 (resolve)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("warning: upstream app: app.test:3000 (resolve) gives no backend now"),
        "{stdout}"
    );
}
