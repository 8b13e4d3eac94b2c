//! `GET /explain?host=H&path=P[&header=NAME:VALUE...]`: what Switchyard
//! would do with such a request, and why. The route it takes and why each
//! route before it did not, the path its backend would get, and the
//! upstream with each backend's state, from the same code that routes real
//! requests.

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};

use std::net::IpAddr;

use super::percent_decode;
use super::status::upstream_status;
use crate::metrics::Metrics;
use crate::pool::{Snapshot, Upstream};
use crate::proxy::affinity;
use crate::route::{self, Refusal, Verdict};

/// The answer for the query string `query`, or why the query is wrong.
pub(super) fn explain(
    snapshot: &Snapshot,
    metrics: &Metrics,
    query: &str,
) -> Result<Value, String> {
    let mut host = String::new();
    let mut target = "/".to_string();
    let mut headers = HeaderMap::new();
    let mut client: Option<IpAddr> = None;
    for (key, value) in pairs(query)? {
        match key.as_str() {
            "host" => host = value,
            "path" => target = value,
            "client_ip" => {
                client = Some(
                    value
                        .parse()
                        .map_err(|_| format!("`{value}` is not an IP address"))?,
                )
            }
            "header" => {
                let (name, v) = value
                    .split_once(':')
                    .ok_or_else(|| format!("header={value}: write header=NAME:VALUE"))?;
                let name = HeaderName::from_bytes(name.trim().as_bytes())
                    .map_err(|_| format!("`{}` is not a header name", name.trim()))?;
                let v = HeaderValue::from_str(v.trim())
                    .map_err(|_| format!("the value of {name} is not a header value"))?;
                headers.append(name, v);
            }
            other => {
                return Err(format!(
                    "unknown parameter `{other}`: use host, path, header"
                ))
            }
        }
    }
    let table = snapshot.routes();
    let decision = table.decide(&host, &target, &headers);
    let path = target.split_once('?').map_or(target.as_str(), |(p, _)| p);
    let normal = route::path::normalise(if path.is_empty() { "/" } else { path });
    let mut answer = json!({
        "request": {
            "host": host,
            "path": target,
            "headers": headers.iter().map(|(k, v)| {
                format!("{k}: {}", v.to_str().unwrap_or("(not text)"))
            }).collect::<Vec<_>>(),
        },
        "normalised_path": normal.as_ref().ok().map(|p| p.to_string()),
    });
    let normal = match (decision, normal) {
        (Err(Refusal::BadPath(e)), _) | (_, Err(e)) => {
            answer["decision"] = format!("400: {}", e.why()).into();
            return Ok(answer);
        }
        (Ok(d), Ok(normal)) => {
            answer["decision"] = match d.route {
                Some(r) => format!("route {}", r.name),
                None => "default_upstream: no route matches".to_string(),
            }
            .into();
            answer["route"] = d.route.map(|r| r.name.as_str()).into();
            let backend_path = d.rewrite.clone().unwrap_or_else(|| target.clone());
            answer["backend_path"] = backend_path.into();
            answer["forwarded_prefix"] = d.route.and_then(|r| r.forwarded_prefix()).into();
            let upstream = &snapshot.upstreams()[d.upstream];
            answer["upstream"] = upstream_status(upstream, metrics);
            affinity(&mut answer, upstream, &headers, &target, client);
            normal
        }
        (Err(Refusal::NoRoute), Ok(normal)) => {
            answer["decision"] = "404: no route matches and there is no default_upstream".into();
            normal
        }
    };
    let req = route::Request {
        host: &route::host::request_host(&host),
        path: &normal,
        headers: &headers,
    };
    answer["routes"] = table
        .explain(&req)
        .into_iter()
        .map(|(r, verdict)| {
            let (verdict, why) = match verdict {
                Verdict::Taken => ("taken", None),
                Verdict::Outranked => ("matches", Some("a route before it is taken".to_string())),
                Verdict::NoMatch(why) => ("no match", Some(why)),
            };
            json!({ "route": r.name, "position": r.position, "verdict": verdict, "why": why })
        })
        .collect::<Vec<_>>()
        .into();
    Ok(answer)
}

/// Where affinity sends the request: the backend its consistent_hash key
/// maps to and why, and the backend its sticky cookie names.
fn affinity(
    answer: &mut Value,
    upstream: &Upstream,
    headers: &HeaderMap,
    target: &str,
    client: Option<IpAddr>,
) {
    let address = |i: usize| upstream.backends()[i].state.address().to_string();
    if let Some(h) = upstream.hashed() {
        let value = affinity::key_of(&h.key, headers, target, client);
        answer["consistent_hash"] = match value {
            None => json!({
                "hash_key": h.key.to_string(),
                "key": null,
                "why": "the request has no such key: round-robin picks the backend",
            }),
            Some(v) => {
                let choice = upstream.explain_key(crate::pool::key_hash(v.as_bytes()));
                json!({
                    "hash_key": h.key.to_string(),
                    "key": v,
                    "owner": choice.as_ref().map(|c| address(c.owner)),
                    "backend": choice.as_ref().and_then(|c| c.chosen).map(address),
                    "why": choice.map(|c| c.why),
                })
            }
        };
    }
    if let Some(s) = upstream.sticky() {
        let id = affinity::cookie(headers, &s.config.cookie);
        answer["sticky"] = json!({
            "cookie": s.config.cookie,
            "value": id,
            "backend": id.and_then(|id| s.backend(id)).map(address),
            "drained_backend": id.and_then(|id| s.drained_backend(id)),
            "why": match id.map(|id| s.backend(id)) {
                None => "no cookie: the balancer picks, and the answer sets it",
                Some(None) if id.and_then(|id| s.drained_backend(id)).is_some() => {
                    "the cookie names a backend drained on the admin port: a new pick, and a new cookie"
                }
                Some(None) => "the cookie names no backend (forged or stale): a new pick, and a new cookie",
                Some(Some(_)) => "the cookie names this backend: it takes the request while it may take traffic",
            },
        });
    }
}

/// The decoded `key=value` pairs of a query string (`+` is a space).
fn pairs(query: &str) -> Result<Vec<(String, String)>, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode() {
        assert_eq!(
            pairs("host=api.example.com&path=%2Fa%2F..%2Fb%3Fq%3D1&header=x-canary%3A+1").unwrap(),
            vec![
                ("host".to_string(), "api.example.com".to_string()),
                ("path".to_string(), "/a/../b?q=1".to_string()),
                ("header".to_string(), "x-canary: 1".to_string()),
            ]
        );
        assert!(pairs("path=%zz").is_err());
    }
}
