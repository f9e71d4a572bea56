use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::domain::UnixMs;
use crate::domain::rate::{GcraState, RateDecision, RateLimit};
use crate::error::Result;
use crate::ports::RateLimiter;

use super::lock;

/// One GCRA state per key; keys whose state has fully refilled are swept away periodically.
#[derive(Debug, Default)]
pub struct MemoryRateLimiter {
    /// Boxed keys: a slot of two words, not three (one entry per user who asked for a token lately).
    state: Mutex<(HashMap<Box<str>, GcraState>, usize)>,
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn check(&self, key: &str, limit: RateLimit, now: UnixMs) -> Result<RateDecision> {
        let mut guard = lock(&self.state);
        let (states, checks) = &mut *guard;
        *checks += 1;
        if *checks >= 1_024 {
            *checks = 0;
            states.retain(|_, state| state.idle_after() > now);
        }
        if let Some(state) = states.get_mut(key) {
            return Ok(state.check(limit, now));
        }
        Ok(states.entry(key.into()).or_default().check(limit, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::conformance;

    #[tokio::test]
    async fn conforms_to_rate_limiter() {
        conformance::rate_limiter(&MemoryRateLimiter::default()).await;
    }
}
