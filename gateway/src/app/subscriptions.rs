//! Channel subscriptions (AC20-AC22). They belong to the user, not to a connection: stored choices
//! survive reconnects and apply at once to every live connection, since delivery reads them each time.

use std::sync::Arc;

use crate::domain::channel::ChannelCatalog;
use crate::error::{Error, Result};
use crate::ports::{Clock, ConnectionRegistry, SubscriptionStore};

pub struct SubscriptionService {
    store: Arc<dyn SubscriptionStore>,
    registry: Arc<dyn ConnectionRegistry>,
    catalog: Arc<ChannelCatalog>,
    clock: Arc<dyn Clock>,
}

impl SubscriptionService {
    pub fn new(
        store: Arc<dyn SubscriptionStore>,
        registry: Arc<dyn ConnectionRegistry>,
        catalog: Arc<ChannelCatalog>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            registry,
            catalog,
            clock,
        }
    }

    /// The channels `user_id` receives: explicit choices, else each channel's default, in catalog
    /// order. Connections further intersect this with their token's allowed channels.
    pub async fn effective(&self, user_id: &str) -> Result<Vec<String>> {
        let choices = self.store.choices(user_id).await?;
        Ok(self
            .catalog
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
        for name in channels {
            if self.catalog.get(name).is_none() {
                return Err(Error::UnknownChannel(name.chars().take(64).collect()));
            }
            if allowed.is_some_and(|allowed| !allowed.contains(name)) {
                return Err(Error::ForbiddenChannel(name.clone()));
            }
        }
        Ok(())
    }

    async fn change(&self, user_id: &str, channels: &[String], subscribed: bool) -> Result<Vec<String>> {
        self.store
            .set(user_id, channels, subscribed, self.clock.now_ms())
            .await?;
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

    fn catalog() -> Arc<ChannelCatalog> {
        let spec = |name: &str, types: &[&str], admin_only: bool, default_subscribed: bool| ChannelEntry {
            name: name.into(),
            description: None,
            types: types.iter().map(|t| (*t).to_owned()).collect(),
            admin_only,
            required_role: None,
            default_subscribed,
            retention_days: None,
        };
        Arc::new(
            ChannelCatalog::from_entries(
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
}
