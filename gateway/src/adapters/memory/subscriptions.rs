use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::domain::UnixMs;
use crate::error::Result;
use crate::ports::SubscriptionStore;

use super::lock;

/// Subscription choices in a map: for service tests that need no database.
#[derive(Debug, Default)]
pub struct MemorySubscriptionStore {
    choices: Mutex<HashMap<String, HashMap<String, bool>>>,
}

#[async_trait]
impl SubscriptionStore for MemorySubscriptionStore {
    async fn choices(&self, user_id: &str) -> Result<HashMap<String, bool>> {
        Ok(lock(&self.choices).get(user_id).cloned().unwrap_or_default())
    }

    async fn set(&self, user_id: &str, channels: &[String], subscribed: bool, _at: UnixMs) -> Result<()> {
        let mut choices = lock(&self.choices);
        let user = choices.entry(user_id.to_owned()).or_default();
        for channel in channels {
            user.insert(channel.clone(), subscribed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::conformance;

    #[tokio::test]
    async fn conforms_to_subscription_store() {
        conformance::subscription_store(&MemorySubscriptionStore::default()).await;
    }
}
