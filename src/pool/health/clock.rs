//! The clock every health decision reads: monotonic nanoseconds, read
//! lazily on the hot path, and a process-wide count of usability changes
//! for what caches usability.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

/// Nanoseconds on a monotonic clock that reads [`ORIGIN`] when the process
/// starts. Every time in this module is one of these, so tests can pass
/// their own.
pub fn now() -> u64 {
    at(Instant::now())
}

/// `instant` on the clock of [`now`], for a time already read: the proxy
/// notes each request's start once and reuses it.
pub fn at(instant: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    // u64 nanoseconds last 584 years.
    ORIGIN + instant.saturating_duration_since(epoch).as_nanos() as u64
}

/// Counts changes of any backend's usability (checks' verdict, ejection),
/// so that what caches it (least-connections' tree) knows to look again.
/// The end of an ejection is not counted: it comes with time, not an event.
static CHANGES: AtomicU64 = AtomicU64::new(0);

/// How many times a backend's usability has changed, anywhere.
pub fn changes() -> u64 {
    CHANGES.load(Ordering::Relaxed)
}

pub(crate) fn changed() {
    CHANGES.fetch_add(1, Ordering::Relaxed);
}

/// [`now`], read at most once and only when needed: selection needs the
/// time only for a backend that has been ejected, or for slow start, and
/// reading the clock costs more than the rest of a pick.
#[derive(Debug, Default)]
pub struct LazyNow(Cell<u64>);

impl LazyNow {
    /// A clock not read yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The time now, read on first use.
    pub fn get(&self) -> u64 {
        match self.0.get() {
            0 => {
                let t = now();
                self.0.set(t);
                t
            }
            t => t,
        }
    }
}

/// What [`now`] reads at process start: further from 0 than any window
/// (durations are capped at a day), so time 0 means "long ago".
pub const ORIGIN: u64 = 2 * 24 * 3600 * 1_000_000_000;

/// `d` in nanoseconds, saturating (durations are capped at a day anyway).
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The wall-clock time of monotonic time `at`, for people reading `/status`.
pub fn wall_clock(at: u64, now: u64) -> SystemTime {
    let wall = SystemTime::now();
    if at >= now {
        wall + Duration::from_nanos(at - now)
    } else {
        wall - Duration::from_nanos(now - at)
    }
}
