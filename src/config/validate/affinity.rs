//! Checks of an upstream's affinity settings: `hash_key` and
//! `hash_balance_factor` (consistent_hash only), `latency_decay`
//! (least_latency only), and the `[upstreams.NAME.sticky]` cookie.

use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::super::file::{StickySection, UpstreamSection};
use super::super::*;
use super::Source;

/// The affinity settings of one upstream, checked against its balance.
pub(super) struct Affinity {
    pub hash_key: Option<HashKey>,
    pub hash_balance_factor: f64,
    pub latency_decay: Duration,
}

impl Source<'_> {
    pub(super) fn affinity(
        &self,
        balance: Balance,
        span: Range<usize>,
        u: &UpstreamSection,
    ) -> Result<Affinity, Box<ConfigError>> {
        let hashing = balance == Balance::ConsistentHash;
        let only_for = |key: &'static str, span: Range<usize>, balance: Balance| {
            let kind = ErrorKind::OnlyFor {
                key,
                balance: balance.name(),
            };
            self.error(span, kind)
        };
        let hash_key = match &u.hash_key {
            Some(k) if !hashing => {
                return Err(only_for("hash_key", k.span(), Balance::ConsistentHash))
            }
            Some(k) => Some(
                HashKey::parse(k.get_ref()).map_err(|fix| self.bad_value(k, "hash_key", fix))?,
            ),
            None if hashing => return Err(self.error(span, ErrorKind::MissingHashKey)),
            None => None,
        };
        let hash_balance_factor = match &u.hash_balance_factor {
            Some(f) if !hashing => {
                return Err(only_for(
                    "hash_balance_factor",
                    f.span(),
                    Balance::ConsistentHash,
                ))
            }
            Some(f) => self.balance_factor(f)?,
            None => DEFAULT_HASH_BALANCE_FACTOR,
        };
        let latency_decay = match &u.latency_decay {
            Some(d) if balance != Balance::LeastLatency => {
                return Err(only_for("latency_decay", d.span(), Balance::LeastLatency))
            }
            Some(d) => self.duration(d, false)?,
            None => DEFAULT_LATENCY_DECAY,
        };
        Ok(Affinity {
            hash_key,
            hash_balance_factor,
            latency_decay,
        })
    }

    /// 0 (off), or from 1 (every backend at the mean) to
    /// [`MAX_HASH_BALANCE_FACTOR`].
    fn balance_factor(&self, f: &Spanned<f64>) -> Result<f64, Box<ConfigError>> {
        let v = *f.get_ref();
        if v == 0.0 || (1.0..=MAX_HASH_BALANCE_FACTOR).contains(&v) {
            return Ok(v);
        }
        let kind = ErrorKind::BadValue {
            key: "hash_balance_factor",
            value: v.to_string(),
            fix: format!(
                "write 0 to turn bounded load off, or a factor from 1 to {MAX_HASH_BALANCE_FACTOR}, \
                 like 1.25: no backend above 1.25 times the mean load"
            ),
        };
        Err(self.error(f.span(), kind))
    }

    pub(super) fn sticky(&self, s: StickySection) -> Result<Sticky, Box<ConfigError>> {
        let cookie = match &s.cookie {
            Some(c) if !is_token(c.get_ref()) => {
                let fix =
                    "a cookie name is letters, digits and !#$%&'*+-.^_`|~, like \"sy_affinity\"";
                return Err(self.bad_value(c, "cookie", fix.into()));
            }
            Some(c) => c.get_ref().clone(),
            None => DEFAULT_STICKY_COOKIE.to_string(),
        };
        let path = match &s.path {
            Some(p) if !p.get_ref().starts_with('/') || p.get_ref().contains([';', ' ']) => {
                let fix = "a cookie path starts with / and has no ; or space, like \"/\"";
                return Err(self.bad_value(p, "path", fix.into()));
            }
            Some(p) => p.get_ref().clone(),
            None => "/".to_string(),
        };
        let same_site = match &s.same_site {
            None => SameSite::Lax,
            Some(v) => match self.choice(v, "same_site", &SameSite::NAMES)? {
                "strict" => SameSite::Strict,
                "none" => SameSite::None,
                _ => SameSite::Lax,
            },
        };
        let secure = s.secure.as_ref().map(|b| *b.get_ref());
        if let (SameSite::None, Some(v)) = (same_site, &s.same_site) {
            if secure != Some(true) {
                let fix = "browsers drop SameSite=None cookies without Secure: add secure = true, \
                           or use \"lax\""
                    .into();
                return Err(self.bad_value(v, "same_site", fix));
            }
        }
        let max_age = match &s.max_age {
            None => None,
            Some(d) => Some(self.duration(d, false)?),
        };
        Ok(Sticky {
            cookie,
            max_age,
            path,
            secure,
            http_only: s.http_only.as_ref().is_none_or(|b| *b.get_ref()),
            same_site,
            secret: s.secret.map(Spanned::into_inner),
        })
    }
}
