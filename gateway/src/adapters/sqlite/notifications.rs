use std::collections::HashSet;

use async_trait::async_trait;
use sqlx::{QueryBuilder, Sqlite, SqlitePool};
use uuid::Uuid;
use uuid::fmt::Hyphenated;

use super::writer::SqliteCommitter;
use crate::adapters::group_commit::{ACKNOWLEDGED, Writer};
use crate::adapters::sql::{NotificationRow, db_error, into_notifications, push_history_filters, unread_count};
use crate::adapters::sqlite::writer::EXPIRED_UNREAD;
use crate::app::metrics::BackendMetrics;
use crate::domain::UnixMs;
use crate::domain::notification::{Notification, UnreadCount};
use crate::domain::publish::PublishReceipt;
use crate::error::Result;
use crate::ports::{
    HistoryQuery, IdempotencyKey, NewNotification, NotificationStore, PreferenceVersions, PublishOutcome,
};

#[derive(Debug, Clone)]
pub struct SqliteNotificationStore {
    pool: SqlitePool,
    /// Publishes, acknowledgements and attempt counts go through one group-committing writer.
    writer: Writer,
}

impl SqliteNotificationStore {
    /// Opens the store's writer connection and starts its thread.
    pub fn new(pool: SqlitePool) -> Result<Self> {
        Self::with_metrics(pool, BackendMetrics::default())
    }

    /// [`SqliteNotificationStore::new`], its group commits timed into `metrics`.
    pub fn with_metrics(pool: SqlitePool, metrics: BackendMetrics) -> Result<Self> {
        Ok(Self {
            writer: Writer::start_on_thread("sqlite-writer", SqliteCommitter::open(&pool)?, metrics)?,
            pool,
        })
    }
}

const COLUMNS: &str = "id, user_id, seq, type AS kind, channel, title, body, icon, action_url, data, \
                       created_at, expires_at, read_at, delivered_at, attempts";

/// `id IN (?, ?, ...)` over `ids`.
fn push_ids(query: &mut QueryBuilder<'_, Sqlite>, ids: &[Uuid]) {
    query.push(" id IN (");
    let mut separated = query.separated(", ");
    for id in ids {
        separated.push_bind(id.to_string());
    }
    query.push(")");
}

#[async_trait]
impl NotificationStore for SqliteNotificationStore {
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

    async fn get(&self, user_id: &str, id: Uuid) -> Result<Option<Notification>> {
        let row: Option<NotificationRow<Hyphenated>> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM notifications WHERE user_id = ? AND id = ?"
        ))
        .bind(user_id)
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(Notification::try_from).transpose()
    }

    async fn list(&self, user_id: &str, query: &HistoryQuery, now: UnixMs) -> Result<Vec<Notification>> {
        let mut sql = QueryBuilder::<Sqlite>::new(format!("SELECT {COLUMNS} FROM notifications WHERE user_id = "));
        sql.push_bind(user_id);
        sql.push(" AND (expires_at IS NULL OR expires_at > ")
            .push_bind(now)
            .push(")");
        push_history_filters(&mut sql, query);
        let rows: Vec<NotificationRow<Hyphenated>> =
            sql.build_query_as().fetch_all(&self.pool).await.map_err(db_error)?;
        into_notifications(rows)
    }

    async fn unread_count(&self, user_id: &str, now: UnixMs) -> Result<UnreadCount> {
        // One statement: the count and its version from one snapshot.
        let sql = format!(
            "SELECT s.unread - ({EXPIRED_UNREAD}), s.last_seq + s.unread_removals
             FROM user_sequences s WHERE s.user_id = ?"
        );
        let (count, version): (i64, i64) = sqlx::query_as(&sql)
            .bind(now)
            .bind(user_id)
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
        let result = sqlx::query("UPDATE notifications SET read_at = ? WHERE user_id = ? AND read_at IS NULL")
            .bind(at)
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(result.rows_affected())
    }

    async fn delete(&self, user_id: &str, id: Uuid) -> Result<bool> {
        let result = sqlx::query("DELETE FROM notifications WHERE user_id = ? AND id = ?")
            .bind(user_id)
            .bind(id.to_string())
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
        let mut sql = QueryBuilder::<Sqlite>::new(format!("SELECT {COLUMNS} FROM notifications WHERE user_id = "));
        sql.push_bind(user_id);
        sql.push(" AND delivered_at IS NULL AND seq > ").push_bind(after_seq);
        sql.push(" AND created_at >= ").push_bind(created_since);
        sql.push(" AND (expires_at IS NULL OR expires_at > ")
            .push_bind(now)
            .push(") ORDER BY seq LIMIT ")
            .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows: Vec<NotificationRow<Hyphenated>> =
            sql.build_query_as().fetch_all(&self.pool).await.map_err(db_error)?;
        into_notifications(rows)
    }

    async fn max_seq(&self, user_id: &str) -> Result<i64> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT last_seq FROM user_sequences WHERE user_id = ?")
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
        let mut acknowledged = HashSet::new();
        for chunk in ids.chunks(500) {
            let mut sql =
                QueryBuilder::<Sqlite>::new("SELECT id FROM notifications WHERE delivered_at IS NOT NULL AND");
            push_ids(&mut sql, chunk);
            let rows: Vec<(String,)> = sql.build_query_as().fetch_all(&self.pool).await.map_err(db_error)?;
            acknowledged.extend(rows.into_iter().filter_map(|(id,)| Uuid::parse_str(&id).ok()));
        }
        Ok(acknowledged)
    }

    async fn purge(
        &self,
        now: UnixMs,
        retention_by_channel: &[(String, i64)],
        default_retention_ms: i64,
        idempotency_ms: i64,
    ) -> Result<u64> {
        let mut deleted = 0;
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        for (channel, retention) in retention_by_channel {
            deleted += sqlx::query("DELETE FROM notifications WHERE channel = ? AND created_at < ?")
                .bind(channel)
                .bind(now - retention)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
        }
        let mut others = QueryBuilder::<Sqlite>::new("DELETE FROM notifications WHERE created_at < ");
        others.push_bind(now - default_retention_ms);
        if !retention_by_channel.is_empty() {
            others.push(" AND channel NOT IN (");
            let mut names = others.separated(", ");
            for (channel, _) in retention_by_channel {
                names.push_bind(channel.clone());
            }
            others.push(")");
        }
        deleted += others
            .build()
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
        deleted += sqlx::query("DELETE FROM notifications WHERE expires_at <= ?")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at < ?")
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

    async fn store() -> SqliteNotificationStore {
        SqliteNotificationStore::new(super::super::connect("sqlite::memory:").await.expect("sqlite")).expect("store")
    }

    #[tokio::test]
    async fn conforms_to_notification_store() {
        conformance::notification_store(&store().await).await;
    }

    #[tokio::test]
    async fn conforms_to_notification_store_idempotency() {
        conformance::notification_store_idempotency(&store().await).await;
    }

    #[tokio::test]
    async fn conforms_to_notification_store_purge() {
        conformance::notification_store_purge(&store().await).await;
    }
}
