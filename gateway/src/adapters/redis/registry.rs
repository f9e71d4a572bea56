use std::collections::HashMap;

use async_trait::async_trait;

use super::{Redis, keys, ttl_ms, unavailable};
use crate::domain::UnixMs;
use crate::domain::connection::ConnectionRecord;
use crate::error::{Error, Result};
use crate::ports::{ConnectionRegistry, RegisterOutcome};

/// Each connection is a hash (`conn:{u:<user>}:<id>`) with a TTL; `user:{u:<user>}:conns` indexes a
/// user's connections by expiry and `user:{u:<user>}:pings` by last heartbeat, so the per-user cap
/// counts only live ones and is checked and written in one script, on the user's slot: the cap is
/// global across replicas. `conns` indexes every connection by expiry for the purge; it lives in a
/// slot of its own, so it is written beside the scripts, not in them, and corrected by the purge.
#[derive(Clone)]
pub struct RedisConnectionRegistry {
    redis: Redis,
    register: redis::Script,
    touch: redis::Script,
    remove: redis::Script,
    subscriptions: redis::Script,
}

/// KEYS: the connection, the user's expiry index, the user's heartbeat index.
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
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
if redis.call('ZCOUNT', KEYS[3], ARGV[13], '+inf') >= tonumber(ARGV[4]) then return 'full' end
redis.call('HSET', KEYS[1], 'connectionId', ARGV[1], 'userId', ARGV[2], 'tokenId', ARGV[3],
  'connectedAt', ARGV[8], 'lastPingAt', ARGV[9], 'expiresAt', ARGV[6], 'userAgent', ARGV[10],
  'subscriptions', ARGV[11], 'allowedChannels', ARGV[12])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[9], ARGV[1])
for i = 2, 3 do
  if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[7]) then redis.call('PEXPIRE', KEYS[i], ARGV[7]) end
end
return 'ok'";

/// KEYS as for REGISTER.
const TOUCH: &str = "
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'lastPingAt', ARGV[1], 'expiresAt', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[1], ARGV[4])
for i = 2, 3 do
  if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
end
return 1";

/// Removes a connection and its user's index entries; with ARGV[1] set, only if it expired by then.
/// Answers `{'removed', field, value, ...}`, `{'absent'}`, or `{'kept', expiresAt}`. KEYS as above.
const REMOVE: &str = "
local fields = redis.call('HGETALL', KEYS[1])
if #fields > 0 and ARGV[1] ~= '' then
  local expires_at = redis.call('HGET', KEYS[1], 'expiresAt')
  if tonumber(expires_at) > tonumber(ARGV[1]) then return {'kept', expires_at} end
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
if #fields == 0 then return {'absent'} end
table.insert(fields, 1, 'removed')
return fields";

const SET_SUBSCRIPTIONS: &str = "
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'subscriptions', ARGV[1]) end
return 1";

/// How many expired entries of the global index one purge step reads.
const PURGE_BATCH: usize = 500;

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

    fn conn_key(&self, user_id: &str, connection_id: &str) -> String {
        keys::tagged_with(&self.redis.prefix, "conn", user_id, connection_id)
    }

    fn user_key(&self, user_id: &str, index: &str) -> String {
        keys::tagged_with(&self.redis.prefix, "user", user_id, index)
    }

    /// The global expiry index (its own slot).
    fn all_key(&self) -> String {
        keys::plain(&self.redis.prefix, &["conns"])
    }

    /// A connection's member in the global index: it names the user, whose keys the purge needs.
    fn member(user_id: &str, connection_id: &str) -> String {
        serde_json::json!([user_id, connection_id]).to_string()
    }

    /// The script call for `connection_id` of `user_id`, its three keys given.
    fn on_user<'a>(
        &self,
        script: &'a redis::Script,
        user_id: &str,
        connection_id: &str,
    ) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.conn_key(user_id, connection_id))
            .key(self.user_key(user_id, "conns"))
            .key(self.user_key(user_id, "pings"));
        invocation
    }

    async fn remove_if(&self, user_id: &str, connection_id: &str, expired_by: Option<UnixMs>) -> Result<Removal> {
        let answer: Vec<String> = self
            .on_user(&self.remove, user_id, connection_id)
            .arg(expired_by.map(|at| at.to_string()).unwrap_or_default())
            .arg(connection_id)
            .invoke_async(&mut self.redis.connection())
            .await
            .map_err(unavailable)?;
        let mut answer = answer.into_iter();
        let removal = match answer.next().as_deref() {
            Some("kept") => Removal::Kept {
                expires_at: answer
                    .next()
                    .and_then(|at| at.parse().ok())
                    .ok_or_else(|| Error::Backend("connection hash: unreadable expiresAt".into()))?,
            },
            Some("removed") => Removal::Removed(record_from_pairs(answer.collect())?),
            _ => Removal::Absent,
        };
        if !matches!(removal, Removal::Kept { .. }) {
            let _: i64 = redis::cmd("ZREM")
                .arg(self.all_key())
                .arg(Self::member(user_id, connection_id))
                .query_async(&mut self.redis.connection())
                .await
                .map_err(unavailable)?;
        }
        Ok(removal)
    }

    /// Indexes `connection_id` in the global expiry index, at `expires_at`.
    async fn index(&self, user_id: &str, connection_id: &str, expires_at: UnixMs) -> Result<()> {
        let _: i64 = redis::cmd("ZADD")
            .arg(self.all_key())
            .arg(expires_at)
            .arg(Self::member(user_id, connection_id))
            .query_async(&mut self.redis.connection())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The user's connections `ids` (one slot: one pipeline).
    async fn load(&self, user_id: &str, ids: &[String]) -> Result<Vec<ConnectionRecord>> {
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HGETALL").arg(self.conn_key(user_id, id));
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

/// What removing a connection found.
enum Removal {
    Removed(Option<ConnectionRecord>),
    Absent,
    /// Not expired (a conditional removal): it expires at `expires_at`.
    Kept {
        expires_at: UnixMs,
    },
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
            .on_user(&self.register, &record.user_id, &record.connection_id)
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
            .arg(live_since)
            .invoke_async(&mut self.redis.connection())
            .await
            .map_err(unavailable)?;
        Ok(match outcome.as_str() {
            "ok" => {
                self.index(&record.user_id, &record.connection_id, record.expires_at)
                    .await?;
                RegisterOutcome::Registered
            }
            "already" => RegisterOutcome::AlreadyRegistered,
            "full" => RegisterOutcome::AtCapacity,
            _ => RegisterOutcome::IdTaken,
        })
    }

    async fn touch(&self, user_id: &str, connection_id: &str, at: UnixMs, expires_at: UnixMs) -> Result<bool> {
        // The global index keeps the expiry of registration: the purge finds the new one there and
        // moves the entry (one script per heartbeat, not two commands).
        let touched: i64 = self
            .on_user(&self.touch, user_id, connection_id)
            .arg(at)
            .arg(expires_at)
            .arg(ttl_ms(at, expires_at))
            .arg(connection_id)
            .invoke_async(&mut self.redis.connection())
            .await
            .map_err(unavailable)?;
        Ok(touched == 1)
    }

    async fn remove(&self, user_id: &str, connection_id: &str) -> Result<Option<ConnectionRecord>> {
        match self.remove_if(user_id, connection_id, None).await? {
            Removal::Removed(record) => Ok(record),
            Removal::Absent | Removal::Kept { .. } => Ok(None),
        }
    }

    async fn get(&self, user_id: &str, connection_id: &str, now: UnixMs) -> Result<Option<ConnectionRecord>> {
        let records = self.load(user_id, &[connection_id.to_owned()]).await?;
        Ok(records.into_iter().find(|r| !r.is_expired(now)))
    }

    async fn list_for_user(&self, user_id: &str, now: UnixMs) -> Result<Vec<ConnectionRecord>> {
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.user_key(user_id, "conns"))
            .arg(format!("({now}"))
            .arg("+inf")
            .query_async(&mut self.redis.connection())
            .await
            .map_err(unavailable)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut records: Vec<_> = self
            .load(user_id, &ids)
            .await?
            .into_iter()
            .filter(|r| !r.is_expired(now))
            .collect();
        records.sort_by_key(|r| r.connected_at);
        Ok(records)
    }

    async fn purge_expired(&self, now: UnixMs) -> Result<usize> {
        let mut purged = 0;
        loop {
            let members: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(self.all_key())
                .arg("-inf")
                .arg(now)
                .arg("LIMIT")
                .arg(0)
                .arg(PURGE_BATCH)
                .query_async(&mut self.redis.connection())
                .await
                .map_err(unavailable)?;
            let read = members.len();
            for member in members {
                let Ok((user_id, connection_id)) = serde_json::from_str::<(String, String)>(&member) else {
                    // Not one of ours (an entry of an older version): it only costs a read.
                    let _: i64 = redis::cmd("ZREM")
                        .arg(self.all_key())
                        .arg(&member)
                        .query_async(&mut self.redis.connection())
                        .await
                        .map_err(unavailable)?;
                    continue;
                };
                match self.remove_if(&user_id, &connection_id, Some(now)).await? {
                    Removal::Removed(_) => purged += 1,
                    Removal::Absent => {}
                    // Heartbeats moved its expiry: so does its entry.
                    Removal::Kept { expires_at } => self.index(&user_id, &connection_id, expires_at).await?,
                }
            }
            if read < PURGE_BATCH {
                return Ok(purged);
            }
        }
    }

    async fn set_subscriptions(&self, user_id: &str, channels: &[String]) -> Result<()> {
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.user_key(user_id, "conns"))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.redis.connection())
            .await
            .map_err(unavailable)?;
        let json = serde_json::to_string(channels).map_err(Error::backend)?;
        for id in ids {
            let _: i64 = self
                .subscriptions
                .key(self.conn_key(user_id, &id))
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
        for (name, redis) in super::super::test_redises().await {
            eprintln!("{name}");
            conformance::connection_registry(&RedisConnectionRegistry::new(redis.clone())).await;
            conformance::connection_registry_ttl(&RedisConnectionRegistry::new(redis.clone())).await;
            conformance::connection_registry_ignores_silent_connections_in_the_cap(&RedisConnectionRegistry::new(
                redis,
            ))
            .await;
        }
    }
}
