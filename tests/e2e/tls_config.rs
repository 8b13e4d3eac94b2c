//! Mistakes in TLS settings and certificate files: each is refused with
//! the place or the file it is about, at start (the process does not
//! start) and by `switchyard check`, which also warns about certificates
//! close to expiry.

use std::path::{Path, PathBuf};
use std::process::Command;

use switchyard::config::{parse, CertFiles, ConfigError};
use switchyard::tls::{load_all, CertError};

use crate::support::tls::{Ca, Key, Leaf};
use crate::support::{closed_port, temp_dir};

fn err(src: &str) -> ConfigError {
    match parse(Path::new("proxy.toml"), src) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => *e,
    }
}

const UPSTREAM: &str = "[upstreams.app]\nbackends = [\"127.0.0.1:3001\"]\n";

#[test]
fn tls_settings_are_checked_where_written() {
    let tls = |lines: &str| format!("[server]\nlisten = [\"127.0.0.1:8080\"]\n{lines}\n{UPSTREAM}");
    let cases = [
        (
            "[server.tls]\nlisten = [\"127.0.0.1:8080\"]\ncertificates = [{ cert = \"a.pem\", key = \"a.key\" }]",
            3,
            "a port is plain or TLS, not both",
        ),
        ("[server.tls]\nlisten = [\"127.0.0.1:8443\"]", 3, "certificates"),
        (
            "[server.tls]\nlisten = [\"127.0.0.1:8443\"]\ncertificates = []",
            5,
            "list at least one",
        ),
        (
            "[server.tls]\nlisten = [\"127.0.0.1:8443\"]\ncertificates = [{ cert = \"a.pem\" }]",
            5,
            "key",
        ),
        (
            "[server.tls]\nlisten = [\"127.0.0.1:8443\"]\ncertificates = [{ cert = \"a.pem\", key = \"a.key\" }]\nmin_version = \"1.1\"",
            6,
            "1.2",
        ),
        (
            "[server.tls]\nlisten = [\"127.0.0.1:8443\"]\ncertificates = [{ cert = \"a.pem\", key = \"a.key\" }]\ndefault_certificate = \"b.pem\"",
            6,
            "name the `cert` of one of the certificates",
        ),
        (
            "[server.tls]\nlisten = [\"127.0.0.1:8443\"]\ncertificates = [{ cert = \"a.pem\", key = \"a.key\" }]\nhsts = \"\"",
            6,
            "max-age=",
        ),
        (
            "[server.tls]\nlisten = [\"127.0.0.1:8443\"]\ncertificates = [{ cert = \"a.pem\", key = \"\" }]",
            5,
            "bad key ``",
        ),
        ("redirect_https = true", 3, "add [server.tls]"),
        ("h2_max_streams = 0", 3, "h2_max_streams"),
    ];
    for (lines, line, says) in cases {
        let e = err(&tls(lines));
        assert_eq!(e.line(), Some(line), "{lines}: {e}");
        assert!(
            e.to_string().contains(says),
            "{lines}: expected {says:?} in {e}"
        );
    }
}

/// The certificate files of one case, written to a fresh directory.
fn files(dir: &Path, cert: &str, key: &str) -> CertFiles {
    let (c, k) = (dir.join("case.pem"), dir.join("case.key"));
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    CertFiles { cert: c, key: k }
}

fn load_err(list: &[CertFiles]) -> CertError {
    match load_all(list) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

#[test]
fn every_bad_certificate_file_is_named() {
    let ca = Ca::new();
    let good = ca.issue(&["api.test"], Key::P256);
    let other = ca.issue(&["other.test"], Key::P256);
    let dir = temp_dir("badcerts");
    let named = |e: &CertError, path: &PathBuf, says: &str| {
        let text = e.to_string();
        let path = path.display().to_string();
        assert!(text.contains(&path), "{text} names {path}");
        assert!(text.contains(says), "{text}: expected {says:?}");
    };

    let missing = CertFiles {
        cert: dir.join("missing.pem"),
        key: dir.join("missing.key"),
    };
    named(
        &load_err(std::slice::from_ref(&missing)),
        &missing.cert,
        "cannot read it",
    );

    let as_dir = CertFiles {
        cert: dir.clone(),
        key: dir.join("k"),
    };
    named(&load_err(&[as_dir]), &dir, "cannot read it");

    let f = files(&dir, "not a certificate\n", &good.key);
    named(
        &load_err(std::slice::from_ref(&f)),
        &f.cert,
        "no PEM certificate",
    );

    let mangled = good.cert.replacen("MII", "M!I", 1);
    let f = files(&dir, &mangled, &good.key);
    named(
        &load_err(std::slice::from_ref(&f)),
        &f.cert,
        "not a certificate",
    );

    let f = files(&dir, &good.cert, &good.cert);
    named(
        &load_err(std::slice::from_ref(&f)),
        &f.key,
        "no PEM private key",
    );

    let f = files(&dir, &good.cert, &other.key);
    let e = load_err(std::slice::from_ref(&f));
    named(&e, &f.key, "does not belong");
    named(&e, &f.cert, "does not belong");

    // A key rustls will not sign with: RSA shorter than 2048 bits.
    let short = {
        use rsa::pkcs8::{EncodePrivateKey, LineEnding};
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024).unwrap();
        key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string()
    };
    let f = files(&dir, &good.cert, &short);
    named(
        &load_err(std::slice::from_ref(&f)),
        &f.key,
        "a key of a kind rustls cannot sign with",
    );

    let ip_only = ca.issue(&["127.0.0.1"], Key::P256);
    let f = files(&dir, &ip_only.cert, &ip_only.key);
    named(
        &load_err(std::slice::from_ref(&f)),
        &f.cert,
        "names no DNS host",
    );

    let a = ca
        .issue(&["api.test", "www.test"], Key::P256)
        .write(&dir, "a");
    let b = ca.issue(&["www.test"], Key::P256).write(&dir, "b");
    let pair = |(cert, key): (PathBuf, PathBuf)| CertFiles { cert, key };
    let e = load_err(&[pair(a.clone()), pair(b.clone())]);
    named(&e, &a.0, "both serve `www.test`");
    named(&e, &b.0, "both serve `www.test`");
}

/// A config for the binary serving `certs` on TLS.
fn config_with(certs: &[(PathBuf, PathBuf)]) -> PathBuf {
    let dir = temp_dir("tlsbin");
    let list: Vec<String> = certs
        .iter()
        .map(|(c, k)| {
            format!(
                "{{ cert = {:?}, key = {:?} }}",
                c.display().to_string(),
                k.display().to_string()
            )
        })
        .collect();
    let text = format!(
        "[server]\nlisten = [\"{}\"]\nwatch_config = false\n[server.tls]\nlisten = [\"{}\"]\n\
         certificates = [{}]\n[admin]\nlisten = \"{}\"\n{UPSTREAM}",
        closed_port(),
        closed_port(),
        list.join(", "),
        closed_port()
    );
    let path = dir.join("proxy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the binary with `args`; one still running after a while (a start
/// that should have been refused) is killed, failing the test.
fn run(args: &[&str], config: &Path) -> std::process::Output {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > crate::support::DEADLINE {
            let _ = child.kill();
            panic!(
                "`switchyard {args:?}` still runs after {:?}",
                crate::support::DEADLINE
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn check_prints_each_certificate_and_warns_before_expiry() {
    let ca = Ca::new();
    let dir = temp_dir("checkcerts");
    let issue = |names: &[&str], valid: time::Duration, stem: &str| {
        ca.issue_until(names, Key::P256, valid).write(&dir, stem)
    };
    let certs = [
        issue(
            &["fine.test", "*.fine.test"],
            time::Duration::days(90),
            "fine",
        ),
        issue(&["soon.test"], time::Duration::days(3), "soon"),
        issue(&["gone.test"], time::Duration::days(-1), "gone"),
    ];
    let out = run(&["check"], &config_with(&certs));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("certificate fine.test, *.fine.test ("),
        "{stdout}"
    );
    assert!(stdout.contains(", the default): expires 20"), "{stdout}");
    let warning = |file: &PathBuf, says: &str| {
        let line = format!("warning: {}: the certificate {says}", file.display());
        assert!(stdout.contains(&line), "expected {line:?} in:\n{stdout}");
    };
    warning(&certs[1].0, "expires within 14 days");
    warning(&certs[2].0, "expired at");
    assert!(!stdout.contains(&format!("warning: {}", certs[0].0.display())));
}

#[test]
fn a_bad_certificate_stops_the_start_and_fails_check() {
    let ca = Ca::new();
    let dir = temp_dir("badstart");
    let good = ca.issue(&["api.test"], Key::P256);
    let stray = ca.issue(&["api.test"], Key::P256);
    let mismatched = Leaf {
        cert: good.cert,
        key: stray.key,
    };
    let files = mismatched.write(&dir, "api");
    let config = config_with(std::slice::from_ref(&files));
    for args in [&["check"][..], &[]] {
        let out = run(args, &config);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        let key = files.1.display().to_string();
        assert!(
            stderr.contains(&format!("error: {key}: this key does not belong")),
            "{args:?}: {stderr}"
        );
    }
}
