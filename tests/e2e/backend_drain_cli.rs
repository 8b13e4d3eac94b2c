//! `switchyard drain` and `undrain` against a running instance's admin
//! port, as a deploy script runs them.

use crate::backend_drain::{one_held_at_a, TOKEN};

/// `switchyard drain ... --wait` blocks, printing progress, until the
/// request held at the backend is done; `undrain` takes it back; a wrong
/// backend or a missing token fails with exit status 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_command_waits_until_nothing_is_left() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let lines = format!("token = \"{TOKEN}\"\n");
    let (proxy, a, b, held) = one_held_at_a(&lines).await;
    let cli = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.args(args)
            .args(["--admin", &proxy.admin.to_string()])
            .env("SWITCHYARD_ADMIN_TOKEN", TOKEN)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        cmd
    };
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
    let mut waiting = cli(&["drain", "app", &a_addr, "--wait", "--timeout", "60s"])
        .spawn()
        .unwrap();
    let mut out = BufReader::new(waiting.stdout.take().unwrap()).lines();
    let first = out.next_line().await.unwrap().unwrap();
    let progress = format!("draining app {a_addr}: 1 requests, 0 tunnels left");
    assert_eq!(first, progress);
    // A second progress line, a second later: the command waits while
    // the request is held.
    let second = out.next_line().await.unwrap();
    assert_eq!(
        second.as_deref(),
        Some(progress.as_str()),
        "returned while a request was in flight"
    );
    assert_eq!(a.held(), 1);
    a.release_held();
    assert_eq!(held.await.unwrap().0, 200);
    let mut last = first;
    while let Some(line) = out.next_line().await.unwrap() {
        last = line;
    }
    let status = waiting.wait().await.unwrap();
    assert!(status.success(), "{status}");
    assert!(
        last.starts_with(&format!("drained app {a_addr} in ")),
        "{last}"
    );
    assert!(last.ends_with("nothing left on it, safe to stop"), "{last}");

    let out = cli(&["undrain", "app", &a_addr]).output().await.unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.trim(), format!("app {a_addr}: active, takes requests"));
    assert_eq!(proxy.backend(a.addr).await["state"], "healthy");

    let out = cli(&["drain", "app", "127.0.0.1:9"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("404: upstream app lists no backend 127.0.0.1:9"),
        "{err}"
    );
    let out = cli(&["drain", "app", &b_addr])
        .env_remove("SWITCHYARD_ADMIN_TOKEN")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(": 401: "),
        "{out:?}"
    );
    assert_eq!(proxy.backend(b.addr).await["state"], "healthy");
}
