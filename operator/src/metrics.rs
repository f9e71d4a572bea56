//! Reconcile metrics for `/metrics` (Prometheus text format), and per-object failure counts for the
//! error backoff.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Default)]
pub struct Metrics {
    reconciles: AtomicU64,
    errors: AtomicU64,
    duration_micros: AtomicU64,
    durations: AtomicU64,
    failures: Mutex<HashMap<String, u32>>,
}

impl Metrics {
    pub fn reconciled(&self) {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
    }

    pub fn failed(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn observe(&self, took: Duration) {
        self.duration_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.durations.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one more failure of the object `uid` and returns how many in a row.
    pub fn failures_of(&self, uid: &str) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = failures.entry(uid.to_owned()).or_default();
        *count += 1;
        *count
    }

    /// The object `uid` reconciled: its backoff starts over.
    pub fn succeeded(&self, uid: &str) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(uid);
    }

    pub fn render(&self) -> String {
        let seconds = self.duration_micros.load(Ordering::Relaxed) as f64 / 1e6;
        format!(
            "# HELP herald_operator_reconciles_total Reconciles started.\n\
             # TYPE herald_operator_reconciles_total counter\n\
             herald_operator_reconciles_total {}\n\
             # HELP herald_operator_reconcile_errors_total Reconciles that failed.\n\
             # TYPE herald_operator_reconcile_errors_total counter\n\
             herald_operator_reconcile_errors_total {}\n\
             # HELP herald_operator_reconcile_duration_seconds Time spent in successful gateway reconciles.\n\
             # TYPE herald_operator_reconcile_duration_seconds summary\n\
             herald_operator_reconcile_duration_seconds_sum {seconds}\n\
             herald_operator_reconcile_duration_seconds_count {}\n",
            self.reconciles.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            self.durations.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_as_prometheus_text_and_backoff_resets() {
        let metrics = Metrics::default();
        metrics.reconciled();
        metrics.reconciled();
        metrics.failed();
        metrics.observe(Duration::from_millis(250));
        let text = metrics.render();
        assert!(text.contains("herald_operator_reconciles_total 2\n"));
        assert!(text.contains("herald_operator_reconcile_errors_total 1\n"));
        assert!(text.contains("herald_operator_reconcile_duration_seconds_sum 0.25\n"));
        assert_eq!(metrics.failures_of("a"), 1);
        assert_eq!(metrics.failures_of("a"), 2);
        metrics.succeeded("a");
        assert_eq!(metrics.failures_of("a"), 1);
    }
}
