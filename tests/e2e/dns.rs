//! DNS discovery against a real DNS server on loopback whose answers the
//! tests change: A records followed under load with no request lost (and a
//! removed backend's request finishing), SRV ports and weights, and the
//! TTL clamped to [min_refresh, max_refresh], by query counts.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use hickory_proto::rr::RecordType;
use serde_json::Value;

use crate::support::backend::HOLD_PATH;
use crate::support::dns::TestDns;
use crate::support::proxy::metric_sum;
use crate::support::{
    client, eventually, load, no_failures, sent_more, Behavior, TestBackend, TestProxy,
};

/// 127.0.0.N for each N.
pub fn loopback(last: &[u8]) -> Vec<Ipv4Addr> {
    last.iter().map(|&n| Ipv4Addr::new(127, 0, 0, n)).collect()
}

/// The sorted addresses of `upstream`'s backends that came from DNS.
pub async fn from_dns(proxy: &TestProxy, upstream: &str) -> Vec<String> {
    let status = proxy.status().await;
    let u = upstream_of(&status, upstream);
    let mut found: Vec<String> = u["backends"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["source"] == "dns")
        .map(|b| b["address"].as_str().unwrap().to_string())
        .collect();
    found.sort();
    found
}

/// Waits until `upstream`'s DNS backends are exactly `want`.
pub async fn follows(proxy: &TestProxy, upstream: &str, want: &[SocketAddr]) {
    let mut want: Vec<String> = want.iter().map(ToString::to_string).collect();
    want.sort();
    eventually(&format!("{upstream} to have {want:?}"), || async {
        (from_dns(proxy, upstream).await == want).then_some(())
    })
    .await;
}

pub fn upstream_of<'a>(status: &'a Value, name: &str) -> &'a Value {
    let all = status["upstreams"].as_array().unwrap();
    all.iter()
        .find(|u| u["name"] == name)
        .expect("upstream in /status")
}

/// `switchyard_dns_resolutions_total` for this upstream and result.
pub async fn lookups(proxy: &TestProxy, upstream: &str, result: &str) -> f64 {
    let m = proxy.metrics().await;
    let labels = [("upstream", upstream), ("result", result)];
    metric_sum(&m, "switchyard_dns_resolutions_total", &labels)
}

fn addrs(fleet: &[TestBackend]) -> Vec<SocketAddr> {
    fleet.iter().map(|b| b.addr).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_records_are_followed_under_load_without_losing_a_request() {
    let fleet = TestBackend::fleet(&loopback(&[2, 3, 4, 5]), Behavior::Name).await;
    let all = addrs(&fleet);
    let port = all[0].port();
    let dns = TestDns::start().await;
    dns.set_a("app.test", &loopback(&[2, 3, 4]));
    let config = format!(
        "{}[upstreams.app]\nretries = 0\nmin_refresh = \"100ms\"\nmax_refresh = \"1s\"\n\
         backends = [{{ address = \"app.test:{port}\", resolve = true }}]\n",
        dns.resolver_table()
    );
    let proxy = Arc::new(TestProxy::start(&config).await);
    follows(&proxy, "app", &all[..3]).await;
    let kept = Arc::clone(&proxy.pool.snapshot().upstreams()[0].backends()[0].state);

    // Clients that never retry: any answer but a 200 is a lost request.
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicUsize::new(0));
    let clients = load(&proxy, 3, &stop, &total);
    let more = |n: usize| sent_more(&total, n);

    // Three, then four.
    more(40).await;
    dns.set_a("app.test", &loopback(&[2, 3, 4, 5]));
    follows(&proxy, "app", &all).await;
    more(40).await;
    let now = proxy.pool.snapshot();
    let same = now.upstreams()[0]
        .backends()
        .iter()
        .find(|b| b.state.address() == kept.address());
    assert!(
        Arc::ptr_eq(&same.unwrap().state, &kept),
        "a backend that stays keeps its state"
    );

    // Slow requests on every backend, held until after the change.
    let mut held = tokio::task::JoinSet::new();
    for _ in 0..50 {
        if fleet[1].held() > 0 && fleet[2].held() > 0 {
            break;
        }
        let url = proxy.url(HOLD_PATH);
        held.spawn(async move { client().get(url).send().await.map(|r| r.status().as_u16()) });
        let before: usize = fleet.iter().map(TestBackend::held).sum();
        eventually("the slow request to arrive", || async {
            (fleet.iter().map(TestBackend::held).sum::<usize>() > before).then_some(())
        })
        .await;
    }
    assert!(
        fleet[1].held() > 0 && fleet[2].held() > 0,
        "no slow request on .3 and .4"
    );

    // Then two: .3 and .4 leave. New requests stop going to them at once.
    dns.set_a("app.test", &loopback(&[2, 5]));
    follows(&proxy, "app", &[all[0], all[3]]).await;
    more(40).await;
    let after: Vec<usize> = fleet.iter().map(TestBackend::received).collect();
    more(80).await;
    assert_eq!(
        fleet[1].received(),
        after[1],
        ".3 was removed but still gets requests"
    );
    assert_eq!(
        fleet[2].received(),
        after[2],
        ".4 was removed but still gets requests"
    );
    assert!(fleet[3].received() > after[3], ".5 gets traffic");

    // The removed backends' slow requests finish, answered by them.
    for b in &fleet {
        b.release_held();
    }
    while let Some(status) = held.join_next().await {
        assert_eq!(status.unwrap().expect("the slow request is answered"), 200);
    }
    stop.store(true, Ordering::SeqCst);
    let sent = no_failures(clients).await;
    assert!(sent >= 200, "the clients sent only {sent} requests");
    assert!(lookups(&proxy, "app", "success").await >= 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_give_ports_and_weights() {
    let backends = [
        TestBackend::start("one", Behavior::Name).await,
        TestBackend::start("two", Behavior::Name).await,
        TestBackend::start("three", Behavior::Name).await,
        TestBackend::start("backup", Behavior::Name).await,
    ];
    let port = |i: usize| backends[i].addr.port();
    let dns = TestDns::start().await;
    for target in ["one.test", "two.test", "three.test", "backup.test"] {
        dns.set_a(target, &loopback(&[1]));
    }
    // Priority 10 is for when those of priority 1 are gone: never used.
    let srv = |w: [u16; 3]| {
        [
            (1, w[0], port(0), "one.test"),
            (1, w[1], port(1), "two.test"),
            (1, w[2], port(2), "three.test"),
            (10, 100, port(3), "backup.test"),
        ]
    };
    dns.set_srv("_http._tcp.web.test", &srv([1, 1, 1]));
    let config = format!(
        "{}[upstreams.web]\nmin_refresh = \"100ms\"\nmax_refresh = \"1s\"\n\
         backends = [{{ srv = \"_http._tcp.web.test\" }}]\n",
        dns.resolver_table()
    );
    let proxy = TestProxy::start(&config).await;
    let three: Vec<SocketAddr> = backends[..3].iter().map(|b| b.addr).collect();
    follows(&proxy, "web", &three).await;

    let spread = |n: usize| {
        let (proxy, http) = (&proxy, client());
        async move {
            let mut counts = [0usize; 4];
            for _ in 0..n {
                let body = proxy.get_ok(&http, "/").await;
                let i = ["one", "two", "three", "backup"]
                    .iter()
                    .position(|b| *b == body)
                    .unwrap();
                counts[i] += 1;
            }
            counts
        }
    };
    let even = spread(60).await;
    assert_eq!(even, [20, 20, 20, 0], "equal SRV weights, equal shares");

    dns.set_srv("_http._tcp.web.test", &srv([4, 1, 1]));
    eventually("the new weights", || async {
        let status = proxy.status().await;
        let b = &upstream_of(&status, "web")["backends"];
        let w: Vec<u64> = b
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["weight"].as_u64().unwrap())
            .collect();
        (w.iter().sum::<u64>() == 6).then_some(())
    })
    .await;
    let weighted = spread(60).await;
    assert_eq!(weighted, [40, 10, 10, 0], "SRV weights 4, 1, 1");
    let status = proxy.status().await;
    let names = &upstream_of(&status, "web")["dns"]["names"];
    assert_eq!(names[0]["type"], "SRV");
    assert_eq!(names[0]["state"], "answering");
    let answer = names[0]["last_answer"]["backends"].as_array().unwrap();
    assert!(
        answer.contains(&Value::from(format!("{} weight 4", backends[0].addr))),
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ttl_is_clamped_to_min_and_max_refresh() {
    let b = TestBackend::start("b", Behavior::Name).await;
    let dns = TestDns::start().await;
    dns.set_a("zero.test", &loopback(&[1]));
    dns.set_a("day.test", &loopback(&[1]));
    dns.set_ttl("zero.test", 0);
    dns.set_ttl("day.test", 86_400);
    let upstream = |name: &str| {
        format!(
            "[upstreams.{name}]\nmin_refresh = \"100ms\"\nmax_refresh = \"300ms\"\n\
             backends = [{{ address = \"{name}.test:{}\", resolve = true }}]\n",
            b.addr.port()
        )
    };
    let config = format!(
        "{}{}{}[[routes]]\npath_prefix = \"/\"\nupstream = \"zero\"\n",
        dns.resolver_table(),
        upstream("zero"),
        upstream("day")
    );
    let proxy = TestProxy::start(&config).await;
    // A day-long TTL is still asked again at max_refresh: 300 ms.
    let day = eventually("day.test to be asked 5 times", || async {
        let n = dns.queries("day.test", RecordType::A);
        (n >= 5).then_some(n)
    })
    .await;
    // Meanwhile TTL 0 was asked at min_refresh (100 ms): about three times
    // as often (less on a loaded machine, where every lookup takes longer),
    // and far from a query storm: jitter never waits less than min_refresh.
    let zero = dns.queries("zero.test", RecordType::A);
    assert!(
        zero > day,
        "TTL 0: {zero} queries while a day-long TTL had {day}"
    );
    assert!(
        zero <= 4 * (day + 1),
        "TTL 0: {zero} queries while a day-long TTL had {day}"
    );
    let status = proxy.status().await;
    let answer = &upstream_of(&status, "day")["dns"]["names"][0]["last_answer"];
    assert_eq!(answer["ttl_s"], 86_400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_backends_of_names_it_still_follows() {
    let fleet = TestBackend::fleet(&loopback(&[2, 3]), Behavior::Name).await;
    let all = addrs(&fleet);
    let dns = TestDns::start().await;
    dns.set_a("app.test", &loopback(&[2, 3]));
    let upstream = |min: &str| {
        format!(
            "{}[upstreams.app]\nmin_refresh = \"{min}\"\nmax_refresh = \"1s\"\n\
             backends = [{{ address = \"app.test:{}\", resolve = true }}]\n",
            dns.resolver_table(),
            all[0].port()
        )
    };
    let proxy = TestProxy::start_with("watch_config = false\n", &upstream("100ms")).await;
    follows(&proxy, "app", &all).await;
    // The server stops answering: after the reload, the name's task starts
    // anew (its settings changed) and cannot ask again.
    dns.set_mode(crate::support::dns::Mode::Silent);
    std::fs::write(&proxy.config, proxy.config_text(&upstream("200ms"))).unwrap();
    let (status, answer) = proxy.reload().await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["changes"]["settings_changed"][0],
        "app: min_refresh, max_refresh, hold_empty"
    );
    let mut want: Vec<String> = all.iter().map(ToString::to_string).collect();
    want.sort();
    assert_eq!(
        from_dns(&proxy, "app").await,
        want,
        "no empty pool after a reload"
    );
    let http = client();
    for _ in 0..4 {
        proxy.get_ok(&http, "/").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_srv_target_without_an_address_or_port_leaves_out_only_itself() {
    let one = TestBackend::start("one", Behavior::Name).await;
    let dns = TestDns::start().await;
    dns.set_a("one.test", &loopback(&[1]));
    dns.set_a("zero.test", &loopback(&[1]));
    // ghost.test has no address at all; zero.test is registered on port 0.
    dns.set_srv(
        "_http._tcp.web.test",
        &[
            (1, 1, one.addr.port(), "one.test"),
            (1, 1, one.addr.port(), "ghost.test"),
            (1, 1, 0, "zero.test"),
        ],
    );
    let config = format!(
        "{}[upstreams.web]\nmin_refresh = \"100ms\"\nmax_refresh = \"1s\"\nhold_empty = \"0s\"\n\
         backends = [{{ srv = \"_http._tcp.web.test\" }}]\n",
        dns.resolver_table()
    );
    let proxy = TestProxy::start(&config).await;
    follows(&proxy, "web", &[one.addr]).await;
    assert_eq!(proxy.get_ok(&client(), "/").await, "one");
}
