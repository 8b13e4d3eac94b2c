//! Hot reload: every trigger applies exactly the new pool, a bad file
//! changes nothing until it is fixed, a half-written file never goes live,
//! and reloading under load loses no request.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::watch;

use crate::support::proxy::{app, metric_sum};
use crate::support::{
    client, eventually, load, no_failures, sent_more, Behavior, TestBackend, TestProxy,
};

/// Waits until `n` requests all come back from `name`.
async fn serves_only(proxy: &TestProxy, name: &str) {
    let http = client();
    eventually(&format!("traffic to go to {name} only"), || async {
        for _ in 0..4 {
            if proxy.get_ok(&http, "/").await != name {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// The `config.last_reload` of `/status` once one exists.
async fn last_reload(proxy: &TestProxy) -> Value {
    eventually("a reload to be recorded", || async {
        let s = proxy.status().await;
        Some(s["config"]["last_reload"].clone()).filter(|r| !r.is_null())
    })
    .await
}

async fn reloads(proxy: &TestProxy, result: &str) -> f64 {
    let m = proxy.metrics().await;
    metric_sum(&m, "switchyard_config_reloads_total", &[("result", result)])
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write the config");
}

async fn two() -> (TestBackend, TestBackend) {
    (
        TestBackend::start("a", Behavior::Name).await,
        TestBackend::start("b", Behavior::Name).await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_write_is_picked_up() {
    let (a, b) = two().await;
    let proxy = TestProxy::start(&app("", &[a.addr])).await;
    serves_only(&proxy, "a").await;
    write(&proxy.config, &proxy.config_text(&app("", &[b.addr])));
    serves_only(&proxy, "b").await;
    let r = last_reload(&proxy).await;
    assert_eq!(
        (&r["trigger"], &r["result"]),
        (&"file change".into(), &"success".into()),
        "{r:#}"
    );
    assert_eq!(r["changes"]["backends_added"][0], format!("app/{}", b.addr));
    assert_eq!(
        r["changes"]["backends_removed"][0],
        format!("app/{}", a.addr)
    );
    let s = proxy.status().await;
    let hash = s["config"]["sha256"].as_str().unwrap().to_string();
    assert_eq!(hash, sha256_of(&proxy.config));
    assert_eq!(reloads(&proxy, "success").await, 1.0);
}

fn sha256_of(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(std::fs::read(path).unwrap());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_atomic_rename_over_the_file_is_picked_up() {
    let (a, b) = two().await;
    let proxy = TestProxy::start(&app("", &[a.addr])).await;
    let tmp = proxy.config.with_extension("toml.tmp");
    write(&tmp, &proxy.config_text(&app("", &[b.addr])));
    std::fs::rename(&tmp, &proxy.config).unwrap();
    serves_only(&proxy, "b").await;
    assert_eq!(reloads(&proxy, "success").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_swap_is_picked_up() {
    // Kubernetes mounts a ConfigMap as proxy.toml -> ..data/proxy.toml,
    // ..data -> ..v1, and updates it by pointing ..data at a new directory.
    let (a, b) = two().await;
    let proxy = TestProxy::start(&app("", &[a.addr])).await;
    let dir = proxy.config.parent().unwrap().to_path_buf();
    let version = |n: &str, backend: SocketAddr| {
        let v = dir.join(n);
        std::fs::create_dir(&v).unwrap();
        write(
            &v.join("proxy.toml"),
            &proxy.config_text(&app("", &[backend])),
        );
    };
    version("..v1", a.addr);
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/proxy.toml", dir.join("link.tmp")).unwrap();
    std::fs::rename(dir.join("link.tmp"), &proxy.config).unwrap();

    version("..v2", b.addr);
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    serves_only(&proxy, "b").await;
    // Same content through the link first: that was no reload at all.
    assert_eq!(reloads(&proxy, "success").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reload_applies_and_reports_the_diff() {
    let (a, b) = two().await;
    let proxy = TestProxy::start_with("watch_config = false\n", &app("", &[a.addr])).await;
    let upstream = format!(
        "[upstreams.app]\nretries = 1\nbackends = [{{ address = \"{}\", weight = 3 }}, \"{}\"]\n",
        a.addr, b.addr
    );
    write(&proxy.config, &proxy.config_text(&upstream));
    let (status, body) = proxy.reload().await;
    assert_eq!(status, 200);
    assert_eq!(body["result"], "success", "{body:#}");
    assert_eq!(body["trigger"], "POST /reload");
    let changes = &body["changes"];
    assert_eq!(changes["backends_added"][0], format!("app/{}", b.addr));
    assert_eq!(changes["reweighted"][0], format!("app/{}: 1 -> 3", a.addr));
    assert_eq!(changes["settings_changed"][0], "app: retries");
    // Weights 3:1, and `a` kept its state: its counter goes on.
    let served_before = proxy.backend(a.addr).await["responses_total"]
        .as_u64()
        .unwrap();
    let http = client();
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..8 {
        *seen.entry(proxy.get_ok(&http, "/").await).or_insert(0) += 1;
    }
    assert_eq!((seen["a"], seen["b"]), (6, 2), "{seen:?}");
    eventually("a's count to carry on", || async {
        let n = proxy.backend(a.addr).await["responses_total"]
            .as_u64()
            .unwrap();
        (n == served_before + 6).then_some(())
    })
    .await;
    // Nothing changed since: still a success, with nothing to apply.
    let (status, body) = proxy.reload().await;
    assert_eq!(status, 200);
    assert!(
        body["changes"].as_str().unwrap().starts_with("none"),
        "{body:#}"
    );
}

/// Writes `bad`, expects it refused with `error_part` in the error while
/// the old pool serves, then writes `good` and expects it picked up.
async fn refused_then_fixed(bad: &str, error_part: &str) {
    let (a, b) = two().await;
    let proxy = TestProxy::start(&app("", &[a.addr])).await;
    if bad.is_empty() {
        std::fs::remove_file(&proxy.config).unwrap();
    } else {
        write(&proxy.config, &proxy.config_text(bad));
    }
    let r = last_reload(&proxy).await;
    assert_eq!(r["result"], "failure", "{r:#}");
    let error = r["error"].as_str().unwrap();
    assert!(error.contains(error_part), "{error}");
    assert!(r["kept"].as_str().unwrap().contains("previous config"));
    serves_only(&proxy, "a").await;
    let m = proxy.metrics().await;
    assert_eq!(
        metric_sum(
            &m,
            "switchyard_config_reloads_total",
            &[("result", "failure")]
        ),
        1.0
    );
    assert_eq!(
        metric_sum(&m, "switchyard_config_last_reload_successful", &[]),
        0.0
    );

    write(&proxy.config, &proxy.config_text(&app("", &[b.addr])));
    serves_only(&proxy, "b").await;
    let m = proxy.metrics().await;
    assert_eq!(
        metric_sum(&m, "switchyard_config_last_reload_successful", &[]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_toml_keeps_the_old_pool_until_fixed() {
    // The error names the file, line and column.
    refused_then_fixed(
        "[upstreams.app\nbackends = [\"127.0.0.1:1\"]\n",
        "proxy.toml:7:",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_keeps_the_old_pool_until_fixed() {
    refused_then_fixed(
        "[upstreams.app]\nbalanse = \"round_robin\"\nbackends = [\"127.0.0.1:1\"]\n",
        "did you mean `balance`?",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_pool_keeps_the_old_pool_until_fixed() {
    refused_then_fixed("[upstreams.app]\nbackends = []\n", "has no backends").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_file_keeps_the_old_pool_until_rewritten() {
    refused_then_fixed("", "cannot read").await;
}

/// Writes the config in two halves with a pause between them, the file
/// first removed if `remove_first`, and another file in the directory
/// written during the pause if `noise`.
async fn written_in_two_halves(remove_first: bool, noise: bool) {
    use std::io::Write;
    let (a, b) = two().await;
    let proxy = TestProxy::start(&app("", &[a.addr])).await;
    // The first half alone is a valid config (b, no checks); the whole one
    // adds checks. Were the half applied, there would be two reloads.
    let whole = proxy.config_text(&format!(
        "{}[upstreams.app.health_check]\ntype = \"tcp\"\ninterval = \"1h\"\n",
        app("", &[b.addr])
    ));
    let (first, second) = whole.split_at(whole.find("[upstreams.app.health_check]").unwrap());
    if remove_first {
        std::fs::remove_file(&proxy.config).unwrap();
    }
    let mut file = std::fs::File::create(&proxy.config).unwrap();
    file.write_all(first.as_bytes()).unwrap();
    file.flush().unwrap();
    // A writer that stalls for several quiet periods mid-file.
    let pause = switchyard::reload::QUIET_PERIOD * 3;
    if noise {
        write(&proxy.config.with_file_name("other.txt"), "not the config");
    }
    tokio::time::sleep(pause).await;
    file.write_all(second.as_bytes()).unwrap();
    drop(file);
    serves_only(&proxy, "b").await;
    let s = proxy.status().await;
    assert_eq!(s["upstreams"][0]["health_check"]["type"], "tcp", "{s:#}");
    assert_eq!(
        s["config"]["snapshot_version"], 2,
        "one reload, of the whole file"
    );
    assert_eq!(reloads(&proxy, "success").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_in_two_halves_goes_live_once_complete() {
    written_in_two_halves(false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_recreated_in_two_halves_goes_live_once_complete() {
    written_in_two_halves(true, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn putting_the_file_back_after_a_failure_is_a_success() {
    let (a, _b) = two().await;
    let proxy = TestProxy::start(&app("", &[a.addr])).await;
    let good = std::fs::read_to_string(&proxy.config).unwrap();
    write(
        &proxy.config,
        &proxy.config_text("[upstreams.app]\nbackends = []\n"),
    );
    let r = last_reload(&proxy).await;
    assert_eq!(r["result"], "failure", "{r:#}");
    write(&proxy.config, &good);
    eventually("the restored file to be recorded", || async {
        let s = proxy.status().await;
        (s["config"]["last_reload"]["result"] == "success").then_some(())
    })
    .await;
    let m = proxy.metrics().await;
    assert_eq!(
        metric_sum(&m, "switchyard_config_last_reload_successful", &[]),
        1.0
    );
    assert_eq!(proxy.status().await["config"]["snapshot_version"], 1);
    serves_only(&proxy, "a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_change_is_refused_and_nothing_applies() {
    let (a, b) = two().await;
    let proxy = TestProxy::start_with("watch_config = false\n", &app("", &[a.addr])).await;
    let moved = proxy.config_text(&app("", &[b.addr])).replace(
        &format!("listen = [\"{}\"]", proxy.addr),
        "listen = [\"127.0.0.1:1\"]",
    );
    write(&proxy.config, &moved);
    let (status, body) = proxy.reload().await;
    assert_eq!(status, 422);
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("[server] listen changed"), "{error}");
    assert!(
        error.contains("restart or `switchyard --upgrade`"),
        "{error}"
    );
    serves_only(&proxy, "a").await;
    assert_eq!(proxy.status().await["config"]["snapshot_version"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_backend_finishes_its_request_and_its_series_go() {
    let (open, gate) = watch::channel(false);
    let held = TestBackend::start("held", Behavior::Gated(gate)).await;
    let other = TestBackend::start("other", Behavior::Name).await;
    let proxy = Arc::new(
        TestProxy::start_with("watch_config = false\n", &app("", &[held.addr, other.addr])).await,
    );
    let long = {
        let proxy = Arc::clone(&proxy);
        tokio::spawn(async move { proxy.get(&client(), "/").await })
    };
    eventually("the request to be held", || async {
        (held.received() == 1).then_some(())
    })
    .await;

    write(&proxy.config, &proxy.config_text(&app("", &[other.addr])));
    assert_eq!(proxy.reload().await.0, 200);
    serves_only(&proxy, "other").await;
    let label = held.addr.to_string();
    let m = proxy.metrics().await;
    let failures = metric_sum(
        &m,
        "switchyard_upstream_failures_total",
        &[("backend", &label)],
    );
    assert!(m
        .samples
        .iter()
        .any(|s| s.labels.get("backend") == Some(&label)));
    assert_eq!(failures, 0.0);

    open.send(true).unwrap();
    assert_eq!(long.await.unwrap(), (200, "held".to_string()));
    eventually("the removed backend's series to go", || async {
        let m = proxy.metrics().await;
        let gone = !m
            .samples
            .iter()
            .any(|s| s.labels.get("backend") == Some(&label));
        gone.then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_client_connection_does_not_keep_a_removed_backend() {
    let gone = TestBackend::start("gone", Behavior::Name).await;
    let stays = TestBackend::start("stays", Behavior::Name).await;
    let proxy =
        TestProxy::start_with("watch_config = false\n", &app("", &[gone.addr, stays.addr])).await;
    // One kept-alive connection, opened under the first config.
    let kept = client();
    proxy.get_ok(&kept, "/").await;
    proxy.get_ok(&kept, "/").await;

    write(&proxy.config, &proxy.config_text(&app("", &[stays.addr])));
    assert_eq!(proxy.reload().await.0, 200);
    let label = gone.addr.to_string();
    eventually("the removed backend's series to go", || async {
        let m = proxy.metrics().await;
        let listed = m
            .samples
            .iter()
            .any(|s| s.labels.get("backend") == Some(&label));
        (!listed).then_some(())
    })
    .await;
    // The connection is still the one it was, and still served.
    assert_eq!(proxy.get_ok(&kept, "/").await, "stays");
    let m = proxy.metrics().await;
    assert_eq!(metric_sum(&m, "switchyard_client_connections", &[]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloading_under_load_loses_no_request() {
    let backends = [
        TestBackend::start("a", Behavior::Name).await,
        TestBackend::start("b", Behavior::Name).await,
        TestBackend::start("c", Behavior::Name).await,
    ];
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let proxy = Arc::new(TestProxy::start_with("watch_config = false\n", &app("", &addrs)).await);

    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicUsize::new(0));
    let clients = load(&proxy, 4, &stop, &total);
    // 24 different pools in turn: every pair, single backends, all three.
    let pools: [&[usize]; 6] = [&[0, 1], &[1, 2], &[2], &[0, 2], &[0, 1, 2], &[1]];
    let http = client();
    for round in 0..24 {
        let pool: Vec<SocketAddr> = pools[round % pools.len()]
            .iter()
            .map(|&i| addrs[i])
            .collect();
        write(&proxy.config, &proxy.config_text(&app("", &pool)));
        assert_eq!(proxy.reload().await.0, 200, "reload {round}");
        // Let the clients send a good number of requests on each pool.
        sent_more(&total, 40).await;
    }
    // End on `a` alone.
    write(&proxy.config, &proxy.config_text(&app("", &[addrs[0]])));
    assert_eq!(proxy.reload().await.0, 200);
    stop.store(true, Ordering::SeqCst);
    let sent = no_failures(clients).await;
    assert!(sent >= 24 * 40, "the clients sent only {sent} requests");
    assert_eq!(proxy.status().await["config"]["snapshot_version"], 26);

    let before: Vec<usize> = backends.iter().map(TestBackend::received).collect();
    for _ in 0..20 {
        assert_eq!(proxy.get_ok(&http, "/").await, "a");
    }
    assert_eq!(backends[1].received(), before[1]);
    assert_eq!(backends[2].received(), before[2]);
}
