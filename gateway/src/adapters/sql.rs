//! What the SQLite and PostgreSQL adapters share: the rows both read (one `FromRow` each, generic
//! over the database, and their conversion to domain types), the statements both run word for word
//! ([`Statements`]), and the readiness probe. Statements whose dialects differ (times are
//! `TIMESTAMPTZ` in PostgreSQL and Unix ms in SQLite; PostgreSQL binds arrays) stay in each adapter.

use std::collections::HashMap;
use std::marker::PhantomData;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{
    Database, Encode, Executor, FromRow, IntoArguments, Pool, Postgres, QueryBuilder, Sqlite, Transaction, Type,
};
use uuid::Uuid;

use crate::domain::UnixMs;
use crate::domain::notification::{Notification, NotificationType, UnreadCount};
use crate::domain::preferences::{Overrides, Preferences};
use crate::domain::publish::PublishReceipt;
use crate::error::{Error, Result};
use crate::ports::{HealthProbe, HistoryQuery, IdempotencyKey, NewNotification, PublishOutcome};

/// A database error as the rest of the gateway sees it: losing the database (connection refused,
/// reset or its TLS stream cut, pool exhausted, server shutting down or refusing connections) is
/// `Unavailable`, answered
/// 503 with `Retry-After`, so callers retry; anything else is a `Backend` failure (500).
pub(crate) fn db_error(err: sqlx::Error) -> Error {
    let lost = match &err {
        // A TLS or protocol error is the connection lost too: a stream cut while TLS is being
        // negotiated reads as "unexpected response from SSLRequest" (sqlx negotiates TLS whenever
        // the server offers it), one cut mid-record reports no plain I/O error.
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // SQLSTATE class 08 (connection exception), 57P01-57P03 (shutdown, crash, cannot connect
        // now), 53300 (too many connections).
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")),
        _ => false,
    };
    if lost {
        Error::Unavailable(format!("database: {err}"))
    } else {
        Error::backend(err)
    }
}

/// The columns of a `notifications` row, times as Unix milliseconds (PostgreSQL converts its
/// `TIMESTAMPTZ` columns in the `SELECT`). `Id` is how the database returns the id: `Uuid` from
/// PostgreSQL, hyphenated text from SQLite.
#[derive(sqlx::FromRow)]
pub(crate) struct NotificationRow<Id> {
    id: Id,
    user_id: String,
    seq: i64,
    kind: String,
    channel: String,
    title: String,
    body: Option<String>,
    icon: Option<String>,
    action_url: Option<String>,
    data: Option<Json<Map<String, Value>>>,
    /// Computed by PostgreSQL's `SELECT`, hence nullable to sqlx; never `NULL` in fact.
    created_at: Option<i64>,
    expires_at: Option<i64>,
    read_at: Option<i64>,
    delivered_at: Option<i64>,
    attempts: i32,
}

impl<Id: Into<Uuid>> TryFrom<NotificationRow<Id>> for Notification {
    type Error = Error;

    fn try_from(row: NotificationRow<Id>) -> Result<Self> {
        Ok(Notification {
            id: row.id.into(),
            kind: NotificationType::parse(&row.kind)
                .ok_or_else(|| Error::Backend(format!("stored type `{}` is unknown", row.kind)))?,
            user_id: row.user_id,
            seq: row.seq,
            channel: row.channel,
            title: row.title,
            body: row.body,
            icon: row.icon,
            action_url: row.action_url,
            data: row.data.map(|d| d.0),
            created_at: row.created_at.unwrap_or_default(),
            expires_at: row.expires_at,
            read_at: row.read_at,
            delivered_at: row.delivered_at,
            attempts: row.attempts,
        })
    }
}

pub(crate) fn into_notifications<Id: Into<Uuid>>(rows: Vec<NotificationRow<Id>>) -> Result<Vec<Notification>> {
    rows.into_iter().map(Notification::try_from).collect()
}

/// An unread count and its version as both dialects read them (as signed integers).
pub(crate) fn unread_count(count: i64, version: i64) -> UnreadCount {
    UnreadCount {
        count: u64::try_from(count).unwrap_or_default(),
        version: u64::try_from(version).unwrap_or_default(),
    }
}

/// A notification as stored by a publish: `seq` assigned, nothing read or acknowledged yet.
pub(crate) fn stored_notification(n: &NewNotification, seq: i64) -> Notification {
    Notification {
        id: n.id,
        user_id: n.user_id.clone(),
        seq,
        kind: n.kind,
        channel: n.channel.clone(),
        title: n.title.clone(),
        body: n.body.clone(),
        icon: n.icon.clone(),
        action_url: n.action_url.clone(),
        data: n.data.clone(),
        created_at: n.created_at,
        expires_at: n.expires_at,
        read_at: None,
        delivered_at: None,
        attempts: 0,
    }
}

/// Appends the filters, order and size of a history page to a `SELECT ... WHERE user_id = ...`: the
/// part of `list` both dialects write alike.
pub(crate) fn push_history_filters<'args, DB>(sql: &mut QueryBuilder<'args, DB>, query: &HistoryQuery)
where
    DB: Database,
    i64: Encode<'args, DB> + Type<DB>,
    String: Encode<'args, DB> + Type<DB>,
{
    if let Some(before) = query.before_seq {
        sql.push(" AND seq < ").push_bind(before);
    }
    if query.unread_only {
        sql.push(" AND read_at IS NULL");
    }
    if let Some(kind) = query.kind {
        sql.push(" AND type = ").push_bind(kind.as_str().to_owned());
    }
    if let Some(channel) = &query.channel {
        sql.push(" AND channel = ").push_bind(channel.clone());
    }
    sql.push(" ORDER BY seq DESC LIMIT ").push_bind(i64::from(query.limit));
}

/// Every column of [`PreferencesRow`], for a `SELECT ... FROM notification_preferences`.
pub(crate) const PREFERENCE_COLUMNS: &str = "user_id, email_enabled, push_enabled, in_app_enabled, preferences";

/// A `notification_preferences` row. The plan's PostgreSQL columns are nullable, SQLite's are not;
/// a `NULL` reads as the default.
#[derive(sqlx::FromRow)]
pub(crate) struct PreferencesRow {
    user_id: String,
    email_enabled: Option<bool>,
    push_enabled: Option<bool>,
    in_app_enabled: Option<bool>,
    preferences: Option<Json<Value>>,
}

impl PreferencesRow {
    pub(crate) fn into_preferences(self) -> (String, Preferences) {
        let preferences = Preferences {
            in_app_enabled: self.in_app_enabled.unwrap_or(true),
            email_enabled: self.email_enabled.unwrap_or(true),
            push_enabled: self.push_enabled.unwrap_or(true),
            overrides: self.preferences.map(|p| Overrides::from_json(&p.0)).unwrap_or_default(),
        };
        (self.user_id, preferences)
    }
}

/// The statements both adapters run word for word (sqlx accepts PostgreSQL's `$n` placeholders on
/// SQLite too), for either database: the bounds list what they bind and read, which SQLite and
/// PostgreSQL both provide. Called as `Statements::get_preferences(&pool, ..)`.
pub(crate) struct Statements<DB>(PhantomData<DB>);

impl<DB> Statements<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> Json<Value>: Encode<'q, DB> + Type<DB>,
    for<'q> Json<&'q PublishReceipt>: Encode<'q, DB> + Type<DB>,
    for<'r> (String,): FromRow<'r, DB::Row>,
    for<'r> (String, bool): FromRow<'r, DB::Row>,
    for<'r> (String, Json<PublishReceipt>): FromRow<'r, DB::Row>,
    for<'r> PreferencesRow: FromRow<'r, DB::Row>,
{
    /// Records a publish's `Idempotency-Key` with the receipt to replay, inside the publish's
    /// transaction. `insert` is the adapter's `INSERT INTO idempotency_keys (publisher, key,
    /// request_hash, response, created_at) ... ON CONFLICT DO NOTHING RETURNING publisher` (the
    /// databases store the time differently). `None` when the key is new: the publish goes on.
    /// Otherwise the key's first receipt for the same request, or a refusal for another; the
    /// caller rolls back. A concurrent request with the same key waits on the primary key, then
    /// conflicts.
    pub(crate) async fn record_idempotency_key(
        tx: &mut Transaction<'_, DB>,
        insert: &str,
        key: &IdempotencyKey,
        receipt: &PublishReceipt,
        now: UnixMs,
    ) -> Result<Option<PublishOutcome>> {
        let recorded: Option<(String,)> = sqlx::query_as(insert)
            .bind(key.publisher.as_str())
            .bind(key.key.as_str())
            .bind(key.request_hash.as_str())
            .bind(Json(receipt))
            .bind(now)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_error)?;
        if recorded.is_some() {
            return Ok(None);
        }
        let (hash, first): (String, Json<PublishReceipt>) =
            sqlx::query_as("SELECT request_hash, response FROM idempotency_keys WHERE publisher = $1 AND key = $2")
                .bind(key.publisher.as_str())
                .bind(key.key.as_str())
                .fetch_one(&mut **tx)
                .await
                .map_err(db_error)?;
        Ok(Some(if hash == key.request_hash {
            PublishOutcome::Replayed(first.0)
        } else {
            PublishOutcome::KeyReused
        }))
    }

    /// The stored preferences of `user_id`, if any.
    pub(crate) async fn get_preferences(pool: &Pool<DB>, user_id: &str) -> Result<Option<Preferences>> {
        let row: Option<PreferencesRow> = sqlx::query_as(&format!(
            "SELECT {PREFERENCE_COLUMNS} FROM notification_preferences WHERE user_id = $1"
        ))
        .bind(user_id)
        .fetch_optional(pool)
        .await
        .map_err(db_error)?;
        Ok(row.map(|row| row.into_preferences().1))
    }

    /// Saves the preferences of `user_id` (one row per user who changed something).
    pub(crate) async fn put_preferences(pool: &Pool<DB>, user_id: &str, preferences: &Preferences) -> Result<()> {
        sqlx::query(
            "INSERT INTO notification_preferences (user_id, email_enabled, push_enabled, in_app_enabled, preferences)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (user_id) DO UPDATE SET
                 email_enabled = EXCLUDED.email_enabled,
                 push_enabled = EXCLUDED.push_enabled,
                 in_app_enabled = EXCLUDED.in_app_enabled,
                 preferences = EXCLUDED.preferences,
                 updated_at = CURRENT_TIMESTAMP",
        )
        .bind(user_id)
        .bind(preferences.email_enabled)
        .bind(preferences.push_enabled)
        .bind(preferences.in_app_enabled)
        .bind(Json(preferences.overrides.to_json()))
        .execute(pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// The user's explicit channel choices (`channel_subscriptions`).
    pub(crate) async fn subscription_choices(pool: &Pool<DB>, user_id: &str) -> Result<HashMap<String, bool>> {
        let rows: Vec<(String, bool)> =
            sqlx::query_as("SELECT channel, subscribed FROM channel_subscriptions WHERE user_id = $1")
                .bind(user_id)
                .fetch_all(pool)
                .await
                .map_err(db_error)?;
        Ok(rows.into_iter().collect())
    }
}

/// Readiness of a SQL database: `SELECT 1` through its pool. The adapters export it as
/// `SqliteHealth` and `PostgresHealth`.
#[derive(Debug, Clone)]
pub struct SqlHealth<DB: Database>(pub Pool<DB>);

/// How `/readyz` names a database in its `checks`.
pub trait HealthName {
    const HEALTH_NAME: &'static str;
}

impl HealthName for Sqlite {
    const HEALTH_NAME: &'static str = "sqlite";
}

impl HealthName for Postgres {
    const HEALTH_NAME: &'static str = "postgres";
}

#[async_trait]
impl<DB> HealthProbe for SqlHealth<DB>
where
    DB: Database + HealthName,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    fn name(&self) -> &'static str {
        DB::HEALTH_NAME
    }

    async fn check(&self) -> Result<()> {
        self.0.execute("SELECT 1").await.map(|_| ()).map_err(db_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_lost_at_any_layer_is_unavailable_and_other_failures_are_not() {
        let lost = |err: sqlx::Error| matches!(db_error(err), Error::Unavailable(_));
        assert!(lost(sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into())));
        assert!(lost(sqlx::Error::Protocol(
            "unexpected response from SSLRequest: 0x00".into()
        )));
        assert!(lost(sqlx::Error::Tls("unexpected EOF".into())));
        assert!(lost(sqlx::Error::PoolTimedOut));
        assert!(!lost(sqlx::Error::ColumnNotFound("seq".into())));
        assert!(!lost(sqlx::Error::RowNotFound));
    }

    #[tokio::test]
    async fn the_probe_names_and_reaches_sqlite() {
        let probe = SqlHealth(super::super::sqlite::connect("sqlite::memory:").await.expect("sqlite"));
        assert_eq!(probe.name(), "sqlite");
        probe.check().await.expect("reachable");
        probe.0.close().await;
        assert!(probe.check().await.is_err(), "a closed pool is not ready");
    }

    #[tokio::test]
    async fn the_probe_names_and_reaches_postgres() {
        let Some(pool) = super::super::postgres::test_pool().await else {
            return;
        };
        let probe = SqlHealth(pool);
        assert_eq!(probe.name(), "postgres");
        probe.check().await.expect("reachable");
    }
}
