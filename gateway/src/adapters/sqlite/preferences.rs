use async_trait::async_trait;
use sqlx::SqlitePool;

use crate::error::{Error, Result};
use crate::ports::{PreferenceRecord, PreferenceStore};

#[derive(Debug, Clone)]
pub struct SqlitePreferenceStore {
    pool: SqlitePool,
}

impl SqlitePreferenceStore {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    user_id: String,
    email_enabled: bool,
    push_enabled: bool,
    in_app_enabled: bool,
    preferences: sqlx::types::Json<serde_json::Value>,
}

#[async_trait]
impl PreferenceStore for SqlitePreferenceStore {
    async fn get(&self, user_id: &str) -> Result<Option<PreferenceRecord>> {
        let row: Option<Row> = sqlx::query_as(
            "SELECT user_id, email_enabled, push_enabled, in_app_enabled, preferences
             FROM notification_preferences WHERE user_id = ?",
        )
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(Error::backend)?;
        Ok(row.map(|row| PreferenceRecord {
            user_id: row.user_id,
            email_enabled: row.email_enabled,
            push_enabled: row.push_enabled,
            in_app_enabled: row.in_app_enabled,
            preferences: row.preferences.0,
        }))
    }

    async fn put(&self, record: &PreferenceRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO notification_preferences
                 (user_id, email_enabled, push_enabled, in_app_enabled, preferences)
             VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (user_id) DO UPDATE SET
                 email_enabled = excluded.email_enabled,
                 push_enabled = excluded.push_enabled,
                 in_app_enabled = excluded.in_app_enabled,
                 preferences = excluded.preferences,
                 updated_at = CURRENT_TIMESTAMP",
        )
        .bind(&record.user_id)
        .bind(record.email_enabled)
        .bind(record.push_enabled)
        .bind(record.in_app_enabled)
        .bind(sqlx::types::Json(&record.preferences))
        .execute(&self.pool)
        .await
        .map_err(Error::backend)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::conformance;

    #[tokio::test]
    async fn conforms_to_preference_store() {
        let pool = super::super::connect("sqlite::memory:")
            .await
            .expect("sqlite");
        conformance::preference_store(&SqlitePreferenceStore::new(pool)).await;
    }
}
