//! Reconcile metrics for `/metrics`, kept and encoded by `prometheus-client` in the classic Prometheus
//! text format (version 0.0.4), and per-object failure counts for the error backoff (these are not
//! metrics, only state the error policy needs).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the reconcile-duration buckets: a reconcile is a dozen API calls, from
/// milliseconds on a quiet apiserver to seconds on a loaded one.
const DURATION_BUCKETS: [f64; 9] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 15.0];

pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    errors: Counter,
    durations: Histogram,
    failures: Mutex<HashMap<String, u32>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let reconciles = Counter::default();
        let errors = Counter::default();
        let durations = Histogram::new(DURATION_BUCKETS);
        let mut registry = Registry::default();
        // Counters are registered without `_total`: the encoder appends it. Help texts get their
        // final period from the encoder too.
        registry.register("herald_operator_reconciles", "Reconciles started", reconciles.clone());
        registry.register(
            "herald_operator_reconcile_errors",
            "Reconciles that failed",
            errors.clone(),
        );
        registry.register(
            "herald_operator_reconcile_duration_seconds",
            "Time spent in successful gateway reconciles",
            durations.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            durations,
            failures: Mutex::default(),
        }
    }
}

impl Metrics {
    pub fn reconciled(&self) {
        self.reconciles.inc();
    }

    pub fn failed(&self) {
        self.errors.inc();
    }

    pub fn observe(&self, took: Duration) {
        self.durations.observe(took.as_secs_f64());
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

    /// Every metric in the Prometheus text format, to be served as [`CONTENT_TYPE`].
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut text, &self.registry);
        text
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
        metrics.observe(Duration::from_secs(2));
        let text = metrics.render();
        for line in [
            "# HELP herald_operator_reconciles_total Reconciles started.",
            "# TYPE herald_operator_reconciles_total counter",
            "herald_operator_reconciles_total 2",
            "# HELP herald_operator_reconcile_errors_total Reconciles that failed.",
            "herald_operator_reconcile_errors_total 1",
            "# HELP herald_operator_reconcile_duration_seconds Time spent in successful gateway reconciles.",
            "# TYPE herald_operator_reconcile_duration_seconds histogram",
            "herald_operator_reconcile_duration_seconds_sum 2.25",
            "herald_operator_reconcile_duration_seconds_count 2",
            r#"herald_operator_reconcile_duration_seconds_bucket{le="0.25"} 1"#,
            r#"herald_operator_reconcile_duration_seconds_bucket{le="5"} 2"#,
            r#"herald_operator_reconcile_duration_seconds_bucket{le="+Inf"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        assert!(
            !text.contains("# EOF"),
            "the classic text format has no EOF marker:\n{text}"
        );
        assert!(CONTENT_TYPE.starts_with("text/plain; version=0.0.4"));

        assert_eq!(metrics.failures_of("a"), 1);
        assert_eq!(metrics.failures_of("a"), 2);
        metrics.succeeded("a");
        assert_eq!(metrics.failures_of("a"), 1);
    }
}
