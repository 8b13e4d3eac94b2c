//! The registry that keeps each backend's state, and each upstream's retry
//! window and counters, by name and address across snapshots.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use super::health::Health;
use super::{BackendState, Counters, RetryWindow};
use crate::config::BackendConfig;

/// Backend states by (upstream, address), and retry windows and counters
/// by upstream. Weak, so a backend that no snapshot lists goes away once
/// its last lease ends, and an upstream's window once no snapshot lists
/// the upstream.
#[derive(Debug, Default)]
pub(super) struct Registry {
    states: HashMap<(String, String), Weak<BackendState>>,
    windows: HashMap<String, Weak<RetryWindow>>,
    counters: HashMap<String, Weak<Counters>>,
}

impl Registry {
    pub(super) fn state(
        &mut self,
        upstream: &str,
        backend: &BackendConfig,
        initial_up: bool,
        added_at: u64,
        counters: &Arc<Counters>,
    ) -> Arc<BackendState> {
        let (address, socket_addr) = (&backend.address, backend.socket_addr);
        let key = (upstream.to_string(), address.to_string());
        if let Some(state) = self.states.get(&key).and_then(Weak::upgrade) {
            if state.socket_addr() == socket_addr {
                return state;
            }
        }
        let state = Arc::new(BackendState::of_upstream(
            address.to_string(),
            socket_addr,
            Health::new(initial_up, added_at),
            Arc::clone(counters),
        ));
        self.states.insert(key, Arc::downgrade(&state));
        state
    }

    /// The retry window of `upstream`: the one it had if it stays.
    pub(super) fn window(&mut self, upstream: &str) -> Arc<RetryWindow> {
        shared(&mut self.windows, upstream)
    }

    /// The counters of `upstream`: the ones it had if it stays.
    pub(super) fn counters(&mut self, upstream: &str) -> Arc<Counters> {
        shared(&mut self.counters, upstream)
    }

    /// The state of this backend, if it still exists.
    pub(super) fn live(&self, upstream: &str, address: &str) -> Option<Arc<BackendState>> {
        let key = (upstream.to_string(), address.to_string());
        self.states.get(&key).and_then(Weak::upgrade)
    }

    pub(super) fn is_live(&self, upstream: &str, address: &str) -> bool {
        let key = (upstream.to_string(), address.to_string());
        self.states.get(&key).is_some_and(|w| w.strong_count() > 0)
    }

    pub(super) fn prune(&mut self) {
        self.states.retain(|_, w| w.strong_count() > 0);
        self.windows.retain(|_, w| w.strong_count() > 0);
        self.counters.retain(|_, w| w.strong_count() > 0);
    }
}

/// The value of `map` for `upstream` if one is still alive, else a new one.
fn shared<T: Default>(map: &mut HashMap<String, Weak<T>>, upstream: &str) -> Arc<T> {
    if let Some(value) = map.get(upstream).and_then(Weak::upgrade) {
        return value;
    }
    let value = Arc::new(T::default());
    map.insert(upstream.to_string(), Arc::downgrade(&value));
    value
}
