//! One typed configuration from CLI flags, environment variables and an optional YAML file
//! (`HERALD_CONFIG`), in that order of precedence, parsed once at start-up.
//!
//! Every setting has the same name in all three places: `--max-connections-per-user`,
//! `WEBSOCKET_MAX_CONNECTIONS_PER_USER`, `max_connections_per_user:`. The plan's own variable names
//! are kept where the plan names one. docs/configuration.md lists them all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

use std::collections::HashSet;

use crate::adapters::jwt::JwtSettings;
use crate::app::delivery::DeliverySettings;
use crate::app::{ConnectionSettings, SessionSettings, TokenSettings};
use crate::domain::UnixMs;
use crate::domain::channel::{ChannelCatalog, ChannelSpec, DEFAULT_RETENTION_DAYS};
use crate::domain::notification::NotificationType;
use crate::domain::publisher::{MIN_KEY_CHARS, Publisher, Publishers};
use crate::domain::token::{MIN_SECRET_BYTES, SigningKey, SigningKeys};

/// A configuration that cannot be served with, and why, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError(message.into())
}

#[derive(Debug, Parser)]
#[command(
    name = "herald-gateway",
    version,
    about = "Herald gateway: real-time notifications over WebSocket"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub options: Options,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Serve HTTP and WebSocket (the default).
    Serve,
    /// Validate the configuration, print it without secrets, and exit.
    CheckConfig,
    /// Apply the database migrations and exit.
    Migrate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// Every setting, optional at this stage: flags and environment first, then the YAML file, then the
/// defaults applied by [`Config::resolve`].
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// YAML file with any of these settings (snake_case keys); flags and environment win over it.
    #[arg(long, env = "HERALD_CONFIG", global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address to listen on.
    #[arg(long, env = "HERALD_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,
    /// Directory of the embedded default's SQLite file.
    #[arg(long, env = "HERALD_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// `sqlite://PATH`; defaults to `herald.db` in the data directory.
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Redis for cluster mode (together with a postgres:// DATABASE_URL).
    #[arg(long, env = "REDIS_URL", global = true)]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel (several gateways may share one Redis).
    #[arg(long, env = "HERALD_REDIS_PREFIX", global = true)]
    pub redis_prefix: Option<String>,
    /// PostgreSQL connections per replica.
    #[arg(long, env = "HERALD_DATABASE_MAX_CONNECTIONS", global = true)]
    pub database_max_connections: Option<u32>,
    /// Apply PostgreSQL migrations when serving starts (`herald-gateway migrate` does it alone).
    #[arg(long, env = "HERALD_MIGRATE_ON_START", global = true, num_args = 0..=1, default_missing_value = "true")]
    pub migrate_on_start: Option<bool>,
    /// Dev mode: random secrets when none are given, and `POST /dev/jwt` to mint user JWTs.
    #[arg(long, env = "HERALD_DEV", global = true, num_args = 0..=1, default_missing_value = "true")]
    pub dev: Option<bool>,
    /// `human` (default) or `json`; `RUST_LOG_FORMAT=json` also selects JSON.
    #[arg(long, env = "HERALD_LOG_FORMAT", global = true)]
    pub log_format: Option<LogFormat>,

    /// Shared secret for HS256 user JWTs.
    #[arg(long, env = "HERALD_JWT_HS256_SECRET", global = true, hide_env_values = true)]
    pub jwt_hs256_secret: Option<String>,
    /// JWKS URL of the user JWT issuer (RS256, ES256, EdDSA).
    #[arg(long, env = "HERALD_JWT_JWKS_URL", global = true)]
    pub jwt_jwks_url: Option<String>,
    /// Required `iss` of user JWTs.
    #[arg(long, env = "HERALD_JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,
    /// Required `aud` of user JWTs.
    #[arg(long, env = "HERALD_JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,
    /// Claim holding the user's roles (`roles`, `groups`, `cognito:groups`, `realm_access.roles`).
    #[arg(long, env = "HERALD_JWT_ROLES_CLAIM", global = true)]
    pub jwt_roles_claim: Option<String>,
    /// Clock skew tolerated on user JWT `exp`/`nbf`, in seconds.
    #[arg(long, env = "HERALD_JWT_LEEWAY_SECONDS", global = true)]
    pub jwt_leeway_seconds: Option<u64>,

    /// HMAC secret of connection tokens (the current key).
    #[arg(long, env = "WEBSOCKET_TOKEN_SECRET", global = true, hide_env_values = true)]
    pub token_secret: Option<String>,
    /// The previous HMAC secret, still accepted during a rotation's grace period.
    #[arg(long, env = "WEBSOCKET_TOKEN_SECRET_PREVIOUS", global = true, hide_env_values = true)]
    pub token_secret_previous: Option<String>,
    /// JSON key set `{"keys":[{"kid","secret":"<base64>","notBefore":"<RFC 3339>"}]}`; re-read on change.
    #[arg(long, env = "HERALD_SIGNING_KEYS_FILE", global = true)]
    pub signing_keys_file: Option<PathBuf>,
    /// Connection token lifetime.
    #[arg(long, env = "WEBSOCKET_TOKEN_TTL_SECONDS", global = true)]
    pub token_ttl_seconds: Option<u64>,
    /// `false` refuses tokens and WebSocket connections with 503 `websocket_disabled`.
    #[arg(long, env = "WEBSOCKET_ENABLED", global = true)]
    pub websocket_enabled: Option<bool>,

    #[arg(long, env = "WEBSOCKET_MAX_CONNECTIONS_PER_USER", global = true)]
    pub max_connections_per_user: Option<u32>,
    #[arg(long, env = "WEBSOCKET_MAX_TOKENS_PER_MINUTE", global = true)]
    pub max_tokens_per_minute: Option<u32>,
    #[arg(long, env = "HERALD_MAX_CONNECTS_PER_MINUTE_PER_IP", global = true)]
    pub max_connects_per_minute_per_ip: Option<u32>,
    #[arg(long, env = "HERALD_MAX_MESSAGES_PER_SECOND", global = true)]
    pub max_messages_per_second: Option<u32>,
    /// Invalid messages per minute tolerated before the connection is closed (4000).
    #[arg(long, env = "HERALD_MAX_VIOLATIONS_PER_MINUTE", global = true)]
    pub max_violations_per_minute: Option<u32>,
    #[arg(long, env = "HERALD_MAX_MESSAGE_BYTES", global = true)]
    pub max_message_bytes: Option<usize>,
    /// Messages queued per connection before it is closed as a slow consumer.
    #[arg(long, env = "HERALD_OUTBOUND_QUEUE", global = true)]
    pub outbound_queue: Option<usize>,
    /// A write that takes longer closes the connection as a slow consumer.
    #[arg(long, env = "HERALD_WRITE_TIMEOUT_MS", global = true)]
    pub write_timeout_ms: Option<u64>,
    #[arg(long, env = "HERALD_HEARTBEAT_INTERVAL_SECONDS", global = true)]
    pub heartbeat_interval_seconds: Option<u64>,
    #[arg(long, env = "HERALD_HEARTBEAT_TIMEOUT_SECONDS", global = true)]
    pub heartbeat_timeout_seconds: Option<u64>,
    /// Registry TTL of a connection, moved forward by each heartbeat.
    #[arg(long, env = "HERALD_CONNECTION_TTL_SECONDS", global = true)]
    pub connection_ttl_seconds: Option<u64>,
    /// Comma-separated addresses or CIDR ranges of proxies whose `X-Forwarded-For` is believed.
    #[arg(long, env = "HERALD_TRUSTED_PROXIES", global = true)]
    pub trusted_proxies: Option<String>,
    /// Role that `adminOnly` channels require.
    #[arg(long, env = "HERALD_ADMIN_ROLE", global = true)]
    pub admin_role: Option<String>,
    /// Days notifications are kept for channels that set no retention of their own.
    #[arg(long, env = "HERALD_RETENTION_DAYS", global = true)]
    pub retention_days: Option<u32>,
    /// Channels (YAML only); without any, the default five channels covering the 14 types.
    #[arg(skip)]
    pub channels: Option<Vec<ChannelSpec>>,
    /// Publishers with the SHA-256 of their key and the types they may publish (YAML only).
    #[arg(skip)]
    pub publishers: Option<Vec<PublisherSpec>>,
    /// `name=key,name2=key2`: publishers allowed every type.
    #[arg(long, env = "HERALD_PUBLISHER_KEYS", global = true, hide_env_values = true)]
    pub publisher_keys: Option<String>,
    /// How long a client has to acknowledge a notification before it is sent again.
    #[arg(long, env = "HERALD_ACK_TIMEOUT_MS", global = true)]
    pub ack_timeout_ms: Option<u64>,
    /// Delivery rounds per connection before a notification is logged as failed.
    #[arg(long, env = "HERALD_MAX_DELIVERY_ATTEMPTS", global = true)]
    pub max_delivery_attempts: Option<u32>,
    /// Subscribe/unsubscribe messages per connection per minute.
    #[arg(long, env = "HERALD_MAX_SUBSCRIPTION_CHANGES_PER_MINUTE", global = true)]
    pub max_subscription_changes_per_minute: Option<u32>,
    /// Longest a SIGTERM/SIGINT drain may take before the process exits anyway.
    #[arg(long, env = "HERALD_SHUTDOWN_GRACE_SECONDS", global = true)]
    pub shutdown_grace_seconds: Option<u64>,
}

impl Options {
    /// Fills every setting this set leaves empty from `file`.
    fn or(self, file: Options) -> Options {
        macro_rules! merge {
            ($($field:ident),* $(,)?) => { Options { config: self.config, $($field: self.$field.or(file.$field)),* } };
        }
        merge!(
            listen,
            data_dir,
            database_url,
            redis_url,
            redis_prefix,
            database_max_connections,
            migrate_on_start,
            dev,
            log_format,
            jwt_hs256_secret,
            jwt_jwks_url,
            jwt_issuer,
            jwt_audience,
            jwt_roles_claim,
            jwt_leeway_seconds,
            token_secret,
            token_secret_previous,
            signing_keys_file,
            token_ttl_seconds,
            websocket_enabled,
            max_connections_per_user,
            max_tokens_per_minute,
            max_connects_per_minute_per_ip,
            max_messages_per_second,
            max_violations_per_minute,
            max_message_bytes,
            outbound_queue,
            write_timeout_ms,
            heartbeat_interval_seconds,
            heartbeat_timeout_seconds,
            connection_ttl_seconds,
            trusted_proxies,
            admin_role,
            retention_days,
            channels,
            publishers,
            publisher_keys,
            ack_timeout_ms,
            max_delivery_attempts,
            max_subscription_changes_per_minute,
            shutdown_grace_seconds,
        )
    }
}

/// Where state is kept: the embedded default, or PostgreSQL and Redis shared by every replica.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreConfig {
    Sqlite {
        url: String,
    },
    Cluster {
        database_url: String,
        redis_url: String,
        redis_prefix: String,
        max_connections: u32,
        /// Apply PostgreSQL migrations when serving starts (safe with several replicas).
        migrate_on_start: bool,
    },
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl StoreConfig {
    /// Where the store is, without credentials.
    pub fn describe(&self) -> String {
        match self {
            StoreConfig::Sqlite { url } => url.clone(),
            StoreConfig::Cluster {
                database_url,
                redis_url,
                ..
            } => {
                format!(
                    "cluster: {} + {}",
                    without_password(database_url),
                    without_password(redis_url)
                )
            }
        }
    }
}

/// `scheme://user:secret@host/...` -> `scheme://user:***@host/...`.
fn without_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Where the connection-token keys come from; a file is watched for changes.
#[derive(Debug, Clone)]
pub enum KeySource {
    Inline,
    File(PathBuf),
}

/// The resolved configuration a gateway serves with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub store: StoreConfig,
    pub dev: bool,
    pub log_format: LogFormat,
    pub jwt: JwtSettings,
    /// In dev mode without a configured HS256 secret: the random one generated for this run.
    pub dev_jwt_secret: Option<Vec<u8>>,
    pub signing_keys: SigningKeys,
    pub key_source: KeySource,
    pub tokens: TokenSettings,
    pub connections: ConnectionSettings,
    pub session: SessionSettings,
    pub websocket_enabled: bool,
    pub trusted_proxies: Vec<crate::http::client_ip::IpRange>,
    pub catalog: ChannelCatalog,
    pub publishers: Publishers,
    /// In dev mode without configured publishers: the key generated for this run.
    pub dev_publisher_key: Option<String>,
    pub delivery: DeliverySettings,
    pub subscription_changes_per_minute: u32,
    pub shutdown_grace_ms: u64,
}

/// A publisher as written in the YAML config: never the key itself, only its SHA-256.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublisherSpec {
    pub name: String,
    #[serde(alias = "keySha256")]
    pub key_sha256: String,
    /// Types it may publish; every type when absent.
    #[serde(default)]
    pub types: Option<Vec<String>>,
}

impl Config {
    /// Flags and environment from `cli`, then the YAML file it names, then defaults.
    pub fn load(options: Options) -> Result<Config, ConfigError> {
        let file = match &options.config {
            Some(path) => read_yaml(path)?,
            None => Options::default(),
        };
        Config::resolve(options.or(file))
    }

    pub fn resolve(o: Options) -> Result<Config, ConfigError> {
        let dev = o.dev.unwrap_or(false);
        let listen = o.listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let store = store(&o)?;
        let log_format = o
            .log_format
            .unwrap_or_else(|| match std::env::var("RUST_LOG_FORMAT").ok().as_deref() {
                Some("json") => LogFormat::Json,
                _ => LogFormat::Human,
            });

        let mut dev_jwt_secret = None;
        let hs256_secret = match (o.jwt_hs256_secret, &o.jwt_jwks_url) {
            (Some(secret), _) => {
                if secret.len() < MIN_SECRET_BYTES && !dev {
                    return Err(invalid(format!(
                        "HERALD_JWT_HS256_SECRET is too short: at least {MIN_SECRET_BYTES} bytes are required"
                    )));
                }
                Some(secret.into_bytes())
            }
            (None, Some(_)) => None,
            (None, None) if dev => {
                let secret = random_secret();
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
        if dev_jwt_secret.is_none() && dev {
            dev_jwt_secret = hs256_secret.clone();
        }
        if let Some(url) = &o.jwt_jwks_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(invalid(format!(
                    "HERALD_JWT_JWKS_URL must be an http(s) URL, got `{url}`"
                )));
            }
        }
        let jwt = JwtSettings {
            hs256_secret,
            jwks_url: o.jwt_jwks_url,
            issuer: o.jwt_issuer,
            audience: o.jwt_audience,
            roles_claim: o.jwt_roles_claim.unwrap_or_else(|| "roles".to_owned()),
            leeway_secs: o.jwt_leeway_seconds.unwrap_or(30),
            jwks_min_refetch: crate::adapters::jwt::JWKS_MIN_REFETCH,
        };

        let (signing_keys, key_source) = match (o.signing_keys_file, o.token_secret, o.token_secret_previous) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(invalid(
                    "set either HERALD_SIGNING_KEYS_FILE or WEBSOCKET_TOKEN_SECRET(_PREVIOUS), not both",
                ));
            }
            (Some(path), None, None) => (read_keys_file(&path)?, KeySource::File(path)),
            (None, Some(current), previous) => (inline_keys(&current, previous.as_deref())?, KeySource::Inline),
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
        };

        let token_ttl_seconds = o.token_ttl_seconds.unwrap_or(60);
        let max_ttl_seconds = (crate::app::tokens::MAX_TOKEN_TTL_MS / 1_000) as u64;
        if !(1..=max_ttl_seconds).contains(&token_ttl_seconds) {
            return Err(invalid(format!(
                "WEBSOCKET_TOKEN_TTL_SECONDS must be 1-{max_ttl_seconds}"
            )));
        }
        let tokens = TokenSettings {
            ttl_ms: token_ttl_seconds as i64 * 1_000,
            max_per_minute: positive("WEBSOCKET_MAX_TOKENS_PER_MINUTE", o.max_tokens_per_minute, 10)?,
        };
        let mut connections = ConnectionSettings {
            max_per_user: positive("WEBSOCKET_MAX_CONNECTIONS_PER_USER", o.max_connections_per_user, 5)?,
            connects_per_minute_per_ip: positive(
                "HERALD_MAX_CONNECTS_PER_MINUTE_PER_IP",
                o.max_connects_per_minute_per_ip,
                5,
            )?,
            ttl_ms: positive("HERALD_CONNECTION_TTL_SECONDS", o.connection_ttl_seconds, 7_200)? as i64 * 1_000,
            stale_after_ms: 0,
        };
        let defaults = SessionSettings::default();
        let heartbeat_interval_ms =
            positive("HERALD_HEARTBEAT_INTERVAL_SECONDS", o.heartbeat_interval_seconds, 30)? * 1_000;
        let heartbeat_timeout_ms =
            positive("HERALD_HEARTBEAT_TIMEOUT_SECONDS", o.heartbeat_timeout_seconds, 90)? * 1_000;
        // Silent past the heartbeat timeout (plus slack for clocks and the close itself) means dead.
        connections.stale_after_ms = heartbeat_timeout_ms as i64 + 30_000;
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
        let session = SessionSettings {
            max_message_bytes,
            messages_per_second: positive("HERALD_MAX_MESSAGES_PER_SECOND", o.max_messages_per_second, 10)?,
            violations_per_minute: positive("HERALD_MAX_VIOLATIONS_PER_MINUTE", o.max_violations_per_minute, 5)?,
            outbound_queue: positive("HERALD_OUTBOUND_QUEUE", o.outbound_queue, defaults.outbound_queue)?,
            write_timeout_ms: positive("HERALD_WRITE_TIMEOUT_MS", o.write_timeout_ms, defaults.write_timeout_ms)?,
            heartbeat_interval_ms,
            heartbeat_timeout_ms,
            // A frame up to the size cap must fit a read without growing the buffer far past it.
            read_buffer_bytes: defaults.read_buffer_bytes.min(max_message_bytes.max(1_024)),
            ..defaults
        };
        let retention_days = positive("HERALD_RETENTION_DAYS", o.retention_days, DEFAULT_RETENTION_DAYS)?;
        let admin_role = o.admin_role.unwrap_or_else(|| "admin".to_owned());
        let catalog = match o.channels {
            Some(specs) if !specs.is_empty() => ChannelCatalog::from_specs(specs, &admin_role, retention_days)
                .map_err(|e| invalid(format!("channels: {e}")))?,
            _ => ChannelCatalog::default_set(retention_days),
        };
        let (publishers, dev_publisher_key) = publishers(o.publishers, o.publisher_keys.as_deref(), dev)?;
        let delivery = DeliverySettings {
            ack_timeout_ms: positive("HERALD_ACK_TIMEOUT_MS", o.ack_timeout_ms, 30_000)? as i64,
            max_attempts: positive("HERALD_MAX_DELIVERY_ATTEMPTS", o.max_delivery_attempts, 3)?,
        };
        Ok(Config {
            catalog,
            publishers,
            dev_publisher_key,
            delivery,
            subscription_changes_per_minute: positive(
                "HERALD_MAX_SUBSCRIPTION_CHANGES_PER_MINUTE",
                o.max_subscription_changes_per_minute,
                20,
            )?,
            listen,
            store,
            dev,
            log_format,
            jwt,
            dev_jwt_secret,
            signing_keys,
            key_source,
            tokens,
            connections,
            session,
            websocket_enabled: o.websocket_enabled.unwrap_or(true),
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
            shutdown_grace_ms: o.shutdown_grace_seconds.unwrap_or(20) * 1_000,
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
            "store": self.store.describe(),
            "dev": self.dev,
            "userJwt": {
                "hs256": self.jwt.hs256_secret.is_some(),
                "jwksUrl": self.jwt.jwks_url,
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
            "websocketEnabled": self.websocket_enabled,
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
        })
    }
}

/// Publishers from the YAML list (hashed keys) and `HERALD_PUBLISHER_KEYS` (plain keys, all types).
/// In dev mode with none configured, one `dev` publisher with a random key.
fn publishers(
    specs: Option<Vec<PublisherSpec>>,
    plain: Option<&str>,
    dev: bool,
) -> Result<(Publishers, Option<String>), ConfigError> {
    let mut list = Vec::new();
    for spec in specs.unwrap_or_default() {
        let types = match spec.types {
            None => None,
            Some(names) => Some(
                names
                    .iter()
                    .map(|n| {
                        NotificationType::parse(n)
                            .ok_or_else(|| invalid(format!("publisher `{}`: unknown type `{n}`", spec.name)))
                    })
                    .collect::<Result<HashSet<_>, _>>()?,
            ),
        };
        let publisher = Publisher::from_hash(&spec.name, &spec.key_sha256, types).ok_or_else(|| {
            invalid(format!(
                "publisher `{}`: key_sha256 must be 64 hex digits (sha256sum of the key)",
                spec.name
            ))
        })?;
        list.push(publisher);
    }
    for entry in plain
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let (name, key) = entry
            .split_once('=')
            .ok_or_else(|| invalid("HERALD_PUBLISHER_KEYS must be `name=key,name2=key2`"))?;
        if name.trim().is_empty() || (key.len() < MIN_KEY_CHARS && !dev) {
            return Err(invalid(format!(
                "HERALD_PUBLISHER_KEYS: publisher `{name}` needs a name and a key of at least {MIN_KEY_CHARS} characters"
            )));
        }
        list.push(Publisher::from_key(name.trim(), key, None));
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
        dev_key = Some(key);
    }
    Ok((Publishers::new(list).map_err(invalid)?, dev_key))
}

fn positive<T: Copy + PartialOrd + Default + std::fmt::Display>(
    name: &str,
    value: Option<T>,
    default: T,
) -> Result<T, ConfigError> {
    let value = value.unwrap_or(default);
    if value > T::default() {
        Ok(value)
    } else {
        Err(invalid(format!("{name} must be greater than 0")))
    }
}

/// `sqlite://` (or nothing) without Redis: the embedded default. `postgres://` with `redis://`: cluster
/// mode. Either of the two without the other is refused: a replica must never believe it is alone
/// when it is not, nor the reverse.
fn store(o: &Options) -> Result<StoreConfig, ConfigError> {
    let postgres = o
        .database_url
        .as_deref()
        .filter(|url| url.starts_with("postgres://") || url.starts_with("postgresql://"));
    match (postgres, &o.redis_url) {
        (Some(database_url), Some(redis_url)) => {
            if !redis_url.starts_with("redis://") && !redis_url.starts_with("rediss://") {
                return Err(invalid(format!(
                    "REDIS_URL must start with redis:// or rediss://, got `{redis_url}`"
                )));
            }
            return Ok(StoreConfig::Cluster {
                database_url: database_url.to_owned(),
                redis_url: redis_url.clone(),
                redis_prefix: o.redis_prefix.clone().unwrap_or_else(|| "herald:".to_owned()),
                max_connections: positive("HERALD_DATABASE_MAX_CONNECTIONS", o.database_max_connections, 10)?,
                migrate_on_start: o.migrate_on_start.unwrap_or(false),
            });
        }
        (Some(_), None) => {
            return Err(invalid(
                "DATABASE_URL is a PostgreSQL URL but REDIS_URL is not set: cluster mode needs both \
                 (or use sqlite://PATH and no REDIS_URL for the embedded default)",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "REDIS_URL is set but DATABASE_URL is not a postgres:// URL: cluster mode needs both \
                 (unset REDIS_URL for the embedded default)",
            ));
        }
        (None, None) => {}
    }
    let url = match &o.database_url {
        Some(url) if url.starts_with("sqlite:") => url.clone(),
        Some(url) => {
            return Err(invalid(format!(
                "DATABASE_URL must be sqlite://PATH or postgres://..., got `{url}`"
            )));
        }
        None => {
            let dir = o.data_dir.clone().unwrap_or_else(|| PathBuf::from(".herald-data"));
            std::fs::create_dir_all(&dir)
                .map_err(|e| invalid(format!("cannot create data directory {}: {e}", dir.display())))?;
            format!("sqlite://{}", dir.join("herald.db").display())
        }
    };
    Ok(StoreConfig::Sqlite { url })
}

fn read_yaml(path: &Path) -> Result<Options, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(format!("cannot read HERALD_CONFIG file {}: {e}", path.display())))?;
    serde_norway::from_str(&text).map_err(|e| invalid(format!("invalid HERALD_CONFIG file {}: {e}", path.display())))
}

fn random_secret() -> Vec<u8> {
    use rand::RngCore;
    let mut secret = vec![0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    secret
}

/// The plan's shorthand: the current secret and, during a rotation, the previous one. The current key
/// signs; both verify.
fn inline_keys(current: &str, previous: Option<&str>) -> Result<SigningKeys, ConfigError> {
    let key = |secret: &str, not_before: UnixMs, name: &str| {
        SigningKey::new(
            SigningKey::derived_kid(secret.as_bytes()),
            secret.as_bytes().to_vec(),
            not_before,
        )
        .map_err(|e| invalid(format!("{name}: {e}")))
    };
    let mut keys = Vec::new();
    if let Some(previous) = previous {
        keys.push(key(previous, 0, "WEBSOCKET_TOKEN_SECRET_PREVIOUS")?);
    }
    // Listed last with the later notBefore, so it is the one that signs.
    keys.push(key(current, 1, "WEBSOCKET_TOKEN_SECRET")?);
    SigningKeys::new(keys).map_err(|e| invalid(format!("WEBSOCKET_TOKEN_SECRET(_PREVIOUS): {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeyEntry {
    kid: String,
    secret: String,
    not_before: Option<String>,
}

/// Reads and validates a signing-keys file; used at start-up and on every change of the file.
pub fn read_keys_file(path: &Path) -> Result<SigningKeys, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(format!("cannot read HERALD_SIGNING_KEYS_FILE {}: {e}", path.display())))?;
    parse_keys(&text).map_err(|e| invalid(format!("HERALD_SIGNING_KEYS_FILE {}: {}", path.display(), e.0)))
}

pub fn parse_keys(text: &str) -> Result<SigningKeys, ConfigError> {
    let file: KeysFile = serde_json::from_str(text).map_err(|e| invalid(format!("not a key set: {e}")))?;
    let keys =
        file.keys
            .into_iter()
            .map(|entry| {
                let secret = base64::engine::general_purpose::STANDARD
                    .decode(entry.secret.trim())
                    .map_err(|_| invalid(format!("secret of `{}` is not base64", entry.kid)))?;
                let not_before = match entry.not_before {
                    Some(at) => parse_rfc3339(&at)
                        .map_err(|_| invalid(format!("notBefore of `{}` is not RFC 3339", entry.kid)))?,
                    None => 0,
                };
                SigningKey::new(entry.kid, secret, not_before).map_err(|e| invalid(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
    SigningKeys::new(keys).map_err(|e| invalid(e.to_string()))
}

fn parse_rfc3339(text: &str) -> Result<UnixMs, time::error::Parse> {
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)?;
    Ok((at.unix_timestamp_nanos() / 1_000_000) as UnixMs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "k9X2m4Q7p1Z8r5T3w6Y0u2I4o6P8a1S3";

    fn options() -> Options {
        Options {
            data_dir: Some(std::env::temp_dir().join("herald-config-test")),
            ..Options::default()
        }
    }

    #[test]
    fn non_dev_mode_refuses_to_start_without_secrets() {
        let err = Config::resolve(options()).expect_err("no secrets");
        assert!(err.to_string().contains("HERALD_JWT_JWKS_URL"), "{err}");
        let err = Config::resolve(Options {
            jwt_hs256_secret: Some(SECRET.into()),
            ..options()
        })
        .expect_err("no token key");
        assert!(err.to_string().contains("WEBSOCKET_TOKEN_SECRET"), "{err}");
    }

    #[test]
    fn weak_secrets_are_refused_outside_dev_mode() {
        let weak_jwt = Options {
            jwt_hs256_secret: Some("short".into()),
            token_secret: Some(SECRET.into()),
            ..options()
        };
        assert!(
            Config::resolve(weak_jwt)
                .expect_err("weak jwt")
                .to_string()
                .contains("too short")
        );
        let weak_token = Options {
            jwt_hs256_secret: Some(SECRET.into()),
            token_secret: Some("x".repeat(40)),
            ..options()
        };
        assert!(
            Config::resolve(weak_token)
                .expect_err("weak token")
                .to_string()
                .contains("weak")
        );
    }

    #[test]
    fn dev_mode_generates_what_is_missing() {
        let config = Config::resolve(Options {
            dev: Some(true),
            ..options()
        })
        .expect("dev");
        assert!(config.dev_jwt_secret.is_some());
        assert_eq!(config.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(config.tokens, TokenSettings::default());
        assert_eq!(config.connections, ConnectionSettings::default());
    }

    #[test]
    fn plan_shorthand_secrets_sign_with_current_and_accept_previous() {
        let previous = "P0o9I8u7Y6t5R4e3W2q1A2s3D4f5G6h7";
        let config = Config::resolve(Options {
            jwt_hs256_secret: Some(SECRET.into()),
            token_secret: Some(SECRET.into()),
            token_secret_previous: Some(previous.into()),
            ..options()
        })
        .expect("valid");
        let keys = config.signing_keys.keys();
        assert_eq!(keys.len(), 2);
        let active = config.signing_keys.active(1_000).expect("active");
        assert_eq!(active.kid(), SigningKey::derived_kid(SECRET.as_bytes()));
    }

    #[test]
    fn keys_file_is_parsed_and_validated() {
        let secret = base64::engine::general_purpose::STANDARD.encode(SECRET);
        let keys = parse_keys(&format!(
            r#"{{"keys":[{{"kid":"k1","secret":"{secret}","notBefore":"2026-01-01T00:00:00Z"}}]}}"#
        ))
        .expect("valid");
        assert_eq!(keys.keys()[0].kid(), "k1");
        assert_eq!(keys.keys()[0].not_before(), 1_767_225_600_000);
        assert!(
            parse_keys(r#"{"keys":[{"kid":"k1","secret":"c2hvcnQ="}]}"#).is_err(),
            "short secret"
        );
        assert!(parse_keys(r#"{"keys":[]}"#).is_err(), "empty set");
        assert!(parse_keys("nope").is_err());
    }

    #[test]
    fn cluster_mode_needs_both_urls() {
        let both = Options {
            dev: Some(true),
            database_url: Some("postgres://herald:s3cret@db:5432/herald".into()),
            redis_url: Some("redis://cache:6379".into()),
            ..options()
        };
        let config = Config::resolve(both).expect("cluster");
        assert!(matches!(config.store, StoreConfig::Cluster { .. }));
        assert_eq!(
            config.store.describe(),
            "cluster: postgres://herald:***@db:5432/herald + redis://cache:6379"
        );
    }

    #[test]
    fn cluster_urls_alone_are_refused_with_a_clear_message() {
        let redis = Options {
            dev: Some(true),
            redis_url: Some("redis://127.0.0.1:6379".into()),
            ..options()
        };
        assert!(
            Config::resolve(redis)
                .expect_err("redis")
                .to_string()
                .contains("REDIS_URL")
        );
        let pg = Options {
            dev: Some(true),
            database_url: Some("postgres://localhost/herald".into()),
            ..options()
        };
        assert!(
            Config::resolve(pg)
                .expect_err("postgres")
                .to_string()
                .contains("PostgreSQL")
        );
    }

    #[test]
    fn flags_win_over_the_yaml_file() {
        let file: Options =
            serde_norway::from_str("listen: 127.0.0.1:9000\nmax_connections_per_user: 3\ndev: true\n").expect("yaml");
        let merged = Options {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9100))),
            ..options()
        }
        .or(file);
        let config = Config::resolve(merged).expect("valid");
        assert_eq!(config.listen.port(), 9100);
        assert_eq!(config.connections.max_per_user, 3);
        assert!(
            serde_norway::from_str::<Options>("max_conections_per_user: 3\n").is_err(),
            "typos are refused"
        );
    }
}
