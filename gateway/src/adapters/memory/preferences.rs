use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::domain::preferences::Preferences;
use crate::error::Result;
use crate::ports::{PreferenceStore, PreferenceVersions, PreferencesRead};

use super::lock;

/// Preferences in a map: for service tests that need no database.
#[derive(Debug, Default)]
pub struct MemoryPreferenceStore {
    rows: Mutex<HashMap<String, Preferences>>,
}

#[async_trait]
impl PreferenceStore for MemoryPreferenceStore {
    async fn get(&self, user_id: &str) -> Result<Option<Preferences>> {
        Ok(lock(&self.rows).get(user_id).cloned())
    }

    async fn get_many(&self, user_ids: &[String]) -> Result<PreferencesRead> {
        let rows = lock(&self.rows);
        let found = user_ids
            .iter()
            .filter_map(|id| rows.get(id).map(|p| (id.clone(), p.clone())))
            .collect();
        Ok(PreferencesRead {
            found,
            versions: PreferenceVersions::default(),
        })
    }

    async fn put(&self, user_id: &str, preferences: &Preferences) -> Result<()> {
        lock(&self.rows).insert(user_id.to_owned(), preferences.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::conformance;

    #[tokio::test]
    async fn conforms_to_preference_store() {
        conformance::preference_store(&MemoryPreferenceStore::default()).await;
    }
}
