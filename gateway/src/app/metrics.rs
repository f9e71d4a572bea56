//! The gateway's Prometheus metrics (`GET /metrics`): the plan's CloudWatch set (section 12) as
//! counters, a gauge and a latency histogram. Plain atomics: recording never blocks a hot path.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of the publish-to-delivery latency histogram buckets.
const LATENCY_BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Default)]
pub struct Metrics {
    pub connections_opened: AtomicU64,
    pub connections_rejected: AtomicU64,
    pub notifications_published: AtomicU64,
    pub notifications_skipped: AtomicU64,
    /// One per notification pushed to one connection (first push, replay, gap fill or retry).
    pub messages_delivered: AtomicU64,
    pub messages_retried: AtomicU64,
    pub notifications_failed: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Records the time from a notification's creation to its first push to a connection.
    pub fn observe_delivery_latency(&self, millis: i64) {
        let seconds = millis.max(0) as f64 / 1_000.0;
        for (bucket, bound) in self.latency_buckets.iter().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// Prometheus text exposition; `connections_active` is read from the live sessions.
    pub fn render(&self, connections_active: usize) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
        };
        metric(
            "herald_connections_active",
            "gauge",
            "WebSocket connections held by this replica.",
            connections_active.to_string(),
        );
        metric(
            "herald_connections_opened_total",
            "counter",
            "WebSocket connections opened.",
            get(&self.connections_opened).to_string(),
        );
        metric(
            "herald_connections_rejected_total",
            "counter",
            "Connection attempts refused before the upgrade.",
            get(&self.connections_rejected).to_string(),
        );
        metric(
            "herald_notifications_published_total",
            "counter",
            "Notifications stored by publishes to this replica.",
            get(&self.notifications_published).to_string(),
        );
        metric(
            "herald_notifications_skipped_total",
            "counter",
            "Recipients skipped by their preferences.",
            get(&self.notifications_skipped).to_string(),
        );
        metric(
            "herald_messages_delivered_total",
            "counter",
            "Notifications pushed to a connection.",
            get(&self.messages_delivered).to_string(),
        );
        metric(
            "herald_messages_retried_total",
            "counter",
            "Notifications pushed again after the ack timeout.",
            get(&self.messages_retried).to_string(),
        );
        metric(
            "herald_notifications_failed_total",
            "counter",
            "Notifications given up after the last attempt on a connection.",
            get(&self.notifications_failed).to_string(),
        );
        out.push_str("# HELP herald_delivery_latency_seconds Time from a notification's creation to its first push to a connection.\n");
        out.push_str("# TYPE herald_delivery_latency_seconds histogram\n");
        for (bucket, bound) in self.latency_buckets.iter().zip(LATENCY_BUCKETS) {
            out.push_str(&format!(
                "herald_delivery_latency_seconds_bucket{{le=\"{bound}\"}} {}\n",
                get(bucket)
            ));
        }
        let count = get(&self.latency_count);
        out.push_str(&format!(
            "herald_delivery_latency_seconds_bucket{{le=\"+Inf\"}} {count}\n"
        ));
        out.push_str(&format!(
            "herald_delivery_latency_seconds_sum {}\n",
            get(&self.latency_sum_micros) as f64 / 1e6
        ));
        out.push_str(&format!("herald_delivery_latency_seconds_count {count}\n"));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauge_and_a_cumulative_histogram() {
        let metrics = Metrics::default();
        Metrics::add(&metrics.connections_opened, 2);
        Metrics::add(&metrics.messages_delivered, 3);
        metrics.observe_delivery_latency(3);
        metrics.observe_delivery_latency(400);
        let text = metrics.render(7);
        assert!(text.contains("herald_connections_active 7\n"));
        assert!(text.contains("herald_connections_opened_total 2\n"));
        assert!(text.contains("herald_messages_delivered_total 3\n"));
        assert!(text.contains("herald_delivery_latency_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("herald_delivery_latency_seconds_bucket{le=\"0.5\"} 2\n"));
        assert!(text.contains("herald_delivery_latency_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("herald_delivery_latency_seconds_count 2\n"));
    }
}
