//! What the replica holds at the moment of a scrape, read then rather than counted as it changes:
//! the connections (in all, and per user), the outbound queues, the signing keys in force. Counting
//! these as they change would put a shared update on every connect, push and write; a scrape every
//! few seconds reads them once.

use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::app::sessions::SessionStats;

/// Upper bounds of the connections-per-user buckets; the per-user cap is 5 by default.
const PER_USER_BUCKETS: [f64; 7] = [1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0];

/// What a scrape reports of the moment it is taken.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub sessions: SessionStats,
    /// Each signing key in force by kid, and whether it is the one signing new tokens.
    pub signing_keys: Vec<(String, bool)>,
}

/// The collector: holds the snapshot the scrape in progress set (see `Metrics::render`).
#[derive(Debug, Default)]
pub struct Live(Mutex<Snapshot>);

impl Live {
    pub(super) fn set(&self, now: Snapshot) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = now;
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    kid: String,
    /// `true` for the key that signs new tokens; the others only verify tokens already issued.
    active: &'static str,
}

/// Per-bucket (not cumulative) counts of `values` under `bounds`, as the encoder takes them, ending
/// with the `+Inf` bucket (values over the last bound); `histogram_quantile` needs it.
fn buckets(values: &[usize], bounds: &[f64]) -> Vec<(f64, u64)> {
    let mut counts = vec![0u64; bounds.len() + 1];
    for value in values {
        let i = bounds
            .iter()
            .position(|bound| *value as f64 <= *bound)
            .unwrap_or(bounds.len());
        counts[i] += 1;
    }
    bounds.iter().copied().chain([f64::INFINITY]).zip(counts).collect()
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: usize) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(metric)
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let per_user = &now.sessions.connections_per_user;
        let connections: usize = per_user.iter().sum();
        gauge(
            &mut encoder,
            "herald_connections_active",
            "WebSocket connections held by this replica",
            connections,
        )?;
        // A histogram of this moment (it can go down between scrapes): read it with
        // histogram_quantile on the buckets directly, not on their rate.
        let mut metric = encoder.encode_descriptor(
            "herald_connections_per_user",
            "Connections each connected user holds on this replica, at the moment of the scrape",
            None,
            MetricType::Histogram,
        )?;
        metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            connections as f64,
            per_user.len() as u64,
            &buckets(per_user, &PER_USER_BUCKETS),
            None,
        )?;
        gauge(
            &mut encoder,
            "herald_outbound_queued_frames",
            "Frames waiting in the outbound queues of every session of this replica",
            now.sessions.queued_frames,
        )?;
        gauge(
            &mut encoder,
            "herald_outbound_queue_longest_frames",
            "Frames waiting in the longest outbound queue of this replica (a full one closes its session as a slow consumer)",
            now.sessions.most_queued_frames,
        )?;
        let mut family = encoder.encode_descriptor(
            "herald_signing_keys",
            "Connection-token signing keys in force, by kid (active: the one signing new tokens)",
            None,
            MetricType::Gauge,
        )?;
        for (kid, active) in &now.signing_keys {
            let labels = KeyLabels {
                kid: kid.clone(),
                active: if *active { "true" } else { "false" },
            };
            ConstGauge::new(1i64).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_fall_in_the_first_bucket_that_holds_them() {
        assert_eq!(
            buckets(&[1, 1, 2, 4, 60], &[1.0, 2.0, 5.0]),
            [(1.0, 2), (2.0, 1), (5.0, 1), (f64::INFINITY, 1)],
            "60 is over every bound: only +Inf counts it"
        );
    }
}
