//! Preference reads of concurrent publishes, coalesced: one query reads the recipients of every
//! publish waiting. Each publish reads its recipients' preferences before it is stored; on
//! PostgreSQL that read was a transaction of its own per publish, about half of the database's
//! transactions at 2,000 publishes/s and a round trip each (docs/scaling.md).
//!
//! A read never joins a query already in flight: that query may have started before a preference
//! change the publish must see. It waits for the next round, which starts once the one in flight
//! is answered, so each read still starts after its publish arrived, as an uncoalesced one would.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use futures_util::FutureExt;
use tokio::sync::oneshot;

use crate::domain::preferences::Preferences;
use crate::error::{Error, Result};
use crate::ports::{PreferenceStore, PreferenceVersions, PreferencesRead};

/// Most users read in one round; more wait for the next one (one publish is never split).
const ROUND_USERS: usize = 2_000;

pub struct CoalescedPreferences {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn PreferenceStore>,
    rounds: Mutex<Rounds>,
}

#[derive(Default)]
struct Rounds {
    waiting: Vec<Waiter>,
    /// A round is being read (by a task of its own, so a dropped request cannot stall the rest).
    reading: bool,
}

struct Waiter {
    user_ids: Vec<String>,
    answer: oneshot::Sender<Result<PreferencesRead>>,
}

impl CoalescedPreferences {
    pub fn new(store: Arc<dyn PreferenceStore>) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                rounds: Mutex::default(),
            }),
        }
    }
}

impl Inner {
    fn rounds(&self) -> std::sync::MutexGuard<'_, Rounds> {
        self.rounds.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads rounds until nobody waits.
    async fn read_rounds(self: Arc<Self>) {
        loop {
            let round = {
                let mut rounds = self.rounds();
                if rounds.waiting.is_empty() {
                    rounds.reading = false;
                    return;
                }
                let mut users = 0;
                let take = rounds
                    .waiting
                    .iter()
                    .take_while(|w| {
                        users += w.user_ids.len();
                        users <= ROUND_USERS
                    })
                    .count()
                    .max(1);
                rounds.waiting.drain(..take).collect::<Vec<_>>()
            };
            let mut seen = HashSet::new();
            let users: Vec<String> = round
                .iter()
                .flat_map(|w| w.user_ids.iter())
                .filter(|id| seen.insert(id.as_str()))
                .cloned()
                .collect();
            // A panic in the store answers this round with an error instead of leaving `reading`
            // set and every later read waiting for a round that never comes.
            let read = std::panic::AssertUnwindSafe(self.store.get_many(&users))
                .catch_unwind()
                .await;
            let read = read.unwrap_or_else(|_| Err(Error::Unavailable("preferences read failed".into())));
            match read {
                Ok(read) => {
                    let versions: HashMap<&str, &Option<String>> =
                        read.versions.0.iter().map(|(id, v)| (id.as_str(), v)).collect();
                    for waiter in round {
                        let found = waiter
                            .user_ids
                            .iter()
                            .filter_map(|id| read.found.get(id).map(|p| (id.clone(), p.clone())))
                            .collect();
                        let versions = waiter
                            .user_ids
                            .iter()
                            .filter_map(|id| versions.get(id.as_str()).map(|v| (id.clone(), (*v).clone())))
                            .collect();
                        let _ = waiter.answer.send(Ok(PreferencesRead {
                            found,
                            versions: PreferenceVersions(versions),
                        }));
                    }
                }
                Err(err) => {
                    for waiter in round {
                        let _ = waiter.answer.send(Err(same_error(&err)));
                    }
                }
            }
        }
    }
}

/// Each publish of a failed round gets the failure (errors are not `Clone`).
fn same_error(err: &Error) -> Error {
    match err {
        Error::Backend(message) => Error::Backend(message.clone()),
        Error::Unavailable(message) => Error::Unavailable(message.clone()),
        other => Error::Unavailable(other.to_string()),
    }
}

#[async_trait]
impl PreferenceStore for CoalescedPreferences {
    async fn get(&self, user_id: &str) -> Result<Option<Preferences>> {
        self.inner.store.get(user_id).await
    }

    async fn get_many(&self, user_ids: &[String]) -> Result<PreferencesRead> {
        let (answer, answered) = oneshot::channel();
        let lead = {
            let mut rounds = self.inner.rounds();
            rounds.waiting.push(Waiter {
                user_ids: user_ids.to_vec(),
                answer,
            });
            !std::mem::replace(&mut rounds.reading, true)
        };
        if lead {
            tokio::spawn(self.inner.clone().read_rounds());
        }
        answered
            .await
            .unwrap_or_else(|_| Err(Error::Unavailable("preferences read abandoned".into())))
    }

    async fn put(&self, user_id: &str, preferences: &Preferences) -> Result<()> {
        self.inner.store.put(user_id, preferences).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::adapters::memory::MemoryPreferenceStore;
    use crate::ports::conformance;

    /// Counts the reads that reach the store, and holds each until released.
    struct Gate {
        store: MemoryPreferenceStore,
        reads: AtomicUsize,
        release: tokio::sync::Semaphore,
    }

    #[async_trait]
    impl PreferenceStore for Gate {
        async fn get(&self, user_id: &str) -> Result<Option<Preferences>> {
            self.store.get(user_id).await
        }

        async fn get_many(&self, user_ids: &[String]) -> Result<PreferencesRead> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.release.acquire().await.expect("open").forget();
            self.store.get_many(user_ids).await
        }

        async fn put(&self, user_id: &str, preferences: &Preferences) -> Result<()> {
            self.store.put(user_id, preferences).await
        }
    }

    #[tokio::test]
    async fn conforms_to_preference_store() {
        conformance::preference_store(&CoalescedPreferences::new(Arc::new(MemoryPreferenceStore::default()))).await;
    }

    #[tokio::test]
    async fn reads_waiting_while_one_is_in_flight_share_the_next_query_and_see_what_changed_before_them() {
        let gate = Arc::new(Gate {
            store: MemoryPreferenceStore::default(),
            reads: AtomicUsize::new(0),
            release: tokio::sync::Semaphore::new(0),
        });
        let muted = Preferences {
            in_app_enabled: false,
            ..Preferences::default()
        };
        let coalesced = Arc::new(CoalescedPreferences::new(gate.clone()));
        // The first read is in flight (held by the gate)...
        let first = tokio::spawn({
            let coalesced = coalesced.clone();
            async move { coalesced.get_many(&["alice".to_owned()]).await }
        });
        while gate.reads.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // ...then alice mutes herself, and three more publishes read: they must see it.
        gate.store.put("alice", &muted).await.expect("put");
        let later: Vec<_> = [vec!["alice", "bob"], vec!["bob"], vec!["carol", "alice"]]
            .into_iter()
            .map(|users| {
                let coalesced = coalesced.clone();
                let users: Vec<String> = users.into_iter().map(str::to_owned).collect();
                tokio::spawn(async move { coalesced.get_many(&users).await })
            })
            .collect();
        while coalesced.inner.rounds().waiting.len() < 3 {
            tokio::task::yield_now().await;
        }
        gate.release.add_permits(2);
        // The first read started before the change: it may or may not see it.
        first.await.expect("task").expect("read");
        let mut answers = Vec::new();
        for read in later {
            answers.push(read.await.expect("task").expect("read"));
        }
        assert_eq!(gate.reads.load(Ordering::SeqCst), 2, "three reads, one query");
        assert_eq!(
            answers[0].found.get("alice"),
            Some(&muted),
            "the change made before the read is seen"
        );
        assert!(answers[1].found.is_empty(), "each read gets only its own users");
        assert_eq!(answers[2].found.len(), 1);
    }
}
