//! A registered WebSocket connection, as the plan's `WebSocketConnections` record describes it.

use serde::{Deserialize, Serialize};

use super::UnixMs;

/// One live connection of a user (AC7). `expires_at` is the registry TTL (AC8): a heartbeat moves it
/// forward, so only connections whose replica vanished without cleanup ever reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionRecord {
    pub connection_id: String,
    pub user_id: String,
    pub token_id: String,
    pub connected_at: UnixMs,
    pub last_ping_at: UnixMs,
    pub subscriptions: Vec<String>,
    /// Channels the connection's token allows (computed from the user's roles at issuance).
    #[serde(default)]
    pub allowed_channels: Vec<String>,
    pub user_agent: String,
    pub expires_at: UnixMs,
}

impl ConnectionRecord {
    pub fn is_expired(&self, now: UnixMs) -> bool {
        self.expires_at <= now
    }
}

/// Longest user agent kept: the record is "minimal and non-sensitive" (plan section 11).
pub const MAX_USER_AGENT_CHARS: usize = 256;

/// Trims a client-supplied user agent to something safe to store and log.
pub fn sanitize_user_agent(raw: &str) -> String {
    raw.chars()
        .filter(|c| !c.is_control())
        .take(MAX_USER_AGENT_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agent_is_trimmed_and_stripped_of_control_characters() {
        let raw = format!("Mozilla\u{0}\n{}", "x".repeat(1_000));
        let clean = sanitize_user_agent(&raw);
        assert!(clean.starts_with("Mozilla"));
        assert!(!clean.chars().any(char::is_control));
        assert_eq!(clean.chars().count(), MAX_USER_AGENT_CHARS);
    }
}
