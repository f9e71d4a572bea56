//! The traits services depend on. Each takes and returns domain types; adapters in `adapters/`
//! implement them (memory and SQLite now, PostgreSQL and Redis for cluster mode), and every adapter of
//! a port must pass the same conformance tests (`ports::conformance`).

use async_trait::async_trait;

use crate::domain::UnixMs;
use crate::domain::connection::ConnectionRecord;
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
    /// Registers `record` unless its user already holds `max_per_user` unexpired connections; the
    /// check and the write are one atomic step.
    async fn register(
        &self,
        record: &ConnectionRecord,
        max_per_user: u32,
        now: UnixMs,
    ) -> Result<RegisterOutcome>;

    /// Records a heartbeat: sets `lastPingAt` and moves the TTL. `false` if the record is gone.
    async fn touch(&self, connection_id: &str, at: UnixMs, expires_at: UnixMs) -> Result<bool>;

    /// Removes a registration; `None` if it was not there.
    async fn remove(&self, connection_id: &str) -> Result<Option<ConnectionRecord>>;

    async fn get(&self, connection_id: &str, now: UnixMs) -> Result<Option<ConnectionRecord>>;

    /// The user's unexpired connections.
    async fn list_for_user(&self, user_id: &str, now: UnixMs) -> Result<Vec<ConnectionRecord>>;

    /// Drops registrations whose TTL passed; returns how many.
    async fn purge_expired(&self, now: UnixMs) -> Result<usize>;
}

/// Keyed rate limits shared by every replica that shares the limiter.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    async fn check(&self, key: &str, limit: RateLimit, now: UnixMs) -> Result<RateDecision>;
}

/// A row of the plan's `notification_preferences` table.
#[derive(Debug, Clone, PartialEq)]
pub struct PreferenceRecord {
    pub user_id: String,
    pub email_enabled: bool,
    pub push_enabled: bool,
    pub in_app_enabled: bool,
    /// Per-type and per-channel settings (JSON object).
    pub preferences: serde_json::Value,
}

impl PreferenceRecord {
    /// What a user who never saved preferences gets (the table's column defaults).
    pub fn defaults(user_id: impl Into<String>) -> Self {
        Self {
            user_id: user_id.into(),
            email_enabled: true,
            push_enabled: true,
            in_app_enabled: true,
            preferences: serde_json::json!({}),
        }
    }
}

#[async_trait]
pub trait PreferenceStore: Send + Sync {
    async fn get(&self, user_id: &str) -> Result<Option<PreferenceRecord>>;
    async fn put(&self, record: &PreferenceRecord) -> Result<()>;
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
