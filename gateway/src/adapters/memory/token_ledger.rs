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

/// A claimed token id: the 16 bytes of its UUID (every id this gateway issues, in their canonical
/// lowercase hyphenated text), or the text of anything else. A claim then costs a table slot, not a
/// slot and a string; it lives as long as the token, beside every fresh connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum TokenKey {
    Uuid(u128),
    Text(Box<str>),
}

impl TokenKey {
    fn of(token_id: &str) -> Self {
        // Only the canonical form maps to the bytes: two spellings of one UUID stay two keys.
        let canonical = token_id.len() == 36 && !token_id.bytes().any(|b| b.is_ascii_uppercase());
        match uuid::Uuid::try_parse(token_id) {
            Ok(id) if canonical => Self::Uuid(id.as_u128()),
            _ => Self::Text(token_id.into()),
        }
    }
}

#[derive(Debug, Default)]
struct Ledger {
    claimed: HashMap<TokenKey, UnixMs>,
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
        let key = TokenKey::of(token_id);
        if ledger.claimed.contains_key(&key) {
            return Ok(false);
        }
        ledger.claimed.insert(key, expires_at);
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

    #[tokio::test]
    async fn a_uuid_token_id_is_claimed_once_and_other_spellings_are_other_ids() {
        let ledger = MemoryTokenLedger::default();
        let id = uuid::Uuid::new_v4();
        let canonical = id.hyphenated().to_string();
        assert!(ledger.claim(&canonical, 0, 1_000).await.expect("claim"));
        assert!(!ledger.claim(&canonical, 1, 1_000).await.expect("claim"), "single use");
        assert_eq!(TokenKey::of(&canonical), TokenKey::Uuid(id.as_u128()));
        let upper = canonical.to_uppercase();
        assert_eq!(TokenKey::of(&upper), TokenKey::Text(upper.clone().into()));
        assert!(ledger.claim(&upper, 2, 1_000).await.expect("claim"), "another id");
        assert!(ledger.claim("not-a-uuid", 2, 1_000).await.expect("claim"));
        assert!(!ledger.claim("not-a-uuid", 3, 1_000).await.expect("claim"));
    }
}
