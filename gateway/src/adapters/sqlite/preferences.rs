use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::{QueryBuilder, Sqlite, SqlitePool};

use crate::adapters::sql::{PreferencesRow, SELECT_PREFERENCES, Statements};
use crate::domain::preferences::Preferences;
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

#[async_trait]
impl PreferenceStore for SqlitePreferenceStore {
    async fn get(&self, user_id: &str) -> Result<Option<Preferences>> {
        Statements::get_preferences(&self.pool, user_id).await
    }

    async fn get_many(&self, user_ids: &[String]) -> Result<HashMap<String, Preferences>> {
        let mut found = HashMap::new();
        // SQLite caps bound parameters per statement; 500 stays well below every version's limit.
        for chunk in user_ids.chunks(500) {
            let mut query = QueryBuilder::<Sqlite>::new(format!("{SELECT_PREFERENCES} WHERE user_id IN ("));
            let mut ids = query.separated(", ");
            for id in chunk {
                ids.push_bind(id);
            }
            query.push(")");
            let rows: Vec<PreferencesRow> = query
                .build_query_as()
                .fetch_all(&self.pool)
                .await
                .map_err(Error::backend)?;
            found.extend(rows.into_iter().map(PreferencesRow::into_preferences));
        }
        Ok(found)
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
        let pool = super::super::connect("sqlite::memory:").await.expect("sqlite");
        conformance::preference_store(&SqlitePreferenceStore::new(pool)).await;
    }
}
