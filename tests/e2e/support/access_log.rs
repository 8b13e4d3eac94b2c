//! Reading a test proxy's access log: its lines as JSON, waiting for a
//! request's line, and the `[log]` table that points it at a file.

use std::path::Path;

use serde_json::Value;

use super::eventually;

/// The lines of `path` so far, each parsed (a line that is not JSON
/// fails the test).
pub fn lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Waits until `path` has a line with this request id; all lines then.
pub async fn wait_for(path: &Path, id: &str) -> Vec<Value> {
    eventually(
        &format!("the line of {id} in {}", path.display()),
        || async {
            let all = lines(path);
            all.iter().any(|l| l["request_id"] == id).then_some(all)
        },
    )
    .await
}

/// GETs `path` with `X-Request-Id: id`; the status.
pub async fn get(http: &reqwest::Client, url: String, id: &str) -> u16 {
    let r = http
        .get(url)
        .header("x-request-id", id)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let _ = r.bytes().await;
    status
}

/// A `[log]` table writing JSON lines (and `more`) to `path`.
pub fn log_table(path: &Path, more: &str) -> String {
    format!("[log]\naccess = \"{}\"\n{more}", path.display())
}
