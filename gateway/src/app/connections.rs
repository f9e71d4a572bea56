//! Connection lifecycle (AC5-AC10): validating the token on connect, registering with the per-user
//! cap, heartbeats, and cleanup on disconnect.

use herald_contract::defaults;
use std::net::IpAddr;
use std::sync::Arc;

use tracing::instrument;

use crate::domain::UnixMs;
use crate::domain::client_ip::limit_key;
use crate::domain::connection::{ConnectionRecord, sanitize_user_agent};
use crate::domain::rate::{RateDecision, RateLimit};
use crate::error::{Error, Result};
use crate::ports::{Clock, ConnectionRegistry, RateLimiter, RegisterOutcome};

use super::metrics::{Limit, Metrics};
use super::tokens::TokenService;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// Concurrent connections per user (plan: 5).
    pub max_per_user: u32,
    /// Connection attempts per minute per client IP (plan: 5).
    pub connects_per_minute_per_ip: u32,
    /// Registry TTL, moved forward by each heartbeat (plan: 2 h).
    pub ttl_ms: i64,
    /// A registration not pinged for this long no longer counts against the per-user cap: the server
    /// closes silent connections after the heartbeat timeout, so it belongs to a replica that died.
    pub stale_after_ms: i64,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            max_per_user: defaults::MAX_CONNECTIONS_PER_USER,
            connects_per_minute_per_ip: defaults::MAX_CONNECTS_PER_MINUTE_PER_IP,
            ttl_ms: defaults::CONNECTION_TTL_SECONDS as i64 * 1_000,
            stale_after_ms: Self::stale_after(defaults::HEARTBEAT_TIMEOUT_SECONDS * 1_000),
        }
    }
}

impl ConnectionSettings {
    /// Silent past the heartbeat timeout (plus slack for clocks and the close itself) means dead.
    pub fn stale_after(heartbeat_timeout_ms: u64) -> i64 {
        heartbeat_timeout_ms as i64 + 30_000
    }
}

/// What a client presents when it opens a WebSocket.
#[derive(Debug, Clone)]
pub struct ConnectRequest<'a> {
    pub client_ip: IpAddr,
    pub token: &'a str,
    pub user_agent: &'a str,
}

/// How many fresh ids to try when a generated connection id is already taken.
const ID_ATTEMPTS: usize = 3;

pub struct ConnectionService {
    tokens: Arc<TokenService>,
    registry: Arc<dyn ConnectionRegistry>,
    limiter: Arc<dyn RateLimiter>,
    clock: Arc<dyn Clock>,
    settings: ConnectionSettings,
    metrics: Arc<Metrics>,
}

impl ConnectionService {
    pub fn new(
        tokens: Arc<TokenService>,
        registry: Arc<dyn ConnectionRegistry>,
        limiter: Arc<dyn RateLimiter>,
        clock: Arc<dyn Clock>,
        settings: ConnectionSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            tokens,
            registry,
            limiter,
            clock,
            settings,
            metrics,
        }
    }

    /// Every check before the upgrade, in the order of DESIGN.md: WebSocket enabled, per-IP rate,
    /// token (size, decode, signature, expiry, revocation), single-use claim, then registration under
    /// the per-user cap. Each refusal is logged with its reason; both outcomes are counted here.
    #[instrument(skip_all, fields(ip = %request.client_ip))]
    pub async fn connect(&self, request: ConnectRequest<'_>) -> Result<ConnectionRecord> {
        let outcome = self.try_connect(&request).await;
        match &outcome {
            Ok(_) => {
                self.metrics.connections_opened.inc();
            }
            Err(err) => {
                self.metrics.count_rejection(err.code());
                match err {
                    Error::Token(rejection) => self.metrics.count_token_rejection(rejection),
                    Error::RateLimited { .. } => self.metrics.count_rate_limited(Limit::Connect),
                    _ => {}
                }
                tracing::info!(ip = %request.client_ip, code = err.code(), reason = %err, "websocket:rejected");
            }
        }
        outcome
    }

    async fn try_connect(&self, request: &ConnectRequest<'_>) -> Result<ConnectionRecord> {
        self.tokens.ensure_websocket_enabled()?;
        let limit = RateLimit::per_minute(self.settings.connects_per_minute_per_ip);
        let key = format!("connect:ip:{}", limit_key(request.client_ip));
        if let RateDecision::Limited { retry_after_ms } = self.limiter.check(&key, limit, self.clock.now_ms()).await? {
            return Err(Error::RateLimited { retry_after_ms });
        }
        let claims = self.tokens.authorize(request.token).await?;
        self.tokens.consume(&claims).await?;
        let now = self.clock.now_ms();
        let mut record = ConnectionRecord {
            connection_id: String::new(),
            user_id: claims.user_id,
            token_id: claims.token_id.to_string(),
            connected_at: now,
            last_ping_at: now,
            subscriptions: Vec::new(),
            allowed_channels: claims.allowed_channels.unwrap_or_default(),
            user_agent: sanitize_user_agent(request.user_agent),
            expires_at: now + self.settings.ttl_ms,
        };
        for _ in 0..ID_ATTEMPTS {
            record.connection_id = uuid::Uuid::new_v4().to_string();
            match self.register(&record).await {
                Err(Error::DuplicateConnection(id)) => {
                    tracing::warn!(connection_id = %id, "websocket:duplicate-connection-id, retrying with a new id");
                }
                Err(err) => return Err(err),
                Ok(()) => {
                    tracing::info!(
                        connection_id = %record.connection_id,
                        user_id = %record.user_id,
                        "websocket:connected"
                    );
                    return Ok(record);
                }
            }
        }
        Err(Error::DuplicateConnection(record.connection_id))
    }

    /// Registers a connection under the per-user cap (AC9). Registering the same id twice for the same
    /// user and token is a no-op; an id held by someone else is refused and left untouched.
    pub async fn register(&self, record: &ConnectionRecord) -> Result<()> {
        let now = self.clock.now_ms();
        let outcome = self
            .registry
            .register(
                record,
                self.settings.max_per_user,
                now,
                now - self.settings.stale_after_ms,
            )
            .await?;
        match outcome {
            RegisterOutcome::Registered | RegisterOutcome::AlreadyRegistered => Ok(()),
            RegisterOutcome::AtCapacity => Err(Error::TooManyConnections {
                max: self.settings.max_per_user,
            }),
            RegisterOutcome::IdTaken => Err(Error::DuplicateConnection(record.connection_id.clone())),
        }
    }

    /// A `ping` arrived (AC10): refresh `lastPingAt` and the registry TTL.
    pub async fn heartbeat(&self, user_id: &str, connection_id: &str) -> Result<UnixMs> {
        let now = self.clock.now_ms();
        if self
            .registry
            .touch(user_id, connection_id, now, now + self.settings.ttl_ms)
            .await?
        {
            Ok(now)
        } else {
            Err(Error::UnknownConnection(connection_id.to_owned()))
        }
    }

    /// The connection ended, for `reason`: its registration goes away.
    pub async fn disconnect(
        &self,
        user_id: &str,
        connection_id: &str,
        reason: &str,
    ) -> Result<Option<ConnectionRecord>> {
        let removed = self.registry.remove(user_id, connection_id).await?;
        if let Some(record) = &removed {
            tracing::info!(connection_id, user_id = %record.user_id, reason, "websocket:disconnected");
        }
        Ok(removed)
    }

    pub async fn get(&self, user_id: &str, connection_id: &str) -> Result<Option<ConnectionRecord>> {
        self.registry.get(user_id, connection_id, self.clock.now_ms()).await
    }

    pub async fn list_for_user(&self, user_id: &str) -> Result<Vec<ConnectionRecord>> {
        self.registry.list_for_user(user_id, self.clock.now_ms()).await
    }

    /// Drops registrations whose TTL passed (AC8): those of replicas that died without cleanup.
    pub async fn purge_expired(&self) -> Result<usize> {
        self.registry.purge_expired(self.clock.now_ms()).await
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::adapters::memory::{MemoryConnectionRegistry, MemoryRateLimiter};
    use crate::app::tokens::tests::{Fixture, fixture};
    use crate::domain::token::TokenRejection;
    use crate::domain::user::AuthenticatedUser;

    struct Setup {
        tokens: Fixture,
        service: ConnectionService,
        registry: Arc<MemoryConnectionRegistry>,
    }

    fn setup_with(settings: ConnectionSettings) -> Setup {
        let tokens = fixture();
        let registry = Arc::new(MemoryConnectionRegistry::default());
        let service = ConnectionService::new(
            tokens.service.clone(),
            registry.clone(),
            Arc::new(MemoryRateLimiter::default()),
            tokens.clock.clone(),
            settings,
            Arc::default(),
        );
        Setup {
            tokens,
            service,
            registry,
        }
    }

    fn setup() -> Setup {
        // Many attempts from one IP in these tests; the per-IP limit has its own test.
        setup_with(ConnectionSettings {
            connects_per_minute_per_ip: 1_000,
            ..ConnectionSettings::default()
        })
    }

    fn request(token: &str) -> ConnectRequest<'_> {
        ConnectRequest {
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            token,
            user_agent: "test-agent",
        }
    }

    async fn token_for(s: &Setup, user: &str) -> String {
        s.tokens
            .service
            .issue(&AuthenticatedUser::new(user, vec![]))
            .await
            .expect("token")
            .token
    }

    #[tokio::test]
    async fn should_register_new_connection_with_valid_connection_token() {
        let s = setup();
        let token = token_for(&s, "alice").await;
        let record = s.service.connect(request(&token)).await.expect("connected");
        assert_eq!(record.user_id, "alice");
        assert_eq!(record.user_agent, "test-agent");
        assert_eq!(record.expires_at, record.connected_at + 2 * 60 * 60 * 1_000);
        let stored = s
            .service
            .get("alice", &record.connection_id)
            .await
            .expect("get")
            .expect("registered");
        assert_eq!(stored, record);
    }

    #[tokio::test]
    async fn should_reject_connection_with_expired_token() {
        let s = setup();
        let token = token_for(&s, "alice").await;
        s.tokens.clock.advance(60_000);
        let err = s.service.connect(request(&token)).await.expect_err("expired");
        assert_eq!(err.code(), "token_expired");
        assert!(s.service.list_for_user("alice").await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn should_reject_connection_with_invalid_signature() {
        let s = setup();
        let token = token_for(&s, "alice").await;
        let (payload, _) = token.split_once('.').expect("two segments");
        let forged = format!("{payload}.{}", "A".repeat(43));
        let err = s.service.connect(request(&forged)).await.expect_err("forged");
        assert_eq!(err.code(), "token_invalid");
        // The forged attempt did not consume the real token.
        assert!(s.service.connect(request(&token)).await.is_ok());
    }

    #[tokio::test]
    async fn should_reject_connection_with_already_used_token() {
        let s = setup();
        let token = token_for(&s, "alice").await;
        s.service.connect(request(&token)).await.expect("first use");
        let err = s.service.connect(request(&token)).await.expect_err("second use");
        assert!(matches!(err, Error::Token(TokenRejection::Used)));
        assert_eq!(s.service.list_for_user("alice").await.expect("list").len(), 1);
    }

    #[tokio::test]
    async fn should_mark_token_as_used_on_successful_connect() {
        let s = setup();
        let token = token_for(&s, "alice").await;
        let claims = s.tokens.service.authorize(&token).await.expect("valid");
        s.service.connect(request(&token)).await.expect("connected");
        // The ledger now refuses the claim: the token is spent everywhere that shares it.
        assert!(matches!(
            s.tokens.service.consume(&claims).await,
            Err(Error::Token(TokenRejection::Used))
        ));
    }

    #[tokio::test]
    async fn should_enforce_max_connections_per_user() {
        let s = setup();
        for _ in 0..5 {
            let token = token_for(&s, "alice").await;
            s.service.connect(request(&token)).await.expect("within cap");
        }
        let token = token_for(&s, "alice").await;
        let err = s.service.connect(request(&token)).await.expect_err("sixth");
        assert_eq!(err.code(), "too_many_connections");
        assert_eq!(s.service.list_for_user("alice").await.expect("list").len(), 5);
        let bob = token_for(&s, "bob").await;
        assert!(s.service.connect(request(&bob)).await.is_ok(), "the cap is per user");
    }

    #[tokio::test]
    async fn should_update_last_ping_at_on_heartbeat() {
        let s = setup();
        let token = token_for(&s, "alice").await;
        let record = s.service.connect(request(&token)).await.expect("connected");
        s.tokens.clock.advance(30_000);
        let at = s
            .service
            .heartbeat("alice", &record.connection_id)
            .await
            .expect("heartbeat");
        let stored = s
            .service
            .get("alice", &record.connection_id)
            .await
            .expect("get")
            .expect("present");
        assert_eq!(stored.last_ping_at, at);
        assert_eq!(stored.last_ping_at, record.connected_at + 30_000);
        assert_eq!(stored.expires_at, at + 2 * 60 * 60 * 1_000, "heartbeat moves the TTL");
    }

    #[tokio::test]
    async fn should_clean_up_connection_on_disconnect() {
        let s = setup();
        let token = token_for(&s, "alice").await;
        let record = s.service.connect(request(&token)).await.expect("connected");
        let removed = s
            .service
            .disconnect("alice", &record.connection_id, "client closed")
            .await
            .expect("disconnect");
        assert_eq!(removed.map(|r| r.connection_id), Some(record.connection_id.clone()));
        assert!(
            s.service
                .get("alice", &record.connection_id)
                .await
                .expect("get")
                .is_none()
        );
        assert!(s.service.list_for_user("alice").await.expect("list").is_empty());
        assert!(
            s.service
                .disconnect("alice", &record.connection_id, "again")
                .await
                .expect("idempotent")
                .is_none()
        );
        assert_eq!(
            s.service
                .heartbeat("alice", &record.connection_id)
                .await
                .expect_err("gone")
                .code(),
            "unknown_connection"
        );
    }

    #[tokio::test]
    async fn should_handle_duplicate_connection_ids_gracefully() {
        let s = setup();
        let token = token_for(&s, "alice").await;
        let record = s.service.connect(request(&token)).await.expect("connected");
        // The same registration delivered twice (a retried connect): accepted, counted once.
        s.service.register(&record).await.expect("idempotent");
        assert_eq!(s.service.list_for_user("alice").await.expect("list").len(), 1);
        // Another user presenting the same id cannot take it over.
        let mut hijack = record.clone();
        hijack.user_id = "mallory".into();
        let err = s.service.register(&hijack).await.expect_err("taken");
        assert_eq!(err.code(), "duplicate_connection");
        let owner = s
            .registry
            .get(&record.user_id, &record.connection_id, record.connected_at)
            .await
            .expect("get");
        assert_eq!(owner.map(|r| r.user_id), Some("alice".to_owned()));
    }

    #[tokio::test]
    async fn limits_connection_attempts_per_ip() {
        let s = setup_with(ConnectionSettings::default());
        for _ in 0..5 {
            let _ = s.service.connect(request("garbage")).await;
        }
        let token = token_for(&s, "alice").await;
        let err = s
            .service
            .connect(request(&token))
            .await
            .expect_err("sixth attempt this minute");
        assert_eq!(err.code(), "rate_limited");
        s.tokens.clock.advance(12_000);
        assert!(
            s.service.connect(request(&token)).await.is_ok(),
            "one attempt refills every 12 s"
        );
    }

    #[tokio::test]
    async fn expired_registrations_are_purged_and_free_the_cap() {
        let s = setup_with(ConnectionSettings {
            max_per_user: 1,
            connects_per_minute_per_ip: 1_000,
            ttl_ms: 60_000,
            stale_after_ms: 120_000,
        });
        let token = token_for(&s, "alice").await;
        let stale = s.service.connect(request(&token)).await.expect("connected");
        s.tokens.clock.advance(60_000);
        assert_eq!(s.service.purge_expired().await.expect("purge"), 1);
        assert!(
            s.service
                .get("alice", &stale.connection_id)
                .await
                .expect("get")
                .is_none()
        );
        let token = token_for(&s, "alice").await;
        assert!(s.service.connect(request(&token)).await.is_ok());
    }
}
