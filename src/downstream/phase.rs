//! What a client connection is waiting for, shared by its stream (which
//! sets deadlines and reads framing by it) and the proxy's hooks (which
//! mark where a request begins and how its body is framed), found
//! through a task-local: Pingora serves every request of an HTTP/1
//! connection on the connection's own task.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

tokio::task_local! {
    /// The state of the connection whose task this is.
    pub(super) static CONNECTION: Arc<Phase>;
}

/// How the body after an HTTP/1 request head is framed, as Pingora reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// This many bytes (none without `Content-Length`).
    Length(u64),
    /// Chunked: its framing is checked as it arrives.
    Chunked,
    /// Not told (an upgrade): whatever comes is read.
    Unknown,
}

impl Body {
    const CHUNKED: u64 = u64::MAX;
    const UNKNOWN: u64 = u64::MAX - 1;

    fn encode(self) -> u64 {
        match self {
            Body::Length(n) => n.min(Self::UNKNOWN - 1),
            Body::Chunked => Self::CHUNKED,
            Body::Unknown => Self::UNKNOWN,
        }
    }

    fn decode(n: u64) -> Body {
        match n {
            Self::CHUNKED => Body::Chunked,
            Self::UNKNOWN => Body::Unknown,
            n => Body::Length(n),
        }
    }
}

/// Marks the end of the current connection's request head: from here until
/// the request ends, the connection has no deadline of its own, and what
/// the client sends is read as `body`.
pub fn request_started(body: Body) {
    let _ = CONNECTION.try_with(|phase| {
        phase.body.store(body.encode(), Ordering::Relaxed);
        phase.set(Phase::BUSY);
    });
}

/// Marks the current connection as a tunnel (after a `101`): its writes
/// have no send deadline either, since the tunnel's own idle timeout
/// bounds a client that stops reading.
pub fn tunnel_started() {
    let _ = CONNECTION.try_with(|phase| phase.set(Phase::TUNNEL));
}

/// What a connection is waiting for, with a generation count in the upper
/// bits so that every change is seen even if it returns to the same phase,
/// and the framing of the body of the request being served. Only the
/// connection's own task touches it.
#[derive(Debug)]
pub(super) struct Phase {
    state: AtomicU32,
    body: AtomicU64,
}

impl Phase {
    /// Waiting for (the rest of) a request head.
    pub(super) const HEAD: u32 = 0;
    /// Serving a request.
    pub(super) const BUSY: u32 = 1;
    /// Kept alive, waiting for a request's first byte.
    pub(super) const IDLE: u32 = 2;
    /// Carrying an upgraded connection: no deadline at all.
    pub(super) const TUNNEL: u32 = 3;
    pub(super) const MASK: u32 = 3;

    pub(super) fn new(phase: u32) -> Phase {
        Phase {
            state: AtomicU32::new(phase),
            body: AtomicU64::new(Body::UNKNOWN),
        }
    }

    pub(super) fn load(&self) -> u32 {
        self.state.load(Ordering::Relaxed)
    }

    pub(super) fn set(&self, phase: u32) {
        let generation = (self.load() & !Self::MASK).wrapping_add(Self::MASK + 1);
        self.state.store(generation | phase, Ordering::Relaxed);
    }

    /// The framing of the current request's body (meaningful when `BUSY`).
    pub(super) fn body(&self) -> Body {
        Body::decode(self.body.load(Ordering::Relaxed))
    }
}
