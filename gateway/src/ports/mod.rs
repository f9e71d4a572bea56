//! The traits services depend on. Each takes and returns domain types; adapters in `adapters/`
//! implement them (memory and SQLite for the embedded default, PostgreSQL and Redis for cluster
//! mode), and every adapter of a port must pass the same conformance tests (`ports::conformance`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use crate::domain::UnixMs;
use crate::domain::connection::ConnectionRecord;
use crate::domain::notification::{Notification, NotificationType, UnreadCount};
use crate::domain::preferences::Preferences;
use crate::domain::publish::PublishReceipt;
use crate::domain::rate::{RateDecision, RateLimit};
use crate::domain::user::AuthenticatedUser;
use crate::error::Result;

#[cfg(test)]
pub mod conformance;

/// The time source. Services never read the system clock directly so that tests can move time.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> UnixMs;
}

/// Single-use claims and per-user revocation of connection tokens (plan: WebSocketConnectionTokens).
#[async_trait]
pub trait TokenLedger: Send + Sync {
    /// Atomically marks `token_id` used. `true` for the first caller only, across every replica that
    /// shares the ledger. The mark may be forgotten after `expires_at`, when the token is dead anyway.
    async fn claim(&self, token_id: &str, now: UnixMs, expires_at: UnixMs) -> Result<bool>;

    /// Refuses every token of `user_id` issued at or before `at`. Kept for `keep_ms`, the longest a
    /// token can live, after which every such token has expired by itself.
    async fn revoke_before(&self, user_id: &str, at: UnixMs, keep_ms: i64) -> Result<()>;

    /// The latest revocation instant of `user_id`, if any is still kept.
    async fn revoked_before(&self, user_id: &str) -> Result<Option<UnixMs>>;
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterOutcome {
    Registered,
    /// The same connection id was registered again for the same user and token: nothing changed.
    AlreadyRegistered,
    /// The user is at the cap; nothing was written.
    AtCapacity,
    /// The id belongs to another user or token; nothing was written.
    IdTaken,
}

/// Live connections with a per-user index and a TTL (plan: WebSocketConnections + UserIdIndex).
#[async_trait]
pub trait ConnectionRegistry: Send + Sync {
    /// Registers `record` unless its user already holds `max_per_user` live connections: unexpired, and
    /// pinged at or after `live_since` (a connection silent for longer is dead even if its replica
    /// could not unregister it, so it must not hold a place under the cap for the whole TTL). The check
    /// and the write are one atomic step.
    async fn register(
        &self,
        record: &ConnectionRecord,
        max_per_user: u32,
        now: UnixMs,
        live_since: UnixMs,
    ) -> Result<RegisterOutcome>;

    // A connection is known by its user and its id: a shared registry keeps each user's connections
    // together (one Redis Cluster slot per user), so it needs both to find one.

    /// Records a heartbeat: sets `lastPingAt` and moves the TTL. `false` if the record is gone.
    async fn touch(&self, user_id: &str, connection_id: &str, at: UnixMs, expires_at: UnixMs) -> Result<bool>;

    /// Removes a registration; `None` if it was not there.
    async fn remove(&self, user_id: &str, connection_id: &str) -> Result<Option<ConnectionRecord>>;

    async fn get(&self, user_id: &str, connection_id: &str, now: UnixMs) -> Result<Option<ConnectionRecord>>;

    /// The user's unexpired connections.
    async fn list_for_user(&self, user_id: &str, now: UnixMs) -> Result<Vec<ConnectionRecord>>;

    /// Drops registrations whose TTL passed; returns how many.
    async fn purge_expired(&self, now: UnixMs) -> Result<usize>;

    /// Sets the `subscriptions` of every registered connection of `user_id` (subscriptions are the
    /// user's, so they change on all of the user's connections at once).
    async fn set_subscriptions(&self, user_id: &str, channels: &[String]) -> Result<()>;
}

/// Keyed rate limits shared by every replica that shares the limiter.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    async fn check(&self, key: &str, limit: RateLimit, now: UnixMs) -> Result<RateDecision>;
}

/// The plan's `notification_preferences` table: one row per user who changed something.
#[async_trait]
pub trait PreferenceStore: Send + Sync {
    async fn get(&self, user_id: &str) -> Result<Option<Preferences>>;
    /// The stored preferences of each of `user_ids` that has any (one round trip for a publish),
    /// with the versions the notification store checks at the publish's commit, where it does.
    async fn get_many(&self, user_ids: &[String]) -> Result<PreferencesRead>;
    async fn put(&self, user_id: &str, preferences: &Preferences) -> Result<()>;
    /// A publish found these users' preferences changed since they were read: a store that
    /// remembers preferences forgets theirs.
    fn forget(&self, _user_ids: &[String]) {}
}

/// What a publish read of its recipients' preferences found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PreferencesRead {
    /// Each recipient that has stored preferences.
    pub found: HashMap<String, Preferences>,
    /// What the notification store checks at the commit (a cache may have answered the read).
    pub versions: PreferenceVersions,
}

/// Each recipient with the version of its stored preferences (`None`: none stored), as read. A
/// store that checks them (PostgreSQL: the row's `xmin`) refuses a publish if any changed since
/// ([`PublishOutcome::PreferencesChanged`]). Empty for stores that need no check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreferenceVersions(pub Vec<(String, Option<String>)>);

impl PreferenceVersions {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A notification to store; the store assigns the per-user `seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    pub id: Uuid,
    pub user_id: String,
    pub kind: NotificationType,
    pub channel: String,
    pub title: String,
    pub body: Option<String>,
    pub icon: Option<String>,
    pub action_url: Option<String>,
    pub data: Option<serde_json::Map<String, serde_json::Value>>,
    pub created_at: UnixMs,
    pub expires_at: Option<UnixMs>,
}

/// A publisher's `Idempotency-Key`, with a hash of the request it first came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub publisher: String,
    pub key: String,
    pub request_hash: String,
}

/// Unread notifications per user, each with its version.
pub type UnreadCounts = HashMap<String, UnreadCount>;

#[derive(Debug, Clone, PartialEq)]
pub enum PublishOutcome {
    /// Stored now, in one transaction with the idempotency record; with each recipient's unread count
    /// as of that commit (read in the same transaction, so the fan-out needs no query of its own).
    Created(Vec<Notification>, UnreadCounts),
    /// The key was seen before with the same request: its first answer, nothing stored.
    Replayed(PublishReceipt),
    /// The key was seen before with a different request.
    KeyReused,
    /// A recipient's preferences changed since they were read ([`PreferenceVersions`]): nothing
    /// stored; read them again and publish again.
    PreferencesChanged,
}

/// Filters and position of a history page (keyset pagination on `seq`, newest first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    pub limit: u32,
    /// Only notifications with a smaller `seq` (the cursor).
    pub before_seq: Option<i64>,
    pub unread_only: bool,
    pub kind: Option<NotificationType>,
    pub channel: Option<String>,
}

/// The plan's `notifications` table plus what delivery needs (per-user `seq`, acknowledgement,
/// attempts) and publishers' idempotency keys.
#[async_trait]
pub trait NotificationStore: Send + Sync {
    /// Stores every notification and the idempotency record (the key and the receipt to replay) in
    /// one transaction (one round trip for many recipients where the database allows).
    async fn publish(
        &self,
        batch: &[NewNotification],
        idempotency: Option<(&IdempotencyKey, &PublishReceipt)>,
        now: UnixMs,
    ) -> Result<PublishOutcome>;

    /// [`NotificationStore::publish`], refused ([`PublishOutcome::PreferencesChanged`]) if a
    /// recipient's preferences are no longer those of `read` at the commit. A store whose
    /// preferences are never read through a cache shared with other processes needs no check.
    async fn publish_checked(
        &self,
        batch: &[NewNotification],
        idempotency: Option<(&IdempotencyKey, &PublishReceipt)>,
        now: UnixMs,
        read: &PreferenceVersions,
    ) -> Result<PublishOutcome> {
        let _ = read;
        self.publish(batch, idempotency, now).await
    }

    async fn get(&self, user_id: &str, id: Uuid) -> Result<Option<Notification>>;

    /// A history page, unexpired only, newest first; at most `query.limit` items.
    async fn list(&self, user_id: &str, query: &HistoryQuery, now: UnixMs) -> Result<Vec<Notification>>;

    /// The user's unexpired unread notifications, and the version of the user's unread set they were
    /// counted at (both read from one snapshot).
    async fn unread_count(&self, user_id: &str, now: UnixMs) -> Result<UnreadCount>;

    /// `false` when the user has no such notification.
    async fn mark_read(&self, user_id: &str, id: Uuid, at: UnixMs) -> Result<bool>;

    /// Marks every unread notification read; how many changed.
    async fn mark_all_read(&self, user_id: &str, at: UnixMs) -> Result<u64>;

    async fn delete(&self, user_id: &str, id: Uuid) -> Result<bool>;

    /// Records the acknowledgement (idempotent: the first time is kept) and adds `attempts` delivery
    /// rounds not recorded yet to the notification's attempt count (they ride on the acknowledgement:
    /// one write instead of two). `false` when the user has no such notification.
    async fn mark_delivered(&self, user_id: &str, id: Uuid, at: UnixMs, attempts: u32) -> Result<bool>;

    /// The first `limit` unacknowledged, unexpired notifications with `seq > after_seq` created at or
    /// after `created_since`, in `seq` order: one page of a connection's replay, gap fill or backlog.
    async fn pending(
        &self,
        user_id: &str,
        after_seq: i64,
        limit: usize,
        created_since: UnixMs,
        now: UnixMs,
    ) -> Result<Vec<Notification>>;

    /// The user's highest `seq` so far (0 when none).
    async fn max_seq(&self, user_id: &str) -> Result<i64>;

    /// Counts one more delivery round for each of `ids`.
    async fn record_attempt(&self, ids: &[Uuid]) -> Result<()>;

    /// Which of `ids` have been acknowledged.
    async fn acknowledged(&self, ids: &[Uuid]) -> Result<HashSet<Uuid>>;

    /// Deletes notifications past their channel's retention (or `default_retention_ms`), expired ones,
    /// and idempotency records older than `idempotency_ms`. Returns the notifications deleted.
    async fn purge(
        &self,
        now: UnixMs,
        retention_by_channel: &[(String, i64)],
        default_retention_ms: i64,
        idempotency_ms: i64,
    ) -> Result<u64>;
}

/// Per-user channel subscriptions (AC20, AC21): only explicit choices are stored; a channel the user
/// never chose follows its `defaultSubscribed`.
#[async_trait]
pub trait SubscriptionStore: Send + Sync {
    async fn choices(&self, user_id: &str) -> Result<HashMap<String, bool>>;
    async fn set(&self, user_id: &str, channels: &[String], subscribed: bool, at: UnixMs) -> Result<()>;
}

/// Something every replica must hear about: a stored notification to push, or a user's new unread
/// count. Postgres stays the source of truth; a lost event is recovered from the store.
#[derive(Debug, Clone, PartialEq)]
pub enum BusEvent {
    /// What one publish stored, in one event however many recipients it had (one message on the
    /// bus, not two per recipient): the notifications, and the unread count of each recipient right
    /// after (those the store could not count are announced on their own, as `UnreadCount`).
    Published {
        notifications: Vec<Arc<Notification>>,
        unread: Vec<(String, UnreadCount)>,
        /// The publish's trace as a W3C `traceparent`, when traces are on: each replica's delivery
        /// continues it.
        trace: Option<Arc<str>>,
    },
    UnreadCount {
        user_id: String,
        count: UnreadCount,
    },
    /// `user_id`'s subscriptions changed (on any replica): what a replica remembers of them is stale.
    SubscriptionsChanged {
        user_id: String,
    },
    /// Every token of `user_id` was revoked (`DELETE /ws/token`): each replica closes the user's live
    /// sessions, so the revocation reaches connections opened before it.
    TokensRevoked {
        user_id: String,
    },
    /// Events may have been lost (the bus reconnected): every connection catches up from the store.
    Resync,
    /// `user_id`'s events may have been lost (their subscription was re-established): that user's
    /// connections catch up from the store.
    ResyncUser {
        user_id: String,
    },
}

/// Fan-out of events to the replicas that hold their users (in-process for the embedded default,
/// Redis sharded pub/sub in cluster mode).
#[async_trait]
pub trait EventBus: Send + Sync {
    async fn publish(&self, event: BusEvent) -> Result<()>;
    /// A stream of the events of the users this replica follows (every event, for a bus that
    /// carries everything everywhere), from now on. A receiver that falls behind loses events
    /// (reported as lagged), which delivery repairs from the store.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<BusEvent>;
    /// Makes `user_id`'s events reach this replica until the returned [`Interest`] is dropped;
    /// returns once they will (an event published after that arrives). Each session delivering to
    /// the user holds one. A bus that carries every event everywhere has nothing to do.
    async fn follow(&self, user_id: &str) -> Result<Interest> {
        let _ = user_id;
        Ok(Interest::default())
    }
}

/// A replica's interest in one user's events ([`EventBus::follow`]); dropping it ends it.
#[derive(Default)]
pub struct Interest {
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Interest {
    /// An interest that runs `release` when dropped.
    pub fn new(release: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self {
            release: Some(Box::new(release)),
        }
    }
}

impl Drop for Interest {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

impl std::fmt::Debug for Interest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Interest")
    }
}

/// Something readiness depends on (a database, a cache).
#[async_trait]
pub trait HealthProbe: Send + Sync {
    fn name(&self) -> &'static str;
    async fn check(&self) -> Result<()>;
}

/// Verifies user JWTs on the HTTP API.
#[async_trait]
pub trait UserVerifier: Send + Sync {
    async fn verify(&self, bearer: &str) -> Result<AuthenticatedUser>;
}
