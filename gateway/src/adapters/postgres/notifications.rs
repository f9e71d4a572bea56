use std::collections::HashSet;

use async_trait::async_trait;
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use super::ms;
use super::writer::{PostgresCommitter, expired_unread};
use crate::adapters::group_commit::{ACKNOWLEDGED, Writer};
use crate::adapters::sql::{NotificationRow, db_error, into_notifications, push_history_filters, unread_count};
use crate::app::metrics::BackendMetrics;
use crate::domain::UnixMs;
use crate::domain::notification::{Notification, UnreadCount};
use crate::domain::publish::PublishReceipt;
use crate::error::Result;
use crate::ports::{
    HistoryQuery, IdempotencyKey, NewNotification, NotificationStore, PreferenceVersions, PublishOutcome,
};

#[derive(Debug, Clone)]
pub struct PostgresNotificationStore {
    pool: PgPool,
    /// Publishes, acknowledgements and attempt counts go through one group-committing writer.
    writer: Writer,
}

impl PostgresNotificationStore {
    /// Needs a Tokio runtime: starts the store's writer task.
    pub fn new(pool: PgPool) -> Self {
        Self::with_metrics(pool, BackendMetrics::default())
    }

    /// [`PostgresNotificationStore::new`], its group commits timed into `metrics`.
    pub fn with_metrics(pool: PgPool, metrics: BackendMetrics) -> Self {
        Self {
            writer: Writer::start(PostgresCommitter(pool.clone()), metrics),
            pool,
        }
    }
}

const COLUMNS: &str = concat!(
    "id, user_id, seq, type AS kind, channel, title, body, icon, action_url, data, ",
    ms!("created_at"),
    " AS created_at, ",
    ms!("expires_at"),
    " AS expires_at, ",
    ms!("read_at"),
    " AS read_at, ",
    ms!("delivered_at"),
    " AS delivered_at, attempts"
);

/// Appends `to_timestamp(<ms> / 1000)` with `ms` bound.
fn push_time(query: &mut QueryBuilder<'_, Postgres>, ms: UnixMs) {
    query.push("to_timestamp(").push_bind(ms).push("::float8 / 1000)");
}

fn unexpired(query: &mut QueryBuilder<'_, Postgres>, now: UnixMs) {
    query.push(" AND (expires_at IS NULL OR expires_at > ");
    push_time(query, now);
    query.push(")");
}

#[async_trait]
impl NotificationStore for PostgresNotificationStore {
    async fn publish(
        &self,
        batch: &[NewNotification],
        idempotency: Option<(&IdempotencyKey, &PublishReceipt)>,
        now: UnixMs,
    ) -> Result<PublishOutcome> {
        self.writer
            .publish(batch, idempotency, now, &PreferenceVersions::default())
            .await
    }

    async fn publish_checked(
        &self,
        batch: &[NewNotification],
        idempotency: Option<(&IdempotencyKey, &PublishReceipt)>,
        now: UnixMs,
        read: &PreferenceVersions,
    ) -> Result<PublishOutcome> {
        self.writer.publish(batch, idempotency, now, read).await
    }

    async fn get(&self, user_id: &str, id: Uuid) -> Result<Option<Notification>> {
        let row: Option<NotificationRow<Uuid>> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM notifications WHERE user_id = $1 AND id = $2"
        ))
        .bind(user_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(Notification::try_from).transpose()
    }

    async fn list(&self, user_id: &str, query: &HistoryQuery, now: UnixMs) -> Result<Vec<Notification>> {
        let mut sql = QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} FROM notifications WHERE user_id = "));
        sql.push_bind(user_id.to_owned());
        unexpired(&mut sql, now);
        push_history_filters(&mut sql, query);
        into_notifications::<Uuid>(sql.build_query_as().fetch_all(&self.pool).await.map_err(db_error)?)
    }

    async fn unread_count(&self, user_id: &str, now: UnixMs) -> Result<UnreadCount> {
        // One statement: the count and its version from one snapshot.
        let sql = format!(
            "SELECT s.unread - ({}), s.last_seq + s.unread_removals FROM user_sequences s WHERE s.user_id = $1",
            expired_unread("s.user_id", "$2")
        );
        let (count, version): (i64, i64) = sqlx::query_as(&sql)
            .bind(user_id)
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .unwrap_or_default();
        Ok(unread_count(count, version))
    }

    async fn mark_read(&self, user_id: &str, id: Uuid, at: UnixMs) -> Result<bool> {
        self.writer.stamp("read_at", user_id, id, at, 0).await
    }

    async fn mark_all_read(&self, user_id: &str, at: UnixMs) -> Result<u64> {
        let result = sqlx::query(
            "UPDATE notifications SET read_at = to_timestamp($1::float8 / 1000) WHERE user_id = $2 AND read_at IS NULL",
        )
        .bind(at)
        .bind(user_id)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(result.rows_affected())
    }

    async fn delete(&self, user_id: &str, id: Uuid) -> Result<bool> {
        let result = sqlx::query("DELETE FROM notifications WHERE user_id = $1 AND id = $2")
            .bind(user_id)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(result.rows_affected() > 0)
    }

    async fn mark_delivered(&self, user_id: &str, id: Uuid, at: UnixMs, attempts: u32) -> Result<bool> {
        self.writer.stamp(ACKNOWLEDGED, user_id, id, at, attempts).await
    }

    async fn pending(
        &self,
        user_id: &str,
        after_seq: i64,
        limit: usize,
        created_since: UnixMs,
        now: UnixMs,
    ) -> Result<Vec<Notification>> {
        let mut sql = QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} FROM notifications WHERE user_id = "));
        sql.push_bind(user_id.to_owned());
        sql.push(" AND delivered_at IS NULL AND seq > ").push_bind(after_seq);
        sql.push(" AND created_at >= ");
        push_time(&mut sql, created_since);
        unexpired(&mut sql, now);
        sql.push(" ORDER BY seq LIMIT ")
            .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
        into_notifications::<Uuid>(sql.build_query_as().fetch_all(&self.pool).await.map_err(db_error)?)
    }

    async fn max_seq(&self, user_id: &str) -> Result<i64> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT last_seq FROM user_sequences WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(seq.unwrap_or(0))
    }

    async fn record_attempt(&self, ids: &[Uuid]) -> Result<()> {
        self.writer.record_attempt(ids).await
    }

    async fn acknowledged(&self, ids: &[Uuid]) -> Result<HashSet<Uuid>> {
        let rows: Vec<(Uuid,)> =
            sqlx::query_as("SELECT id FROM notifications WHERE delivered_at IS NOT NULL AND id = ANY($1)")
                .bind(ids)
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    async fn purge(
        &self,
        now: UnixMs,
        retention_by_channel: &[(String, i64)],
        default_retention_ms: i64,
        idempotency_ms: i64,
    ) -> Result<u64> {
        let channels: Vec<String> = retention_by_channel.iter().map(|(c, _)| c.clone()).collect();
        let retentions: Vec<i64> = retention_by_channel.iter().map(|(_, r)| *r).collect();
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let deleted = sqlx::query(
            "DELETE FROM notifications n
             WHERE (n.expires_at IS NOT NULL AND n.expires_at <= to_timestamp($1::float8 / 1000))
                OR n.created_at < to_timestamp(($1 - COALESCE(
                       (SELECT r.ms FROM UNNEST($2::text[], $3::int8[]) AS r(channel, ms) WHERE r.channel = n.channel),
                       $4))::float8 / 1000)",
        )
        .bind(now)
        .bind(&channels)
        .bind(&retentions)
        .bind(default_retention_ms)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected();
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at < to_timestamp($1::float8 / 1000)")
            .bind(now - idempotency_ms)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::conformance;

    #[tokio::test]
    async fn upgrading_to_kept_unread_counts_counts_what_is_there_and_keeps_it() {
        let Some(pool) = super::super::test_database().await else {
            return;
        };
        // The schema before migration 0003, with notifications stored under it as the previous
        // version stored them (the sequence bumped beside the rows).
        let all = sqlx::migrate!("../migrations");
        let before = sqlx::migrate::Migrator {
            migrations: std::borrow::Cow::Owned(all.iter().filter(|m| m.version < 3).cloned().collect()),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        before.run(&pool).await.expect("migrations 1-2");
        for (user, seq, read) in [
            ("alice", 1, false),
            ("alice", 2, true),
            ("alice", 3, false),
            ("bob", 1, false),
        ] {
            sqlx::query(
                "INSERT INTO notifications (user_id, seq, type, channel, title, read_at)
                 VALUES ($1, $2, 'new_like', 'social', 't', CASE WHEN $3 THEN now() END)",
            )
            .bind(user)
            .bind(seq)
            .bind(read)
            .execute(&pool)
            .await
            .expect("insert");
            sqlx::query(
                "INSERT INTO user_sequences (user_id, last_seq) VALUES ($1, $2)
                 ON CONFLICT (user_id) DO UPDATE SET last_seq = EXCLUDED.last_seq",
            )
            .bind(user)
            .bind(seq)
            .execute(&pool)
            .await
            .expect("sequence");
        }
        super::super::migrate(&pool).await.expect("migration 0003");
        let store = PostgresNotificationStore::new(pool.clone());
        let now = 4_000_000_000_000;
        let count = |user: &'static str| {
            let store = &store;
            async move { store.unread_count(user, now).await.expect("count").count }
        };
        assert_eq!((count("alice").await, count("bob").await), (2, 1));
        // Kept from here on: a publish adds (by the trigger), a read mark takes off.
        let published = conformance::new_notification(
            "alice",
            "social",
            crate::domain::notification::NotificationType::NewLike,
            now,
        );
        store
            .publish(std::slice::from_ref(&published), None, now)
            .await
            .expect("publish");
        assert_eq!(count("alice").await, 3);
        store.mark_read("alice", published.id, now).await.expect("read");
        assert_eq!(count("alice").await, 2);
    }

    #[tokio::test]
    async fn conforms_to_notification_store() {
        let Some(pool) = super::super::test_pool().await else {
            return;
        };
        conformance::notification_store(&PostgresNotificationStore::new(pool)).await;
    }

    #[tokio::test]
    async fn conforms_to_notification_store_idempotency() {
        let Some(pool) = super::super::test_pool().await else {
            return;
        };
        conformance::notification_store_idempotency(&PostgresNotificationStore::new(pool)).await;
    }

    #[tokio::test]
    async fn conforms_to_notification_store_purge() {
        let Some(pool) = super::super::test_pool().await else {
            return;
        };
        conformance::notification_store_purge(&PostgresNotificationStore::new(pool)).await;
    }
}
