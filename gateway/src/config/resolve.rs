//! Resolution: every setting of [`Options`] checked and turned into the typed settings the services
//! take, with the defaults of `herald_contract::defaults` (through each settings type's `Default`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use herald_contract::{Options, PublisherEntry, Secret, defaults};
use reqwest::Url;

use crate::adapters::jwt::{JwtSettings, is_allowed_jwks_url};
use crate::app::delivery::DeliverySettings;
use crate::app::{ConnectionSettings, SessionSettings, TokenSettings};
use crate::domain::channel::ChannelCatalog;
use crate::domain::notification::NotificationType;
use crate::domain::publisher::{MIN_KEY_CHARS, Publisher, Publishers};
use crate::domain::token::{MAX_TOKEN_CHARS, MIN_SECRET_BYTES, SigningKey, SigningKeys};
use crate::listener::ListenerLimits;

use super::keys::{KeySource, inline_keys, read_keys_file};
use super::{Config, ConfigError, LogFormat, StoreConfig, invalid, positive};

impl Config {
    pub fn resolve(o: Options) -> Result<Config, ConfigError> {
        let dev = o.dev.unwrap_or(false);
        let store = StoreConfig::resolve(&o)?;
        let log_format = o
            .log_format
            .unwrap_or_else(|| match std::env::var("RUST_LOG_FORMAT").ok().as_deref() {
                Some("json") => LogFormat::Json,
                _ => LogFormat::Human,
            });
        let (jwt, dev_jwt_secret) = jwt_settings(&o, dev)?;
        let (signing_keys, key_source) = signing_keys(&o, dev)?;
        let retention_days = positive("HERALD_RETENTION_DAYS", o.retention_days, defaults::RETENTION_DAYS)?;
        let admin_role = o.admin_role.clone().unwrap_or_else(|| defaults::ADMIN_ROLE.to_owned());
        let (catalog, channels_checksum) =
            super::channels::catalog_of(o.channels.as_deref(), &admin_role, retention_days, &signing_keys)?;
        let channel_source = o.config.clone().map(|file| super::channels::ChannelSource {
            file,
            admin_role: admin_role.clone(),
            retention_days,
        });
        let (publishers, dev_publisher_key) = publishers(
            o.publishers.clone(),
            o.publisher_keys.as_ref(),
            o.publisher_notifications_per_second,
            &catalog,
            dev,
        )?;
        let session = session_settings(&o)?;
        let (listen, internal_listen) = listeners(&o)?;
        Ok(Config {
            listen,
            internal_listen,
            store,
            dev,
            log_format,
            otlp_endpoint: otlp_endpoint(o.otlp_endpoint.as_deref())?,
            jwt,
            dev_jwt_secret,
            signing_keys,
            key_source,
            tokens: token_settings(&o)?,
            connections: connection_settings(&o, &session)?,
            session,
            listener: listener_limits(&o)?,
            trusted_proxies: o
                .trusted_proxies
                .as_deref()
                .unwrap_or_default()
                .split(',')
                .filter(|part| !part.trim().is_empty())
                .map(|part| {
                    part.parse()
                        .map_err(|e| invalid(format!("HERALD_TRUSTED_PROXIES: {e}")))
                })
                .collect::<Result<_, _>>()?,
            allowed_origins: crate::domain::origin::AllowedOrigins::parse(
                o.allowed_origins.as_deref().unwrap_or_default(),
            )
            .map_err(|e| invalid(format!("HERALD_ALLOWED_ORIGINS: {e}")))?,
            links: super::links::link_policy(&o)?,
            catalog,
            channels_checksum,
            channel_source,
            publishers,
            dev_publisher_key,
            delivery: delivery_settings(&o, &session)?,
            shutdown_grace_ms: o.shutdown_grace_seconds.unwrap_or(defaults::SHUTDOWN_GRACE_SECONDS) * 1_000,
        })
    }

    /// The configuration as an operator may see it: no secret, only where each one comes from.
    pub fn describe(&self) -> serde_json::Value {
        let keys: Vec<_> = self
            .signing_keys
            .keys()
            .iter()
            .map(|k| serde_json::json!({"kid": k.kid(), "notBefore": k.not_before()}))
            .collect();
        serde_json::json!({
            "listen": self.listen.to_string(),
            "internalListen": self.internal_listen.to_string(),
            "store": self.store.describe(),
            "dev": self.dev,
            "userJwt": {
                "hs256": self.jwt.hs256_secret.is_some(),
                "jwksUrl": self.jwt.jwks_url.as_ref().map(Url::as_str),
                "issuer": self.jwt.issuer,
                "audience": self.jwt.audience,
                "rolesClaim": self.jwt.roles_claim,
            },
            "signingKeys": keys,
            "tokenTtlMs": self.tokens.ttl_ms,
            "maxTokensPerMinute": self.tokens.max_per_minute,
            "maxConnectionsPerUser": self.connections.max_per_user,
            "maxConnectsPerMinutePerIp": self.connections.connects_per_minute_per_ip,
            "connectionTtlMs": self.connections.ttl_ms,
            "maxMessagesPerSecond": self.session.messages_per_second,
            "maxMessageBytes": self.session.max_message_bytes,
            "heartbeatIntervalMs": self.session.heartbeat_interval_ms,
            "heartbeatTimeoutMs": self.session.heartbeat_timeout_ms,
            "maxSessionMs": self.session.max_session_ms,
            "maxConnections": self.listener.max_connections,
            "httpTimeoutMs": self.listener.http_timeout.as_millis() as u64,
            "websocketEnabled": self.tokens.websocket_enabled,
            "allowedOrigins": !self.allowed_origins.is_empty(),
            "channels": self.catalog.channels().iter().map(|c| serde_json::json!({
                "name": c.name,
                "types": c.types.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
                "adminOnly": c.admin_only,
                "requiredRole": c.required_role,
                "defaultSubscribed": c.default_subscribed,
                "retentionMs": c.retention_ms,
            })).collect::<Vec<_>>(),
            "publishers": self.publishers.names(),
            "ackTimeoutMs": self.delivery.ack_timeout_ms,
            "maxDeliveryAttempts": self.delivery.max_attempts,
            "shutdownGraceMs": self.shutdown_grace_ms,
            "otlpEndpoint": self.otlp_endpoint.as_ref().map(url::Url::as_str),
            "links": self.links.describe(),
        })
    }
}

/// The HS256 secret `POST /dev/jwt` signs with in dev mode.
type DevJwtSecret = Secret<Vec<u8>>;

/// User JWT verification: a JWKS URL, an HS256 secret, or (dev mode) a random HS256 secret that
/// `POST /dev/jwt` signs with. Dev mode never takes a configured key: anything `/dev/jwt` could
/// sign with must be a key nothing else trusts.
fn jwt_settings(o: &Options, dev: bool) -> Result<(JwtSettings, Option<DevJwtSecret>), ConfigError> {
    if dev && (o.jwt_hs256_secret.is_some() || o.jwt_jwks_url.is_some()) {
        return Err(invalid(
            "--dev (HERALD_DEV) cannot be combined with HERALD_JWT_HS256_SECRET or HERALD_JWT_JWKS_URL: dev mode \
             mints user JWTs with a random secret of its own at POST /dev/jwt, and with a real secret it \
             would mint JWTs that production accepts; drop --dev, or drop the JWT settings",
        ));
    }
    let mut dev_jwt_secret = None;
    let hs256_secret = match (&o.jwt_hs256_secret, &o.jwt_jwks_url) {
        (Some(secret), _) => {
            if secret.expose().len() < MIN_SECRET_BYTES {
                return Err(invalid(format!(
                    "HERALD_JWT_HS256_SECRET is too short: at least {MIN_SECRET_BYTES} bytes are required"
                )));
            }
            Some(Secret::new(secret.expose().as_bytes().to_vec()))
        }
        (None, Some(_)) => None,
        (None, None) if dev => {
            let secret = Secret::new(random_secret());
            dev_jwt_secret = Some(secret.clone());
            Some(secret)
        }
        (None, None) => {
            return Err(invalid(
                "no user JWT verification is configured: set HERALD_JWT_JWKS_URL (or HERALD_JWT_HS256_SECRET), \
                 or run with --dev",
            ));
        }
    };
    let jwks_url = o.jwt_jwks_url.as_deref().map(jwks_url).transpose()?;
    if !dev {
        issuer_and_audience_required(o)?;
    }
    let jwt = JwtSettings {
        hs256_secret,
        jwks_url,
        issuer: o.jwt_issuer.clone(),
        audience: o.jwt_audience.clone(),
        roles_claim: o
            .jwt_roles_claim
            .clone()
            .unwrap_or_else(|| defaults::JWT_ROLES_CLAIM.to_owned()),
        leeway_secs: o.jwt_leeway_seconds.unwrap_or(defaults::JWT_LEEWAY_SECONDS),
        jwks_min_refetch: crate::adapters::jwt::JWKS_MIN_REFETCH,
    };
    Ok((jwt, dev_jwt_secret))
}

/// The JWKS URL, which must be `https://` unless it stays on this machine: see
/// [`is_allowed_jwks_url`].
fn jwks_url(url: &str) -> Result<Url, ConfigError> {
    match Url::parse(url) {
        Ok(parsed) if is_allowed_jwks_url(&parsed) => Ok(parsed),
        Ok(_) => Err(invalid(format!(
            "HERALD_JWT_JWKS_URL must be an https:// URL (plain http:// only to 127.0.0.1, [::1] or \
             localhost), got `{url}`: a key set fetched in the clear can be replaced in transit"
        ))),
        Err(e) => Err(invalid(format!("HERALD_JWT_JWKS_URL is not a URL (`{url}`): {e}"))),
    }
}

/// The OTLP/HTTP collector's base URL: `http://` or `https://`, nothing else (a collector inside the
/// cluster is usually plain HTTP; the spans exported hold the publisher's name, timings and ids,
/// never a notification's content or a user id).
fn otlp_endpoint(url: Option<&str>) -> Result<Option<Url>, ConfigError> {
    let Some(url) = url.filter(|url| !url.is_empty()) else {
        return Ok(None);
    };
    match Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => Ok(Some(parsed)),
        Ok(_) => Err(invalid(format!(
            "OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// or https:// URL of an OTLP/HTTP collector, got `{url}`"
        ))),
        Err(e) => Err(invalid(format!(
            "OTEL_EXPORTER_OTLP_ENDPOINT is not a URL (`{url}`): {e}"
        ))),
    }
}

/// Without `iss` and `aud` checks, a JWT the same identity provider issued to any other application
/// (or another tenant's issuer trusted by the same keys) is accepted: both are required outside dev
/// mode unless the operator says, by name, that this is intended.
fn issuer_and_audience_required(o: &Options) -> Result<(), ConfigError> {
    if o.jwt_allow_any_issuer_and_audience == Some(true) {
        return Ok(());
    }
    let missing: Vec<&str> = [
        ("HERALD_JWT_ISSUER", o.jwt_issuer.is_none()),
        ("HERALD_JWT_AUDIENCE", o.jwt_audience.is_none()),
    ]
    .into_iter()
    .filter_map(|(name, missing)| missing.then_some(name))
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(invalid(format!(
        "{} not set: without them a user JWT from any issuer, for any audience, signed with a trusted key \
         is accepted. Set HERALD_JWT_ISSUER and HERALD_JWT_AUDIENCE, or, if every JWT those keys sign is \
         meant for this gateway, HERALD_JWT_ALLOW_ANY_ISSUER_AND_AUDIENCE=true",
        missing.join(" and ")
    )))
}

/// A keys file, or the plan's inline secrets, or (dev mode) one random key; never both sources.
fn signing_keys(o: &Options, dev: bool) -> Result<(SigningKeys, KeySource), ConfigError> {
    Ok(
        match (&o.signing_keys_file, &o.token_secret, &o.token_secret_previous) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(invalid(
                    "set either HERALD_SIGNING_KEYS_FILE or WEBSOCKET_TOKEN_SECRET(_PREVIOUS), not both",
                ));
            }
            (Some(path), None, None) => (read_keys_file(path)?, KeySource::File(path.clone())),
            (None, Some(current), previous) => (inline_keys(current, previous.as_ref())?, KeySource::Inline),
            (None, None, Some(_)) => {
                return Err(invalid(
                    "WEBSOCKET_TOKEN_SECRET_PREVIOUS is set without WEBSOCKET_TOKEN_SECRET",
                ));
            }
            (None, None, None) if dev => {
                let key = SigningKey::new("dev", random_secret(), 0).map_err(|e| invalid(e.to_string()))?;
                (
                    SigningKeys::new(vec![key]).map_err(|e| invalid(e.to_string()))?,
                    KeySource::Inline,
                )
            }
            (None, None, None) => {
                return Err(invalid(
                    "no connection-token secret: set WEBSOCKET_TOKEN_SECRET (at least 32 random bytes) or \
                     HERALD_SIGNING_KEYS_FILE, or run with --dev",
                ));
            }
        },
    )
}

fn token_settings(o: &Options) -> Result<TokenSettings, ConfigError> {
    let defaults = TokenSettings::default();
    let max_ttl_seconds = (crate::app::tokens::MAX_TOKEN_TTL_MS / 1_000) as u64;
    let ttl_seconds = o.token_ttl_seconds.unwrap_or(defaults.ttl_ms as u64 / 1_000);
    if !(1..=max_ttl_seconds).contains(&ttl_seconds) {
        return Err(invalid(format!(
            "WEBSOCKET_TOKEN_TTL_SECONDS must be 1-{max_ttl_seconds}"
        )));
    }
    Ok(TokenSettings {
        ttl_ms: ttl_seconds as i64 * 1_000,
        max_per_minute: positive(
            "WEBSOCKET_MAX_TOKENS_PER_MINUTE",
            o.max_tokens_per_minute,
            defaults.max_per_minute,
        )?,
        websocket_enabled: o.websocket_enabled.unwrap_or(defaults.websocket_enabled),
    })
}

fn session_settings(o: &Options) -> Result<SessionSettings, ConfigError> {
    let defaults = SessionSettings::default();
    let seconds = |name: &str, value: Option<u64>, default_ms: u64| -> Result<u64, ConfigError> {
        Ok(positive(name, value, default_ms / 1_000)? * 1_000)
    };
    let heartbeat_interval_ms = seconds(
        "HERALD_HEARTBEAT_INTERVAL_SECONDS",
        o.heartbeat_interval_seconds,
        defaults.heartbeat_interval_ms,
    )?;
    let heartbeat_timeout_ms = seconds(
        "HERALD_HEARTBEAT_TIMEOUT_SECONDS",
        o.heartbeat_timeout_seconds,
        defaults.heartbeat_timeout_ms,
    )?;
    if heartbeat_timeout_ms < heartbeat_interval_ms {
        return Err(invalid(
            "HERALD_HEARTBEAT_TIMEOUT_SECONDS must not be shorter than the heartbeat interval",
        ));
    }
    let max_message_bytes = positive(
        "HERALD_MAX_MESSAGE_BYTES",
        o.max_message_bytes,
        defaults.max_message_bytes,
    )?;
    Ok(SessionSettings {
        max_message_bytes,
        messages_per_second: positive(
            "HERALD_MAX_MESSAGES_PER_SECOND",
            o.max_messages_per_second,
            defaults.messages_per_second,
        )?,
        violations_per_minute: positive(
            "HERALD_MAX_VIOLATIONS_PER_MINUTE",
            o.max_violations_per_minute,
            defaults.violations_per_minute,
        )?,
        subscription_changes_per_minute: positive(
            "HERALD_MAX_SUBSCRIPTION_CHANGES_PER_MINUTE",
            o.max_subscription_changes_per_minute,
            defaults.subscription_changes_per_minute,
        )?,
        outbound_queue: positive("HERALD_OUTBOUND_QUEUE", o.outbound_queue, defaults.outbound_queue)?,
        write_timeout_ms: positive("HERALD_WRITE_TIMEOUT_MS", o.write_timeout_ms, defaults.write_timeout_ms)?,
        heartbeat_interval_ms,
        heartbeat_timeout_ms,
        max_session_ms: seconds(
            "HERALD_MAX_SESSION_SECONDS",
            o.max_session_seconds,
            defaults.max_session_ms,
        )?,
        // Bytes read at a time (a longer frame grows the buffer to its own length while it is read),
        // never more than the message cap.
        read_buffer_bytes: defaults.read_buffer_bytes.min(max_message_bytes.max(1_024)),
        ..defaults
    })
}

/// The public and the internal address. One address for both would put `/api/publish` and
/// `/metrics` back on the public port (or fail to bind), so that is refused with the reason.
fn listeners(o: &Options) -> Result<(SocketAddr, SocketAddr), ConfigError> {
    let public = o.listen.unwrap_or(defaults::LISTEN);
    let internal = o.internal_listen.unwrap_or(defaults::INTERNAL_LISTEN);
    let overlap = public.ip() == internal.ip() || public.ip().is_unspecified() || internal.ip().is_unspecified();
    if public.port() != 0 && public.port() == internal.port() && overlap {
        return Err(invalid(format!(
            "HERALD_INTERNAL_LISTEN ({internal}) must not be the address of HERALD_LISTEN ({public}): \
             the internal listener serves /api/publish and /metrics, which must stay off the public port"
        )));
    }
    Ok((public, internal))
}

fn listener_limits(o: &Options) -> Result<ListenerLimits, ConfigError> {
    let defaults = ListenerLimits::default();
    Ok(ListenerLimits {
        max_connections: positive("HERALD_MAX_CONNECTIONS", o.max_connections, defaults.max_connections)?,
        http_timeout: Duration::from_secs(positive(
            "HERALD_HTTP_TIMEOUT_SECONDS",
            o.http_timeout_seconds,
            defaults.http_timeout.as_secs(),
        )?),
    })
}

fn connection_settings(o: &Options, session: &SessionSettings) -> Result<ConnectionSettings, ConfigError> {
    let defaults = ConnectionSettings::default();
    Ok(ConnectionSettings {
        max_per_user: positive(
            "WEBSOCKET_MAX_CONNECTIONS_PER_USER",
            o.max_connections_per_user,
            defaults.max_per_user,
        )?,
        connects_per_minute_per_ip: positive(
            "HERALD_MAX_CONNECTS_PER_MINUTE_PER_IP",
            o.max_connects_per_minute_per_ip,
            defaults.connects_per_minute_per_ip,
        )?,
        ttl_ms: positive(
            "HERALD_CONNECTION_TTL_SECONDS",
            o.connection_ttl_seconds,
            defaults.ttl_ms as u64 / 1_000,
        )? as i64
            * 1_000,
        stale_after_ms: ConnectionSettings::stale_after(session.heartbeat_timeout_ms),
    })
}

fn delivery_settings(o: &Options, session: &SessionSettings) -> Result<DeliverySettings, ConfigError> {
    let defaults = DeliverySettings::default();
    Ok(DeliverySettings {
        ack_timeout_ms: positive(
            "HERALD_ACK_TIMEOUT_MS",
            o.ack_timeout_ms,
            defaults.ack_timeout_ms as u64,
        )? as i64,
        max_attempts: positive(
            "HERALD_MAX_DELIVERY_ATTEMPTS",
            o.max_delivery_attempts,
            defaults.max_attempts,
        )?,
        window: DeliverySettings::window_for_queue(session.outbound_queue),
        ..defaults
    })
}

/// Publishers from the YAML list (hashed keys) and `HERALD_PUBLISHER_KEYS` (plain keys, all types).
/// In dev mode with none configured, one `dev` publisher with a random key.
fn publishers(
    entries: Option<Vec<PublisherEntry>>,
    plain: Option<&Secret>,
    notifications_per_second: Option<u32>,
    catalog: &ChannelCatalog,
    dev: bool,
) -> Result<(Publishers, Option<Secret>), ConfigError> {
    let default_rate = publisher_rate("HERALD_PUBLISHER_NOTIFICATIONS_PER_SECOND", notifications_per_second)?;
    let mut list = Vec::new();
    for entry in entries.unwrap_or_default() {
        let types = match entry.types {
            None => None,
            Some(names) => Some(
                names
                    .iter()
                    .map(|n| {
                        NotificationType::parse(n)
                            .ok_or_else(|| invalid(format!("publisher `{}`: unknown type `{n}`", entry.name)))
                    })
                    .collect::<Result<HashSet<_>, _>>()?,
            ),
        };
        let publisher = Publisher::from_hash(&entry.name, &entry.key_sha256, types).ok_or_else(|| {
            invalid(format!(
                "publisher `{}`: key_sha256 must be 64 hex digits (sha256sum of the key)",
                entry.name
            ))
        })?;
        let channels = match &entry.channels {
            None => None,
            Some(names) => Some(
                names
                    .iter()
                    .map(|name| match catalog.get(name) {
                        Some(_) => Ok(name.clone()),
                        None => Err(invalid(format!("publisher `{}`: unknown channel `{name}`", entry.name))),
                    })
                    .collect::<Result<HashSet<_>, _>>()?,
            ),
        };
        let rate = match entry.notifications_per_second {
            Some(rate) => publisher_rate(
                &format!("publisher `{}`: notifications_per_second", entry.name),
                Some(rate),
            )?,
            None => default_rate,
        };
        list.push(publisher.with_channels(channels).with_notifications_per_second(rate));
    }
    for pair in plain
        .map(|keys| keys.expose().as_str())
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let (name, key) = pair
            .split_once('=')
            .ok_or_else(|| invalid("HERALD_PUBLISHER_KEYS must be `name=key,name2=key2`"))?;
        if name.trim().is_empty() || (key.len() < MIN_KEY_CHARS && !dev) {
            return Err(invalid(format!(
                "HERALD_PUBLISHER_KEYS: publisher `{name}` needs a name and a key of at least {MIN_KEY_CHARS} characters"
            )));
        }
        list.push(Publisher::from_key(name.trim(), key, None).with_notifications_per_second(default_rate));
    }
    let mut dev_key = None;
    if list.is_empty() && dev {
        use rand::Rng;
        let key: String = rand::thread_rng()
            .sample_iter(rand::distributions::Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        list.push(Publisher::from_key("dev", &key, None));
        dev_key = Some(Secret::new(key));
    }
    Ok((Publishers::new(list).map_err(invalid)?, dev_key))
}

/// A publisher's notifications per second: at least one publish to the most recipients a publish may
/// have, or that publish could never pass.
fn publisher_rate(name: &str, value: Option<u32>) -> Result<u32, ConfigError> {
    let rate = value.unwrap_or(crate::domain::publisher::DEFAULT_NOTIFICATIONS_PER_SECOND);
    let least = crate::domain::publish::MAX_RECIPIENTS as u32;
    if rate < least {
        return Err(invalid(format!(
            "{name} must be at least {least} (the most recipients of one publish)"
        )));
    }
    Ok(rate)
}

/// Refuses a channel set whose connection tokens could outgrow what the verifier accepts: the token of
/// a user allowed every channel, with the longest user id (each byte escaped in JSON) and the longest
/// key id, must stay within [`MAX_TOKEN_CHARS`], or such a user would be issued tokens that are then
/// refused at every connect.
pub(super) fn fits_in_a_token(catalog: &ChannelCatalog, keys: &SigningKeys) -> Result<(), ConfigError> {
    let worst = crate::domain::token::ConnectionClaims {
        kid: keys
            .keys()
            .iter()
            .map(|k| k.kid())
            .max_by_key(|kid| kid.len())
            .unwrap_or_default()
            .to_owned(),
        user_id: "\"".repeat(crate::domain::user::MAX_USER_ID_BYTES),
        issued_at: i64::MAX,
        expires_at: i64::MAX,
        token_id: uuid::Uuid::max(),
        allowed_channels: Some(catalog.channels().iter().map(|c| c.name.clone()).collect()),
    };
    let len = worst.signed_len();
    if len > MAX_TOKEN_CHARS {
        return Err(invalid(format!(
            "channels: the connection token of a user allowed every channel would be {len} characters, over the {MAX_TOKEN_CHARS} a token may have; configure fewer channels or shorter names"
        )));
    }
    Ok(())
}

fn random_secret() -> Vec<u8> {
    use rand::RngCore;
    let mut secret = vec![0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    secret
}

#[cfg(test)]
mod tests {
    use super::super::test_options as options;
    use super::*;

    const SECRET: &str = "k9X2m4Q7p1Z8r5T3w6Y0u2I4o6P8a1S3";

    fn refusal(options: Options) -> String {
        Config::resolve(options).expect_err("refused").to_string()
    }

    /// What production needs: a user JWT secret with its issuer and audience, a token secret.
    fn production() -> Options {
        Options {
            jwt_hs256_secret: Some(SECRET.into()),
            jwt_issuer: Some("https://issuer.example/".into()),
            jwt_audience: Some("herald".into()),
            token_secret: Some(SECRET.into()),
            ..options()
        }
    }

    #[test]
    fn non_dev_mode_refuses_to_start_without_secrets() {
        let err = refusal(options());
        assert!(err.contains("HERALD_JWT_JWKS_URL"), "{err}");
        let err = refusal(Options {
            token_secret: None,
            ..production()
        });
        assert!(err.contains("WEBSOCKET_TOKEN_SECRET"), "{err}");
    }

    #[test]
    fn a_channel_set_too_large_for_a_connection_token_is_refused() {
        use herald_contract::ChannelEntry;
        let channel = |name: String, types: Vec<String>| ChannelEntry {
            name,
            description: None,
            types,
            admin_only: false,
            required_role: None,
            default_subscribed: true,
            retention_days: None,
        };
        let all_types: Vec<String> = NotificationType::ALL.iter().map(|t| t.as_str().to_owned()).collect();
        let with = |extra: usize| Options {
            channels: Some(
                std::iter::once(channel("everything".into(), all_types.clone()))
                    .chain((0..extra).map(|i| channel(format!("{i:0>60}"), Vec::new())))
                    .collect(),
            ),
            ..production()
        };
        Config::resolve(with(10)).expect("ten more channels fit");
        let err = refusal(with(60));
        assert!(
            err.contains("connection token of a user allowed every channel"),
            "{err}"
        );
    }

    #[test]
    fn weak_secrets_are_refused_outside_dev_mode() {
        let weak_jwt = Options {
            jwt_hs256_secret: Some("short".into()),
            ..production()
        };
        assert!(refusal(weak_jwt).contains("too short"));
        let weak_token = Options {
            token_secret: Some("x".repeat(40).into()),
            ..production()
        };
        assert!(refusal(weak_token).contains("weak"));
    }

    #[test]
    fn dev_mode_generates_what_is_missing_and_defaults_come_from_one_place() {
        let config = Config::resolve(Options {
            dev: Some(true),
            ..options()
        })
        .expect("dev");
        assert!(config.dev_jwt_secret.is_some());
        assert!(config.dev_publisher_key.is_some());
        assert_eq!(config.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(config.internal_listen, SocketAddr::from(([127, 0, 0, 1], 9090)));
        assert_eq!(config.tokens, TokenSettings::default());
        assert_eq!(config.connections, ConnectionSettings::default());
        assert_eq!(config.session, SessionSettings::default());
        assert_eq!(config.delivery, DeliverySettings::default());
        assert_eq!(
            config.session.heartbeat_interval_ms,
            defaults::HEARTBEAT_INTERVAL_SECONDS * 1_000
        );
    }

    #[test]
    fn plan_shorthand_secrets_sign_with_current_and_accept_previous() {
        let previous = "P0o9I8u7Y6t5R4e3W2q1A2s3D4f5G6h7";
        let config = Config::resolve(Options {
            token_secret_previous: Some(previous.into()),
            ..production()
        })
        .expect("valid");
        let keys = config.signing_keys.keys();
        assert_eq!(keys.len(), 2);
        let active = config.signing_keys.active(1_000).expect("active");
        assert_eq!(active.kid(), SigningKey::derived_kid(SECRET.as_bytes()));
    }

    #[test]
    fn debug_formatting_of_the_config_prints_no_secret() {
        let jwt_secret = "jwt-secret-0123456789-abcdefghijkl";
        let token_secret = SECRET;
        let publisher_key = "publisher-key-0123456789abcdef";
        let config = Config::resolve(Options {
            jwt_hs256_secret: Some(jwt_secret.into()),
            token_secret: Some(token_secret.into()),
            publisher_keys: Some(format!("billing={publisher_key}").into()),
            database_url: Some("postgres://herald:db-password-42@db:5432/herald".into()),
            redis_url: Some("redis://:redis-password-42@cache:6379".into()),
            ..production()
        })
        .expect("valid");
        let printed = format!("{config:?}");
        for secret in [
            jwt_secret,
            token_secret,
            publisher_key,
            "db-password-42",
            "redis-password-42",
        ] {
            assert!(!printed.contains(secret), "`{secret}` printed in {printed}");
        }
        // Byte secrets must not leak as numbers either.
        let bytes = format!("{:?}", jwt_secret.as_bytes());
        assert!(!printed.contains(&bytes[1..bytes.len() - 1]));
        let dev = Config::resolve(Options {
            dev: Some(true),
            ..options()
        })
        .expect("dev");
        let printed = format!("{dev:?}");
        let key = dev.dev_publisher_key.as_ref().expect("dev key");
        assert!(!printed.contains(key.expose().as_str()), "{printed}");
    }

    #[test]
    fn flags_win_over_the_yaml_file() {
        let file =
            Options::from_yaml("listen: 127.0.0.1:9000\nmax_connections_per_user: 3\ndev: true\n").expect("yaml");
        let merged = Options {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9100))),
            ..options()
        }
        .or(file);
        let config = Config::resolve(merged).expect("valid");
        assert_eq!(config.listen.port(), 9100);
        assert_eq!(config.connections.max_per_user, 3);
    }

    #[test]
    fn the_internal_listener_may_not_share_the_public_address() {
        let with = |listen: &str, internal: &str| Options {
            dev: Some(true),
            listen: Some(listen.parse().expect("addr")),
            internal_listen: Some(internal.parse().expect("addr")),
            ..options()
        };
        let err = refusal(with("0.0.0.0:8080", "0.0.0.0:8080"));
        assert!(err.contains("HERALD_INTERNAL_LISTEN"), "{err}");
        assert!(
            refusal(with("0.0.0.0:8080", "127.0.0.1:8080")).contains("HERALD_INTERNAL_LISTEN"),
            "the wildcard covers loopback too"
        );
        let config = Config::resolve(with("0.0.0.0:8080", "0.0.0.0:9090")).expect("two ports");
        assert_eq!(config.internal_listen.port(), 9090);
        Config::resolve(with("127.0.0.1:0", "127.0.0.1:0")).expect("port 0 twice: two free ports");
    }

    #[test]
    fn traces_go_to_an_http_collector_or_nowhere() {
        let with = |endpoint: Option<&str>| Options {
            dev: Some(true),
            otlp_endpoint: endpoint.map(str::to_owned),
            ..options()
        };
        assert_eq!(Config::resolve(with(None)).expect("off").otlp_endpoint, None);
        assert_eq!(Config::resolve(with(Some(""))).expect("off").otlp_endpoint, None);
        let on = Config::resolve(with(Some("http://collector.monitoring:4318"))).expect("on");
        assert_eq!(
            on.otlp_endpoint.as_ref().map(Url::as_str),
            Some("http://collector.monitoring:4318/")
        );
        for refused in ["collector:4318", "ftp://collector", "grpc://collector:4317"] {
            assert!(
                refusal(with(Some(refused))).contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
                "{refused}"
            );
        }
    }

    #[test]
    fn zero_limits_and_short_heartbeat_timeouts_are_refused() {
        let zero = Options {
            dev: Some(true),
            max_messages_per_second: Some(0),
            ..options()
        };
        assert!(refusal(zero).contains("HERALD_MAX_MESSAGES_PER_SECOND"));
        let inverted = Options {
            dev: Some(true),
            heartbeat_interval_seconds: Some(60),
            heartbeat_timeout_seconds: Some(30),
            ..options()
        };
        assert!(Config::resolve(inverted).is_err());
    }

    #[test]
    fn a_jwks_url_must_be_https_unless_it_is_loopback() {
        let with_jwks = |url: &str| Options {
            jwt_hs256_secret: None,
            jwt_jwks_url: Some(url.into()),
            ..production()
        };
        for refused in [
            "http://issuer.example/jwks.json",
            "http://10.1.2.3:8080/jwks.json",
            "http://localhost.issuer.example/jwks.json",
            "ftp://issuer.example/jwks.json",
            "issuer.example/jwks.json",
        ] {
            let err = refusal(with_jwks(refused));
            assert!(err.contains("HERALD_JWT_JWKS_URL"), "{refused}: {err}");
        }
        for accepted in [
            "https://issuer.example/.well-known/jwks.json",
            "http://127.0.0.1:9000/jwks.json",
            "http://[::1]:9000/jwks.json",
            "http://localhost:9000/jwks.json",
        ] {
            let config = Config::resolve(with_jwks(accepted)).expect(accepted);
            assert_eq!(config.jwt.jwks_url.map(String::from).as_deref(), Some(accepted));
        }
    }

    #[test]
    fn issuer_and_audience_are_required_outside_dev_mode_unless_explicitly_waived() {
        let err = refusal(Options {
            jwt_issuer: None,
            jwt_audience: None,
            ..production()
        });
        assert!(
            err.contains("HERALD_JWT_ISSUER and HERALD_JWT_AUDIENCE not set")
                && err.contains("HERALD_JWT_ALLOW_ANY_ISSUER_AND_AUDIENCE=true"),
            "{err}"
        );
        let err = refusal(Options {
            jwt_audience: None,
            ..production()
        });
        assert!(
            err.starts_with("configuration error: HERALD_JWT_AUDIENCE not set"),
            "{err}"
        );
        let waived = Options {
            jwt_issuer: None,
            jwt_audience: None,
            jwt_allow_any_issuer_and_audience: Some(true),
            ..production()
        };
        assert!(Config::resolve(waived).is_ok());
        let not_waived = Options {
            jwt_issuer: None,
            jwt_allow_any_issuer_and_audience: Some(false),
            ..production()
        };
        assert!(refusal(not_waived).contains("HERALD_JWT_ISSUER"));
    }

    #[test]
    fn dev_mode_refuses_a_configured_user_jwt_key() {
        for configured in [
            Options {
                dev: Some(true),
                jwt_hs256_secret: Some(SECRET.into()),
                ..options()
            },
            Options {
                dev: Some(true),
                jwt_jwks_url: Some("https://issuer.example/jwks.json".into()),
                ..options()
            },
        ] {
            let err = refusal(configured);
            assert!(err.contains("--dev") && err.contains("/dev/jwt"), "{err}");
        }
        // Dev mode signs with a secret of its own, and needs no issuer or audience.
        let dev = Config::resolve(Options {
            dev: Some(true),
            ..options()
        })
        .expect("dev");
        assert_eq!(
            dev.jwt.hs256_secret.as_ref().map(|s| s.expose()),
            dev.dev_jwt_secret.as_ref().map(|s| s.expose())
        );
    }
}
