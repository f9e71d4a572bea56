use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::domain::UnixMs;
use crate::error::Result;
use crate::ports::TokenLedger;

use super::lock;

/// Claimed token ids and revocation marks, each with the instant after which it can be forgotten.
#[derive(Debug, Default)]
pub struct MemoryTokenLedger {
    state: Mutex<Ledger>,
}

#[derive(Debug, Default)]
struct Ledger {
    claimed: HashMap<String, UnixMs>,
    revoked: HashMap<String, (UnixMs, UnixMs)>,
    /// Writes since the last sweep: sweeping is amortized over writes instead of needing a task.
    writes: usize,
}

impl Ledger {
    fn sweep_if_due(&mut self, now: UnixMs) {
        self.writes += 1;
        if self.writes < 1_024 {
            return;
        }
        self.writes = 0;
        self.claimed.retain(|_, forget_at| *forget_at > now);
        self.revoked.retain(|_, (_, forget_at)| *forget_at > now);
    }
}

#[async_trait]
impl TokenLedger for MemoryTokenLedger {
    async fn claim(&self, token_id: &str, now: UnixMs, expires_at: UnixMs) -> Result<bool> {
        let mut ledger = lock(&self.state);
        ledger.sweep_if_due(now);
        if ledger.claimed.contains_key(token_id) {
            return Ok(false);
        }
        ledger.claimed.insert(token_id.to_owned(), expires_at);
        Ok(true)
    }

    async fn revoke_before(&self, user_id: &str, at: UnixMs, keep_ms: i64) -> Result<()> {
        let mut ledger = lock(&self.state);
        ledger.sweep_if_due(at);
        let entry = ledger.revoked.entry(user_id.to_owned()).or_insert((at, at + keep_ms));
        if at >= entry.0 {
            *entry = (at, at + keep_ms);
        }
        Ok(())
    }

    async fn revoked_before(&self, user_id: &str) -> Result<Option<UnixMs>> {
        Ok(lock(&self.state).revoked.get(user_id).map(|(at, _)| *at))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ports::conformance;

    #[tokio::test]
    async fn conforms_to_token_ledger() {
        conformance::token_ledger(&MemoryTokenLedger::default()).await;
        conformance::token_ledger_claims_are_atomic(Arc::new(MemoryTokenLedger::default())).await;
    }
}
