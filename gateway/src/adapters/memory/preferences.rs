use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::Result;
use crate::ports::{PreferenceRecord, PreferenceStore};

use super::lock;

/// Preferences in a map: for service tests that need no database.
#[derive(Debug, Default)]
pub struct MemoryPreferenceStore {
    rows: Mutex<HashMap<String, PreferenceRecord>>,
}

#[async_trait]
impl PreferenceStore for MemoryPreferenceStore {
    async fn get(&self, user_id: &str) -> Result<Option<PreferenceRecord>> {
        Ok(lock(&self.rows).get(user_id).cloned())
    }

    async fn put(&self, record: &PreferenceRecord) -> Result<()> {
        lock(&self.rows).insert(record.user_id.clone(), record.clone());
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
