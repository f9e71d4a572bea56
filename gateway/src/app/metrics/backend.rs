//! The latency and failures of the replica's backends, as the gateway sees them: every Redis
//! command (or pipeline), every call of the SQL store (PostgreSQL or SQLite, `adapters::timed`) and
//! every group commit of its writer. What an
//! alert on a slow or failing backend reads; labels are a fixed set (backend, operation), never a key
//! or a user.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the backend latency buckets: a Redis command on a quiet network takes
/// well under a millisecond, a flushed commit a few; seconds mean trouble.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Which backend answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Redis,
    Postgres,
    Sqlite,
}

impl Backend {
    fn as_str(self) -> &'static str {
        match self {
            Backend::Redis => "redis",
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    backend: &'static str,
    operation: &'static str,
}

type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// A handle shared by the adapters (clones share the series). One that was never registered
/// ([`BackendMetrics::default`]) records into series nobody reads: adapters built outside a gateway
/// (tests) need not care.
#[derive(Debug, Clone)]
pub struct BackendMetrics {
    seconds: HistogramFamily,
    errors: Family<Labels, Counter>,
}

impl Default for BackendMetrics {
    fn default() -> Self {
        Self {
            seconds: Family::new_with_constructor(|| Histogram::new(BUCKETS)),
            errors: Family::default(),
        }
    }
}

impl BackendMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "herald_backend_request_duration_seconds",
            "Time of each Redis command or pipeline, each SQL store call and each group commit, by backend and operation",
            self.seconds.clone(),
        );
        registry.register(
            "herald_backend_errors",
            "Redis commands, SQL store calls and group commits that failed, by backend and operation",
            self.errors.clone(),
        );
    }

    /// Creates the series of `operation` on `backend` at 0, so that they exist before its first
    /// request (adapters declare what they will do when they are built).
    pub fn declare(&self, backend: Backend, operation: &'static str) {
        let labels = Labels {
            backend: backend.as_str(),
            operation,
        };
        let _ = self.seconds.get_or_create(&labels);
        let _ = self.errors.get_or_create(&labels);
    }

    /// Counts a failure that had no request to time (a subscription lost).
    pub fn failed(&self, backend: Backend, operation: &'static str) {
        self.errors
            .get_or_create(&Labels {
                backend: backend.as_str(),
                operation,
            })
            .inc();
    }

    /// Records one request to `backend`: how long it took and whether it failed. `operation` must
    /// come from a fixed set (a command name, `commit`): it is a label.
    pub fn observe(&self, backend: Backend, operation: &'static str, took: Duration, ok: bool) {
        let labels = Labels {
            backend: backend.as_str(),
            operation,
        };
        self.seconds.get_or_create(&labels).observe(took.as_secs_f64());
        if !ok {
            self.errors.get_or_create(&labels).inc();
        }
    }
}
