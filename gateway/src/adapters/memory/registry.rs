use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::domain::UnixMs;
use crate::domain::by_user::ByUser;
use crate::domain::channel::ChannelLists;
use crate::domain::connection::ConnectionRecord;
use crate::error::Result;
use crate::ports::{ConnectionRegistry, RegisterOutcome};

use super::lock;

/// Connections by id plus a per-user index, under one lock so that the cap check and the insert
/// are a single atomic step.
#[derive(Debug, Default)]
pub struct MemoryConnectionRegistry {
    state: Mutex<ByUser<Registered>>,
    /// Connections' channel lists are mostly the same few: each distinct one is kept once.
    channel_lists: ChannelLists,
}

/// A [`ConnectionRecord`] as kept here, compact because every idle connection has one: its ids are
/// the index's (one allocation each), its channel lists shared with other connections.
#[derive(Debug)]
struct Registered {
    token_id: Box<str>,
    connected_at: UnixMs,
    last_ping_at: UnixMs,
    expires_at: UnixMs,
    subscriptions: Arc<[String]>,
    allowed_channels: Arc<[String]>,
    user_agent: Box<str>,
}

impl Registered {
    fn is_expired(&self, now: UnixMs) -> bool {
        self.expires_at <= now
    }

    fn record(&self, connection_id: &str, user_id: &str) -> ConnectionRecord {
        ConnectionRecord {
            connection_id: connection_id.to_owned(),
            user_id: user_id.to_owned(),
            token_id: self.token_id.to_string(),
            connected_at: self.connected_at,
            last_ping_at: self.last_ping_at,
            subscriptions: self.subscriptions.to_vec(),
            allowed_channels: self.allowed_channels.to_vec(),
            user_agent: self.user_agent.to_string(),
            expires_at: self.expires_at,
        }
    }
}

/// Whether `connection_id` is registered, and to `user_id`.
fn is_of(registry: &ByUser<Registered>, user_id: &str, connection_id: &str) -> bool {
    registry
        .get_full(connection_id)
        .is_some_and(|(_, owner, _)| **owner == *user_id)
}

fn live_count(registry: &ByUser<Registered>, user_id: &str, now: UnixMs, live_since: UnixMs) -> usize {
    registry
        .of_user(user_id)
        .filter(|(_, r)| !r.is_expired(now) && r.last_ping_at >= live_since)
        .count()
}

#[async_trait]
impl ConnectionRegistry for MemoryConnectionRegistry {
    async fn register(
        &self,
        record: &ConnectionRecord,
        max_per_user: u32,
        now: UnixMs,
        live_since: UnixMs,
    ) -> Result<RegisterOutcome> {
        let mut registry = lock(&self.state);
        if let Some((_, user_id, existing)) = registry.get_full(&record.connection_id) {
            if existing.is_expired(now) {
                registry.remove(&record.connection_id);
            } else if **user_id == *record.user_id && *existing.token_id == *record.token_id {
                return Ok(RegisterOutcome::AlreadyRegistered);
            } else {
                return Ok(RegisterOutcome::IdTaken);
            }
        }
        if live_count(&registry, &record.user_id, now, live_since) >= max_per_user as usize {
            return Ok(RegisterOutcome::AtCapacity);
        }
        let registered = Registered {
            token_id: record.token_id.as_str().into(),
            connected_at: record.connected_at,
            last_ping_at: record.last_ping_at,
            expires_at: record.expires_at,
            subscriptions: self.channel_lists.share(&record.subscriptions),
            allowed_channels: self.channel_lists.share(&record.allowed_channels),
            user_agent: record.user_agent.as_str().into(),
        };
        registry.insert(
            record.connection_id.as_str().into(),
            record.user_id.as_str().into(),
            registered,
        );
        Ok(RegisterOutcome::Registered)
    }

    async fn touch(&self, user_id: &str, connection_id: &str, at: UnixMs, expires_at: UnixMs) -> Result<bool> {
        let mut registry = lock(&self.state);
        if !is_of(&registry, user_id, connection_id) {
            return Ok(false);
        }
        Ok(match registry.get_mut(connection_id) {
            Some(registered) => {
                registered.last_ping_at = at;
                registered.expires_at = expires_at;
                true
            }
            None => false,
        })
    }

    async fn remove(&self, user_id: &str, connection_id: &str) -> Result<Option<ConnectionRecord>> {
        let mut registry = lock(&self.state);
        if !is_of(&registry, user_id, connection_id) {
            return Ok(None);
        }
        Ok(registry
            .remove_entry(connection_id)
            .map(|(user_id, registered)| registered.record(connection_id, &user_id)))
    }

    async fn get(&self, user_id: &str, connection_id: &str, now: UnixMs) -> Result<Option<ConnectionRecord>> {
        Ok(lock(&self.state)
            .get_full(connection_id)
            .filter(|(_, owner, r)| &***owner == user_id && !r.is_expired(now))
            .map(|(connection_id, user_id, r)| r.record(connection_id, user_id)))
    }

    async fn list_for_user(&self, user_id: &str, now: UnixMs) -> Result<Vec<ConnectionRecord>> {
        let registry = lock(&self.state);
        let mut records: Vec<_> = registry
            .of_user(user_id)
            .filter(|(_, r)| !r.is_expired(now))
            .map(|(connection_id, r)| r.record(connection_id, user_id))
            .collect();
        records.sort_by_key(|r| r.connected_at);
        Ok(records)
    }

    async fn purge_expired(&self, now: UnixMs) -> Result<usize> {
        let mut registry = lock(&self.state);
        let expired: Vec<Arc<str>> = registry
            .iter()
            .filter(|(_, _, r)| r.is_expired(now))
            .map(|(connection_id, _, _)| connection_id.clone())
            .collect();
        for id in &expired {
            registry.remove(id);
        }
        Ok(expired.len())
    }

    async fn set_subscriptions(&self, user_id: &str, channels: &[String]) -> Result<()> {
        let channels = self.channel_lists.share(channels);
        lock(&self.state).for_user_mut(user_id, |registered| {
            registered.subscriptions = channels.clone();
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::conformance;

    #[tokio::test]
    async fn conforms_to_connection_registry() {
        conformance::connection_registry(&MemoryConnectionRegistry::default()).await;
        conformance::connection_registry_ttl(&MemoryConnectionRegistry::default()).await;
        conformance::connection_registry_ignores_silent_connections_in_the_cap(&MemoryConnectionRegistry::default())
            .await;
    }
}
