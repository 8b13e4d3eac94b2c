//! Checks of an upstream's `health_check` (the probe and its thresholds)
//! and `passive_health_check` (what ejects a backend, and for how long).

use toml::Spanned;

use super::super::file::{HealthCheckSection, PassiveSection};
use super::super::*;
use super::Source;

impl Source<'_> {
    pub(super) fn health_check(
        &self,
        hc: HealthCheckSection,
    ) -> Result<HealthCheck, Box<ConfigError>> {
        let kind = match &hc.kind {
            None => "http",
            Some(k) => self.choice(k, "check type", &Probe::NAMES)?,
        };
        let probe = if kind == "http" {
            if let Some(s) = &hc.service {
                let kind = ErrorKind::OnlyWith {
                    key: "service",
                    only: "type = \"grpc\"",
                };
                return Err(self.error(s.span(), kind));
            }
            Probe::Http {
                path: match &hc.path {
                    None => "/".to_string(),
                    Some(p) => self.check_path(p)?,
                },
                host: hc.host.as_ref().map(|h| self.check_host(h)).transpose()?,
                expect: match &hc.expect_status {
                    None => vec![StatusMatch::Class(2), StatusMatch::Class(3)],
                    Some(list) => self.expect_status(list)?,
                },
            }
        } else {
            let http_only = [
                ("path", hc.path.as_ref().map(Spanned::span)),
                ("host", hc.host.as_ref().map(Spanned::span)),
                (
                    "expect_status",
                    hc.expect_status.as_ref().map(Spanned::span),
                ),
            ];
            if let Some((key, Some(span))) = http_only.into_iter().find(|(_, s)| s.is_some()) {
                return Err(self.error(span, ErrorKind::HttpOnly(key)));
            }
            match (kind, &hc.service) {
                ("grpc", service) => Probe::Grpc {
                    service: service
                        .as_ref()
                        .map_or_else(String::new, |s| s.get_ref().clone()),
                },
                (_, Some(s)) => {
                    let kind = ErrorKind::OnlyWith {
                        key: "service",
                        only: "type = \"grpc\"",
                    };
                    return Err(self.error(s.span(), kind));
                }
                (_, None) => Probe::Tcp,
            }
        };
        let threshold = |v: &Option<Spanned<i64>>, key, default| match v {
            None => Ok(default),
            Some(t) => self
                .in_range(t, key, 1, i64::from(MAX_THRESHOLD))
                .map(|t| t as u32),
        };
        let initial_healthy = match &hc.initial_state {
            None => true,
            Some(s) => self.choice(s, "initial_state", &["healthy", "unhealthy"])? == "healthy",
        };
        Ok(HealthCheck {
            probe,
            interval: self.duration_or(&hc.interval, DEFAULT_CHECK_INTERVAL)?,
            timeout: self.duration_or(&hc.timeout, DEFAULT_CHECK_TIMEOUT)?,
            healthy_threshold: threshold(
                &hc.healthy_threshold,
                "healthy_threshold",
                DEFAULT_HEALTHY_THRESHOLD,
            )?,
            unhealthy_threshold: threshold(
                &hc.unhealthy_threshold,
                "unhealthy_threshold",
                DEFAULT_UNHEALTHY_THRESHOLD,
            )?,
            initial_healthy,
        })
    }

    fn check_path(&self, p: &Spanned<String>) -> Result<String, Box<ConfigError>> {
        let v = p.get_ref();
        if v.starts_with('/') && v.parse::<http::uri::PathAndQuery>().is_ok() {
            return Ok(v.clone());
        }
        let fix = "write a path that starts with `/`, like \"/healthz\"".to_string();
        Err(self.bad_value(p, "path", fix))
    }

    fn check_host(&self, h: &Spanned<String>) -> Result<String, Box<ConfigError>> {
        let v = h.get_ref();
        if !v.is_empty() && v.parse::<http::uri::Authority>().is_ok() {
            return Ok(v.clone());
        }
        let fix = "write a host name, optionally with a port, like \"app.internal\"".to_string();
        Err(self.bad_value(h, "host", fix))
    }

    fn expect_status(
        &self,
        list: &Spanned<Vec<Spanned<toml::Value>>>,
    ) -> Result<Vec<StatusMatch>, Box<ConfigError>> {
        if list.get_ref().is_empty() {
            let kind = ErrorKind::BadValue {
                key: "expect_status",
                value: "[]".into(),
                fix: "list at least one status, like [\"2xx\"]".into(),
            };
            return Err(self.error(list.span(), kind));
        }
        list.get_ref()
            .iter()
            .map(|v| {
                let text = match v.get_ref() {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                status_match(&text).ok_or_else(|| {
                    let kind = ErrorKind::BadValue {
                        key: "expect_status",
                        value: text,
                        fix: "write a class like \"2xx\" or a status code from 100 to 599".into(),
                    };
                    self.error(v.span(), kind)
                })
            })
            .collect()
    }

    pub(super) fn passive(&self, p: PassiveSection) -> Result<Passive, Box<ConfigError>> {
        let consecutive_failures = match &p.consecutive_failures {
            None => DEFAULT_CONSECUTIVE_FAILURES,
            Some(n) => {
                self.in_range(n, "consecutive_failures", 0, i64::from(MAX_THRESHOLD))? as u32
            }
        };
        let counts = match &p.failures {
            None => Outcomes::DEFAULT,
            Some(list) => {
                let mut set = Outcomes::empty();
                for item in list.get_ref() {
                    let name = self.choice(item, "failure", &Outcome::NAMES)?;
                    Outcome::ALL
                        .into_iter()
                        .filter(|o| o.name() == name)
                        .for_each(|o| set.insert(o));
                }
                set
            }
        };
        let ejection_time = self.duration_or(&p.ejection_time, DEFAULT_EJECTION_TIME)?;
        let max_ejection_time = match &p.max_ejection_time {
            None => DEFAULT_MAX_EJECTION_TIME.max(ejection_time),
            Some(m) => {
                let max = self.duration(m, false)?;
                if max < ejection_time {
                    let fix = format!(
                        "it is shorter than ejection_time ({}); make it at least as long",
                        humantime::format_duration(ejection_time)
                    );
                    return Err(self.bad_value(m, "max_ejection_time", fix));
                }
                max
            }
        };
        let max_ejection_percent = match &p.max_ejection_percent {
            None => DEFAULT_MAX_EJECTION_PERCENT,
            Some(n) => self.in_range(n, "max_ejection_percent", 0, 100)? as u32,
        };
        Ok(Passive {
            consecutive_failures,
            counts,
            ejection_time,
            max_ejection_time,
            max_ejection_percent,
        })
    }
}

/// `"2xx"` (any case), `"204"` or `204`.
fn status_match(text: &str) -> Option<StatusMatch> {
    let t = text.to_ascii_lowercase();
    if let Some(digit) = t.strip_suffix("xx") {
        return match digit.parse::<u16>() {
            Ok(c @ 1..=5) if digit.len() == 1 => Some(StatusMatch::Class(c)),
            _ => None,
        };
    }
    match t.parse::<u16>() {
        Ok(c @ 100..=599) if t.len() == 3 => Some(StatusMatch::Code(c)),
        _ => None,
    }
}
