//! The gateway's Prometheus metrics (`GET /metrics`): the plan's CloudWatch set (section 12) as
//! counters, a gauge and a latency histogram, and what a platform team needs on day two: refusals
//! and closes by reason, rate limits, replay sizes, the backends' latency and failures
//! ([`backend`]), and what the sessions hold at the moment of the scrape ([`live`]). Kept and
//! encoded by `prometheus-client` in the classic text format. Recording is an atomic add: it never
//! blocks a hot path. Every label comes from a fixed set (never a user id).

mod backend;
mod live;

pub use backend::{Backend, BackendMetrics};
pub use live::Snapshot;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

/// Which rate limit refused something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// WebSocket connects per client IP.
    Connect,
    /// Client messages per connection (the connection is closed with 4002).
    Messages,
    /// Subscription changes per connection (answered with an error, not closed).
    Subscriptions,
    /// Publishes per publisher key.
    Publish,
    /// Connection tokens issued per user.
    Tokens,
}

impl Limit {
    const ALL: [Limit; 5] = [
        Limit::Connect,
        Limit::Messages,
        Limit::Subscriptions,
        Limit::Publish,
        Limit::Tokens,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Limit::Connect => "connect",
            Limit::Messages => "messages",
            Limit::Subscriptions => "subscriptions",
            Limit::Publish => "publish",
            Limit::Tokens => "tokens",
        }
    }
}

/// Upper bounds of the replay-size buckets (notifications sent to a connection as it starts).
const REPLAY_BUCKETS: [f64; 10] = [0.0, 1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1_000.0, 5_000.0, 10_000.0];

pub struct Metrics {
    registry: Registry,
    /// One counter per [`AckOutcome`] (in declaration order), taken from their family once: an ack
    /// is counted without the family's lookup.
    acks: [Counter; 4],
    /// Connection tokens refused at connect, by [`TokenRejection::reason`]: an `unknown_key` rate
    /// during a rotation means the key set reached this replica too late.
    token_rejections: Family<ReasonLabels, Counter>,
    /// Channel reloads from the settings file, by `result` (`ok`, `failed`).
    channel_reloads: Family<ReloadLabels, Counter>,
    pub connections_opened: Counter,
    /// Connections the public listener holds at most (`HERALD_MAX_CONNECTIONS`): what an alert
    /// compares `herald_connections_active` with.
    connections_max: prometheus_client::metrics::gauge::Gauge,
    /// Connection attempts refused before the upgrade, by the error code the client was given.
    connections_rejected: Family<ReasonLabels, Counter>,
    /// Sessions ended, by the close code's name (`close_code::name`) or how the client left.
    connections_closed: Family<ReasonLabels, Counter>,
    rate_limited: Family<LimitLabels, Counter>,
    /// Notifications sent to each connection as it started (its first window of the backlog).
    replay: Histogram,
    /// Connections whose backlog outgrew their first window: the rest is paged in as they ack.
    replays_backlogged: Counter,
    backend: BackendMetrics,
    live: std::sync::Arc<live::Live>,
    /// TCP connections closed at once because the replica held its maximum.
    pub connections_over_capacity: Counter,
    pub notifications_published: Counter,
    pub notifications_skipped: Counter,
    /// One per notification pushed to one connection (first push, replay, gap fill or retry).
    pub messages_delivered: Counter,
    pub messages_retried: Counter,
    pub notifications_failed: Counter,
    /// Notifications that reached a connection's delivery ahead of their turn and waited there for
    /// the ones before them (see `delivery::GAP_WAIT`).
    pub notifications_held: Counter,
    /// Gaps in a connection's sequence read from the store: events lost on the way, later than the
    /// wait, or more early ones than a window holds.
    pub gaps_read: Counter,
    /// Bus events this replica fell too far behind to read; each time, every connection here
    /// caught up from the store.
    pub bus_events_missed: Counter,
    delivery_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Self {
            registry: Registry::default(),
            acks: Default::default(),
            token_rejections: Family::default(),
            channel_reloads: Family::default(),
            connections_opened: Counter::default(),
            connections_max: Default::default(),
            connections_rejected: Family::default(),
            connections_closed: Family::default(),
            rate_limited: Family::default(),
            replay: Histogram::new(REPLAY_BUCKETS),
            replays_backlogged: Counter::default(),
            backend: BackendMetrics::default(),
            live: std::sync::Arc::default(),
            connections_over_capacity: Counter::default(),
            notifications_published: Counter::default(),
            notifications_skipped: Counter::default(),
            messages_delivered: Counter::default(),
            messages_retried: Counter::default(),
            notifications_failed: Counter::default(),
            notifications_held: Counter::default(),
            gaps_read: Counter::default(),
            bus_events_missed: Counter::default(),
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
                "herald_replays_backlogged",
                "Connections whose backlog outgrew the delivery window at start (the rest is paged in as they acknowledge)",
                &metrics.replays_backlogged,
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
            (
                "herald_notifications_held",
                "Notifications that reached a connection ahead of their turn and waited for the ones before them",
                &metrics.notifications_held,
            ),
            (
                "herald_delivery_gaps_read",
                "Gaps in a connection's sequence read from the store (events lost, too late, or too many early)",
                &metrics.gaps_read,
            ),
            (
                "herald_bus_events_missed",
                "Bus events this replica fell too far behind to read (every connection here then caught up from the store)",
                &metrics.bus_events_missed,
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
        let by_reason = [
            (
                "herald_connection_tokens_rejected",
                "Connection tokens refused at connect, by reason",
                &metrics.token_rejections,
            ),
            (
                "herald_connections_rejected",
                "Connection attempts refused before the upgrade, by reason (the error code the client got)",
                &metrics.connections_rejected,
            ),
            (
                "herald_connections_closed",
                "WebSocket sessions ended, by reason (the close code's name, or client_closed, connection_lost)",
                &metrics.connections_closed,
            ),
        ];
        for (name, help, family) in by_reason {
            metrics.registry.register(name, help, family.clone());
        }
        metrics.registry.register(
            "herald_channel_reloads",
            "Channel sets read again from the settings file, by result (failed: the channels in force stay)",
            metrics.channel_reloads.clone(),
        );
        metrics.registry.register(
            "herald_rate_limited",
            "Requests refused by a rate limit, by limit (connect, messages, subscriptions, publish, tokens)",
            metrics.rate_limited.clone(),
        );
        metrics.registry.register(
            "herald_replay_notifications",
            "Notifications replayed to a connection as it started (at most one delivery window)",
            metrics.replay.clone(),
        );
        metrics.registry.register(
            "herald_connections_max",
            "Connections the public listener holds at most (HERALD_MAX_CONNECTIONS); past it new ones are closed at once",
            metrics.connections_max.clone(),
        );
        metrics.backend.register(&mut metrics.registry);
        metrics.start_at_zero();
        metrics.registry.register_collector(Box::new(metrics.live.clone()));
        metrics.registry.register(
            "herald_delivery_latency_seconds",
            "Time from a notification's creation to its first push to a connection",
            metrics.delivery_latency.clone(),
        );
        metrics
    }
}

/// How a session can end without a close frame (see `ws::session`), beside the close codes' names.
pub const SILENT_ENDINGS: [&str; 3] = ["client_closed", "client_gone", "connection_lost"];

/// The refusals of a connect counted from the start (at 0), so that their series exist before the
/// first one: the connect checks' error codes, and the upgrade's own refusals.
const CONNECT_REFUSALS: [&str; 10] = [
    "token_invalid",
    "token_expired",
    "token_revoked",
    "token_used",
    "rate_limited",
    "too_many_connections",
    "duplicate_connection",
    "websocket_disabled",
    "origin_not_allowed",
    "draining",
];

impl Metrics {
    /// Creates every series of a fixed label set at 0: a series that appears only with its first
    /// event cannot be told from one nobody exports, and a `rate()` over it starts one scrape late.
    fn start_at_zero(&self) {
        for reason in TokenRejection::REASONS {
            let _ = self.token_rejections.get_or_create(&ReasonLabels { reason });
        }
        for reason in CONNECT_REFUSALS {
            let _ = self.connections_rejected.get_or_create(&ReasonLabels { reason });
        }
        let close_names = crate::domain::protocol::close_code::ALL.map(crate::domain::protocol::close_code::name);
        for reason in close_names.into_iter().chain(SILENT_ENDINGS) {
            let _ = self.connections_closed.get_or_create(&ReasonLabels { reason });
        }
        for limit in Limit::ALL {
            let _ = self.rate_limited.get_or_create(&LimitLabels { limit: limit.as_str() });
        }
        for result in ["ok", "failed"] {
            let _ = self.channel_reloads.get_or_create(&ReloadLabels { result });
        }
    }

    pub fn count_ack(&self, outcome: AckOutcome) {
        self.acks[outcome as usize].inc();
    }

    pub fn count_token_rejection(&self, rejection: &TokenRejection) {
        self.token_rejections
            .get_or_create(&ReasonLabels {
                reason: rejection.reason(),
            })
            .inc();
    }

    pub fn set_connection_limit(&self, max_connections: usize) {
        self.connections_max
            .set(i64::try_from(max_connections).unwrap_or(i64::MAX));
    }

    /// A connection attempt refused before the upgrade; `reason` is the error code it was given.
    pub fn count_rejection(&self, reason: &'static str) {
        self.connections_rejected.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// A session ended; `reason` comes from a fixed set (see `herald_connections_closed`).
    pub fn count_close(&self, reason: &'static str) {
        self.connections_closed.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn count_rate_limited(&self, limit: Limit) {
        self.rate_limited
            .get_or_create(&LimitLabels { limit: limit.as_str() })
            .inc();
    }

    /// A connection started with `replayed` notifications sent; `backlogged` when more wait.
    pub fn observe_replay(&self, replayed: usize, backlogged: bool) {
        self.replay.observe(replayed as f64);
        if backlogged {
            self.replays_backlogged.inc();
        }
    }

    /// The handle the backends' adapters record into.
    pub fn backend(&self) -> BackendMetrics {
        self.backend.clone()
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

    /// Every metric in the Prometheus text format, to be served as [`CONTENT_TYPE`]; what the
    /// sessions and key set hold is taken from `now`, read at that moment.
    pub fn render(&self, now: Snapshot) -> String {
        self.live.set(now);
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
        let text = metrics.render(live::Snapshot {
            sessions: crate::app::sessions::SessionStats {
                connections_per_user: vec![1, 1, 5],
                ..Default::default()
            },
            signing_keys: Vec::new(),
        });
        assert!(text.contains("herald_acks_total{outcome=\"duplicate\"} 1\n"), "{text}");
        assert!(text.contains("# TYPE herald_connections_active gauge\n"), "{text}");
        assert!(text.contains("herald_connections_active 7\n"), "{text}");
        assert!(
            text.contains("herald_connections_per_user_bucket{le=\"1\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("herald_connections_per_user_bucket{le=\"5\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("herald_connections_per_user_count 3\n"), "{text}");
        assert!(
            text.contains("herald_connections_per_user_bucket{le=\"+Inf\"} 3\n"),
            "histogram_quantile needs the +Inf bucket: {text}"
        );
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

    #[test]
    fn refusals_closes_limits_replays_backends_queues_and_keys_are_labelled_by_fixed_names() {
        let metrics = Metrics::default();
        metrics.count_rejection("token_expired");
        metrics.count_close("slow_consumer");
        metrics.count_close("slow_consumer");
        metrics.count_rate_limited(Limit::Publish);
        metrics.set_connection_limit(20_000);
        metrics.observe_replay(0, false);
        metrics.observe_replay(64, true);
        let backend = metrics.backend();
        backend.observe(Backend::Redis, "spublish", std::time::Duration::from_micros(300), true);
        backend.observe(Backend::Postgres, "commit", std::time::Duration::from_millis(30), false);
        let text = metrics.render(live::Snapshot {
            sessions: crate::app::sessions::SessionStats {
                connections_per_user: vec![2],
                queued_frames: 9,
                most_queued_frames: 6,
            },
            signing_keys: vec![("k2".into(), true), ("k1".into(), false)],
        });
        for line in [
            "herald_connections_rejected_total{reason=\"token_expired\"} 1",
            "herald_connections_closed_total{reason=\"slow_consumer\"} 2",
            "herald_rate_limited_total{limit=\"publish\"} 1",
            "herald_replay_notifications_bucket{le=\"0\"} 1",
            "herald_replay_notifications_bucket{le=\"100\"} 2",
            "herald_replays_backlogged_total 1",
            "herald_backend_request_duration_seconds_bucket{backend=\"redis\",operation=\"spublish\",le=\"0.0005\"} 1",
            "herald_backend_request_duration_seconds_count{backend=\"postgres\",operation=\"commit\"} 1",
            "herald_backend_errors_total{backend=\"postgres\",operation=\"commit\"} 1",
            "herald_outbound_queued_frames 9",
            "herald_connections_max 20000",
            "herald_outbound_queue_longest_frames 6",
            "herald_signing_keys{kid=\"k2\",active=\"true\"} 1",
            "herald_signing_keys{kid=\"k1\",active=\"false\"} 1",
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line} missing from:\n{text}");
        }
        assert!(
            !text.contains("herald_backend_errors_total{backend=\"redis\""),
            "no error series for a backend that has not failed: {text}"
        );
    }
}
