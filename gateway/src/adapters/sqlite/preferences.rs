use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::{QueryBuilder, Sqlite, SqlitePool};

use crate::domain::preferences::{Overrides, Preferences};
use crate::error::{Error, Result};
use crate::ports::PreferenceStore;

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

impl Row {
    fn into_preferences(self) -> (String, Preferences) {
        let preferences = Preferences {
            in_app_enabled: self.in_app_enabled,
            email_enabled: self.email_enabled,
            push_enabled: self.push_enabled,
            overrides: Overrides::from_json(&self.preferences.0),
        };
        (self.user_id, preferences)
    }
}

const SELECT: &str =
    "SELECT user_id, email_enabled, push_enabled, in_app_enabled, preferences FROM notification_preferences";

#[async_trait]
impl PreferenceStore for SqlitePreferenceStore {
    async fn get(&self, user_id: &str) -> Result<Option<Preferences>> {
        let row: Option<Row> = sqlx::query_as(&format!("{SELECT} WHERE user_id = ?"))
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(Error::backend)?;
        Ok(row.map(|row| row.into_preferences().1))
    }

    async fn get_many(&self, user_ids: &[String]) -> Result<HashMap<String, Preferences>> {
        let mut found = HashMap::new();
        // SQLite caps bound parameters per statement; 500 stays well below every version's limit.
        for chunk in user_ids.chunks(500) {
            let mut query = QueryBuilder::<Sqlite>::new(format!("{SELECT} WHERE user_id IN ("));
            let mut ids = query.separated(", ");
            for id in chunk {
                ids.push_bind(id);
            }
            query.push(")");
            let rows: Vec<Row> = query
                .build_query_as()
                .fetch_all(&self.pool)
                .await
                .map_err(Error::backend)?;
            found.extend(rows.into_iter().map(Row::into_preferences));
        }
        Ok(found)
    }

    async fn put(&self, user_id: &str, preferences: &Preferences) -> Result<()> {
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
        let pool = super::super::connect("sqlite::memory:").await.expect("sqlite");
        conformance::preference_store(&SqlitePreferenceStore::new(pool)).await;
    }
}
