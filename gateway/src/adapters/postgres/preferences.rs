use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::PgPool;

use crate::adapters::sql::{PREFERENCE_COLUMNS, PreferencesRow, Statements, db_error};
use crate::domain::preferences::Preferences;
use crate::error::Result;
use crate::ports::{PreferenceStore, PreferenceVersions, PreferencesRead};

/// A preferences row with its version.
#[derive(sqlx::FromRow)]
struct VersionedRow {
    version: String,
    #[sqlx(flatten)]
    row: PreferencesRow,
}

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

    async fn get_many(&self, user_ids: &[String]) -> Result<PreferencesRead> {
        // The row's `xmin` (the transaction that wrote it) is its version: any write of the row, and
        // its delete, changes it; a publish's commit checks it (`postgres::writer`).
        let rows: Vec<VersionedRow> = sqlx::query_as(&format!(
            "SELECT xmin::text AS version, {PREFERENCE_COLUMNS} FROM notification_preferences
             WHERE user_id = ANY($1)"
        ))
        .bind(user_ids)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let mut versions: HashMap<String, String> = HashMap::with_capacity(rows.len());
        let mut found = HashMap::with_capacity(rows.len());
        for VersionedRow { version, row } in rows {
            let (user_id, preferences) = row.into_preferences();
            versions.insert(user_id.clone(), version);
            found.insert(user_id, preferences);
        }
        let versions = user_ids
            .iter()
            .map(|id| (id.clone(), versions.get(id).cloned()))
            .collect();
        Ok(PreferencesRead {
            found,
            versions: PreferenceVersions(versions),
        })
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
