//! Notification preferences (AC16-AC19) over the preference store.

use std::sync::Arc;

use crate::app::catalog::LiveCatalog;
use crate::domain::preferences::{Preferences, PreferencesPatchBody, PreferencesView, parse_patch};
use crate::error::{Error, Result};
use crate::ports::{PreferenceStore, PreferencesRead};

pub struct PreferenceService {
    store: Arc<dyn PreferenceStore>,
    catalog: Arc<LiveCatalog>,
}

impl PreferenceService {
    pub fn new(store: Arc<dyn PreferenceStore>, catalog: Arc<LiveCatalog>) -> Self {
        Self { store, catalog }
    }

    pub async fn get(&self, user_id: &str) -> Result<Preferences> {
        Ok(self.store.get(user_id).await?.unwrap_or_default())
    }

    /// Effective preferences, defaults filled, as the HTTP API answers them.
    pub async fn effective(&self, user_id: &str) -> Result<PreferencesView> {
        Ok(self.get(user_id).await?.effective(&self.catalog.current()))
    }

    /// Applies a partial update and answers the effective result.
    pub async fn patch(&self, user_id: &str, body: PreferencesPatchBody) -> Result<PreferencesView> {
        let patch = parse_patch(body, &self.catalog.current()).map_err(Error::Validation)?;
        let mut preferences = self.get(user_id).await?;
        preferences.apply(patch);
        self.store.put(user_id, &preferences).await?;
        tracing::info!(user_id, in_app = preferences.in_app_enabled, "preferences:updated");
        Ok(preferences.effective(&self.catalog.current()))
    }

    /// The stored preferences of many users at once (defaults for those who never saved any), with
    /// what the store checks at the publish's commit.
    pub async fn for_users(&self, user_ids: &[String]) -> Result<PreferencesRead> {
        self.store.get_many(user_ids).await
    }

    /// A publish found these users' preferences changed since it read them: the next read asks the
    /// database.
    pub fn forget(&self, user_ids: &[String]) {
        self.store.forget(user_ids);
    }
}
