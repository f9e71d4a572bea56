use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::PgPool;

use crate::adapters::sql::{PreferencesRow, SELECT_PREFERENCES, Statements, db_error};
use crate::domain::preferences::Preferences;
use crate::error::Result;
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

#[async_trait]
impl PreferenceStore for PostgresPreferenceStore {
    async fn get(&self, user_id: &str) -> Result<Option<Preferences>> {
        Statements::get_preferences(&self.pool, user_id).await
    }

    async fn get_many(&self, user_ids: &[String]) -> Result<HashMap<String, Preferences>> {
        let rows: Vec<PreferencesRow> = sqlx::query_as(&format!("{SELECT_PREFERENCES} WHERE user_id = ANY($1)"))
            .bind(user_ids)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(rows.into_iter().map(PreferencesRow::into_preferences).collect())
    }

    async fn put(&self, user_id: &str, preferences: &Preferences) -> Result<()> {
        Statements::put_preferences(&self.pool, user_id, preferences).await
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
