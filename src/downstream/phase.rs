//! What a client connection is waiting for, shared by its stream (which
//! sets deadlines by it) and the proxy's hooks (which mark where a request
//! begins), found through a task-local: Pingora serves every request of an
//! HTTP/1 connection on the connection's own task.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

tokio::task_local! {
    /// The state of the connection whose task this is.
    pub(super) static CONNECTION: Arc<Phase>;
}

/// Marks the end of the current connection's request head: from here until
/// the request ends, the connection has no deadline of its own.
pub fn request_started() {
    let _ = CONNECTION.try_with(|phase| phase.set(Phase::BUSY));
}

/// Marks the current connection as a tunnel (after a `101`): its writes
/// have no send deadline either, since the tunnel's own idle timeout
/// bounds a client that stops reading.
pub fn tunnel_started() {
    let _ = CONNECTION.try_with(|phase| phase.set(Phase::TUNNEL));
}

/// What a connection is waiting for, with a generation count in the upper
/// bits so that every change is seen even if it returns to the same phase.
/// Only the connection's own task touches it.
#[derive(Debug)]
pub(super) struct Phase(AtomicU32);

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
        Phase(AtomicU32::new(phase))
    }

    pub(super) fn load(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    pub(super) fn set(&self, phase: u32) {
        let generation = (self.load() & !Self::MASK).wrapping_add(Self::MASK + 1);
        self.0.store(generation | phase, Ordering::Relaxed);
    }
}
