//! What each followed name last did, for `/status` and `/readyz`: its last
//! answer (addresses, TTL, time), its last error, and its next lookup.
//! Written by the name's task, read by the admin listener.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::schedule::Phase;
use crate::admin::rfc3339;
use crate::config::DnsBackend;

/// Every followed name's status, by (upstream, name).
#[derive(Debug, Default)]
pub struct Board {
    names: Mutex<BTreeMap<(String, String), NameStatus>>,
}

/// One name's status.
#[derive(Debug, Clone)]
pub struct NameStatus {
    /// The entry as the config has it.
    pub dns: DnsBackend,
    pub phase: Phase,
    /// The last answer that was not a failure.
    pub last_answer: Option<Answer>,
    pub last_error: Option<(SystemTime, String)>,
    /// When the empty answers in a row began, and why.
    pub empty_since: Option<SystemTime>,
    pub next_lookup: Option<SystemTime>,
    pub lookups: u64,
}

/// An answer: the backends it gave (none for an empty one) and its TTL.
#[derive(Debug, Clone)]
pub struct Answer {
    pub at: SystemTime,
    /// `ip:port`, with ` weight N` for SRV answers.
    pub backends: Vec<String>,
    pub ttl: Option<Duration>,
    /// Why it is empty, if it is.
    pub empty: Option<String>,
}

impl Board {
    fn names(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), NameStatus>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the status of `dns` in `upstream`, creating it if new.
    pub fn update(&self, upstream: &str, dns: &DnsBackend, f: impl FnOnce(&mut NameStatus)) {
        let mut names = self.names();
        let status = names
            .entry((upstream.to_string(), dns.name.clone()))
            .or_insert_with(|| NameStatus {
                dns: dns.clone(),
                phase: Phase::Starting,
                last_answer: None,
                last_error: None,
                empty_since: None,
                next_lookup: None,
                lookups: 0,
            });
        status.dns = dns.clone();
        f(status);
    }

    /// Forgets the names `keep` says no.
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        self.names().retain(|(u, n), _| keep(u, n));
    }

    /// The `/status` entries of `upstream`'s names, in name order.
    pub fn to_json(&self, upstream: &str) -> Vec<Value> {
        let names = self.names();
        let mine = names.iter().filter(|((u, _), _)| u == upstream);
        mine.map(|(_, s)| s.to_json()).collect()
    }

    /// Why `upstream`'s names give it no backend, for `/readyz`; `None`
    /// if it follows no name.
    pub fn why_empty(&self, upstream: &str) -> Option<String> {
        let names = self.names();
        let reasons: Vec<String> = names
            .iter()
            .filter(|((u, _), _)| u == upstream)
            .map(|((_, name), s)| format!("dns {name}: {}", s.reason()))
            .collect();
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }
}

impl NameStatus {
    /// Its state in a few words, with the error or the empty answer.
    fn reason(&self) -> String {
        let error = self.last_error.as_ref().map_or("", |(_, e)| e.as_str());
        let empty = self.last_answer.as_ref().and_then(|a| a.empty.as_deref());
        match self.phase {
            Phase::Starting if error.is_empty() => "no answer yet".to_string(),
            Phase::Starting => format!("no answer yet: {error}"),
            Phase::Failing if self.last_answer.is_none() => format!("no answer yet: {error}"),
            Phase::Answering => "answering".to_string(),
            Phase::Failing => format!("lookups failing: {error}"),
            Phase::Holding => format!(
                "{}, for less than hold_empty: backends kept",
                empty.unwrap_or("empty")
            ),
            Phase::Empty => format!("{}: no backends", empty.unwrap_or("empty")),
        }
    }

    fn to_json(&self) -> Value {
        let answer = self.last_answer.as_ref().map(|a| {
            json!({
                "at": rfc3339(a.at),
                "backends": a.backends,
                "ttl_s": a.ttl.map(|t| t.as_secs()),
                "empty": a.empty,
            })
        });
        let error = self
            .last_error
            .as_ref()
            .map(|(at, message)| json!({ "at": rfc3339(*at), "message": message }));
        json!({
            "name": self.dns.name,
            "type": self.dns.record_type(),
            "entry": self.dns.describe(),
            "state": self.phase.as_str(),
            "reason": self.reason(),
            "last_answer": answer,
            "last_error": error,
            "empty_since": self.empty_since.map(rfc3339),
            "next_lookup": self.next_lookup.map(rfc3339),
            "lookups": self.lookups,
        })
    }
}
