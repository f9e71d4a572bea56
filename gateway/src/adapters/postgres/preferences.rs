use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::PgPool;

use crate::domain::preferences::{Overrides, Preferences};
use crate::error::{Error, Result};
use crate::ports::PreferenceStore;

#[derive(Debug, Clone)]
pub struct PostgresPreferenceStore {
    pool: PgPool,
}

impl PostgresPreferenceStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    user_id: String,
    email_enabled: Option<bool>,
    push_enabled: Option<bool>,
    in_app_enabled: Option<bool>,
    preferences: Option<sqlx::types::Json<serde_json::Value>>,
}

impl Row {
    fn into_preferences(self) -> (String, Preferences) {
        let preferences = Preferences {
            in_app_enabled: self.in_app_enabled.unwrap_or(true),
            email_enabled: self.email_enabled.unwrap_or(true),
            push_enabled: self.push_enabled.unwrap_or(true),
            overrides: self.preferences.map(|p| Overrides::from_json(&p.0)).unwrap_or_default(),
        };
        (self.user_id, preferences)
    }
}

const SELECT: &str =
    "SELECT user_id, email_enabled, push_enabled, in_app_enabled, preferences FROM notification_preferences";

#[async_trait]
impl PreferenceStore for PostgresPreferenceStore {
    async fn get(&self, user_id: &str) -> Result<Option<Preferences>> {
        let row: Option<Row> = sqlx::query_as(&format!("{SELECT} WHERE user_id = $1"))
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(Error::backend)?;
        Ok(row.map(|row| row.into_preferences().1))
    }

    async fn get_many(&self, user_ids: &[String]) -> Result<HashMap<String, Preferences>> {
        let rows: Vec<Row> = sqlx::query_as(&format!("{SELECT} WHERE user_id = ANY($1)"))
            .bind(user_ids)
            .fetch_all(&self.pool)
            .await
            .map_err(Error::backend)?;
        Ok(rows.into_iter().map(Row::into_preferences).collect())
    }

    async fn put(&self, user_id: &str, preferences: &Preferences) -> Result<()> {
        sqlx::query(
            "INSERT INTO notification_preferences (user_id, email_enabled, push_enabled, in_app_enabled, preferences)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (user_id) DO UPDATE SET
                 email_enabled = EXCLUDED.email_enabled,
                 push_enabled = EXCLUDED.push_enabled,
                 in_app_enabled = EXCLUDED.in_app_enabled,
                 preferences = EXCLUDED.preferences,
                 updated_at = NOW()",
        )
        .bind(user_id)
        .bind(preferences.email_enabled)
        .bind(preferences.push_enabled)
        .bind(preferences.in_app_enabled)
        .bind(sqlx::types::Json(preferences.overrides.to_json()))
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
        let Some(pool) = super::super::test_pool().await else {
            return;
        };
        conformance::preference_store(&PostgresPreferenceStore::new(pool)).await;
    }
}
