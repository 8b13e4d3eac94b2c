//! Backends that announce their keep-alive: Node.js (5 s by default before
//! Node 26), Apache and others answer with `Keep-Alive: timeout=N` and close
//! a connection left idle for N seconds. A pooled connection lent just as
//! the backend closes it breaks the request sent on it, so Switchyard stops
//! lending one [`CLOSE_BEFORE`] (1 s) before that: its pooled connections
//! to such a backend idle at most N − 1 s, and never longer than the
//! upstream's `idle_timeout`, which stays the cap.
//!
//! How, in Pingora 0.9.1 terms: the v1 client session parses
//! `Keep-Alive: timeout=` (`get_keepalive_values`) but keeps it only as a
//! "reuse: yes" (`KeepaliveStatus::Timeout` is never read again). The
//! connection goes back to the pool with the `idle_timeout` of the peer
//! that `upstream_peer` returned for the request (`proxy_to_upstream`:
//! `release_http_session(.., peer.idle_timeout())`), and that peer cannot
//! be changed once returned. So the hint is remembered per backend, here,
//! from each response, and every later peer carries the shorter timeout.
//!
//! What remains are connections already pooled under a longer timeout (the
//! first response's, before the hint was known, or those of requests in
//! flight when it shrank). They would be lent past the backend's close. So
//! the hint is part of the connection grouping: one atomic word holds the
//! backend's connection group (in the peer's `group_key`, hence in the
//! pool key) and its announced timeout, and a shorter announcement moves
//! the backend to a new group. The connections of the old group are never
//! lent again; they close when the backend closes them. One word, so a
//! peer never pairs the new group with the old timeout.
//!
//! The shortest timeout announced is kept, not the last: one address may
//! front several servers (a Kubernetes Service, a rolling deploy) that
//! announce different ones, and a connection does not say which server it
//! reached. A backend that later announces a longer one keeps the shorter
//! until it leaves the config (or the process restarts). HTTP/2 has no
//! `Keep-Alive` (it is a connection header, not allowed there), so the
//! adapter ignores it for HTTP/2 upstreams.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long before an announced close a pooled connection stops being
/// lent: covers the request's way to the backend and the time between the
/// backend's last write (where its clock starts) and the connection's
/// return to the pool (where ours does).
pub const CLOSE_BEFORE: Duration = Duration::from_secs(1);

/// Longest announced timeout kept as it is (about 18 h, far above any
/// sensible `idle_timeout`); a longer one is kept as this.
const MAX_ANNOUNCED: u64 = 0xFFFE;

/// Bits of [`Pooling`]'s word that hold the announced timeout.
const ANNOUNCED_BITS: u32 = 16;
const ANNOUNCED_MASK: u64 = (1 << ANNOUNCED_BITS) - 1;

/// Source of connection groups: every backend state, and every change of
/// group, takes one that no other ever had.
static GROUPS: AtomicU64 = AtomicU64::new(1);

/// The timeout, in seconds, that the values of a response's `Keep-Alive`
/// headers announce: `timeout=5`, `timeout=5, max=100`, `Timeout = "5"`
/// (names are case-insensitive, spaces around `=` and `,` allowed, a
/// quoted value taken). The shortest if several are given; `None` if none
/// is, or none parses as a number of seconds: garbage is ignored.
pub fn announced_timeout<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<u64> {
    values
        .into_iter()
        .flat_map(|value| value.split(|&b| b == b','))
        .filter_map(|param| {
            let eq = param.iter().position(|&b| b == b'=')?;
            let (name, value) = (param[..eq].trim_ascii(), param[eq + 1..].trim_ascii());
            if !name.eq_ignore_ascii_case(b"timeout") {
                return None;
            }
            let value = value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value);
            seconds(value)
        })
        .min()
}

/// Plain ASCII digits as a number of seconds, at most [`MAX_ANNOUNCED`].
fn seconds(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    });
    Some(n.map_or(MAX_ANNOUNCED, |n| n.min(MAX_ANNOUNCED)))
}

/// How long a pooled connection to a backend may idle: `cap` (the
/// upstream's `idle_timeout`), or [`CLOSE_BEFORE`] less than the timeout
/// it announced if that is shorter. An announced 1 s or less gives zero:
/// the connection is closed as soon as it is back in the pool.
pub fn pooled_idle_timeout(cap: Duration, announced: Option<u64>) -> Duration {
    match announced {
        None => cap,
        Some(n) => cap.min(Duration::from_secs(n).saturating_sub(CLOSE_BEFORE)),
    }
}

/// A backend's connection group and the shortest keep-alive it announced,
/// read together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grouping {
    /// Part of the pool key of the backend's connections.
    pub group: u64,
    /// Seconds; `None` until the backend announces one.
    pub announced: Option<u64>,
}

/// Which pooled connections a backend's requests may use, and how long
/// they may idle: its [`Grouping`], in one atomic word (the group above
/// the low 16 bits, the announced timeout plus one in them, 0 for none).
#[derive(Debug)]
pub struct Pooling(AtomicU64);

impl Default for Pooling {
    /// A group no other state has, nothing announced.
    fn default() -> Self {
        Pooling(AtomicU64::new(new_group()))
    }
}

impl Pooling {
    /// The group and the announced timeout, consistent with each other.
    pub fn get(&self) -> Grouping {
        unpack(self.0.load(Ordering::Relaxed))
    }

    /// Moves to a new group, keeping what was announced: the connections
    /// pooled so far are never lent again.
    pub fn retire(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
                Some(new_group() | (word & ANNOUNCED_MASK))
            });
    }

    /// The backend announced `seconds`: kept if shorter than what it
    /// announced before (or it had announced nothing), and then the
    /// backend moves to a new group, as its connections pooled so far may
    /// idle longer than it keeps them. Returns whether it moved.
    pub fn announce(&self, seconds: u64) -> bool {
        let code = seconds.min(MAX_ANNOUNCED) + 1;
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
                let old = word & ANNOUNCED_MASK;
                (old == 0 || code < old).then(|| new_group() | code)
            })
            .is_ok()
    }
}

/// A fresh group, shifted into place; its low bits are zero.
fn new_group() -> u64 {
    GROUPS.fetch_add(1, Ordering::Relaxed) << ANNOUNCED_BITS
}

fn unpack(word: u64) -> Grouping {
    let code = word & ANNOUNCED_MASK;
    Grouping {
        group: word >> ANNOUNCED_BITS,
        announced: code.checked_sub(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> Option<u64> {
        announced_timeout(values.iter().map(|v| v.as_bytes()))
    }

    #[test]
    fn keepalive_timeouts_are_read_as_servers_write_them() {
        assert_eq!(parse(&["timeout=5"]), Some(5), "Node.js");
        assert_eq!(parse(&["timeout=5, max=100"]), Some(5), "Apache");
        assert_eq!(parse(&["max=100,timeout=15"]), Some(15));
        assert_eq!(parse(&["  Timeout = 7 ,max=3"]), Some(7));
        assert_eq!(parse(&["TIMEOUT=\"9\""]), Some(9));
        assert_eq!(parse(&["timeout=0"]), Some(0));
        assert_eq!(parse(&["timeout=10", "timeout=4"]), Some(4), "shortest");
        assert_eq!(
            parse(&["timeout=99999999999999999999999"]),
            Some(MAX_ANNOUNCED)
        );
    }

    #[test]
    fn keepalive_garbage_is_ignored() {
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[""]), None);
        assert_eq!(parse(&["max=100"]), None);
        assert_eq!(parse(&["timeout"]), None);
        assert_eq!(parse(&["timeout="]), None);
        assert_eq!(parse(&["timeout=-5"]), None);
        assert_eq!(parse(&["timeout=5s"]), None);
        assert_eq!(parse(&["timeout=2.5"]), None);
        assert_eq!(parse(&["timeouts=5"]), None);
        assert_eq!(parse(&["time out=5"]), None);
        assert_eq!(parse(&["timeout=\"5"]), None);
        assert_eq!(parse(&["timeout=abc, timeout=3"]), Some(3));
        assert_eq!(announced_timeout([&b"timeout=\xff5"[..]]), None);
    }

    #[test]
    fn keepalive_the_idle_timeout_is_one_second_under_the_hint_and_capped() {
        let cap = Duration::from_secs(60);
        let t = |n| pooled_idle_timeout(cap, n);
        assert_eq!(t(None), cap);
        assert_eq!(t(Some(5)), Duration::from_secs(4));
        assert_eq!(t(Some(2)), Duration::from_secs(1));
        assert_eq!(t(Some(1)), Duration::ZERO, "do not reuse");
        assert_eq!(t(Some(0)), Duration::ZERO, "do not reuse");
        assert_eq!(t(Some(61)), cap);
        assert_eq!(t(Some(MAX_ANNOUNCED)), cap);
        let short = Duration::from_millis(300);
        assert_eq!(pooled_idle_timeout(short, Some(5)), short);
    }

    #[test]
    fn keepalive_a_shorter_announcement_moves_the_backend_to_a_new_group() {
        let p = Pooling::default();
        let start = p.get();
        assert_eq!(start.announced, None);
        assert!(p.announce(5), "the first announcement");
        let five = p.get();
        assert_eq!(five.announced, Some(5));
        assert_ne!(five.group, start.group);
        assert!(!p.announce(5), "the same again");
        assert!(!p.announce(10), "a longer one");
        assert_eq!(p.get(), five, "keeps the shorter, and the group");
        assert!(p.announce(2));
        let two = p.get();
        assert_eq!(two.announced, Some(2));
        assert_ne!(two.group, five.group);
        assert_ne!(two.group, start.group);
    }

    #[test]
    fn keepalive_retiring_keeps_what_was_announced() {
        let p = Pooling::default();
        p.announce(3);
        let before = p.get();
        p.retire();
        let after = p.get();
        assert_eq!(after.announced, Some(3));
        assert_ne!(after.group, before.group);
        let q = Pooling::default();
        assert_ne!(q.get().group, after.group, "every state has its own");
    }

    #[test]
    fn keepalive_the_longest_kept_fits_its_bits() {
        let p = Pooling::default();
        assert!(p.announce(u64::MAX));
        assert_eq!(p.get().announced, Some(MAX_ANNOUNCED));
        assert!(p.announce(0));
        assert_eq!(p.get().announced, Some(0));
    }
}
