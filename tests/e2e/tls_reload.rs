//! Certificates replaced on disk while clients keep connecting: by rename,
//! by a Kubernetes-style symlink swap, and by a broken file that must not
//! replace anything. New connections get the new certificate, none fails.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::proxy::{app, metric_sum};
use crate::support::tls::{self, Ca, Key, Leaf};
use crate::support::{eventually, temp_dir, Behavior, TestBackend, TestProxy};

/// The most a client loop runs, in requests and in time.
const MAX_REQUESTS: usize = 20_000;
const MAX_TIME: Duration = Duration::from_secs(30);

/// Clients in a load, each with one request at a time.
const CLIENTS: usize = 2;

/// Clients that each open a new connection for every request to `name`
/// on `https` and record the names of the certificate they got.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Vec<String>>>>,
    clients: tokio::task::JoinSet<(usize, Vec<String>)>,
}

impl Load {
    fn start(ca: &Ca, name: &'static str, https: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut clients = tokio::task::JoinSet::new();
        for _ in 0..CLIENTS {
            let http = tls::client(ca, &[(name, https)])
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
            let url = format!("https://{name}:{}/", https.port());
            clients.spawn(async move {
                let started = tokio::time::Instant::now();
                let (mut sent, mut failures) = (0, Vec::new());
                while !stop.load(Ordering::SeqCst)
                    && sent < MAX_REQUESTS
                    && started.elapsed() < MAX_TIME
                {
                    sent += 1;
                    match http.get(&url).send().await {
                        Ok(r) if r.status() == 200 => {
                            seen.lock().unwrap().push(tls::peer_names(&r));
                        }
                        Ok(r) => failures.push(format!("status {}", r.status())),
                        Err(e) => failures.push(format!("{e:?}")),
                    }
                }
                (sent, failures)
            });
        }
        Load {
            stop,
            seen,
            clients,
        }
    }

    /// Waits until a request got a certificate naming `names`.
    async fn wait_for(&self, names: &[&str]) {
        eventually(&format!("a certificate for {names:?}"), || async {
            let seen = self.seen.lock().unwrap();
            seen.iter().any(|n| n == names).then_some(())
        })
        .await
    }

    /// The certificates of the next `n` requests to end, leaving out one
    /// per client: those may have begun before now.
    async fn next(&self, n: usize) -> Vec<Vec<String>> {
        let from = self.seen.lock().unwrap().len() + CLIENTS;
        eventually(&format!("{n} more requests"), || async {
            let seen = self.seen.lock().unwrap();
            (seen.len() >= from + n).then(|| seen[from..from + n].to_vec())
        })
        .await
    }

    /// Stops the clients and asserts that none of their requests failed.
    async fn finish(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        crate::support::no_failures(self.clients).await
    }
}

/// Writes `leaf` to `STEM.pem.new` and `STEM.key.new`, then renames both
/// over `STEM.pem` and `STEM.key`: what most tools do to replace a file.
fn replace_by_rename(dir: &Path, stem: &str, leaf: &Leaf) {
    let (cert, key) = (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    );
    let (cert_new, key_new) = (
        cert.with_extension("pem.new"),
        key.with_extension("key.new"),
    );
    std::fs::write(&cert_new, &leaf.cert).unwrap();
    std::fs::write(&key_new, &leaf.key).unwrap();
    std::fs::rename(&key_new, &key).unwrap();
    std::fs::rename(&cert_new, &cert).unwrap();
}

async fn start(files: &[(PathBuf, PathBuf)], backend: SocketAddr) -> (TestProxy, SocketAddr) {
    let https = crate::support::closed_port();
    let proxy = TestProxy::start_with(&tls::section(https, files, ""), &app("", &[backend])).await;
    (proxy, https)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_renamed_into_place_serves_new_connections() {
    let ca = Ca::new();
    let dir = temp_dir("certs");
    let files = [ca.issue(&["api.test"], Key::P256).write(&dir, "api")];
    let backend = TestBackend::start("a", Behavior::Name).await;
    let (proxy, https) = start(&files, backend.addr).await;
    let load = Load::start(&ca, "api.test", https);
    load.wait_for(&["api.test"]).await;

    replace_by_rename(
        &dir,
        "api",
        &ca.issue(&["api.test", "v2.api.test"], Key::P384),
    );
    load.wait_for(&["api.test", "v2.api.test"]).await;
    // Once swapped, every new connection gets the new one.
    let next = load.next(20).await;
    assert!(next.iter().all(|n| n.len() == 2), "{next:?}");
    let sent = load.finish().await;
    assert!(sent > 20, "the clients kept sending: {sent}");

    let status = proxy.status().await;
    let last = &status["config"]["last_reload"];
    assert_eq!(last["result"], "success", "{last}");
    assert_eq!(last["trigger"], "file change");
    assert_eq!(last["changes"]["certificates"][0], "certificate api.test");
    let names = &status["tls"]["certificates"][0]["names"];
    assert_eq!(names[1], "v2.api.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_style_symlink_swap_serves_new_connections() {
    use std::os::unix::fs::symlink;
    let ca = Ca::new();
    let dir = temp_dir("secret");
    // As a Secret is mounted: files in a versioned directory, `..data`
    // pointing at it, and the files seen through `..data`.
    std::fs::create_dir(dir.join("..v1")).unwrap();
    ca.issue(&["api.test"], Key::Ed25519)
        .write(&dir.join("..v1"), "tls");
    symlink("..v1", dir.join("..data")).unwrap();
    symlink("..data/tls.pem", dir.join("tls.pem")).unwrap();
    symlink("..data/tls.key", dir.join("tls.key")).unwrap();
    let files = [(dir.join("tls.pem"), dir.join("tls.key"))];
    let backend = TestBackend::start("a", Behavior::Name).await;
    let (_proxy, https) = start(&files, backend.addr).await;
    let load = Load::start(&ca, "api.test", https);
    load.wait_for(&["api.test"]).await;

    std::fs::create_dir(dir.join("..v2")).unwrap();
    ca.issue(&["api.test", "v2.api.test"], Key::P256)
        .write(&dir.join("..v2"), "tls");
    symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    load.wait_for(&["api.test", "v2.api.test"]).await;
    load.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_replacement_keeps_the_old_certificate_and_says_why() {
    let ca = Ca::new();
    let dir = temp_dir("certs");
    let files = [ca.issue(&["api.test"], Key::P256).write(&dir, "api")];
    let backend = TestBackend::start("a", Behavior::Name).await;
    let (proxy, https) = start(&files, backend.addr).await;
    let load = Load::start(&ca, "api.test", https);
    load.wait_for(&["api.test"]).await;

    // A new certificate with the key of another one.
    let new = ca.issue(&["api.test", "v2.api.test"], Key::P256);
    let other = ca.issue(&["other.test"], Key::P256);
    let broken = Leaf {
        cert: new.cert.clone(),
        key: other.key.clone(),
    };
    replace_by_rename(&dir, "api", &broken);
    let status = eventually("the failed reload", || async {
        let s = proxy.status().await;
        (s["config"]["last_reload"]["result"] == "failure").then_some(s)
    })
    .await;
    let error = status["config"]["last_reload"]["error"].as_str().unwrap();
    let key = dir.join("api.key").display().to_string();
    assert!(
        error.contains(&key) && error.contains("does not belong"),
        "{error}"
    );
    let tls_error = status["tls"]["last_error"]["error"].as_str().unwrap();
    assert!(tls_error.contains(&key), "{tls_error}");
    let m = proxy.metrics().await;
    let failed = metric_sum(
        &m,
        "switchyard_config_reloads_total",
        &[("result", "failure")],
    );
    assert_eq!(failed, 1.0);
    assert_eq!(
        metric_sum(&m, "switchyard_config_last_reload_successful", &[]),
        0.0
    );
    let next = load.next(20).await;
    assert!(
        next.iter().all(|n| n == &["api.test"]),
        "the old one serves: {next:?}"
    );

    // Fixed: the pair is whole again and serves.
    replace_by_rename(&dir, "api", &new);
    load.wait_for(&["api.test", "v2.api.test"]).await;
    load.finish().await;
    let status = proxy.status().await;
    assert_eq!(status["config"]["last_reload"]["result"], "success");
    assert!(status["tls"]["last_error"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_can_add_a_certificate_and_keeps_the_unchanged_one() {
    let ca = Ca::new();
    let dir = temp_dir("certs");
    let api = ca.issue(&["api.test"], Key::P256).write(&dir, "api");
    let backend = TestBackend::start("a", Behavior::Name).await;
    let (proxy, https) = start(std::slice::from_ref(&api), backend.addr).await;
    let loaded_at = proxy.status().await["tls"]["certificates"][0]["loaded_at"].clone();

    let shop = ca.issue(&["shop.test"], Key::Rsa).write(&dir, "shop");
    let before = tls::section(https, std::slice::from_ref(&api), "");
    let after = tls::section(https, &[api, shop], "");
    let text = proxy
        .config_text(&app("", &[backend.addr]))
        .replace(&before, &after);
    std::fs::write(&proxy.config, text).unwrap();
    let (code, answer) = proxy.reload().await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        answer["changes"]["certificates"][0],
        "certificate shop.test"
    );

    let http = tls::client(&ca, &[("shop.test", https)]).build().unwrap();
    let r = http
        .get(format!("https://shop.test:{}/", https.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(tls::peer_names(&r), ["shop.test"]);
    let certs = proxy.status().await["tls"]["certificates"].clone();
    assert_eq!(
        certs[0]["loaded_at"], loaded_at,
        "api.test was not loaded again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordering_the_certificates_moves_the_default() {
    let ca = Ca::new();
    let dir = temp_dir("certs");
    let a = ca.issue(&["a.test"], Key::P256).write(&dir, "a");
    let b = ca.issue(&["b.test"], Key::P256).write(&dir, "b");
    let backend = TestBackend::start("app", Behavior::Name).await;
    let (proxy, https) = start(&[a.clone(), b.clone()], backend.addr).await;
    let no_sni = tls::client(&ca, &[])
        .danger_accept_invalid_certs(true)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let url = format!("https://{https}/");
    let r = no_sni.get(&url).send().await.unwrap();
    assert_eq!(tls::peer_names(&r), ["a.test"], "the first is the default");

    let before = tls::section(https, &[a.clone(), b.clone()], "");
    let after = tls::section(https, &[b, a], "");
    let text = proxy
        .config_text(&app("", &[backend.addr]))
        .replace(&before, &after);
    std::fs::write(&proxy.config, text).unwrap();
    let (code, answer) = proxy.reload().await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        answer["changes"]["certificates"][0],
        "default certificate b.test"
    );
    let r = no_sni.get(&url).send().await.unwrap();
    assert_eq!(tls::peer_names(&r), ["b.test"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_named_before_it_exists_is_loaded_when_it_appears() {
    let ca = Ca::new();
    let a = ca
        .issue(&["a.test"], Key::P256)
        .write(&temp_dir("certs"), "a");
    let backend = TestBackend::start("app", Behavior::Name).await;
    let (proxy, https) = start(std::slice::from_ref(&a), backend.addr).await;

    // The config names a certificate its issuer has not written yet, in a
    // directory of its own: the reload fails and says which file.
    let later = temp_dir("later");
    let b = (later.join("b.pem"), later.join("b.key"));
    let before = tls::section(https, std::slice::from_ref(&a), "");
    let after = tls::section(https, &[a.clone(), b.clone()], "");
    let text = proxy
        .config_text(&app("", &[backend.addr]))
        .replace(&before, &after);
    std::fs::write(&proxy.config, text).unwrap();
    let status = eventually("the failed reload", || async {
        let s = proxy.status().await;
        (s["config"]["last_reload"]["result"] == "failure").then_some(s)
    })
    .await;
    let error = status["config"]["last_reload"]["error"].as_str().unwrap();
    assert!(error.contains(&b.0.display().to_string()), "{error}");

    // Written there later, as an issuer does: picked up without a signal.
    replace_by_rename(&later, "b", &ca.issue(&["b.test"], Key::P256));
    let http = tls::client(&ca, &[("b.test", https)]).build().unwrap();
    let url = format!("https://b.test:{}/", https.port());
    eventually("b.test to be served", || async {
        let r = http.get(&url).send().await.ok()?;
        (tls::peer_names(&r) == ["b.test"]).then_some(())
    })
    .await;
    assert_eq!(
        proxy.status().await["config"]["last_reload"]["result"],
        "success"
    );
}
