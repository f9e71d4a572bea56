use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use sqlx::{PgPool, Postgres, QueryBuilder, Transaction};
use uuid::Uuid;

use super::ms;
use super::writer::PostgresCommitter;
use crate::adapters::group_commit::Writer;
use crate::adapters::sql::{
    NotificationRow, Statements, into_notifications, push_history_filters, stored_notification,
};
use crate::domain::UnixMs;
use crate::domain::notification::Notification;
use crate::domain::publish::PublishReceipt;
use crate::error::{Error, Result};
use crate::ports::{HistoryQuery, IdempotencyKey, NewNotification, NotificationStore, PublishOutcome};

#[derive(Debug, Clone)]
pub struct PostgresNotificationStore {
    pool: PgPool,
    /// Publishes, acknowledgements and attempt counts go through one group-committing writer.
    writer: Writer,
}

impl PostgresNotificationStore {
    /// Needs a Tokio runtime: starts the store's writer task.
    pub fn new(pool: PgPool) -> Self {
        Self {
            writer: Writer::start(PostgresCommitter(pool.clone())),
            pool,
        }
    }

    /// Sets the timestamp `column` of one of `user_id`'s notifications unless already set (reads and
    /// acknowledgements keep their first time); `false` when the user has no such notification.
    pub(super) async fn stamp_once(
        pool: &PgPool,
        column: &'static str,
        user_id: &str,
        id: Uuid,
        at: UnixMs,
    ) -> Result<bool> {
        let sql = format!(
            "UPDATE notifications SET {column} = COALESCE({column}, to_timestamp($1::float8 / 1000)) WHERE user_id = $2 AND id = $3"
        );
        let result = sqlx::query(&sql)
            .bind(at)
            .bind(user_id)
            .bind(id)
            .execute(pool)
            .await
            .map_err(Error::backend)?;
        Ok(result.rows_affected() > 0)
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

/// Records an `Idempotency-Key`; returns no row when the key is already there
/// (`Statements::record_idempotency_key`).
const INSERT_IDEMPOTENCY_KEY: &str = "INSERT INTO idempotency_keys (publisher, key, request_hash, response, created_at)
     VALUES ($1, $2, $3, $4, to_timestamp($5::float8 / 1000))
     ON CONFLICT (publisher, key) DO NOTHING RETURNING publisher";

/// Inserts `batch` in one statement: every recipient's sequence bumped, rows numbered within it in
/// the order given; returns each notification's `seq`.
pub(super) fn insert_notifications<'a>(
    tx: &'a mut Transaction<'static, Postgres>,
    batch: &'a [&'a NewNotification],
) -> BoxFuture<'a, Result<HashMap<Uuid, i64>>> {
    Box::pin(async move {
        if batch.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<(Uuid, i64)> = sqlx::query_as(
            "WITH input AS (
                 SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                      $7::text[], $8::text[], $9::text[], $10::int8[], $11::int8[])
                     WITH ORDINALITY AS t(id, user_id, type, channel, title, body, icon, action_url, data,
                                          created_at, expires_at, ord)
             ),
             counts AS (SELECT user_id, count(*)::int8 AS n FROM input GROUP BY user_id),
             bumped AS (
                 INSERT INTO user_sequences AS s (user_id, last_seq) SELECT user_id, n FROM counts
                 ON CONFLICT (user_id) DO UPDATE SET last_seq = s.last_seq + EXCLUDED.last_seq
                 RETURNING s.user_id, s.last_seq
             )
             INSERT INTO notifications
                 (id, user_id, seq, type, channel, title, body, icon, action_url, data, created_at, expires_at)
             SELECT i.id, i.user_id,
                    b.last_seq - c.n + row_number() OVER (PARTITION BY i.user_id ORDER BY i.ord),
                    i.type, i.channel, i.title, i.body, i.icon, i.action_url, i.data::jsonb,
                    to_timestamp(i.created_at::float8 / 1000), to_timestamp(i.expires_at::float8 / 1000)
             FROM input i JOIN counts c USING (user_id) JOIN bumped b USING (user_id)
             RETURNING id, seq",
        )
        .bind(batch.iter().map(|n| n.id).collect::<Vec<_>>())
        .bind(batch.iter().map(|n| n.user_id.clone()).collect::<Vec<_>>())
        .bind(batch.iter().map(|n| n.kind.as_str().to_owned()).collect::<Vec<_>>())
        .bind(batch.iter().map(|n| n.channel.clone()).collect::<Vec<_>>())
        .bind(batch.iter().map(|n| n.title.clone()).collect::<Vec<_>>())
        .bind(batch.iter().map(|n| n.body.clone()).collect::<Vec<_>>())
        .bind(batch.iter().map(|n| n.icon.clone()).collect::<Vec<_>>())
        .bind(batch.iter().map(|n| n.action_url.clone()).collect::<Vec<_>>())
        .bind(
            batch
                .iter()
                .map(|n| {
                    n.data
                        .as_ref()
                        .map(|d| serde_json::Value::Object(d.clone()).to_string())
                })
                .collect::<Vec<_>>(),
        )
        .bind(batch.iter().map(|n| n.created_at).collect::<Vec<_>>())
        .bind(batch.iter().map(|n| n.expires_at).collect::<Vec<_>>())
        .fetch_all(&mut **tx)
        .await
        .map_err(Error::backend)?;
        Ok(rows.into_iter().collect())
    })
}

/// Records a publish's `Idempotency-Key` in `tx`; `Some` answer when the key was already there.
pub(super) fn record_key<'a>(
    tx: &'a mut Transaction<'static, Postgres>,
    idempotency: Option<(&'a IdempotencyKey, &'a PublishReceipt)>,
    now: UnixMs,
) -> BoxFuture<'a, Result<Option<PublishOutcome>>> {
    Box::pin(async move {
        match idempotency {
            Some((key, receipt)) => {
                Statements::record_idempotency_key(tx, INSERT_IDEMPOTENCY_KEY, key, receipt, now).await
            }
            None => Ok(None),
        }
    })
}

pub(super) fn created(batch: &[NewNotification], seqs: &HashMap<Uuid, i64>) -> PublishOutcome {
    PublishOutcome::Created(
        batch
            .iter()
            .map(|n| stored_notification(n, seqs.get(&n.id).copied().unwrap_or_default()))
            .collect(),
    )
}

/// One publish in a transaction of its own (the writer's fallback when a batch fails).
pub(super) async fn publish_one(
    pool: &PgPool,
    batch: &[NewNotification],
    idempotency: Option<(&IdempotencyKey, &PublishReceipt)>,
    now: UnixMs,
) -> Result<PublishOutcome> {
    let mut tx = pool.begin().await.map_err(Error::backend)?;
    if let Some(repeated) = record_key(&mut tx, idempotency, now).await? {
        tx.rollback().await.map_err(Error::backend)?;
        return Ok(repeated);
    }
    let rows: Vec<&NewNotification> = batch.iter().collect();
    let seqs = insert_notifications(&mut tx, &rows).await?;
    tx.commit().await.map_err(Error::backend)?;
    Ok(created(batch, &seqs))
}

#[async_trait]
impl NotificationStore for PostgresNotificationStore {
    async fn publish(
        &self,
        batch: &[NewNotification],
        idempotency: Option<(&IdempotencyKey, &PublishReceipt)>,
        now: UnixMs,
    ) -> Result<PublishOutcome> {
        self.writer.publish(batch, idempotency, now).await
    }

    async fn get(&self, user_id: &str, id: Uuid) -> Result<Option<Notification>> {
        let row: Option<NotificationRow<Uuid>> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM notifications WHERE user_id = $1 AND id = $2"
        ))
        .bind(user_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(Error::backend)?;
        row.map(Notification::try_from).transpose()
    }

    async fn list(&self, user_id: &str, query: &HistoryQuery, now: UnixMs) -> Result<Vec<Notification>> {
        let mut sql = QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} FROM notifications WHERE user_id = "));
        sql.push_bind(user_id.to_owned());
        unexpired(&mut sql, now);
        push_history_filters(&mut sql, query);
        into_notifications::<Uuid>(
            sql.build_query_as()
                .fetch_all(&self.pool)
                .await
                .map_err(Error::backend)?,
        )
    }

    async fn unread_count(&self, user_id: &str, now: UnixMs) -> Result<u64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM notifications WHERE user_id = $1 AND read_at IS NULL
             AND (expires_at IS NULL OR expires_at > to_timestamp($2::float8 / 1000))",
        )
        .bind(user_id)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(Error::backend)?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    async fn mark_read(&self, user_id: &str, id: Uuid, at: UnixMs) -> Result<bool> {
        self.writer.stamp("read_at", user_id, id, at).await
    }

    async fn mark_all_read(&self, user_id: &str, at: UnixMs) -> Result<u64> {
        let result = sqlx::query(
            "UPDATE notifications SET read_at = to_timestamp($1::float8 / 1000) WHERE user_id = $2 AND read_at IS NULL",
        )
        .bind(at)
        .bind(user_id)
        .execute(&self.pool)
        .await
        .map_err(Error::backend)?;
        Ok(result.rows_affected())
    }

    async fn delete(&self, user_id: &str, id: Uuid) -> Result<bool> {
        let result = sqlx::query("DELETE FROM notifications WHERE user_id = $1 AND id = $2")
            .bind(user_id)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(Error::backend)?;
        Ok(result.rows_affected() > 0)
    }

    async fn mark_delivered(&self, user_id: &str, id: Uuid, at: UnixMs) -> Result<bool> {
        self.writer.stamp("delivered_at", user_id, id, at).await
    }

    async fn pending(
        &self,
        user_id: &str,
        after_seq: i64,
        before_seq: Option<i64>,
        created_since: UnixMs,
        now: UnixMs,
    ) -> Result<Vec<Notification>> {
        let mut sql = QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} FROM notifications WHERE user_id = "));
        sql.push_bind(user_id.to_owned());
        sql.push(" AND delivered_at IS NULL AND seq > ").push_bind(after_seq);
        if let Some(before) = before_seq {
            sql.push(" AND seq < ").push_bind(before);
        }
        sql.push(" AND created_at >= ");
        push_time(&mut sql, created_since);
        unexpired(&mut sql, now);
        sql.push(" ORDER BY seq");
        into_notifications::<Uuid>(
            sql.build_query_as()
                .fetch_all(&self.pool)
                .await
                .map_err(Error::backend)?,
        )
    }

    async fn max_seq(&self, user_id: &str) -> Result<i64> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT last_seq FROM user_sequences WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(Error::backend)?;
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
                .map_err(Error::backend)?;
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
        let mut tx = self.pool.begin().await.map_err(Error::backend)?;
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
        .map_err(Error::backend)?
        .rows_affected();
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at < to_timestamp($1::float8 / 1000)")
            .bind(now - idempotency_ms)
            .execute(&mut *tx)
            .await
            .map_err(Error::backend)?;
        tx.commit().await.map_err(Error::backend)?;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::conformance;

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
