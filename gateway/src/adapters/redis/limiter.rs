use async_trait::async_trait;

use super::{Redis, keys, unavailable};
use crate::domain::UnixMs;
use crate::domain::rate::{RateDecision, RateLimit};
use crate::error::Result;
use crate::ports::RateLimiter;

/// The same GCRA as the in-process limiter (`domain::rate`), run atomically in Redis so a limit holds
/// across every replica.
#[derive(Clone)]
pub struct RedisRateLimiter {
    redis: Redis,
    gcra: redis::Script,
}

impl RedisRateLimiter {
    pub fn new(redis: Redis) -> Self {
        let gcra = redis::Script::new(
            "local now = tonumber(ARGV[1])
             local interval = tonumber(ARGV[2])
             local window = tonumber(ARGV[3])
             local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
             if tat < now then tat = now end
             local allow_at = tat - (window - interval)
             if now < allow_at then return math.ceil(allow_at - now) end
             local next = tat + interval
             redis.call('SET', KEYS[1], tostring(next), 'PX', math.ceil(next - now) + 1)
             return 0",
        );
        Self { redis, gcra }
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, key: &str, limit: RateLimit, now: UnixMs) -> Result<RateDecision> {
        if limit.limit == 0 {
            return Ok(RateDecision::Limited {
                retry_after_ms: limit.window_ms,
            });
        }
        let interval = limit.window_ms as f64 / f64::from(limit.limit);
        let retry_after_ms: i64 = self
            .gcra
            .key(keys::plain(&self.redis.prefix, &["rate", key]))
            .arg(now)
            .arg(interval)
            .arg(limit.window_ms)
            .invoke_async(&mut self.redis.connection())
            .await
            .map_err(unavailable)?;
        Ok(if retry_after_ms > 0 {
            RateDecision::Limited { retry_after_ms }
        } else {
            RateDecision::Allowed
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::conformance;

    #[tokio::test]
    async fn conforms_to_rate_limiter() {
        for (name, redis) in super::super::test_redises().await {
            eprintln!("{name}");
            conformance::rate_limiter(&RedisRateLimiter::new(redis)).await;
        }
    }
}
