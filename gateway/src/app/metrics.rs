//! The gateway's Prometheus metrics (`GET /metrics`): the plan's CloudWatch set (section 12) as
//! counters, a gauge and a latency histogram, kept and encoded by `prometheus-client` in the classic
//! text format. Recording is an atomic add: it never blocks a hot path.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::domain::token::TokenRejection;

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the publish-to-delivery latency histogram buckets.
const LATENCY_BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// What became of a client's `notification:ack`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum AckOutcome {
    /// Of a notification this replica sent and awaited: no store read, written in the background.
    Awaited,
    /// Not awaited here, unacknowledged in the store: recorded.
    Recorded,
    /// Acknowledged already: answered without a write.
    Duplicate,
    /// Someone else's or no notification: refused (a violation).
    Unknown,
}

impl AckOutcome {
    const ALL: [AckOutcome; 4] = [
        AckOutcome::Awaited,
        AckOutcome::Recorded,
        AckOutcome::Duplicate,
        AckOutcome::Unknown,
    ];

    fn as_str(self) -> &'static str {
        match self {
            AckOutcome::Awaited => "awaited",
            AckOutcome::Recorded => "recorded",
            AckOutcome::Duplicate => "duplicate",
            AckOutcome::Unknown => "unknown",
        }
    }
}

impl EncodeLabelValue for AckOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AckLabels {
    outcome: AckOutcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenRejectionLabels {
    reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    /// One counter per [`AckOutcome`] (in declaration order), taken from their family once: an ack
    /// is counted without the family's lookup.
    acks: [Counter; 4],
    /// Connection tokens refused at connect, by [`TokenRejection::reason`]: an `unknown_key` rate
    /// during a rotation means the key set reached this replica too late.
    token_rejections: Family<TokenRejectionLabels, Counter>,
    /// Channel reloads from the settings file, by `result` (`ok`, `failed`).
    channel_reloads: Family<ReloadLabels, Counter>,
    connections_active: Gauge,
    pub connections_opened: Counter,
    pub connections_rejected: Counter,
    /// TCP connections closed at once because the replica held its maximum.
    pub connections_over_capacity: Counter,
    pub notifications_published: Counter,
    pub notifications_skipped: Counter,
    /// One per notification pushed to one connection (first push, replay, gap fill or retry).
    pub messages_delivered: Counter,
    pub messages_retried: Counter,
    pub notifications_failed: Counter,
    delivery_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Self {
            registry: Registry::default(),
            acks: Default::default(),
            token_rejections: Family::default(),
            channel_reloads: Family::default(),
            connections_active: Gauge::default(),
            connections_opened: Counter::default(),
            connections_rejected: Counter::default(),
            connections_over_capacity: Counter::default(),
            notifications_published: Counter::default(),
            notifications_skipped: Counter::default(),
            messages_delivered: Counter::default(),
            messages_retried: Counter::default(),
            notifications_failed: Counter::default(),
            delivery_latency: Histogram::new(LATENCY_BUCKETS),
        };
        // Counters are registered without `_total` and help texts without their final period: the
        // encoder adds both. A registered metric shares its value with the field (clones share).
        let counters = [
            (
                "herald_connections_opened",
                "WebSocket connections opened",
                &metrics.connections_opened,
            ),
            (
                "herald_connections_rejected",
                "Connection attempts refused before the upgrade",
                &metrics.connections_rejected,
            ),
            (
                "herald_connections_over_capacity",
                "TCP connections closed at once because the replica held HERALD_MAX_CONNECTIONS",
                &metrics.connections_over_capacity,
            ),
            (
                "herald_notifications_published",
                "Notifications stored by publishes to this replica",
                &metrics.notifications_published,
            ),
            (
                "herald_notifications_skipped",
                "Recipients skipped by their preferences",
                &metrics.notifications_skipped,
            ),
            (
                "herald_messages_delivered",
                "Notifications pushed to a connection",
                &metrics.messages_delivered,
            ),
            (
                "herald_messages_retried",
                "Notifications pushed again after the ack timeout",
                &metrics.messages_retried,
            ),
            (
                "herald_notifications_failed",
                "Notifications given up after the last attempt on a connection",
                &metrics.notifications_failed,
            ),
        ];
        for (name, help, counter) in counters {
            metrics.registry.register(name, help, counter.clone());
        }
        let acks = Family::<AckLabels, Counter>::default();
        for outcome in AckOutcome::ALL {
            metrics.acks[outcome as usize] = acks.get_or_create(&AckLabels { outcome }).clone();
        }
        metrics.registry.register(
            "herald_acks",
            "Notification acknowledgements received, by outcome",
            acks,
        );
        metrics.registry.register(
            "herald_connection_tokens_rejected",
            "Connection tokens refused at connect, by reason",
            metrics.token_rejections.clone(),
        );
        metrics.registry.register(
            "herald_channel_reloads",
            "Channel sets read again from the settings file, by result (failed: the channels in force stay)",
            metrics.channel_reloads.clone(),
        );
        metrics.registry.register(
            "herald_connections_active",
            "WebSocket connections held by this replica",
            metrics.connections_active.clone(),
        );
        metrics.registry.register(
            "herald_delivery_latency_seconds",
            "Time from a notification's creation to its first push to a connection",
            metrics.delivery_latency.clone(),
        );
        metrics
    }
}

impl Metrics {
    pub fn count_ack(&self, outcome: AckOutcome) {
        self.acks[outcome as usize].inc();
    }

    pub fn count_token_rejection(&self, rejection: &TokenRejection) {
        self.token_rejections
            .get_or_create(&TokenRejectionLabels {
                reason: rejection.reason(),
            })
            .inc();
    }

    pub fn channel_reload(&self, ok: bool) {
        self.channel_reloads
            .get_or_create(&ReloadLabels {
                result: if ok { "ok" } else { "failed" },
            })
            .inc();
    }

    /// Acknowledgements counted with `outcome` so far.
    pub fn acks(&self, outcome: AckOutcome) -> u64 {
        self.acks[outcome as usize].get()
    }

    /// Records the time from a notification's creation to its first push to a connection.
    pub fn observe_delivery_latency(&self, millis: i64) {
        self.delivery_latency.observe(millis.max(0) as f64 / 1_000.0);
    }

    /// Every metric in the Prometheus text format, to be served as [`CONTENT_TYPE`];
    /// `connections_active` is read from the live sessions at that moment.
    pub fn render(&self, connections_active: usize) -> String {
        self.connections_active
            .set(i64::try_from(connections_active).unwrap_or(i64::MAX));
        let mut exposition = String::new();
        // Encoding into a String has no I/O that could fail.
        let _ = prometheus_text::encode(&mut exposition, &self.registry);
        exposition
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauge_and_a_cumulative_histogram() {
        let metrics = Metrics::default();
        metrics.connections_opened.inc_by(2);
        metrics.messages_delivered.inc_by(3);
        metrics.observe_delivery_latency(3);
        metrics.observe_delivery_latency(400);
        metrics.count_ack(AckOutcome::Duplicate);
        let text = metrics.render(7);
        assert!(text.contains("herald_acks_total{outcome=\"duplicate\"} 1\n"), "{text}");
        assert!(text.contains("# TYPE herald_connections_active gauge\n"), "{text}");
        assert!(text.contains("herald_connections_active 7\n"), "{text}");
        assert!(
            text.contains("# TYPE herald_connections_opened_total counter\n"),
            "{text}"
        );
        assert!(text.contains("herald_connections_opened_total 2\n"), "{text}");
        assert!(text.contains("herald_messages_delivered_total 3\n"), "{text}");
        assert!(
            text.contains("herald_delivery_latency_seconds_bucket{le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("herald_delivery_latency_seconds_bucket{le=\"0.5\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("herald_delivery_latency_seconds_bucket{le=\"+Inf\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("herald_delivery_latency_seconds_count 2\n"), "{text}");
        assert!(
            text.contains("# HELP herald_connections_opened_total WebSocket connections opened.\n"),
            "{text}"
        );
    }
}
