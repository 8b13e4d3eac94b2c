//! The observability kit in `examples/observability/` against a running
//! proxy: every metric and label its Grafana dashboard and alert rules name
//! is in `/metrics`, the dashboard is laid out to import, and, where it is
//! installed, `promtool` accepts the scrape itself, the scrape config, the
//! rules (and their unit tests) and every dashboard expression.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::process::Command;

use crate::support::grpc::{request, EchoClient, GrpcBackend};
use crate::support::promql::{dashboard_queries, each_string, metric_uses, Scrape};
use crate::support::tls::{self, Ca, Key};
use crate::support::{client, closed_port, eventually, temp_dir, Behavior, TestBackend, TestProxy};

const KIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/observability");
const DASHBOARD: &str = "grafana-dashboard.json";
const RULES: &str = "switchyard.rules.yml";
const RULE_TESTS: &str = "switchyard.rules.test.yml";
const SCRAPE_CONFIG: &str = "prometheus.yml";
/// Labels Prometheus adds to every scraped series itself.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

fn kit_file(name: &str) -> String {
    let path = Path::new(KIT).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&kit_file(DASHBOARD)).expect("the dashboard is JSON")
}

/// A proxy where every series the kit reads exists: backend responses (a
/// 200 and a 500), a 502 of its own, a gRPC call, routes, health checks and
/// a serving certificate.
async fn busy_proxy() -> (TestProxy, Vec<Box<dyn std::any::Any>>) {
    let app = TestBackend::start("app", Behavior::Name).await;
    let failing = TestBackend::start("failing", Behavior::Status(500)).await;
    let grpc = GrpcBackend::start("grpc").await;
    let certs = temp_dir("observability");
    let cert = Ca::new()
        .issue(&["obs.test"], Key::P256)
        .write(&certs, "obs");
    let server = format!("h2c = true\n{}", tls::section(closed_port(), &[cert], ""));
    let upstreams = format!(
        "[[routes]]\nname = \"grpc\"\npath_prefix = \"/test.Echo/\"\nupstream = \"grpc\"\n\
         [[routes]]\nname = \"failing\"\npath_prefix = \"/failing\"\nupstream = \"failing\"\n\
         [[routes]]\nname = \"down\"\npath_prefix = \"/down\"\nupstream = \"down\"\n\
         [[routes]]\nname = \"web\"\npath_prefix = \"/\"\nupstream = \"app\"\n\
         [upstreams.app]\nbackends = [\"{}\"]\n\
         [upstreams.app.health_check]\npath = \"/healthz\"\ninterval = \"1s\"\n\
         [upstreams.failing]\nbackends = [\"{}\"]\n\
         [upstreams.down]\nretries = 0\nbackends = [\"{}\"]\n\
         [upstreams.grpc]\nprotocol = \"http2\"\nbackends = [\"{}\"]\n",
        app.addr,
        failing.addr,
        closed_port(),
        grpc.addr
    );
    let proxy = TestProxy::start_with(&server, &upstreams).await;
    let http = client();
    assert_eq!(proxy.get(&http, "/").await.0, 200);
    assert_eq!(proxy.get(&http, "/failing").await.0, 500);
    assert_eq!(proxy.get(&http, "/down").await.0, 502);
    let mut echo = EchoClient::connect(proxy.addr).await;
    echo.unary(request("observed"))
        .await
        .expect("a gRPC call through the proxy");
    let kept: Vec<Box<dyn std::any::Any>> = vec![
        Box::new(app),
        Box::new(failing),
        Box::new(grpc),
        Box::new(RemoveOnDrop(certs)),
    ];
    (proxy, kept)
}

/// A directory removed when the test ends.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `/metrics` text once the four requests of [`busy_proxy`] are
/// counted (counting follows the response).
async fn scrape_when_counted(proxy: &TestProxy) -> String {
    let http = client();
    let counted = |text: &str, name: &str, label: &str| {
        text.lines()
            .any(|l| l.starts_with(name) && l.contains(label) && !l.ends_with(" 0"))
    };
    eventually("the requests to be counted", || async {
        let text = http
            .get(proxy.admin_url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let all = [
            ("switchyard_requests_total{", "upstream=\"app\""),
            ("switchyard_requests_total{", "upstream=\"failing\""),
            ("switchyard_requests_total{", "upstream=\"grpc\""),
            ("switchyard_local_responses_total{", "code=\"502\""),
            ("switchyard_grpc_responses_total{", "grpc_status=\"OK\""),
        ];
        all.iter()
            .all(|(n, l)| counted(&text, n, l))
            .then_some(text)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_and_label_the_dashboard_and_the_rules_use_is_scraped() {
    let (proxy, _backends) = busy_proxy().await;
    let text = scrape_when_counted(&proxy).await;
    match promtool_with(&["check", "metrics"], &text) {
        Some(out) => assert_success(out, "check metrics (the scrape)"),
        None => eprintln!("note: promtool is not installed; /metrics not linted"),
    }
    let scrape = Scrape::parse(&text);

    let mut dashboard_uses = Vec::new();
    each_string(&dashboard(), "", &mut |_, s| {
        dashboard_uses.extend(metric_uses(s))
    });
    let rules_uses = metric_uses(&kit_file(RULES));
    let test_uses = metric_uses(&kit_file(RULE_TESTS));
    let names = |uses: &[(String, Vec<String>)]| -> BTreeSet<String> {
        uses.iter().map(|(n, _)| n.clone()).collect()
    };
    // Enough names that a moved or emptied file cannot pass unnoticed.
    assert!(
        names(&dashboard_uses).len() >= 25,
        "{:?}",
        names(&dashboard_uses)
    );
    assert!(names(&rules_uses).len() >= 10, "{:?}", names(&rules_uses));

    let mut problems = BTreeSet::new();
    let all = [
        (DASHBOARD, &dashboard_uses),
        (RULES, &rules_uses),
        (RULE_TESTS, &test_uses),
    ];
    for (file, uses) in all {
        for (name, labels) in uses.iter() {
            if let Some(why) = scrape.missing(name) {
                problems.insert(format!("{file}: {why}"));
                continue;
            }
            for label in labels
                .iter()
                .filter(|l| !TARGET_LABELS.contains(&l.as_str()))
            {
                if !scrape.has_label(name, label) {
                    problems.insert(format!("{file}: {name} has no label {label:?}"));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "not in /metrics:\n{}",
        Vec::from_iter(problems).join("\n")
    );

    let used: HashSet<&str> = dashboard_uses
        .iter()
        .chain(&rules_uses)
        .map(|(n, _)| scrape.family(n))
        .collect();
    let unused: BTreeSet<_> = scrape
        .types
        .keys()
        .filter(|f| !used.contains(f.as_str()))
        .collect();
    if !unused.is_empty() {
        eprintln!("note: exported but neither on the dashboard nor in the rules: {unused:?}");
    }
}

#[test]
fn the_dashboard_takes_its_datasource_from_a_variable_and_lays_out_on_the_grid() {
    let d = dashboard();
    let variables = d["templating"]["list"]
        .as_array()
        .expect("templating variables");
    assert!(
        variables.iter().any(|v| v["type"] == "datasource"
            && v["query"] == "prometheus"
            && v["name"] == "datasource"),
        "a Prometheus datasource variable named `datasource`"
    );
    let mut ids = HashSet::new();
    let mut cells: HashMap<(u64, u64), String> = HashMap::new();
    for panel in d["panels"].as_array().expect("panels") {
        let title = panel["title"]
            .as_str()
            .expect("every panel has a title")
            .to_string();
        assert!(
            ids.insert(panel["id"].as_u64().expect("a numeric id")),
            "{title}: id taken"
        );
        let pos = |k: &str| {
            panel["gridPos"][k]
                .as_u64()
                .unwrap_or_else(|| panic!("{title}: gridPos.{k}"))
        };
        let (x, y, w, h) = (pos("x"), pos("y"), pos("w"), pos("h"));
        assert!(
            x + w <= 24 && w > 0 && h > 0,
            "{title}: off the 24-column grid"
        );
        for cell in (x..x + w).flat_map(|cx| (y..y + h).map(move |cy| (cx, cy))) {
            if let Some(other) = cells.insert(cell, title.clone()) {
                panic!("{title} overlaps {other}");
            }
        }
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().filter(|t| !t.is_empty());
        for t in targets.unwrap_or_else(|| panic!("{title}: no query")) {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            assert!(
                t["expr"]
                    .as_str()
                    .is_some_and(|e| e.contains("switchyard_")),
                "{title}"
            );
        }
    }
}

/// `promtool` with `args` in the kit's directory, `input` on its standard
/// input; `None` when it is not installed.
fn promtool_with(args: &[&str], input: &str) -> Option<std::process::Output> {
    use std::io::Write;
    use std::process::Stdio;
    let spawned = Command::new("promtool")
        .args(args)
        .current_dir(KIT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("promtool: {e}"),
    };
    let mut stdin = child.stdin.take().expect("piped");
    stdin
        .write_all(input.as_bytes())
        .expect("promtool reads its input");
    drop(stdin);
    Some(child.wait_with_output().expect("promtool runs"))
}

fn promtool(args: &[&str]) -> Option<std::process::Output> {
    promtool_with(args, "")
}

fn assert_success(out: std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "promtool {what}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_the_config_the_rules_and_every_dashboard_query() {
    let Some(version) = promtool(&["--version"]) else {
        eprintln!("note: promtool is not installed (Debian: apt-get install prometheus); skipping its checks");
        return;
    };
    assert_success(version, "--version");
    for args in [
        ["check", "config", SCRAPE_CONFIG],
        ["check", "rules", RULES],
        ["test", "rules", RULE_TESTS],
    ] {
        assert_success(
            promtool(&args).expect("promtool ran before"),
            &args.join(" "),
        );
    }
    // The dashboard's queries as recording rules: promtool parses each.
    let queries = dashboard_queries(&dashboard());
    assert!(queries.len() >= 40, "{} queries", queries.len());
    let rules: String = queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            format!(
                "      - record: dashboard:query_{i}\n        expr: {}\n",
                serde_json::to_string(q).unwrap()
            )
        })
        .collect();
    let dir = temp_dir("observability-promtool");
    let file = dir.join("dashboard.rules.yml");
    std::fs::write(
        &file,
        format!("groups:\n  - name: dashboard\n    rules:\n{rules}"),
    )
    .unwrap();
    let out = promtool(&["check", "rules", file.to_str().unwrap()]).expect("promtool ran before");
    assert_success(out, "check rules (the dashboard's queries)");
    let _ = std::fs::remove_dir_all(dir);
}
