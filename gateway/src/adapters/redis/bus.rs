use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::{Redis, unavailable};
use crate::app::metrics::{Backend, BackendMetrics};
use crate::domain::notification::{Notification, UnreadCount};
use crate::error::Result;
use crate::ports::{BusEvent, EventBus};

/// Redis pub/sub between replicas. Pub/sub is at most once: while a replica is disconnected it misses
/// events, so every (re)subscription emits [`BusEvent::Resync`] and delivery catches up from
/// PostgreSQL, the source of truth.
pub struct RedisEventBus {
    redis: Redis,
    channel: String,
    local: broadcast::Sender<BusEvent>,
}

/// An event as it travels through Redis. `N` is `&Notification` when publishing (serialized from the
/// event's own notifications, not copies of them) and `Notification` when receiving.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Wire<N> {
    Published {
        notifications: Vec<N>,
        unread: Vec<(String, u64)>,
        /// The version of each count of `unread`, in its order. Beside the counts rather than in
        /// them so that replicas of different versions read each other's events during a rolling
        /// upgrade (an event without versions reads as versions not known: 0).
        #[serde(default)]
        versions: Vec<u64>,
        /// The publish's W3C `traceparent` when traces are on (absent otherwise, and from replicas
        /// of earlier versions).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace: Option<String>,
    },
    UnreadCount {
        user_id: String,
        count: u64,
        #[serde(default)]
        version: u64,
    },
    SubscriptionsChanged {
        user_id: String,
    },
    TokensRevoked {
        user_id: String,
    },
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl RedisEventBus {
    /// Subscribes (waiting up to `ready_within` for the first subscription) and keeps the
    /// subscription alive, reconnecting with backoff, for as long as the process runs.
    pub async fn start(redis: Redis, ready_within: Duration) -> Arc<Self> {
        let channel = redis.key(&["events"]);
        let (local, _) = broadcast::channel(4_096);
        let bus = Arc::new(Self {
            redis: redis.clone(),
            channel: channel.clone(),
            local: local.clone(),
        });
        let (ready, subscribed) = tokio::sync::oneshot::channel();
        tokio::spawn(listen(
            redis.client.clone(),
            channel,
            local,
            ready,
            redis.metrics.clone(),
        ));
        if tokio::time::timeout(ready_within, subscribed).await.is_err() {
            tracing::warn!("bus: Redis not subscribed yet; retrying in the background");
        }
        bus
    }
}

async fn listen(
    client: redis::Client,
    channel: String,
    local: broadcast::Sender<BusEvent>,
    ready: tokio::sync::oneshot::Sender<()>,
    metrics: BackendMetrics,
) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = std::time::Instant::now();
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        }
        .await;
        metrics.observe(Backend::Redis, "subscribe", started.elapsed(), subscribed.is_ok());
        match subscribed {
            Ok(mut pubsub) => {
                backoff = Duration::from_millis(100);
                tracing::info!(channel, "bus:subscribed");
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
                // Whatever was published while we were not listening is recovered from the store.
                let _ = local.send(BusEvent::Resync);
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    let Ok(payload) = message.get_payload::<String>() else {
                        continue;
                    };
                    match serde_json::from_str::<Wire<Notification>>(&payload) {
                        Ok(Wire::Published {
                            notifications,
                            unread,
                            versions,
                            trace,
                        }) => {
                            let notifications = notifications.into_iter().map(Arc::new).collect();
                            let versions = versions.into_iter().chain(std::iter::repeat(0));
                            let unread = unread
                                .into_iter()
                                .zip(versions)
                                .map(|((user_id, count), version)| (user_id, UnreadCount { count, version }))
                                .collect();
                            let trace = trace.map(Arc::from);
                            let _ = local.send(BusEvent::Published {
                                notifications,
                                unread,
                                trace,
                            });
                        }
                        Ok(Wire::UnreadCount {
                            user_id,
                            count,
                            version,
                        }) => {
                            let count = UnreadCount { count, version };
                            let _ = local.send(BusEvent::UnreadCount { user_id, count });
                        }
                        Ok(Wire::SubscriptionsChanged { user_id }) => {
                            let _ = local.send(BusEvent::SubscriptionsChanged { user_id });
                        }
                        Ok(Wire::TokensRevoked { user_id }) => {
                            let _ = local.send(BusEvent::TokensRevoked { user_id });
                        }
                        Err(err) => tracing::warn!(error = %err, "bus: unreadable event ignored"),
                    }
                }
                // The subscription was lost: counted as a failed subscription, beside the commands.
                metrics.failed(Backend::Redis, "subscribe");
                tracing::warn!(channel, "bus:disconnected, reconnecting");
            }
            Err(err) => tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "bus: cannot subscribe"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[async_trait]
impl EventBus for RedisEventBus {
    async fn publish(&self, event: BusEvent) -> Result<()> {
        let wire: Wire<&Notification> = match &event {
            BusEvent::Published {
                notifications,
                unread,
                trace,
            } => Wire::Published {
                notifications: notifications.iter().map(|n| &**n).collect(),
                unread: unread.iter().map(|(user_id, c)| (user_id.clone(), c.count)).collect(),
                versions: unread.iter().map(|(_, c)| c.version).collect(),
                trace: trace.as_deref().map(str::to_owned),
            },
            BusEvent::UnreadCount { user_id, count } => Wire::UnreadCount {
                user_id: user_id.clone(),
                count: count.count,
                version: count.version,
            },
            BusEvent::SubscriptionsChanged { user_id } => Wire::SubscriptionsChanged {
                user_id: user_id.clone(),
            },
            BusEvent::TokensRevoked { user_id } => Wire::TokensRevoked {
                user_id: user_id.clone(),
            },
            BusEvent::Resync => return Ok(()),
        };
        let payload = serde_json::to_string(&wire).map_err(crate::error::Error::backend)?;
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(payload)
            .query_async(&mut self.redis.connection())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.local.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::conformance;

    #[tokio::test]
    async fn conforms_to_event_bus() {
        let Some(redis) = super::super::test_redis().await else {
            return;
        };
        let bus = RedisEventBus::start(redis, Duration::from_secs(5)).await;
        conformance::event_bus(&*bus).await;
    }

    /// During a rolling upgrade replicas of both kinds share the bus: each reads the other's events.
    #[test]
    fn events_without_count_versions_read_as_versions_not_known_and_older_replicas_read_ours() {
        let old = r#"{"kind":"published","notifications":[],"unread":[["alice",3]]}"#;
        match serde_json::from_str::<Wire<Notification>>(old) {
            Ok(Wire::Published { unread, versions, .. }) => {
                assert_eq!(unread, [("alice".to_owned(), 3)]);
                assert!(versions.is_empty(), "read as 0 when passed on");
            }
            _ => panic!("an old publish event reads"),
        }
        let old = r#"{"kind":"unread_count","user_id":"alice","count":2}"#;
        assert!(matches!(
            serde_json::from_str::<Wire<Notification>>(old),
            Ok(Wire::UnreadCount {
                count: 2,
                version: 0,
                ..
            })
        ));

        /// What a replica before versions reads: unknown fields are ignored.
        #[derive(Deserialize)]
        #[serde(tag = "kind", rename_all = "snake_case")]
        enum OldWire {
            Published { unread: Vec<(String, u64)> },
            UnreadCount { user_id: String, count: u64 },
        }
        let ours: Wire<&Notification> = Wire::Published {
            notifications: Vec::new(),
            unread: vec![("alice".into(), 3)],
            versions: vec![9],
            trace: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        };
        let read: OldWire = serde_json::from_str(&serde_json::to_string(&ours).expect("json")).expect("old reads ours");
        assert!(matches!(read, OldWire::Published { unread } if unread == [("alice".to_owned(), 3)]));
        let ours: Wire<&Notification> = Wire::UnreadCount {
            user_id: "alice".into(),
            count: 2,
            version: 9,
        };
        let read: OldWire = serde_json::from_str(&serde_json::to_string(&ours).expect("json")).expect("old reads ours");
        assert!(matches!(read, OldWire::UnreadCount { user_id, count: 2 } if user_id == "alice"));
    }
}
