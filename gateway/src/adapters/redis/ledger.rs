use async_trait::async_trait;

use super::{Redis, keys, ttl_ms, unavailable};
use crate::domain::UnixMs;
use crate::error::Result;
use crate::ports::TokenLedger;

/// `SET NX` claims and per-user revoked-before marks (DESIGN.md's mapping of the plan's token table).
#[derive(Clone)]
pub struct RedisTokenLedger {
    redis: Redis,
    revoke: redis::Script,
}

impl RedisTokenLedger {
    pub fn new(redis: Redis) -> Self {
        // The mark only ever moves forward, whatever order revocations arrive in.
        let revoke = redis::Script::new(
            "local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
             if tonumber(ARGV[1]) >= current then
               redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
             end
             return 1",
        );
        Self { redis, revoke }
    }
}

#[async_trait]
impl TokenLedger for RedisTokenLedger {
    async fn claim(&self, token_id: &str, now: UnixMs, expires_at: UnixMs) -> Result<bool> {
        let claimed: Option<String> = redis::cmd("SET")
            .arg(keys::plain(&self.redis.prefix, &["token", token_id]))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms(now, expires_at))
            .query_async(&mut self.redis.connection())
            .await
            .map_err(unavailable)?;
        Ok(claimed.is_some())
    }

    async fn revoke_before(&self, user_id: &str, at: UnixMs, keep_ms: i64) -> Result<()> {
        let _: i64 = self
            .revoke
            .key(keys::plain(&self.redis.prefix, &["revoked", user_id]))
            .arg(at)
            .arg(keep_ms.max(1))
            .invoke_async(&mut self.redis.connection())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn revoked_before(&self, user_id: &str) -> Result<Option<UnixMs>> {
        redis::cmd("GET")
            .arg(keys::plain(&self.redis.prefix, &["revoked", user_id]))
            .query_async(&mut self.redis.connection())
            .await
            .map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ports::conformance;

    #[tokio::test]
    async fn conforms_to_token_ledger() {
        for (name, redis) in super::super::test_redises().await {
            eprintln!("{name}");
            conformance::token_ledger(&RedisTokenLedger::new(redis.clone())).await;
            conformance::token_ledger_claims_are_atomic(Arc::new(RedisTokenLedger::new(redis))).await;
        }
    }
}
