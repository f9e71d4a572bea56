//! Connection tokens: issuance (AC1-AC3), revocation (AC4) and validation on connect (AC5, AC6).

use herald_contract::defaults;
use std::sync::Arc;

use tracing::instrument;

use crate::app::catalog::LiveCatalog;
use crate::domain::UnixMs;
use crate::domain::rate::{RateDecision, RateLimit};
use crate::domain::token::{ConnectionClaims, TokenRejection};
use crate::domain::user::AuthenticatedUser;
use crate::error::{Error, Result};
use crate::ports::{BusEvent, Clock, EventBus, PreferenceStore, RateLimiter, TokenLedger};

use super::keys::SigningKeyRing;
use super::metrics::{Limit, Metrics};

/// The longest TTL a token may be configured with; revocation marks are kept this long.
pub const MAX_TOKEN_TTL_MS: i64 = 10 * 60 * 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenSettings {
    /// Token lifetime (plan: 60 s).
    pub ttl_ms: i64,
    /// Tokens a user may obtain per minute (plan: 10).
    pub max_per_minute: u32,
    /// `false` refuses tokens and WebSocket connections (503 `websocket_disabled`): the plan's
    /// `WEBSOCKET_ENABLED` switch.
    pub websocket_enabled: bool,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            ttl_ms: defaults::TOKEN_TTL_SECONDS as i64 * 1_000,
            max_per_minute: defaults::MAX_TOKENS_PER_MINUTE,
            websocket_enabled: true,
        }
    }
}

/// What `POST /ws/token` answers: a connection token for `GET /ws`, single use, short-lived.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuedToken {
    pub token: String,
    #[schema(value_type = i64, format = Int64)]
    pub expires_at: UnixMs,
    pub token_id: String,
}

pub struct TokenService {
    keys: Arc<SigningKeyRing>,
    ledger: Arc<dyn TokenLedger>,
    limiter: Arc<dyn RateLimiter>,
    preferences: Arc<dyn PreferenceStore>,
    catalog: Arc<LiveCatalog>,
    clock: Arc<dyn Clock>,
    settings: TokenSettings,
    /// Where a revocation is announced, so every replica closes the user's live sessions.
    bus: Arc<dyn EventBus>,
    metrics: Arc<Metrics>,
}

impl TokenService {
    /// The signing keys in force by kid, and whether each is the one signing new tokens now.
    pub fn signing_keys(&self) -> Vec<(String, bool)> {
        let keys = self.keys.current();
        let active = keys.active(self.clock.now_ms()).map(|key| key.kid().to_owned());
        keys.keys()
            .iter()
            .map(|key| (key.kid().to_owned(), active.as_deref() == Some(key.kid())))
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        keys: Arc<SigningKeyRing>,
        ledger: Arc<dyn TokenLedger>,
        limiter: Arc<dyn RateLimiter>,
        preferences: Arc<dyn PreferenceStore>,
        catalog: Arc<LiveCatalog>,
        clock: Arc<dyn Clock>,
        settings: TokenSettings,
        bus: Arc<dyn EventBus>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            keys,
            ledger,
            limiter,
            preferences,
            catalog,
            clock,
            settings,
            bus,
            metrics,
        }
    }

    /// Issues a token for `user`, unless they exceeded their rate or opted out of in-app (AC3, AC19).
    #[instrument(skip_all, fields(user_id = %user.id))]
    pub async fn issue(&self, user: &AuthenticatedUser) -> Result<IssuedToken> {
        self.ensure_websocket_enabled()?;
        let now = self.clock.now_ms();
        let limit = RateLimit::per_minute(self.settings.max_per_minute);
        if let RateDecision::Limited { retry_after_ms } = self
            .limiter
            .check(&format!("tokens:user:{}", user.id), limit, now)
            .await?
        {
            self.metrics.count_rate_limited(Limit::Tokens);
            tracing::info!(user_id = %user.id, retry_after_ms, "token:rate-limited");
            return Err(Error::RateLimited { retry_after_ms });
        }
        if let Some(preferences) = self.preferences.get(&user.id).await? {
            if !preferences.in_app_enabled {
                return Err(Error::InAppDisabled);
            }
        }
        // A token issued in the same millisecond as a revocation must still count as "after" it.
        let issued_at = match self.ledger.revoked_before(&user.id).await? {
            Some(revoked) if revoked >= now => revoked + 1,
            _ => now,
        };
        let claims = ConnectionClaims {
            kid: String::new(),
            user_id: user.id.clone(),
            issued_at,
            expires_at: issued_at + self.settings.ttl_ms,
            token_id: uuid::Uuid::new_v4(),
            allowed_channels: Some(self.catalog.current().allowed_for(&user.roles)),
        };
        let (token, claims) = self
            .keys
            .current()
            .sign(claims, now)
            .map_err(|e| Error::Backend(format!("cannot sign connection token: {e}")))?;
        tracing::info!(user_id = %user.id, token_id = %claims.token_id, kid = %claims.kid, "token:issued");
        Ok(IssuedToken {
            token,
            expires_at: claims.expires_at,
            token_id: claims.token_id.to_string(),
        })
    }

    /// The one place the `WEBSOCKET_ENABLED` switch is decided: token issuance and connects ask here.
    pub fn ensure_websocket_enabled(&self) -> Result<()> {
        if self.settings.websocket_enabled {
            Ok(())
        } else {
            Err(Error::WebSocketDisabled)
        }
    }

    /// Refuses from now on every token of `user_id` issued until now (AC4), and closes the user's
    /// live sessions on every replica: they were opened with tokens issued before.
    #[instrument(skip(self))]
    pub async fn revoke_all(&self, user_id: &str) -> Result<()> {
        let now = self.clock.now_ms();
        self.ledger.revoke_before(user_id, now, MAX_TOKEN_TTL_MS).await?;
        tracing::info!(user_id, "token:revoked-all");
        // The revocation itself is stored: should the announcement be lost, sessions still end at
        // their maximum lifetime and cannot come back with an old token.
        let event = BusEvent::TokensRevoked {
            user_id: user_id.to_owned(),
        };
        if let Err(err) = self.bus.publish(event).await {
            tracing::warn!(user_id, error = %err, "token:revocation-not-announced, live sessions end at their lifetime");
        }
        Ok(())
    }

    /// Size, decode, signature by `kid`, expiry, then revocation. Does not consume the token.
    pub async fn authorize(&self, raw: &str) -> Result<ConnectionClaims> {
        if raw.is_empty() {
            return Err(TokenRejection::Invalid("missing").into());
        }
        let mut claims = self.keys.verify(raw, self.clock.now_ms())?;
        if let Some(revoked) = self.ledger.revoked_before(&claims.user_id).await? {
            if claims.issued_at <= revoked {
                return Err(TokenRejection::Revoked.into());
            }
        }
        // Channels made stricter since the token was issued are not granted by it any more.
        claims.allowed_channels = claims
            .allowed_channels
            .map(|listed| self.catalog.still_granted(listed, claims.issued_at));
        Ok(claims)
    }

    /// The atomic single-use claim: succeeds once per token across every replica sharing the ledger.
    pub async fn consume(&self, claims: &ConnectionClaims) -> Result<()> {
        let first = self
            .ledger
            .claim(&claims.token_id.to_string(), self.clock.now_ms(), claims.expires_at)
            .await?;
        if first {
            Ok(())
        } else {
            Err(TokenRejection::Used.into())
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use base64::Engine;

    use super::*;
    use crate::adapters::clock::ManualClock;
    use crate::adapters::memory::{MemoryPreferenceStore, MemoryRateLimiter, MemoryTokenLedger};
    use crate::domain::preferences::Preferences;
    use crate::domain::token::{SigningKey, SigningKeys};

    pub(crate) const START: UnixMs = 1_700_000_000_000;

    pub(crate) struct Fixture {
        pub service: Arc<TokenService>,
        pub clock: Arc<ManualClock>,
        pub preferences: Arc<MemoryPreferenceStore>,
        pub keys: Arc<SigningKeyRing>,
    }

    pub(crate) fn test_keys() -> SigningKeys {
        let key = SigningKey::new("k1", b"0123456789abcdef0123456789abcdef".to_vec(), 0).expect("key");
        SigningKeys::new(vec![key]).expect("keys")
    }

    pub(crate) fn fixture() -> Fixture {
        let clock = Arc::new(ManualClock::new(START));
        let preferences = Arc::new(MemoryPreferenceStore::default());
        let keys = Arc::new(SigningKeyRing::new(test_keys()));
        let service = Arc::new(TokenService::new(
            keys.clone(),
            Arc::new(MemoryTokenLedger::default()),
            Arc::new(MemoryRateLimiter::default()),
            preferences.clone(),
            LiveCatalog::fixed(crate::domain::channel::ChannelCatalog::default_set(7)),
            clock.clone(),
            TokenSettings::default(),
            Arc::new(crate::adapters::memory::MemoryEventBus::default()),
            Arc::default(),
        ));
        Fixture {
            service,
            clock,
            preferences,
            keys,
        }
    }

    fn alice() -> AuthenticatedUser {
        AuthenticatedUser::new("alice", vec![])
    }

    fn decode_payload(token: &str) -> serde_json::Value {
        let (payload, _) = token.split_once('.').expect("two segments");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url");
        serde_json::from_slice(&bytes).expect("json payload")
    }

    #[tokio::test]
    async fn should_issue_valid_connection_token_for_authenticated_user() {
        let f = fixture();
        let issued = f.service.issue(&alice()).await.expect("issued");
        let claims = f.service.authorize(&issued.token).await.expect("valid");
        assert_eq!(claims.user_id, "alice");
        assert_eq!(claims.token_id.to_string(), issued.token_id);
        assert_eq!(claims.expires_at, issued.expires_at);
    }

    #[tokio::test]
    async fn should_reject_token_issuance_if_user_has_opted_out_of_notifications() {
        let f = fixture();
        let preferences = Preferences {
            in_app_enabled: false,
            ..Preferences::default()
        };
        f.preferences.put("alice", &preferences).await.expect("put");
        assert!(matches!(f.service.issue(&alice()).await, Err(Error::InAppDisabled)));
        // Another user is unaffected.
        assert!(f.service.issue(&AuthenticatedUser::new("bob", vec![])).await.is_ok());
    }

    #[tokio::test]
    async fn should_enforce_rate_limit_on_token_issuance() {
        let f = fixture();
        for _ in 0..10 {
            f.service.issue(&alice()).await.expect("within limit");
        }
        match f.service.issue(&alice()).await {
            Err(Error::RateLimited { retry_after_ms }) => {
                assert!(retry_after_ms > 0 && retry_after_ms <= 60_000)
            }
            other => panic!("expected rate limit, got {other:?}"),
        }
        assert!(
            f.service.issue(&AuthenticatedUser::new("bob", vec![])).await.is_ok(),
            "limit is per user"
        );
        f.clock.advance(60_000);
        assert!(f.service.issue(&alice()).await.is_ok(), "limit resets after a minute");
    }

    #[tokio::test]
    async fn should_include_correct_claims_in_token_payload() {
        let f = fixture();
        let issued = f.service.issue(&alice()).await.expect("issued");
        let payload = decode_payload(&issued.token);
        let object = payload.as_object().expect("object");
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["allowedChannels", "expiresAt", "issuedAt", "kid", "tokenId", "userId"]
        );
        assert_eq!(
            payload["allowedChannels"],
            serde_json::json!(["uploads", "social", "mocs", "quota", "system"])
        );
        assert_eq!(payload["userId"], "alice");
        assert_eq!(payload["kid"], "k1");
        assert_eq!(payload["issuedAt"], START);
        assert_eq!(payload["tokenId"], issued.token_id.as_str());
        assert!(uuid::Uuid::parse_str(&issued.token_id).is_ok());
    }

    #[tokio::test]
    async fn should_sign_token_with_hmac_sha256() {
        use hmac::{Hmac, Mac};
        let f = fixture();
        let issued = f.service.issue(&alice()).await.expect("issued");
        let (payload, signature) = issued.token.split_once('.').expect("two segments");
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"0123456789abcdef0123456789abcdef").expect("key");
        mac.update(payload.as_bytes());
        let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        assert_eq!(signature, expected);
    }

    #[tokio::test]
    async fn should_set_correct_expiry_60_seconds() {
        let f = fixture();
        let issued = f.service.issue(&alice()).await.expect("issued");
        assert_eq!(issued.expires_at, START + 60_000);
        assert_eq!(decode_payload(&issued.token)["expiresAt"], START + 60_000);
        f.clock.advance(59_999);
        assert!(f.service.authorize(&issued.token).await.is_ok());
        f.clock.advance(1);
        assert!(matches!(
            f.service.authorize(&issued.token).await,
            Err(Error::Token(TokenRejection::Expired))
        ));
    }

    #[tokio::test]
    async fn revoke_all_refuses_older_tokens_but_not_newer_ones() {
        let f = fixture();
        let old = f.service.issue(&alice()).await.expect("issued");
        f.service.revoke_all("alice").await.expect("revoked");
        assert!(matches!(
            f.service.authorize(&old.token).await,
            Err(Error::Token(TokenRejection::Revoked))
        ));
        // Same millisecond as the revocation, yet issued after it: accepted.
        let new = f.service.issue(&alice()).await.expect("issued");
        assert!(f.service.authorize(&new.token).await.is_ok());
    }

    #[tokio::test]
    async fn tokens_signed_before_a_key_rotation_stay_valid() {
        let f = fixture();
        let issued = f.service.issue(&alice()).await.expect("issued");
        let old = SigningKey::new("k1", b"0123456789abcdef0123456789abcdef".to_vec(), 0).expect("key");
        let new = SigningKey::new("k2", b"fedcba9876543210fedcba9876543210".to_vec(), START).expect("key");
        f.keys.replace(SigningKeys::new(vec![old, new]).expect("keys"));
        assert!(f.service.authorize(&issued.token).await.is_ok());
        let next = f.service.issue(&alice()).await.expect("issued");
        assert_eq!(decode_payload(&next.token)["kid"], "k2");
    }
}
