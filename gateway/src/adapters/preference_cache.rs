//! Cluster mode: each replica remembers the preferences of the users it published to, so that a
//! publish does not read them from PostgreSQL every time (a transaction per publish, the largest
//! share of the database's CPU at 2,000 publishes/s: docs/benchmarks.md). No invalidation message
//! is needed, and a preference change made on another replica is still seen by the next publish:
//! every answer carries the versions it was read at, the publish's commit checks them
//! (`NotificationStore::publish_checked`), and a publish that finds one changed makes the replica
//! forget its recipients and reads them again from the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

use crate::domain::preferences::Preferences;
use crate::error::Result;
use crate::ports::{PreferenceStore, PreferencesRead};

/// Users remembered at most; past it the replica forgets them all and starts again (a bound on
/// memory, not an eviction policy: a replica publishes to its recent recipients again soon).
pub const REMEMBERED_USERS: usize = 100_000;

pub struct PreferenceCache {
    store: Arc<dyn PreferenceStore>,
    remembered: Mutex<Remembering>,
}

#[derive(Default)]
struct Remembering {
    users: HashMap<String, Remembered>,
    /// Raised by every forget and put: a read that started before one may have read the old row
    /// (and put it back after it was forgotten), so what it read is passed on, not remembered.
    forgotten: u64,
}

/// A user's stored preferences (none: the defaults) at a version.
#[derive(Clone)]
struct Remembered {
    preferences: Option<Box<Preferences>>,
    version: Option<String>,
}

impl PreferenceCache {
    /// Remembers what `store` answers; `store` must version what it reads (PostgreSQL does), or
    /// nothing is remembered.
    pub fn new(store: Arc<dyn PreferenceStore>) -> Self {
        Self {
            store,
            remembered: Mutex::default(),
        }
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, Remembering> {
        self.remembered.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many users are remembered now.
    pub fn len(&self) -> usize {
        self.remembered().users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl PreferenceStore for PreferenceCache {
    /// Read from the store: what a user's own `GET` answers is always the stored value.
    async fn get(&self, user_id: &str) -> Result<Option<Preferences>> {
        self.store.get(user_id).await
    }

    async fn get_many(&self, user_ids: &[String]) -> Result<PreferencesRead> {
        let mut answer = PreferencesRead::default();
        let mut missing = Vec::new();
        let forgotten_before = {
            let remembered = self.remembered();
            for user_id in user_ids {
                match remembered.users.get(user_id) {
                    Some(known) => {
                        if let Some(preferences) = &known.preferences {
                            answer.found.insert(user_id.clone(), (**preferences).clone());
                        }
                        answer.versions.0.push((user_id.clone(), known.version.clone()));
                    }
                    None => missing.push(user_id.clone()),
                }
            }
            remembered.forgotten
        };
        if missing.is_empty() {
            return Ok(answer);
        }
        let mut read = self.store.get_many(&missing).await?;
        let mut remembered = self.remembered();
        let remember = remembered.forgotten == forgotten_before;
        if remember && remembered.users.len() + missing.len() > REMEMBERED_USERS {
            remembered.users.clear();
        }
        for (user_id, version) in read.versions.0 {
            let preferences = read.found.remove(&user_id);
            if remember {
                remembered.users.insert(
                    user_id.clone(),
                    Remembered {
                        preferences: preferences.clone().map(Box::new),
                        version: version.clone(),
                    },
                );
            }
            if let Some(preferences) = preferences {
                answer.found.insert(user_id.clone(), preferences);
            }
            answer.versions.0.push((user_id, version));
        }
        // An unversioned answer (a store that does not version) is passed on, not remembered.
        answer.found.extend(read.found);
        Ok(answer)
    }

    async fn put(&self, user_id: &str, preferences: &Preferences) -> Result<()> {
        let written = self.store.put(user_id, preferences).await;
        // Whether or not it was written, the next read asks the store.
        let mut remembered = self.remembered();
        remembered.users.remove(user_id);
        remembered.forgotten += 1;
        written
    }

    fn forget(&self, user_ids: &[String]) {
        let mut remembered = self.remembered();
        for user_id in user_ids {
            remembered.users.remove(user_id);
        }
        remembered.forgotten += 1;
        drop(remembered);
        self.store.forget(user_ids);
    }
}

/// The versions of `read` as a map, for tests.
#[cfg(test)]
fn versions_of(read: &PreferencesRead) -> HashMap<&str, Option<&str>> {
    let crate::ports::PreferenceVersions(versions) = &read.versions;
    versions.iter().map(|(user, v)| (user.as_str(), v.as_deref())).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::adapters::memory::MemoryPreferenceStore;
    use crate::ports::{PreferenceVersions, conformance};

    /// A versioned store in memory: each put raises the user's version; counts the reads.
    #[derive(Default)]
    struct Versioned {
        store: MemoryPreferenceStore,
        versions: Mutex<HashMap<String, u64>>,
        reads: AtomicUsize,
    }

    #[async_trait]
    impl PreferenceStore for Versioned {
        async fn get(&self, user_id: &str) -> Result<Option<Preferences>> {
            self.store.get(user_id).await
        }

        async fn get_many(&self, user_ids: &[String]) -> Result<PreferencesRead> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let mut read = self.store.get_many(user_ids).await?;
            let versions = self.versions.lock().expect("versions");
            read.versions = PreferenceVersions(
                user_ids
                    .iter()
                    .map(|id| (id.clone(), versions.get(id).map(u64::to_string)))
                    .collect(),
            );
            Ok(read)
        }

        async fn put(&self, user_id: &str, preferences: &Preferences) -> Result<()> {
            *self
                .versions
                .lock()
                .expect("versions")
                .entry(user_id.to_owned())
                .or_default() += 1;
            self.store.put(user_id, preferences).await
        }
    }

    #[tokio::test]
    async fn conforms_to_preference_store() {
        conformance::preference_store(&PreferenceCache::new(Arc::new(Versioned::default()))).await;
    }

    #[tokio::test]
    async fn remembers_what_it_read_with_its_version_until_told_to_forget() {
        let store = Arc::new(Versioned::default());
        let muted = Preferences {
            in_app_enabled: false,
            ..Preferences::default()
        };
        store.put("alice", &muted).await.expect("put");
        let cache = PreferenceCache::new(store.clone());
        let users = ["alice".to_owned(), "bob".to_owned()];
        let first = cache.get_many(&users).await.expect("read");
        assert_eq!(first.found.get("alice"), Some(&muted));
        assert_eq!(
            versions_of(&first),
            HashMap::from([("alice", Some("1")), ("bob", None)])
        );
        let again = cache.get_many(&users).await.expect("read");
        assert_eq!(again, first, "remembered");
        assert_eq!(store.reads.load(Ordering::SeqCst), 1, "one read of the store");

        // Changed behind its back (another replica): it still answers what it read, at the old
        // version, which the publish's commit refuses; told to forget, it reads again.
        store
            .put("alice", &Preferences::default())
            .await
            .expect("put elsewhere");
        assert_eq!(
            versions_of(&cache.get_many(&users).await.expect("read"))["alice"],
            Some("1")
        );
        cache.forget(&users[..1]);
        let fresh = cache.get_many(&users).await.expect("read");
        assert_eq!(versions_of(&fresh)["alice"], Some("2"));
        assert_eq!(
            fresh.found.get("alice"),
            Some(&Preferences::default()),
            "what is stored now"
        );
        assert_eq!(store.reads.load(Ordering::SeqCst), 2, "only alice read again");

        // A put through it forgets the user at once.
        cache.put("bob", &muted).await.expect("put");
        assert_eq!(
            cache.get_many(&users[1..]).await.expect("read").found.get("bob"),
            Some(&muted)
        );
    }

    /// Holds each read until released.
    struct Held {
        store: Versioned,
        release: tokio::sync::Semaphore,
    }

    #[async_trait]
    impl PreferenceStore for Held {
        async fn get(&self, user_id: &str) -> Result<Option<Preferences>> {
            self.store.get(user_id).await
        }

        async fn get_many(&self, user_ids: &[String]) -> Result<PreferencesRead> {
            let read = self.store.get_many(user_ids).await;
            self.release.acquire().await.expect("open").forget();
            read
        }

        async fn put(&self, user_id: &str, preferences: &Preferences) -> Result<()> {
            self.store.put(user_id, preferences).await
        }
    }

    #[tokio::test]
    async fn a_read_that_was_in_flight_when_users_were_forgotten_is_not_remembered() {
        let store = Arc::new(Held {
            store: Versioned::default(),
            release: tokio::sync::Semaphore::new(0),
        });
        let cache = Arc::new(PreferenceCache::new(store.clone()));
        let users = vec!["alice".to_owned()];
        // A read takes the old row, then a publish finds it changed and forgets it.
        let in_flight = tokio::spawn({
            let (cache, users) = (cache.clone(), users.clone());
            async move { cache.get_many(&users).await }
        });
        while store.store.reads.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        cache.forget(&users);
        store.release.add_permits(1);
        let read = in_flight.await.expect("joins").expect("read");
        assert_eq!(versions_of(&read)["alice"], None, "its caller gets what it read");
        assert!(cache.is_empty(), "but it is not remembered");
    }

    #[tokio::test]
    async fn what_an_unversioned_store_answers_is_passed_on_not_remembered() {
        let store = Arc::new(MemoryPreferenceStore::default());
        let cache = PreferenceCache::new(store.clone());
        let muted = Preferences {
            in_app_enabled: false,
            ..Preferences::default()
        };
        store.put("alice", &muted).await.expect("put");
        let read = cache.get_many(&["alice".to_owned()]).await.expect("read");
        assert_eq!(read.found.get("alice"), Some(&muted));
        assert!(cache.is_empty());
    }
}
