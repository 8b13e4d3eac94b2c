//! Counting tunnels: one is open while its [`OpenTunnel`] lives, so every
//! way a tunnel ends (either side closes, idle timeout, drain, error,
//! panic) takes it off the gauge exactly once, and the gauge cannot
//! underflow.

use prometheus::IntGauge;

use super::Metrics;

/// One open tunnel, counted in `switchyard_tunnels_open` until dropped.
#[derive(Debug)]
#[must_use = "the tunnel counts as open only while this lives"]
pub struct OpenTunnel {
    open: IntGauge,
}

impl Metrics {
    /// Counts a tunnel opened to `backend` of `upstream`, open until the
    /// returned guard is dropped.
    pub fn tunnel_opened(&self, upstream: &str, backend: &str) -> OpenTunnel {
        let labels = [upstream, backend];
        self.tunnels_total.with_label_values(&labels).inc();
        let open = self.tunnels_open.with_label_values(&labels);
        open.inc();
        OpenTunnel { open }
    }
}

impl Metrics {
    /// Tunnels open now, to every backend.
    pub fn tunnels_open_total(&self) -> i64 {
        use prometheus::core::Collector;
        self.tunnels_open
            .collect()
            .iter()
            .flat_map(|f| f.get_metric())
            .map(|m| m.get_gauge().get_value() as i64)
            .sum()
    }

    /// Tunnels open now to `backend` of `upstream` (0 if it never had one).
    pub fn tunnels_open_to(&self, upstream: &str, backend: &str) -> u64 {
        let open = self
            .tunnels_open
            .get_metric_with_label_values(&[upstream, backend]);
        open.map_or(0, |g| u64::try_from(g.get()).unwrap_or(0))
    }
}

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        self.open.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_while_the_guard_lives_and_counted_once() {
        let metrics = Metrics::new();
        let labels = ["app", "127.0.0.1:1"];
        let open = || metrics.tunnels_open.with_label_values(&labels).get();
        let first = metrics.tunnel_opened(labels[0], labels[1]);
        let second = metrics.tunnel_opened(labels[0], labels[1]);
        assert_eq!(open(), 2);
        drop(first);
        assert_eq!(open(), 1);
        drop(second);
        assert_eq!(open(), 0);
        assert_eq!(metrics.tunnels_total.with_label_values(&labels).get(), 2);
    }
}
