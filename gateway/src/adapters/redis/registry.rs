use std::collections::HashMap;

use async_trait::async_trait;

use super::{Redis, ttl_ms, unavailable};
use crate::domain::UnixMs;
use crate::domain::connection::ConnectionRecord;
use crate::error::{Error, Result};
use crate::ports::{ConnectionRegistry, RegisterOutcome};

/// Each connection is a hash (`conn:<id>`) with a TTL; `user:<id>:conns` indexes a user's connections
/// and `conns` all of them, both scored by expiry, so the per-user cap counts only live ones and is
/// checked and written in one script: the cap is global across replicas.
#[derive(Clone)]
pub struct RedisConnectionRegistry {
    redis: Redis,
    register: redis::Script,
    touch: redis::Script,
    remove: redis::Script,
    subscriptions: redis::Script,
}

const REGISTER: &str = "
local now = tonumber(ARGV[5])
local existing = redis.call('HMGET', KEYS[1], 'userId', 'tokenId', 'expiresAt')
if existing[1] then
  if tonumber(existing[3]) > now then
    if existing[1] == ARGV[2] and existing[2] == ARGV[3] then return 'already' end
    return 'taken'
  end
  redis.call('DEL', KEYS[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local live = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local pinged = tonumber(redis.call('HGET', ARGV[13] .. 'conn:' .. id, 'lastPingAt') or '-1')
  if pinged >= tonumber(ARGV[14]) then live = live + 1 end
end
if live >= tonumber(ARGV[4]) then return 'full' end
redis.call('HSET', KEYS[1], 'connectionId', ARGV[1], 'userId', ARGV[2], 'tokenId', ARGV[3],
  'connectedAt', ARGV[8], 'lastPingAt', ARGV[9], 'expiresAt', ARGV[6], 'userAgent', ARGV[10],
  'subscriptions', ARGV[11], 'allowedChannels', ARGV[12])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[7]) then redis.call('PEXPIRE', KEYS[2], ARGV[7]) end
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
return 'ok'";

const TOUCH: &str = "
local user = redis.call('HGET', KEYS[1], 'userId')
if not user then return 0 end
local id = redis.call('HGET', KEYS[1], 'connectionId')
redis.call('HSET', KEYS[1], 'lastPingAt', ARGV[1], 'expiresAt', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local user_key = ARGV[4] .. 'user:' .. user .. ':conns'
redis.call('ZADD', user_key, ARGV[2], id)
if redis.call('PTTL', user_key) < tonumber(ARGV[3]) then redis.call('PEXPIRE', user_key, ARGV[3]) end
redis.call('ZADD', ARGV[4] .. 'conns', ARGV[2], id)
return 1";

/// Removes a connection and its index entries; with ARGV[2] set, only if it expired by then.
const REMOVE: &str = "
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then
  redis.call('ZREM', ARGV[1] .. 'conns', ARGV[3])
  return fields
end
if ARGV[2] ~= '' and tonumber(redis.call('HGET', KEYS[1], 'expiresAt')) > tonumber(ARGV[2]) then return {} end
local user = redis.call('HGET', KEYS[1], 'userId')
redis.call('DEL', KEYS[1])
redis.call('ZREM', ARGV[1] .. 'user:' .. user .. ':conns', ARGV[3])
redis.call('ZREM', ARGV[1] .. 'conns', ARGV[3])
return fields";

const SET_SUBSCRIPTIONS: &str = "
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'subscriptions', ARGV[1]) end
return 1";

impl RedisConnectionRegistry {
    pub fn new(redis: Redis) -> Self {
        Self {
            redis,
            register: redis::Script::new(REGISTER),
            touch: redis::Script::new(TOUCH),
            remove: redis::Script::new(REMOVE),
            subscriptions: redis::Script::new(SET_SUBSCRIPTIONS),
        }
    }

    fn conn_key(&self, id: &str) -> String {
        self.redis.key(&["conn", id])
    }

    fn user_key(&self, user_id: &str) -> String {
        self.redis.key(&["user", user_id, "conns"])
    }

    async fn remove_if(&self, connection_id: &str, expired_by: Option<UnixMs>) -> Result<Option<ConnectionRecord>> {
        let fields: Vec<String> = self
            .remove
            .key(self.conn_key(connection_id))
            .arg(&self.redis.prefix)
            .arg(expired_by.map(|at| at.to_string()).unwrap_or_default())
            .arg(connection_id)
            .invoke_async(&mut self.redis.connection())
            .await
            .map_err(unavailable)?;
        record_from_pairs(fields)
    }

    async fn load(&self, ids: &[String]) -> Result<Vec<ConnectionRecord>> {
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HGETALL").arg(self.conn_key(id));
        }
        let maps: Vec<HashMap<String, String>> = pipe
            .query_async(&mut self.redis.connection())
            .await
            .map_err(unavailable)?;
        maps.into_iter()
            .filter(|m| !m.is_empty())
            .map(record_from_map)
            .collect()
    }
}

fn record_from_pairs(fields: Vec<String>) -> Result<Option<ConnectionRecord>> {
    if fields.is_empty() {
        return Ok(None);
    }
    let mut map = HashMap::new();
    let mut pairs = fields.into_iter();
    while let (Some(key), Some(value)) = (pairs.next(), pairs.next()) {
        map.insert(key, value);
    }
    record_from_map(map).map(Some)
}

fn record_from_map(mut map: HashMap<String, String>) -> Result<ConnectionRecord> {
    let mut take = |field: &str| {
        map.remove(field)
            .ok_or_else(|| Error::Backend(format!("connection hash lacks `{field}`")))
    };
    let number = |text: String| {
        text.parse::<i64>()
            .map_err(|e| Error::Backend(format!("connection hash: {e}")))
    };
    let list = |text: String| serde_json::from_str::<Vec<String>>(&text).map_err(Error::backend);
    Ok(ConnectionRecord {
        connection_id: take("connectionId")?,
        user_id: take("userId")?,
        token_id: take("tokenId")?,
        connected_at: number(take("connectedAt")?)?,
        last_ping_at: number(take("lastPingAt")?)?,
        expires_at: number(take("expiresAt")?)?,
        user_agent: take("userAgent")?,
        subscriptions: list(take("subscriptions")?)?,
        allowed_channels: list(take("allowedChannels")?)?,
    })
}

#[async_trait]
impl ConnectionRegistry for RedisConnectionRegistry {
    async fn register(
        &self,
        record: &ConnectionRecord,
        max_per_user: u32,
        now: UnixMs,
        live_since: UnixMs,
    ) -> Result<RegisterOutcome> {
        let outcome: String = self
            .register
            .key(self.conn_key(&record.connection_id))
            .key(self.user_key(&record.user_id))
            .key(self.redis.key(&["conns"]))
            .arg(&record.connection_id)
            .arg(&record.user_id)
            .arg(&record.token_id)
            .arg(max_per_user)
            .arg(now)
            .arg(record.expires_at)
            .arg(ttl_ms(now, record.expires_at))
            .arg(record.connected_at)
            .arg(record.last_ping_at)
            .arg(&record.user_agent)
            .arg(serde_json::to_string(&record.subscriptions).unwrap_or_else(|_| "[]".into()))
            .arg(serde_json::to_string(&record.allowed_channels).unwrap_or_else(|_| "[]".into()))
            .arg(&self.redis.prefix)
            .arg(live_since)
            .invoke_async(&mut self.redis.connection())
            .await
            .map_err(unavailable)?;
        Ok(match outcome.as_str() {
            "ok" => RegisterOutcome::Registered,
            "already" => RegisterOutcome::AlreadyRegistered,
            "full" => RegisterOutcome::AtCapacity,
            _ => RegisterOutcome::IdTaken,
        })
    }

    async fn touch(&self, connection_id: &str, at: UnixMs, expires_at: UnixMs) -> Result<bool> {
        let touched: i64 = self
            .touch
            .key(self.conn_key(connection_id))
            .arg(at)
            .arg(expires_at)
            .arg(ttl_ms(at, expires_at))
            .arg(&self.redis.prefix)
            .invoke_async(&mut self.redis.connection())
            .await
            .map_err(unavailable)?;
        Ok(touched == 1)
    }

    async fn remove(&self, connection_id: &str) -> Result<Option<ConnectionRecord>> {
        self.remove_if(connection_id, None).await
    }

    async fn get(&self, connection_id: &str, now: UnixMs) -> Result<Option<ConnectionRecord>> {
        let records = self.load(&[connection_id.to_owned()]).await?;
        Ok(records.into_iter().find(|r| !r.is_expired(now)))
    }

    async fn list_for_user(&self, user_id: &str, now: UnixMs) -> Result<Vec<ConnectionRecord>> {
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.user_key(user_id))
            .arg(format!("({now}"))
            .arg("+inf")
            .query_async(&mut self.redis.connection())
            .await
            .map_err(unavailable)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut records: Vec<_> = self
            .load(&ids)
            .await?
            .into_iter()
            .filter(|r| !r.is_expired(now))
            .collect();
        records.sort_by_key(|r| r.connected_at);
        Ok(records)
    }

    async fn purge_expired(&self, now: UnixMs) -> Result<usize> {
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.redis.key(&["conns"]))
            .arg("-inf")
            .arg(now)
            .query_async(&mut self.redis.connection())
            .await
            .map_err(unavailable)?;
        let mut purged = 0;
        for id in ids {
            if self.remove_if(&id, Some(now)).await?.is_some() {
                purged += 1;
            }
        }
        Ok(purged)
    }

    async fn set_subscriptions(&self, user_id: &str, channels: &[String]) -> Result<()> {
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.user_key(user_id))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.redis.connection())
            .await
            .map_err(unavailable)?;
        let json = serde_json::to_string(channels).map_err(Error::backend)?;
        for id in ids {
            let _: i64 = self
                .subscriptions
                .key(self.conn_key(&id))
                .arg(&json)
                .invoke_async(&mut self.redis.connection())
                .await
                .map_err(unavailable)?;
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
        let Some(redis) = super::super::test_redis().await else {
            return;
        };
        conformance::connection_registry(&RedisConnectionRegistry::new(redis.clone())).await;
        conformance::connection_registry_ttl(&RedisConnectionRegistry::new(redis.clone())).await;
        conformance::connection_registry_ignores_silent_connections_in_the_cap(&RedisConnectionRegistry::new(redis))
            .await;
    }
}
