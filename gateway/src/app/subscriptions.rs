//! Channel subscriptions (AC20-AC22). They belong to the user, not to a connection: stored choices
//! survive reconnects and apply at once to every live connection.
//!
//! Delivery asks for a user's channels at every push; for users with connections on this replica
//! the answer is remembered ([`SubscriptionService::remembered`]) instead of read from the store
//! each time. Every change is announced on the bus, and each replica forgets what it remembered of
//! that user; a loss of bus events (`Resync`) forgets everything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::app::catalog::LiveCatalog;
use crate::domain::UnixMs;
use crate::domain::channel::ChannelLists;
use crate::error::{Error, Result};
use crate::ports::{BusEvent, Clock, ConnectionRegistry, EventBus, SubscriptionStore};

pub struct SubscriptionService {
    store: Arc<dyn SubscriptionStore>,
    registry: Arc<dyn ConnectionRegistry>,
    catalog: Arc<LiveCatalog>,
    clock: Arc<dyn Clock>,
    bus: Arc<dyn EventBus>,
    remembered: Mutex<Remembered>,
    /// Remembered channels and connections' allowed channels: a few distinct lists, each kept once.
    channel_lists: ChannelLists,
}

/// Channels of users with connections here. Every load and every invalidation takes a fresh number
/// from one counter, and a load stores its result only if its entry still carries the load's number:
/// a load that raced with an invalidation (or with the user leaving and coming back) stores nothing.
#[derive(Default)]
struct Remembered {
    users: HashMap<String, Entry>,
    next_generation: u64,
}

struct Entry {
    generation: u64,
    channels: Option<Channels>,
    /// When `channels` was read: past [`REMEMBER_FOR_MS`] it is read again, a backstop for an
    /// announcement that never arrived (a failed bus publish).
    loaded_at: UnixMs,
}

impl Remembered {
    fn next(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }
}

/// How long remembered channels are trusted without an announcement.
const REMEMBER_FOR_MS: i64 = 30_000;
/// Users remembered at most (connected users of one replica); past it the memory starts over.
const MAX_REMEMBERED: usize = 200_000;

/// A user's subscribed channels, shared by every push that reads them (and with every user
/// subscribed to the same channels).
type Channels = Arc<[String]>;

impl SubscriptionService {
    pub fn new(
        store: Arc<dyn SubscriptionStore>,
        registry: Arc<dyn ConnectionRegistry>,
        catalog: Arc<LiveCatalog>,
        clock: Arc<dyn Clock>,
        bus: Arc<dyn EventBus>,
    ) -> Self {
        Self {
            store,
            registry,
            catalog,
            clock,
            bus,
            remembered: Mutex::default(),
            channel_lists: ChannelLists::default(),
        }
    }

    fn remembered_lock(&self) -> std::sync::MutexGuard<'_, Remembered> {
        self.remembered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// [`SubscriptionService::effective`] for a user with connections here, remembered until it
    /// changes, the user's last connection leaves ([`SubscriptionService::forget`]) or
    /// [`REMEMBER_FOR_MS`] pass.
    pub async fn remembered(&self, user_id: &str) -> Result<Channels> {
        let now = self.clock.now_ms();
        let generation = {
            let mut remembered = self.remembered_lock();
            if let Some(Entry {
                channels: Some(channels),
                loaded_at,
                ..
            }) = remembered.users.get(user_id)
            {
                if now - loaded_at < REMEMBER_FOR_MS {
                    return Ok(channels.clone());
                }
            }
            if remembered.users.len() >= MAX_REMEMBERED {
                remembered.users.clear();
            }
            let generation = remembered.next();
            remembered.users.insert(
                user_id.to_owned(),
                Entry {
                    generation,
                    channels: None,
                    loaded_at: now,
                },
            );
            generation
        };
        let channels = self.channel_lists.share(&self.effective(user_id).await?);
        if let Some(entry) = self.remembered_lock().users.get_mut(user_id) {
            if entry.generation == generation {
                entry.channels = Some(channels.clone());
            }
        }
        Ok(channels)
    }

    /// What is remembered of `user_id` is stale (their subscriptions changed somewhere).
    pub fn invalidate(&self, user_id: &str) {
        let mut remembered = self.remembered_lock();
        let generation = remembered.next();
        if let Some(entry) = remembered.users.get_mut(user_id) {
            entry.generation = generation;
            entry.channels = None;
        }
    }

    /// Everything remembered may be stale (bus events were lost).
    pub fn invalidate_all(&self) {
        let mut remembered = self.remembered_lock();
        let generation = remembered.next();
        for entry in remembered.users.values_mut() {
            entry.generation = generation;
            entry.channels = None;
        }
    }

    /// `channels` as a list shared with every other holder of the same list (a connection's allowed
    /// channels: the same few lists for every user with the same roles).
    pub fn share_channels(&self, channels: &[String]) -> Arc<[String]> {
        self.channel_lists.share(channels)
    }

    /// `user_id` has no connection here any more.
    pub fn forget(&self, user_id: &str) {
        self.remembered_lock().users.remove(user_id);
    }

    /// The channels `user_id` receives: explicit choices, else each channel's default, in catalog
    /// order. Connections further intersect this with their token's allowed channels.
    pub async fn effective(&self, user_id: &str) -> Result<Vec<String>> {
        let choices = self.store.choices(user_id).await?;
        Ok(self
            .catalog
            .current()
            .channels()
            .iter()
            .filter(|channel| {
                choices
                    .get(&channel.name)
                    .copied()
                    .unwrap_or(channel.default_subscribed)
            })
            .map(|channel| channel.name.clone())
            .collect())
    }

    /// Subscribes to `channels`, each of which must exist and be allowed to this connection.
    pub async fn subscribe(&self, user_id: &str, allowed: &[String], channels: &[String]) -> Result<Vec<String>> {
        self.validate(channels, Some(allowed))?;
        self.change(user_id, channels, true).await
    }

    /// Unsubscribes from `channels`, each of which must exist.
    pub async fn unsubscribe(&self, user_id: &str, channels: &[String]) -> Result<Vec<String>> {
        self.validate(channels, None)?;
        self.change(user_id, channels, false).await
    }

    fn validate(&self, channels: &[String], allowed: Option<&[String]>) -> Result<()> {
        if channels.is_empty() {
            return Err(Error::BadRequest("`channels` must name at least one channel".into()));
        }
        let catalog = self.catalog.current();
        for name in channels {
            if catalog.get(name).is_none() {
                return Err(Error::UnknownChannel(name.chars().take(64).collect()));
            }
            if allowed.is_some_and(|allowed| !catalog.admits(allowed, name)) {
                return Err(Error::ForbiddenChannel(name.clone()));
            }
        }
        Ok(())
    }

    async fn change(&self, user_id: &str, channels: &[String], subscribed: bool) -> Result<Vec<String>> {
        self.store
            .set(user_id, channels, subscribed, self.clock.now_ms())
            .await?;
        // Stored: every replica must forget what it remembered, whatever fails next.
        self.invalidate(user_id);
        let changed = BusEvent::SubscriptionsChanged {
            user_id: user_id.to_owned(),
        };
        if let Err(err) = self.bus.publish(changed).await {
            // Other replicas read it again within REMEMBER_FOR_MS.
            tracing::warn!(user_id, error = %err, "bus: subscription change not announced");
        }
        let effective = self.effective(user_id).await?;
        self.registry.set_subscriptions(user_id, &effective).await?;
        tracing::info!(user_id, ?channels, subscribed, "subscriptions:changed");
        Ok(effective)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::clock::ManualClock;
    use crate::adapters::memory::{MemoryConnectionRegistry, MemorySubscriptionStore};
    use herald_contract::ChannelEntry;

    fn catalog() -> Arc<LiveCatalog> {
        let spec = |name: &str, types: &[&str], admin_only: bool, default_subscribed: bool| ChannelEntry {
            name: name.into(),
            description: None,
            types: types.iter().map(|t| (*t).to_owned()).collect(),
            admin_only,
            required_role: None,
            default_subscribed,
            retention_days: None,
        };
        LiveCatalog::fixed(
            crate::domain::channel::ChannelCatalog::from_entries(
                vec![
                    spec("social", &["new_like"], false, true),
                    spec("uploads", &["upload_complete"], false, false),
                    spec("ops", &["maintenance_scheduled"], true, false),
                ],
                "admin",
                7,
            )
            .expect("catalog"),
        )
    }

    fn service(store: Arc<MemorySubscriptionStore>) -> SubscriptionService {
        SubscriptionService::new(
            store,
            Arc::new(MemoryConnectionRegistry::default()),
            catalog(),
            Arc::new(ManualClock::new(0)),
            Arc::new(crate::adapters::memory::MemoryEventBus::default()),
        )
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[tokio::test]
    async fn should_add_channel_subscription() {
        let subscriptions = service(Arc::default());
        assert_eq!(subscriptions.effective("alice").await.expect("effective"), ["social"]);
        let allowed = names(&["social", "uploads"]);
        let now = subscriptions
            .subscribe("alice", &allowed, &names(&["uploads"]))
            .await
            .expect("subscribe");
        assert_eq!(now, ["social", "uploads"]);
    }

    #[tokio::test]
    async fn should_remove_channel_subscription() {
        let subscriptions = service(Arc::default());
        let now = subscriptions
            .unsubscribe("alice", &names(&["social"]))
            .await
            .expect("unsubscribe");
        assert!(now.is_empty());
        assert!(subscriptions.effective("alice").await.expect("effective").is_empty());
    }

    #[tokio::test]
    async fn should_persist_subscriptions_across_reconnections() {
        let store = Arc::new(MemorySubscriptionStore::default());
        let first = service(store.clone());
        first
            .subscribe("alice", &names(&["uploads"]), &names(&["uploads"]))
            .await
            .expect("subscribe");
        first
            .unsubscribe("alice", &names(&["social"]))
            .await
            .expect("unsubscribe");
        // A new connection (a new service over the same store) sees the same choices.
        let second = service(store);
        assert_eq!(second.effective("alice").await.expect("effective"), ["uploads"]);
        assert_eq!(
            second.effective("bob").await.expect("effective"),
            ["social"],
            "choices are per user"
        );
    }

    #[tokio::test]
    async fn should_validate_channel_names() {
        let subscriptions = service(Arc::default());
        let all = names(&["social", "uploads"]);
        let err = subscriptions
            .subscribe("alice", &all, &names(&["nope"]))
            .await
            .expect_err("unknown");
        assert_eq!(err.code(), "unknown_channel");
        let err = subscriptions
            .subscribe("alice", &all, &names(&["ops"]))
            .await
            .expect_err("admin only");
        assert_eq!(err.code(), "forbidden_channel");
        let err = subscriptions
            .unsubscribe("alice", &names(&["nope"]))
            .await
            .expect_err("unknown");
        assert_eq!(err.code(), "unknown_channel");
        assert!(subscriptions.subscribe("alice", &all, &[]).await.is_err(), "empty list");
        // Nothing changed by the refused requests.
        assert_eq!(subscriptions.effective("alice").await.expect("effective"), ["social"]);
        let admin = names(&["social", "uploads", "ops"]);
        assert!(subscriptions.subscribe("root", &admin, &names(&["ops"])).await.is_ok());
    }

    #[tokio::test]
    async fn users_with_the_same_channels_share_one_list() {
        let subscriptions = service(Arc::default());
        let alice = subscriptions.remembered("alice").await.expect("alice");
        let bob = subscriptions.remembered("bob").await.expect("bob");
        assert!(Arc::ptr_eq(&alice, &bob), "both on the defaults");
        let allowed = names(&["social", "uploads"]);
        assert!(Arc::ptr_eq(
            &subscriptions.share_channels(&allowed),
            &subscriptions.share_channels(&allowed)
        ));
    }

    #[tokio::test]
    async fn remembered_channels_hold_until_invalidated_and_changes_are_announced() {
        use crate::ports::SubscriptionStore;
        let store = Arc::new(MemorySubscriptionStore::default());
        let bus = Arc::new(crate::adapters::memory::MemoryEventBus::default());
        let mut events = bus.subscribe();
        let clock = Arc::new(ManualClock::new(0));
        let subscriptions = SubscriptionService::new(
            store.clone(),
            Arc::new(MemoryConnectionRegistry::default()),
            catalog(),
            clock.clone(),
            bus,
        );
        assert_eq!(*subscriptions.remembered("alice").await.expect("load"), ["social"]);
        // Changed behind this replica's back (another replica's write): still remembered...
        store.set("alice", &names(&["social"]), false, 1).await.expect("set");
        assert_eq!(
            *subscriptions.remembered("alice").await.expect("remembered"),
            ["social"]
        );
        // ...until the change is announced.
        subscriptions.invalidate("alice");
        assert!(subscriptions.remembered("alice").await.expect("reload").is_empty());
        // An announcement that never came: trusted only for so long.
        store.set("alice", &names(&["social"]), true, 2).await.expect("set");
        assert!(subscriptions.remembered("alice").await.expect("remembered").is_empty());
        clock.advance(REMEMBER_FOR_MS);
        assert_eq!(
            *subscriptions.remembered("alice").await.expect("read again"),
            ["social"]
        );
        subscriptions.invalidate_all();
        subscriptions.forget("alice");

        // A change made here is remembered at once and announced to every replica.
        subscriptions.remembered("alice").await.expect("load");
        subscriptions
            .subscribe("alice", &names(&["social"]), &names(&["social"]))
            .await
            .expect("subscribe");
        assert_eq!(*subscriptions.remembered("alice").await.expect("fresh"), ["social"]);
        let announced = tokio::time::timeout(std::time::Duration::from_secs(5), events.recv())
            .await
            .expect("in time")
            .expect("an event");
        assert_eq!(
            announced,
            BusEvent::SubscriptionsChanged {
                user_id: "alice".into()
            }
        );
    }
}
