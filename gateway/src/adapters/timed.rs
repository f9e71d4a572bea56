//! The SQL stores, timed: every call of the notification, preference and subscription ports records
//! its latency and, when the database failed (unreachable, or an error of its own), a failure, under
//! the store's backend (`postgres`, `sqlite`) and the port method's name. Reads count as much as
//! writes: a database that is down fails the preference read a publish starts with before any commit.
//! A refusal that is an answer (no such notification, a reused idempotency key) is no failure.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use uuid::Uuid;

use crate::app::metrics::{Backend, BackendMetrics};
use crate::domain::UnixMs;
use crate::domain::notification::{Notification, UnreadCount};
use crate::domain::preferences::Preferences;
use crate::domain::publish::PublishReceipt;
use crate::error::{Error, Result};
use crate::ports::{
    HistoryQuery, IdempotencyKey, NewNotification, NotificationStore, PreferenceStore, PreferenceVersions,
    PreferencesRead, PublishOutcome, SubscriptionStore,
};

/// A port implementation `S`, timed into `metrics` as `backend`.
pub struct Timed<S: ?Sized> {
    inner: Arc<S>,
    metrics: BackendMetrics,
    backend: Backend,
}

impl<S: ?Sized> Timed<S> {
    pub fn new(inner: Arc<S>, metrics: BackendMetrics, backend: Backend) -> Self {
        Self {
            inner,
            metrics,
            backend,
        }
    }

    async fn timed<T>(&self, operation: &'static str, call: impl Future<Output = Result<T>>) -> Result<T> {
        let started = Instant::now();
        let result = call.await;
        let failed = matches!(result, Err(Error::Unavailable(_) | Error::Backend(_)));
        self.metrics
            .observe(self.backend, operation, started.elapsed(), !failed);
        result
    }
}

#[async_trait]
impl<S: PreferenceStore + ?Sized> PreferenceStore for Timed<S> {
    async fn get(&self, user_id: &str) -> Result<Option<Preferences>> {
        self.timed("preferences_get", self.inner.get(user_id)).await
    }

    async fn get_many(&self, user_ids: &[String]) -> Result<PreferencesRead> {
        self.timed("preferences_get_many", self.inner.get_many(user_ids)).await
    }

    fn forget(&self, user_ids: &[String]) {
        self.inner.forget(user_ids);
    }

    async fn put(&self, user_id: &str, preferences: &Preferences) -> Result<()> {
        self.timed("preferences_put", self.inner.put(user_id, preferences))
            .await
    }
}

#[async_trait]
impl<S: SubscriptionStore + ?Sized> SubscriptionStore for Timed<S> {
    async fn choices(&self, user_id: &str) -> Result<HashMap<String, bool>> {
        self.timed("subscriptions_get", self.inner.choices(user_id)).await
    }

    async fn set(&self, user_id: &str, channels: &[String], subscribed: bool, at: UnixMs) -> Result<()> {
        self.timed("subscriptions_set", self.inner.set(user_id, channels, subscribed, at))
            .await
    }
}

#[async_trait]
impl<S: NotificationStore + ?Sized> NotificationStore for Timed<S> {
    async fn publish(
        &self,
        batch: &[NewNotification],
        idempotency: Option<(&IdempotencyKey, &PublishReceipt)>,
        now: UnixMs,
    ) -> Result<PublishOutcome> {
        self.timed("publish", self.inner.publish(batch, idempotency, now)).await
    }

    async fn publish_checked(
        &self,
        batch: &[NewNotification],
        idempotency: Option<(&IdempotencyKey, &PublishReceipt)>,
        now: UnixMs,
        read: &PreferenceVersions,
    ) -> Result<PublishOutcome> {
        self.timed("publish", self.inner.publish_checked(batch, idempotency, now, read))
            .await
    }

    async fn get(&self, user_id: &str, id: Uuid) -> Result<Option<Notification>> {
        self.timed("get", self.inner.get(user_id, id)).await
    }

    async fn list(&self, user_id: &str, query: &HistoryQuery, now: UnixMs) -> Result<Vec<Notification>> {
        self.timed("list", self.inner.list(user_id, query, now)).await
    }

    async fn unread_count(&self, user_id: &str, now: UnixMs) -> Result<UnreadCount> {
        self.timed("unread_count", self.inner.unread_count(user_id, now)).await
    }

    async fn mark_read(&self, user_id: &str, id: Uuid, at: UnixMs) -> Result<bool> {
        self.timed("mark_read", self.inner.mark_read(user_id, id, at)).await
    }

    async fn mark_all_read(&self, user_id: &str, at: UnixMs) -> Result<u64> {
        self.timed("mark_all_read", self.inner.mark_all_read(user_id, at)).await
    }

    async fn delete(&self, user_id: &str, id: Uuid) -> Result<bool> {
        self.timed("delete", self.inner.delete(user_id, id)).await
    }

    async fn mark_delivered(&self, user_id: &str, id: Uuid, at: UnixMs, attempts: u32) -> Result<bool> {
        self.timed("mark_delivered", self.inner.mark_delivered(user_id, id, at, attempts))
            .await
    }

    async fn pending(
        &self,
        user_id: &str,
        after_seq: i64,
        limit: usize,
        created_since: UnixMs,
        now: UnixMs,
    ) -> Result<Vec<Notification>> {
        self.timed(
            "pending",
            self.inner.pending(user_id, after_seq, limit, created_since, now),
        )
        .await
    }

    async fn max_seq(&self, user_id: &str) -> Result<i64> {
        self.timed("max_seq", self.inner.max_seq(user_id)).await
    }

    async fn record_attempt(&self, ids: &[Uuid]) -> Result<()> {
        self.timed("record_attempt", self.inner.record_attempt(ids)).await
    }

    async fn acknowledged(&self, ids: &[Uuid]) -> Result<HashSet<Uuid>> {
        self.timed("acknowledged", self.inner.acknowledged(ids)).await
    }

    async fn purge(
        &self,
        now: UnixMs,
        retention_by_channel: &[(String, i64)],
        default_retention_ms: i64,
        idempotency_ms: i64,
    ) -> Result<u64> {
        self.timed(
            "purge",
            self.inner
                .purge(now, retention_by_channel, default_retention_ms, idempotency_ms),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory::MemoryPreferenceStore;

    /// A preference store whose database is gone.
    struct Down;

    #[async_trait]
    impl PreferenceStore for Down {
        async fn get(&self, _: &str) -> Result<Option<Preferences>> {
            Err(Error::Unavailable("PostgreSQL: connection refused".into()))
        }
        async fn get_many(&self, _: &[String]) -> Result<PreferencesRead> {
            Err(Error::Unavailable("PostgreSQL: connection refused".into()))
        }
        async fn put(&self, _: &str, _: &Preferences) -> Result<()> {
            Err(Error::Validation(Default::default()))
        }
    }

    #[tokio::test]
    async fn every_call_is_timed_and_only_database_failures_count_as_errors() {
        let metrics = crate::app::metrics::Metrics::default();
        let up = Timed::new(
            Arc::new(MemoryPreferenceStore::default()),
            metrics.backend(),
            Backend::Postgres,
        );
        up.get("alice").await.expect("read");
        let down = Timed::new(Arc::new(Down), metrics.backend(), Backend::Postgres);
        assert!(down.get_many(&["alice".into()]).await.is_err());
        assert!(down.put("alice", &Preferences::default()).await.is_err());
        let text = metrics.render(Default::default());
        for line in [
            r#"herald_backend_request_duration_seconds_count{backend="postgres",operation="preferences_get"} 1"#,
            r#"herald_backend_errors_total{backend="postgres",operation="preferences_get_many"} 1"#,
            r#"herald_backend_request_duration_seconds_count{backend="postgres",operation="preferences_put"} 1"#,
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line} missing from:\n{text}");
        }
        assert!(
            !text.contains(r#"herald_backend_errors_total{backend="postgres",operation="preferences_put"}"#),
            "a refusal is an answer, not a database failure:\n{text}"
        );
    }
}
