//! Notifications: the publish API for other domains (AC12, AC15, AC18, AC23, AC24), acknowledgement
//! (AC14), and the user's history and read state. Storing is the commit point: a publish answers
//! after the store commits and before any delivery, which happens on the bus.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use tokio_util::task::TaskTracker;
use tracing::{Instrument, instrument};
use uuid::Uuid;

use crate::app::catalog::LiveCatalog;
use crate::domain::UnixMs;
use crate::domain::link::LinkPolicy;
use crate::domain::notification::{FieldErrors, Notification, NotificationPayload, NotificationType, UnreadCount};
use crate::domain::preferences::Preferences;
use crate::domain::publish::{CreatedNotification, PublishBody, PublishReceipt, PublishRequest, SkippedRecipient};
use crate::domain::publisher::{Publisher, Publishers};
use crate::domain::rate::{GcraState, RateDecision, RateLimit};
use crate::error::{Error, Result};
use crate::ports::{
    BusEvent, Clock, EventBus, HistoryQuery, IdempotencyKey, NewNotification, NotificationStore, PreferenceVersions,
    PublishOutcome, UnreadCounts,
};
use crate::telemetry::trace;

use super::delivery::DeliveryService;
use super::metrics::{AckOutcome, Limit, Metrics};
use super::preferences::PreferenceService;

/// Idempotency keys are remembered this long.
pub const IDEMPOTENCY_TTL_MS: i64 = 24 * 60 * 60 * 1_000;
const DEFAULT_PAGE: u32 = 20;
const MAX_PAGE: u32 = 100;

/// Query parameters of `GET /notifications`, as received. They stay strings so that every bad one is
/// reported at once (400 `validation_failed` with `fields`) rather than by the query extractor.
/// Documented with their real types; every bad value is a 400 `validation_failed`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Items per page.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
    /// Only unread notifications.
    #[param(value_type = Option<bool>)]
    pub unread: Option<String>,
    /// Only notifications of this type.
    #[serde(rename = "type")]
    #[param(rename = "type", value_type = Option<NotificationType>)]
    pub kind: Option<String>,
    /// Only notifications of this channel.
    pub channel: Option<String>,
}

/// A page of `GET /notifications`: newest first, with the cursor of the next page (`null` on the
/// last) and the user's unread count.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPage {
    pub items: Vec<HistoryItem>,
    pub next_cursor: Option<String>,
    pub unread_count: u64,
}

/// One history item: the notification payload plus when it was read (`null` while unread).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryItem {
    #[serde(flatten)]
    pub notification: NotificationPayload,
    #[schema(value_type = Option<i64>, format = Int64)]
    pub read_at: Option<UnixMs>,
}

impl From<&Notification> for HistoryItem {
    fn from(n: &Notification) -> Self {
        Self {
            notification: n.payload(),
            read_at: n.read_at,
        }
    }
}

/// What the notification service works with; named fields because there are many.
pub struct NotificationService {
    pub store: Arc<dyn NotificationStore>,
    pub preferences: Arc<PreferenceService>,
    pub delivery: Arc<DeliveryService>,
    pub bus: Arc<dyn EventBus>,
    pub catalog: Arc<LiveCatalog>,
    pub publishers: Publishers,
    /// The origins `actionUrl` and `icon` may point to.
    pub links: LinkPolicy,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    /// The replica's tracked tasks: a drain waits for fan-outs still putting events on the bus.
    pub tasks: TaskTracker,
    /// Acknowledgements being written in the background at most ([`ACKS_IN_FLIGHT`]); past it an
    /// acknowledgement waits for its write (back-pressure on that session, not memory growth).
    pub acks_in_flight: Arc<tokio::sync::Semaphore>,
    /// Each publisher's notifications-per-second budget on this replica, by name.
    pub publisher_budgets: std::sync::Mutex<HashMap<String, GcraState>>,
}

/// Background acknowledgement writes at most.
pub const ACKS_IN_FLIGHT: usize = 4_096;

impl NotificationService {
    /// The publisher a presented key belongs to.
    pub fn authenticate(&self, key: &str) -> Result<Arc<Publisher>> {
        self.publishers
            .authenticate(key)
            .cloned()
            .ok_or(Error::InvalidPublisherKey)
    }

    /// Validates, applies preferences, stores in one transaction and answers; delivery follows on the
    /// bus (AC24). With an `Idempotency-Key`, a retry of the same request answers the first answer and
    /// stores nothing.
    #[instrument(skip_all, fields(publisher = %publisher.name, trace_id = tracing::field::Empty))]
    pub async fn publish(
        &self,
        publisher: &Publisher,
        body: PublishBody,
        idempotency_key: Option<&str>,
    ) -> Result<PublishReceipt> {
        // With traces on, this span is the trace's root: log lines within it name the trace.
        trace::record_trace_id(&tracing::Span::current());
        let now = self.clock.now_ms();
        let request = PublishRequest::parse(body, now, &self.links).map_err(Error::Validation)?;
        let content = &request.content;
        if !publisher.may_publish(content.kind) {
            return Err(Error::TypeNotAllowed {
                publisher: publisher.name.clone(),
                kind: content.kind.to_string(),
            });
        }
        let catalog = self.catalog.current();
        let channel = catalog
            .channel_of(content.kind)
            .ok_or_else(|| Error::invalid("notification.type", format!("`{}` belongs to no channel", content.kind)))?;
        if !publisher.may_publish_to(&channel.name) {
            return Err(Error::ForbiddenChannel(channel.name.clone()));
        }
        self.spend_budget(publisher, request.user_ids.len(), now)?;
        if let Some(named) = &content.channel {
            if named != &channel.name {
                return Err(Error::invalid(
                    "notification.channel",
                    format!("`{}` notifications belong to channel `{}`", content.kind, channel.name),
                ));
            }
        }
        let idempotency = match idempotency_key {
            Some(key) => Some(IdempotencyKey {
                publisher: publisher.name.clone(),
                key: validate_idempotency_key(key)?,
                request_hash: request.fingerprint(),
            }),
            None => None,
        };

        for attempt in 1..=PREFERENCE_READS {
            let read = self.preferences.for_users(&request.user_ids).await?;
            let (batch, receipt) = apply_preferences(&request, &channel.name, &read.found, now);
            // The last attempt is not checked: a recipient whose preferences keep changing must not
            // keep a publish from being stored. Its read, after `forget`, went to the database and
            // started after the publish arrived, as every read did before preferences were cached.
            let checked = if attempt < PREFERENCE_READS {
                read.versions
            } else {
                PreferenceVersions::default()
            };
            let outcome = self
                .store
                .publish_checked(&batch, idempotency.as_ref().map(|key| (key, &receipt)), now, &checked)
                .instrument(trace::store_span())
                .await?;
            return match outcome {
                PublishOutcome::Created(created, unread) => {
                    let skipped = receipt.skipped.len();
                    self.metrics.notifications_published.inc_by(created.len() as u64);
                    self.metrics.notifications_skipped.inc_by(skipped as u64);
                    // Per publish: a debug event (counted in /metrics), not an info line by default.
                    tracing::debug!(kind = %content.kind, created = created.len(), skipped, "notification:published");
                    self.fan_out(created, unread);
                    Ok(receipt)
                }
                PublishOutcome::Replayed(first) => {
                    tracing::info!("notification:publish-replayed (idempotency key)");
                    Ok(first)
                }
                PublishOutcome::KeyReused => Err(Error::IdempotencyKeyReused),
                PublishOutcome::PreferencesChanged => {
                    tracing::debug!(attempt, "notification:preferences-changed, reading them again");
                    self.preferences.forget(&request.user_ids);
                    continue;
                }
            };
        }
        Err(Error::Unavailable("the recipients' preferences kept changing".into()))
    }

    /// After the commit, in the background: the notifications and each recipient's new unread count
    /// (as the store counted it at the commit; counted here only if it could not) go on the bus as
    /// one event. A lost event costs latency, not the notification (replay and gap filling).
    fn fan_out(&self, created: Vec<crate::domain::notification::Notification>, unread: UnreadCounts) {
        let bus = self.bus.clone();
        let store = self.store.clone();
        let clock = self.clock.clone();
        // Taken here, inside the publish's span: the replicas that deliver continue its trace.
        let trace = trace::traceparent();
        let bus_span = trace::bus_span();
        let fan_out = async move {
            let users: BTreeSet<String> = created.iter().map(|n| n.user_id.clone()).collect();
            let (counted, uncounted): (Vec<String>, Vec<String>) =
                users.into_iter().partition(|user| unread.contains_key(user));
            let event = BusEvent::Published {
                notifications: created.into_iter().map(Arc::new).collect(),
                unread: counted
                    .into_iter()
                    .map(|user| {
                        let count = unread[&user];
                        (user, count)
                    })
                    .collect(),
                trace,
            };
            if let Err(err) = bus.publish(event).await {
                tracing::warn!(error = %err, "bus: publish event lost, replay will deliver it");
            }
            for user_id in uncounted {
                announce_unread(&*store, &*bus, &*clock, &user_id).await;
            }
        };
        self.tasks.spawn(fan_out.instrument(bus_span));
    }

    pub async fn unread_count(&self, user_id: &str) -> Result<UnreadCount> {
        self.store.unread_count(user_id, self.clock.now_ms()).await
    }

    /// Counts `recipients` notifications against `publisher`'s budget on this replica; refused as a
    /// whole (429 with the time to wait) when they do not fit. Per replica, in memory: a check costs
    /// no round trip on the publish path, and the whole cluster allows the budget times the
    /// replicas.
    fn spend_budget(&self, publisher: &Publisher, recipients: usize, now: UnixMs) -> Result<()> {
        let limit = RateLimit::per_second(publisher.notifications_per_second);
        let cost = u32::try_from(recipients).unwrap_or(u32::MAX);
        let mut budgets = self
            .publisher_budgets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let budget = match budgets.get_mut(&publisher.name) {
            Some(budget) => budget,
            None => budgets.entry(publisher.name.clone()).or_default(),
        };
        match budget.check_n(limit, now, cost) {
            RateDecision::Allowed => Ok(()),
            RateDecision::Limited { retry_after_ms } => {
                self.metrics.count_rate_limited(Limit::Publish);
                tracing::info!(publisher = %publisher.name, recipients, retry_after_ms, "notification:publisher-rate-limited");
                Err(Error::RateLimited { retry_after_ms })
            }
        }
    }

    /// The client received `id` (AC14): recorded once, for its owner only. An acknowledgement of
    /// what this replica awaits is [`NotificationService::acknowledge_awaited`]; anything else is
    /// [`NotificationService::acknowledge_stored`].
    pub async fn acknowledge(&self, user_id: &str, id: Uuid) -> Result<()> {
        if self.acknowledge_awaited(user_id, id).await {
            return Ok(());
        }
        self.acknowledge_stored(user_id, id).await
    }

    /// Acknowledges `id` if this replica sent it to `user_id` and awaits the acknowledgement: answered
    /// at once and written in the background (group-committed with others), so the session does not
    /// wait for a commit per ack. If that write were lost, the notification would only be replayed on
    /// the next connect, which the client dedupes by id. `false` when `id` was not awaited here.
    pub async fn acknowledge_awaited(&self, user_id: &str, id: Uuid) -> bool {
        // Delivery rounds of `id` not written yet ride on the acknowledgement's write.
        let Some(attempts) = self.delivery.acknowledged(user_id, id).await else {
            return false;
        };
        self.metrics.count_ack(AckOutcome::Awaited);
        let now = self.clock.now_ms();
        let Ok(permit) = self.acks_in_flight.clone().try_acquire_owned() else {
            if let Err(err) = self.store.mark_delivered(user_id, id, now, attempts).await {
                tracing::warn!(user_id, notification_id = %id, error = %err, "notification:ack-not-recorded, it will be replayed");
            }
            return true;
        };
        let store = self.store.clone();
        let user_id = user_id.to_owned();
        self.tasks.spawn(async move {
            if let Err(err) = store.mark_delivered(&user_id, id, now, attempts).await {
                tracing::warn!(user_id, notification_id = %id, error = %err, "notification:ack-not-recorded, it will be replayed");
            }
            drop(permit);
        });
        true
    }

    /// Acknowledges `id`, not awaited here (sent by an earlier connection or another replica, or
    /// acknowledged already), against the store: one read, and a write only the first time. Someone
    /// else's or an unknown id is "not found".
    pub async fn acknowledge_stored(&self, user_id: &str, id: Uuid) -> Result<()> {
        match self.store.get(user_id, id).await? {
            None => {
                self.metrics.count_ack(AckOutcome::Unknown);
                Err(Error::NotificationNotFound)
            }
            Some(stored) if stored.delivered_at.is_some() => {
                self.metrics.count_ack(AckOutcome::Duplicate);
                Ok(())
            }
            Some(_) => {
                self.store.mark_delivered(user_id, id, self.clock.now_ms(), 0).await?;
                self.metrics.count_ack(AckOutcome::Recorded);
                Ok(())
            }
        }
    }

    /// Waits for the acknowledgements and fan-outs still being written (a drain does the same
    /// through the replica's task tracker).
    #[cfg(test)]
    pub async fn settle(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.tasks.reopen();
    }

    /// A page of history, newest first, with the cursor of the next page and the unread count.
    pub async fn history(&self, user_id: &str, params: &HistoryParams) -> Result<HistoryPage> {
        let now = self.clock.now_ms();
        let query = self.history_query(params)?;
        let mut items = self
            .store
            .list(
                user_id,
                &HistoryQuery {
                    limit: query.limit + 1,
                    ..query.clone()
                },
                now,
            )
            .await?;
        let next_cursor = if items.len() > query.limit as usize {
            items.truncate(query.limit as usize);
            items.last().map(|n| encode_cursor(n.seq))
        } else {
            None
        };
        Ok(HistoryPage {
            items: items.iter().map(HistoryItem::from).collect(),
            next_cursor,
            unread_count: self.unread_count(user_id).await?.count,
        })
    }

    fn history_query(&self, params: &HistoryParams) -> Result<HistoryQuery> {
        let mut errors = FieldErrors::new();
        let limit = match params.limit.as_deref() {
            None => DEFAULT_PAGE,
            Some(text) => match text.parse::<u32>() {
                Ok(limit) if (1..=MAX_PAGE).contains(&limit) => limit,
                _ => {
                    errors.insert("limit".into(), format!("an integer from 1 to {MAX_PAGE}"));
                    DEFAULT_PAGE
                }
            },
        };
        let before_seq = match params.cursor.as_deref().filter(|c| !c.is_empty()) {
            None => None,
            Some(cursor) => decode_cursor(cursor).or_else(|| {
                errors.insert("cursor".into(), "not a cursor this API returned".into());
                None
            }),
        };
        let unread_only = match params.unread.as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                errors.insert("unread".into(), "true or false".into());
                false
            }
        };
        let kind = params.kind.as_deref().and_then(|name| {
            NotificationType::parse(name).or_else(|| {
                errors.insert("type".into(), "unknown notification type".into());
                None
            })
        });
        if let Some(channel) = &params.channel {
            if self.catalog.current().get(channel).is_none() {
                errors.insert("channel".into(), "unknown channel".into());
            }
        }
        if !errors.is_empty() {
            return Err(Error::Validation(errors));
        }
        Ok(HistoryQuery {
            limit,
            before_seq,
            unread_only,
            kind,
            channel: params.channel.clone(),
        })
    }

    /// Marks one notification read; someone else's is "not found" (404), never "forbidden".
    pub async fn mark_read(&self, user_id: &str, id: Uuid) -> Result<()> {
        if !self.store.mark_read(user_id, id, self.clock.now_ms()).await? {
            return Err(Error::NotificationNotFound);
        }
        self.unread_changed(user_id).await;
        Ok(())
    }

    pub async fn mark_all_read(&self, user_id: &str) -> Result<u64> {
        let updated = self.store.mark_all_read(user_id, self.clock.now_ms()).await?;
        self.unread_changed(user_id).await;
        Ok(updated)
    }

    pub async fn delete(&self, user_id: &str, id: Uuid) -> Result<()> {
        if !self.store.delete(user_id, id).await? {
            return Err(Error::NotificationNotFound);
        }
        self.delivery.acknowledged(user_id, id).await;
        self.unread_changed(user_id).await;
        Ok(())
    }

    async fn unread_changed(&self, user_id: &str) {
        announce_unread(&*self.store, &*self.bus, &*self.clock, user_id).await;
    }

    /// Deletes what is past retention or expired, and old idempotency keys.
    pub async fn purge(&self) -> Result<u64> {
        let retention: Vec<(String, i64)> = self
            .catalog
            .current()
            .channels()
            .iter()
            .map(|c| (c.name.clone(), c.retention_ms))
            .collect();
        let deleted = self
            .store
            .purge(
                self.clock.now_ms(),
                &retention,
                self.catalog.current().max_retention_ms(),
                IDEMPOTENCY_TTL_MS,
            )
            .await?;
        if deleted > 0 {
            tracing::info!(deleted, "notification:purged");
        }
        Ok(deleted)
    }
}

/// How many times a publish reads its recipients' preferences at most: a read a cache answered may
/// be refused at the commit (another replica changed them), and the next read goes to the database.
const PREFERENCE_READS: u32 = 3;

/// The notifications `request` stores (one per recipient whose preferences let it through, with a
/// fresh time-ordered id) and the receipt it answers.
fn apply_preferences(
    request: &PublishRequest,
    channel: &str,
    preferences: &HashMap<String, Preferences>,
    now: UnixMs,
) -> (Vec<NewNotification>, PublishReceipt) {
    let content = &request.content;
    let mut batch = Vec::with_capacity(request.user_ids.len());
    let mut skipped = Vec::new();
    for user_id in request.user_ids.iter().cloned() {
        let decision = preferences
            .get(&user_id)
            .map_or(Ok(()), |p| p.in_app_decision(content.kind, channel));
        match decision {
            Ok(()) => batch.push(NewNotification {
                // Time-ordered (v7): each insert lands at the end of the primary-key index, one
                // page for a whole batch, where random ids each dirtied a page of their own.
                id: Uuid::now_v7(),
                user_id,
                kind: content.kind,
                channel: channel.to_owned(),
                title: content.title.clone(),
                body: content.body.clone(),
                icon: content.icon.clone(),
                action_url: content.action_url.clone(),
                data: content.data.clone(),
                created_at: now,
                expires_at: content.expires_at,
            }),
            Err(reason) => skipped.push(SkippedRecipient { user_id, reason }),
        }
    }
    let receipt = PublishReceipt {
        created: batch
            .iter()
            .map(|n| CreatedNotification {
                user_id: n.user_id.clone(),
                id: n.id,
            })
            .collect(),
        skipped,
    };
    (batch, receipt)
}

/// Publishes `user_id`'s unread count on the bus; failures only delay the badge.
async fn announce_unread(store: &dyn NotificationStore, bus: &dyn EventBus, clock: &dyn Clock, user_id: &str) {
    let outcome = async {
        let count = store.unread_count(user_id, clock.now_ms()).await?;
        bus.publish(BusEvent::UnreadCount {
            user_id: user_id.to_owned(),
            count,
        })
        .await
    }
    .await;
    if let Err(err) = outcome {
        tracing::warn!(user_id, error = %err, "unread count not announced");
    }
}

fn validate_idempotency_key(key: &str) -> Result<String> {
    let key = key.trim();
    if key.is_empty() || key.len() > 255 || key.chars().any(|c| c.is_control()) {
        return Err(Error::invalid("Idempotency-Key", "1-255 printable characters"));
    }
    Ok(key.to_owned())
}

fn encode_cursor(seq: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("seq:{seq}"))
}

fn decode_cursor(cursor: &str) -> Option<i64> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    std::str::from_utf8(&bytes).ok()?.strip_prefix("seq:")?.parse().ok()
}

#[cfg(test)]
mod tests;
