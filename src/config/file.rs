//! The serde mirror of `proxy.toml`: exactly what the file may say, with the
//! source span of every value kept so that validation errors can point at it.
//!
//! Nothing here checks meaning; `validate.rs` turns this into [`super::Config`].

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub server: Option<ServerSection>,
    pub admin: Option<AdminSection>,
    #[serde(default)]
    pub upstreams: BTreeMap<Spanned<String>, Spanned<UpstreamSection>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RouteSection>>,
    pub resolver: Option<Spanned<ResolverSection>>,
    pub log: Option<Spanned<LogSection>>,
}

/// `[log]`: the access log.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub access: Option<Spanned<String>>,
    pub format: Option<Spanned<String>>,
    pub log_query: Option<Spanned<bool>>,
    pub queue_lines: Option<Spanned<i64>>,
}

/// `[resolver]`: the DNS servers that backends given by name are resolved
/// with, when they follow DNS.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolverSection {
    pub nameservers: Option<Spanned<Vec<Spanned<String>>>>,
    pub timeout: Option<Spanned<String>>,
}

/// `[[routes]]`: which requests go to which upstream.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub name: Option<Spanned<String>>,
    pub hosts: Option<Spanned<Vec<Spanned<String>>>>,
    pub path_prefix: Option<Spanned<String>>,
    pub strip_prefix: Option<Spanned<bool>>,
    pub headers: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    /// Required; optional here so that its absence is reported at the
    /// route rather than wherever the parser stopped.
    pub upstream: Option<Spanned<String>>,
}

/// `[server]`: the data-plane listeners and process settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listen: Option<Spanned<Vec<Spanned<String>>>>,
    pub threads: Option<Spanned<i64>>,
    pub grace_period: Option<Spanned<String>>,
    pub default_upstream: Option<Spanned<String>>,
    pub watch_config: Option<Spanned<bool>>,
    pub max_header_bytes: Option<Spanned<i64>>,
    pub max_headers: Option<Spanned<i64>>,
    pub max_uri_bytes: Option<Spanned<i64>>,
    pub max_body_bytes: Option<Spanned<i64>>,
    pub header_timeout: Option<Spanned<String>>,
    pub body_timeout: Option<Spanned<String>>,
    pub keepalive_timeout: Option<Spanned<String>>,
    pub send_timeout: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<i64>>,
    pub h2c: Option<Spanned<bool>>,
    pub h2_max_streams: Option<Spanned<i64>>,
    pub redirect_https: Option<Spanned<bool>>,
    pub server_header: Option<Spanned<String>>,
    pub tls: Option<Spanned<TlsSection>>,
}

/// `[server.tls]`: TLS listeners and their certificates.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub listen: Option<Spanned<Vec<Spanned<String>>>>,
    pub certificates: Option<Spanned<Vec<Spanned<CertSection>>>>,
    pub default_certificate: Option<Spanned<String>>,
    pub min_version: Option<Spanned<String>>,
    pub h2: Option<Spanned<bool>>,
    pub hsts: Option<Spanned<String>>,
}

/// One entry of `certificates`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertSection {
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
}

/// `[admin]`: the admin listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    pub listen: Option<Spanned<String>>,
    pub token: Option<Spanned<String>>,
}

/// `[upstreams.NAME]`: one pool of backends and how to reach them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    pub balance: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub read_timeout: Option<Spanned<String>>,
    pub write_timeout: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub tunnel_idle_timeout: Option<Spanned<String>>,
    pub retries: Option<Spanned<i64>>,
    pub backends: Option<Spanned<Vec<Spanned<BackendEntry>>>>,
    pub slow_start: Option<Spanned<String>>,
    pub health_check: Option<Spanned<HealthCheckSection>>,
    pub passive_health_check: Option<PassiveSection>,
    pub retry_budget: Option<RetryBudgetSection>,
    pub hash_key: Option<Spanned<String>>,
    /// TOML integers (`0`, `2`) are accepted too.
    pub hash_balance_factor: Option<Spanned<f64>>,
    pub latency_decay: Option<Spanned<String>>,
    pub sticky: Option<Spanned<StickySection>>,
    pub protocol: Option<Spanned<String>>,
    pub max_streams_per_connection: Option<Spanned<i64>>,
    pub tls: Option<Spanned<UpstreamTlsSection>>,
    pub min_refresh: Option<Spanned<String>>,
    pub max_refresh: Option<Spanned<String>>,
    pub hold_empty: Option<Spanned<String>>,
}

/// `[upstreams.NAME.tls]`: TLS to the backends.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsSection {
    pub sni: Option<Spanned<String>>,
    pub ca: Option<Spanned<String>>,
    pub verify: Option<Spanned<bool>>,
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
}

/// `[upstreams.NAME.sticky]`: the affinity cookie.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickySection {
    pub cookie: Option<Spanned<String>>,
    pub max_age: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub secure: Option<Spanned<bool>>,
    pub http_only: Option<Spanned<bool>>,
    pub same_site: Option<Spanned<String>>,
    pub secret: Option<Spanned<String>>,
}

/// `[upstreams.NAME.health_check]`: active checks of every backend.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSection {
    #[serde(rename = "type")]
    pub kind: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    /// Classes like "2xx" or exact codes, as strings or integers.
    pub expect_status: Option<Spanned<Vec<Spanned<toml::Value>>>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub healthy_threshold: Option<Spanned<i64>>,
    pub unhealthy_threshold: Option<Spanned<i64>>,
    pub initial_state: Option<Spanned<String>>,
    /// For `type = "grpc"`: the service asked about.
    pub service: Option<Spanned<String>>,
}

/// `[upstreams.NAME.passive_health_check]`: ejection on failed requests.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveSection {
    pub consecutive_failures: Option<Spanned<i64>>,
    pub failures: Option<Spanned<Vec<Spanned<String>>>>,
    pub ejection_time: Option<Spanned<String>>,
    pub max_ejection_time: Option<Spanned<String>>,
    pub max_ejection_percent: Option<Spanned<i64>>,
}

/// `[upstreams.NAME.retry_budget]`: how many retries the upstream allows.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudgetSection {
    /// A fraction; TOML integers (`0`, `1`) are accepted too.
    pub ratio: Option<Spanned<f64>>,
    pub min_retries_per_second: Option<Spanned<i64>>,
}

/// One entry of `backends`: `"127.0.0.1:3001"`,
/// `{ address = "127.0.0.1:3001", weight = 2 }`,
/// `{ address = "app.internal:3000", resolve = true }` or
/// `{ srv = "_http._tcp.app.service.consul" }`.
#[derive(Debug)]
pub enum BackendEntry {
    Short(String),
    Long(LongEntry),
}

/// The table form of a backend, each key as written.
#[derive(Debug, Default)]
pub struct LongEntry {
    pub address: Option<Spanned<String>>,
    pub weight: Option<Spanned<i64>>,
    pub resolve: Option<Spanned<bool>>,
    pub srv: Option<Spanned<String>>,
    /// The first key that is none of these; reported by validation, which
    /// can point at the key itself (a serde error would point at the table).
    pub unknown: Option<Spanned<String>>,
}

pub const BACKEND_FIELDS: &[&str] = &["address", "weight", "resolve", "srv"];

impl<'de> Deserialize<'de> for BackendEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(BackendEntryVisitor)
    }
}

/// Hand-written instead of `#[serde(untagged)]`: an untagged enum buffers its
/// input and so loses the spans that the long form's fields carry.
struct BackendEntryVisitor;

impl<'de> Visitor<'de> for BackendEntryVisitor {
    type Value = BackendEntry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a backend: \"127.0.0.1:3001\", { address = \"127.0.0.1:3001\", weight = 2 } \
             or { srv = \"_http._tcp.app.service.consul\" }",
        )
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<BackendEntry, E> {
        Ok(BackendEntry::Short(value.to_owned()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BackendEntry, A::Error> {
        let mut entry = LongEntry::default();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            match key.get_ref().as_str() {
                "address" => entry.address = Some(map.next_value()?),
                "weight" => entry.weight = Some(map.next_value()?),
                "resolve" => entry.resolve = Some(map.next_value()?),
                "srv" => entry.srv = Some(map.next_value()?),
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                    entry.unknown = entry.unknown.or(Some(key));
                }
            }
        }
        // With an unknown key, validation reports that key where it stands,
        // so a missing address is not the error to give.
        if entry.address.is_none() && entry.srv.is_none() && entry.unknown.is_none() {
            return Err(de::Error::missing_field("address"));
        }
        Ok(BackendEntry::Long(entry))
    }
}
