use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sqlx::{QueryBuilder, Sqlite, SqlitePool};

use crate::adapters::sql::{PREFERENCE_COLUMNS, PreferencesRow, Statements, db_error};
use crate::domain::preferences::Preferences;
use crate::error::Result;
use crate::ports::{PreferenceStore, PreferenceVersions, PreferencesRead};

/// Users whose preferences are remembered at most; past it the memory starts over.
const MAX_REMEMBERED: usize = 100_000;

/// Preferences by user; `None`: the user has none stored.
type Remembered = HashMap<Box<str>, Option<Box<Preferences>>>;

/// The embedded store's preferences, remembered after the first read: every publish reads its
/// recipients' preferences, and the embedded store belongs to one process, so every change passes
/// through [`PreferenceStore::put`] here and the copy cannot go stale. (The cluster store has no such
/// copy: another replica may change them.)
#[derive(Debug, Clone)]
pub struct SqlitePreferenceStore {
    pool: SqlitePool,
    /// `None`: the user has no stored preferences (most users). Boxed, so that the table's slot of
    /// such a user is two pointers, not a whole `Preferences`: every connected user has an entry.
    remembered: Arc<Mutex<Remembered>>,
    /// Puts run one at a time, so the database and the memory see them in the same order.
    writing: Arc<tokio::sync::Mutex<()>>,
    /// Puts so far: a read remembers what it read only if no put happened meanwhile.
    puts: Arc<AtomicU64>,
}

impl SqlitePreferenceStore {
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            remembered: Arc::default(),
            writing: Arc::default(),
            puts: Arc::default(),
        }
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, Remembered> {
        self.remembered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers what a read that began after `puts_before` puts found, unless a put happened
    /// meanwhile (the read may then hold the value from before it).
    fn remember_read(&self, user_id: &str, preferences: Option<Preferences>, puts_before: u64) {
        let mut remembered = self.remembered();
        if self.puts.load(Ordering::SeqCst) != puts_before {
            return;
        }
        if remembered.len() >= MAX_REMEMBERED {
            remembered.clear();
        }
        remembered.entry(user_id.into()).or_insert(preferences.map(Box::new));
    }
}

#[async_trait]
impl PreferenceStore for SqlitePreferenceStore {
    async fn get(&self, user_id: &str) -> Result<Option<Preferences>> {
        let puts_before = self.puts.load(Ordering::SeqCst);
        if let Some(known) = self.remembered().get(user_id) {
            return Ok(known.as_deref().cloned());
        }
        let read = Statements::get_preferences(&self.pool, user_id).await?;
        self.remember_read(user_id, read.clone(), puts_before);
        Ok(read)
    }

    async fn get_many(&self, user_ids: &[String]) -> Result<PreferencesRead> {
        let puts_before = self.puts.load(Ordering::SeqCst);
        let mut found = HashMap::new();
        let mut unknown = Vec::new();
        {
            let remembered = self.remembered();
            for user_id in user_ids {
                match remembered.get(user_id.as_str()) {
                    Some(Some(preferences)) => {
                        found.insert(user_id.clone(), (**preferences).clone());
                    }
                    Some(None) => {}
                    None => unknown.push(user_id.clone()),
                }
            }
        }
        let mut read = HashMap::new();
        // SQLite caps bound parameters per statement; 500 stays well below every version's limit.
        for chunk in unknown.chunks(500) {
            let mut query = QueryBuilder::<Sqlite>::new(format!(
                "SELECT {PREFERENCE_COLUMNS} FROM notification_preferences WHERE user_id IN ("
            ));
            let mut ids = query.separated(", ");
            for id in chunk {
                ids.push_bind(id);
            }
            query.push(")");
            let rows: Vec<PreferencesRow> = query.build_query_as().fetch_all(&self.pool).await.map_err(db_error)?;
            read.extend(rows.into_iter().map(PreferencesRow::into_preferences));
        }
        for user_id in unknown {
            let preferences = read.remove(&user_id);
            self.remember_read(&user_id, preferences.clone(), puts_before);
            if let Some(preferences) = preferences {
                found.insert(user_id, preferences);
            }
        }
        // One process reads and writes them, and forgets nothing it wrote: nothing to check.
        Ok(PreferencesRead {
            found,
            versions: PreferenceVersions::default(),
        })
    }

    async fn put(&self, user_id: &str, preferences: &Preferences) -> Result<()> {
        let _one_at_a_time = self.writing.lock().await;
        let written = Statements::put_preferences(&self.pool, user_id, preferences).await;
        {
            let mut remembered = self.remembered();
            match &written {
                Ok(()) => remembered.insert(user_id.into(), Some(Box::new(preferences.clone()))),
                // Unknown whether it was stored: read it again next time.
                Err(_) => remembered.remove(user_id),
            };
            self.puts.fetch_add(1, Ordering::SeqCst);
        }
        written
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

    #[tokio::test]
    async fn remembered_preferences_follow_every_put() {
        let pool = super::super::connect("sqlite::memory:").await.expect("sqlite");
        let store = SqlitePreferenceStore::new(pool);
        let users = ["alice".to_owned(), "bob".to_owned()];
        assert!(store.get_many(&users).await.expect("first read").found.is_empty());
        let quiet = Preferences {
            in_app_enabled: false,
            ..Preferences::default()
        };
        store.put("alice", &quiet).await.expect("put");
        assert_eq!(store.get("alice").await.expect("get"), Some(quiet.clone()));
        let many = store.get_many(&users).await.expect("second read");
        assert_eq!(many.found.get("alice"), Some(&quiet));
        assert!(!many.found.contains_key("bob"));
        // What was remembered is what the database holds.
        let fresh = SqlitePreferenceStore::new(store.pool.clone());
        assert_eq!(fresh.get("alice").await.expect("from the database"), Some(quiet));
    }
}
