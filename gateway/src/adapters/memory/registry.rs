use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::domain::UnixMs;
use crate::domain::connection::ConnectionRecord;
use crate::error::Result;
use crate::ports::{ConnectionRegistry, RegisterOutcome};

use super::lock;

/// Connections by id plus a per-user index, under one lock so that the cap check and the insert
/// are a single atomic step.
#[derive(Debug, Default)]
pub struct MemoryConnectionRegistry {
    state: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    by_id: HashMap<String, ConnectionRecord>,
    by_user: HashMap<String, HashSet<String>>,
}

impl Registry {
    fn live_count(&self, user_id: &str, now: UnixMs, live_since: UnixMs) -> usize {
        self.by_user.get(user_id).map_or(0, |ids| {
            ids.iter()
                .filter(|id| {
                    self.by_id
                        .get(*id)
                        .is_some_and(|r| !r.is_expired(now) && r.last_ping_at >= live_since)
                })
                .count()
        })
    }

    fn remove(&mut self, connection_id: &str) -> Option<ConnectionRecord> {
        let record = self.by_id.remove(connection_id)?;
        if let Some(ids) = self.by_user.get_mut(&record.user_id) {
            ids.remove(connection_id);
            if ids.is_empty() {
                self.by_user.remove(&record.user_id);
            }
        }
        Some(record)
    }
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
        if let Some(existing) = registry.by_id.get(&record.connection_id) {
            if existing.is_expired(now) {
                registry.remove(&record.connection_id);
            } else if existing.user_id == record.user_id && existing.token_id == record.token_id {
                return Ok(RegisterOutcome::AlreadyRegistered);
            } else {
                return Ok(RegisterOutcome::IdTaken);
            }
        }
        if registry.live_count(&record.user_id, now, live_since) >= max_per_user as usize {
            return Ok(RegisterOutcome::AtCapacity);
        }
        registry
            .by_user
            .entry(record.user_id.clone())
            .or_default()
            .insert(record.connection_id.clone());
        registry.by_id.insert(record.connection_id.clone(), record.clone());
        Ok(RegisterOutcome::Registered)
    }

    async fn touch(&self, connection_id: &str, at: UnixMs, expires_at: UnixMs) -> Result<bool> {
        let mut registry = lock(&self.state);
        Ok(match registry.by_id.get_mut(connection_id) {
            Some(record) => {
                record.last_ping_at = at;
                record.expires_at = expires_at;
                true
            }
            None => false,
        })
    }

    async fn remove(&self, connection_id: &str) -> Result<Option<ConnectionRecord>> {
        Ok(lock(&self.state).remove(connection_id))
    }

    async fn get(&self, connection_id: &str, now: UnixMs) -> Result<Option<ConnectionRecord>> {
        Ok(lock(&self.state)
            .by_id
            .get(connection_id)
            .filter(|r| !r.is_expired(now))
            .cloned())
    }

    async fn list_for_user(&self, user_id: &str, now: UnixMs) -> Result<Vec<ConnectionRecord>> {
        let registry = lock(&self.state);
        let mut records: Vec<_> = registry
            .by_user
            .get(user_id)
            .into_iter()
            .flatten()
            .filter_map(|id| registry.by_id.get(id))
            .filter(|r| !r.is_expired(now))
            .cloned()
            .collect();
        records.sort_by_key(|r| r.connected_at);
        Ok(records)
    }

    async fn purge_expired(&self, now: UnixMs) -> Result<usize> {
        let mut registry = lock(&self.state);
        let expired: Vec<String> = registry
            .by_id
            .values()
            .filter(|r| r.is_expired(now))
            .map(|r| r.connection_id.clone())
            .collect();
        for id in &expired {
            registry.remove(id);
        }
        Ok(expired.len())
    }

    async fn set_subscriptions(&self, user_id: &str, channels: &[String]) -> Result<()> {
        let mut registry = lock(&self.state);
        let ids: Vec<String> = registry.by_user.get(user_id).into_iter().flatten().cloned().collect();
        for id in ids {
            if let Some(record) = registry.by_id.get_mut(&id) {
                record.subscriptions = channels.to_vec();
            }
        }
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
