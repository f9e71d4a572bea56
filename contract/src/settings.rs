//! The gateway's settings: one struct whose every field is a CLI flag, an environment variable and a
//! key of the YAML file (`HERALD_CONFIG`), all optional here. The gateway resolves them (precedence,
//! defaults, validation); the operator renders the YAML file with [`Options::to_yaml`] and sets the
//! environment variables it owns from Secrets ([`env`]). Both use this one definition, so a renamed
//! key fails to compile instead of being silently ignored.
//!
//! Every setting has the same name in all three places: `--max-connections-per-user`,
//! `WEBSOCKET_MAX_CONNECTIONS_PER_USER`, `max_connections_per_user:`. The plan's own variable names
//! are kept where the plan names one.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::Secret;

/// Environment variables the operator sets on gateway containers (the rest it writes in the file).
pub mod env {
    pub const CONFIG: &str = "HERALD_CONFIG";
    pub const DATA_DIR: &str = "HERALD_DATA_DIR";
    pub const DATABASE_URL: &str = "DATABASE_URL";
    pub const REDIS_URL: &str = "REDIS_URL";
    pub const JWT_HS256_SECRET: &str = "HERALD_JWT_HS256_SECRET";
    pub const PUBLISHER_KEYS: &str = "HERALD_PUBLISHER_KEYS";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// A channel as written in the YAML file (snake_case keys, or the CRD's camelCase).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelEntry {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Notification type names; the gateway refuses unknown ones with the channel's name.
    pub types: Vec<String>,
    #[serde(default, alias = "adminOnly")]
    pub admin_only: bool,
    #[serde(default, alias = "requiredRole", skip_serializing_if = "Option::is_none")]
    pub required_role: Option<String>,
    #[serde(default = "yes", alias = "defaultSubscribed")]
    pub default_subscribed: bool,
    #[serde(default, alias = "retentionDays", skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
}

fn yes() -> bool {
    true
}

/// The identity of a channel set as the operator renders it and a gateway serves it: SHA-256 (hex)
/// of the entries' JSON, in their order. The operator compares what each gateway replica reports
/// (`GET /channels`) with what it wrote to the ConfigMap to tell when a channel is served.
pub fn channels_checksum(entries: &[ChannelEntry]) -> String {
    use sha2::{Digest, Sha256};
    let json = serde_json::to_vec(entries).unwrap_or_default();
    Sha256::digest(json).iter().map(|b| format!("{b:02x}")).collect()
}

/// A publisher as written in the YAML file: never the key itself, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublisherEntry {
    pub name: String,
    #[serde(alias = "keySha256")]
    pub key_sha256: String,
    /// Types it may publish; every type when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
    /// Channels it may publish to; every channel when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// Notifications (one per recipient) it may have stored per second on one replica; the
    /// `publisher_notifications_per_second` setting when absent.
    #[serde(default, alias = "notificationsPerSecond", skip_serializing_if = "Option::is_none")]
    pub notifications_per_second: Option<u32>,
}

/// Every setting, optional at this stage: flags and environment first, then the YAML file, then the
/// defaults (`crate::defaults`) applied by the gateway's resolution.
#[derive(Debug, Clone, Default, PartialEq, Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// YAML file with any of these settings (snake_case keys); flags and environment win over it.
    #[arg(long, env = env::CONFIG, global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address of the public listener: WebSocket, tokens, a user's notifications.
    #[arg(long, env = "HERALD_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,
    /// Address of the internal listener: `/api/publish` and `/metrics`, for publishers and
    /// Prometheus only (the public listener answers 404 for both).
    #[arg(long, env = "HERALD_INTERNAL_LISTEN", global = true)]
    pub internal_listen: Option<SocketAddr>,
    /// Directory of the embedded default's SQLite file.
    #[arg(long, env = env::DATA_DIR, global = true)]
    pub data_dir: Option<PathBuf>,
    /// `sqlite://PATH`; defaults to `herald.db` in the data directory. A `postgres://` URL (with
    /// REDIS_URL) selects cluster mode. May hold a password: never printed.
    #[arg(long, env = env::DATABASE_URL, global = true, hide_env_values = true)]
    #[serde(skip_serializing)]
    pub database_url: Option<Secret>,
    /// Redis for cluster mode (together with a postgres:// DATABASE_URL): one URL, or the seed
    /// nodes of a Redis Cluster, comma-separated. Never printed.
    #[arg(long, env = env::REDIS_URL, global = true, hide_env_values = true)]
    #[serde(skip_serializing)]
    pub redis_url: Option<Secret>,
    /// REDIS_URL names a Redis Cluster (implied by several URLs; needed when one seed names it).
    #[arg(long, env = "HERALD_REDIS_CLUSTER", global = true, num_args = 0..=1, default_missing_value = "true")]
    pub redis_cluster: Option<bool>,
    /// Prefix of every Redis key and channel (several gateways may share one Redis).
    #[arg(long, env = "HERALD_REDIS_PREFIX", global = true)]
    pub redis_prefix: Option<String>,
    /// PEM file of the CA(s) that sign PostgreSQL's certificate: connections then use TLS and verify
    /// the server (`sslmode=verify-full`, or `verify-ca` if DATABASE_URL says so; weaker modes are
    /// upgraded, `disable` refused).
    #[arg(long, env = "HERALD_DATABASE_CA_FILE", global = true)]
    pub database_ca_file: Option<PathBuf>,
    /// PEM file of the CA(s) that sign Redis' certificate, for a `rediss://` REDIS_URL (without it a
    /// `rediss://` URL is verified against the public web roots).
    #[arg(long, env = "HERALD_REDIS_CA_FILE", global = true)]
    pub redis_ca_file: Option<PathBuf>,
    /// PostgreSQL connections per replica.
    #[arg(long, env = "HERALD_DATABASE_MAX_CONNECTIONS", global = true)]
    pub database_max_connections: Option<u32>,
    /// Apply PostgreSQL migrations when serving starts (`herald-gateway migrate` does it alone).
    #[arg(long, env = "HERALD_MIGRATE_ON_START", global = true, num_args = 0..=1, default_missing_value = "true")]
    pub migrate_on_start: Option<bool>,
    /// Dev mode: random secrets when none are given, and `POST /dev/jwt` to mint user JWTs (with a
    /// random secret of its own: refused together with a user JWT secret or JWKS URL).
    #[arg(long, env = "HERALD_DEV", global = true, num_args = 0..=1, default_missing_value = "true")]
    pub dev: Option<bool>,
    /// `human` (default) or `json`; `RUST_LOG_FORMAT=json` also selects JSON.
    #[arg(long, env = "HERALD_LOG_FORMAT", global = true)]
    pub log_format: Option<LogFormat>,
    /// OpenTelemetry traces: the base URL of an OTLP/HTTP collector (`http://collector:4318`;
    /// `/v1/traces` is appended). Unset: no traces. The other `OTEL_*` variables apply (protocol,
    /// service name, resource attributes, sampler, headers).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,

    /// Shared secret for HS256 user JWTs.
    #[arg(long, env = env::JWT_HS256_SECRET, global = true, hide_env_values = true)]
    #[serde(skip_serializing)]
    pub jwt_hs256_secret: Option<Secret>,
    /// JWKS URL of the user JWT issuer (RS256, ES256, EdDSA).
    #[arg(long, env = "HERALD_JWT_JWKS_URL", global = true)]
    pub jwt_jwks_url: Option<String>,
    /// Required `iss` of user JWTs.
    #[arg(long, env = "HERALD_JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,
    /// Required `aud` of user JWTs.
    #[arg(long, env = "HERALD_JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,
    /// Serve without requiring both an issuer and an audience (outside dev mode the gateway refuses
    /// to start otherwise): then any JWT a trusted key signed is accepted, whoever it was issued
    /// for. Only for a key used by nothing but this gateway.
    #[arg(long, env = "HERALD_JWT_ALLOW_ANY_ISSUER_AND_AUDIENCE", global = true, num_args = 0..=1, default_missing_value = "true")]
    pub jwt_allow_any_issuer_and_audience: Option<bool>,
    /// Claim holding the user's roles (`roles`, `groups`, `cognito:groups`, `realm_access.roles`).
    #[arg(long, env = "HERALD_JWT_ROLES_CLAIM", global = true)]
    pub jwt_roles_claim: Option<String>,
    /// Clock skew tolerated on user JWT `exp`/`nbf`, in seconds.
    #[arg(long, env = "HERALD_JWT_LEEWAY_SECONDS", global = true)]
    pub jwt_leeway_seconds: Option<u64>,

    /// HMAC secret of connection tokens (the current key).
    #[arg(long, env = "WEBSOCKET_TOKEN_SECRET", global = true, hide_env_values = true)]
    #[serde(skip_serializing)]
    pub token_secret: Option<Secret>,
    /// The previous HMAC secret, still accepted during a rotation's grace period.
    #[arg(long, env = "WEBSOCKET_TOKEN_SECRET_PREVIOUS", global = true, hide_env_values = true)]
    #[serde(skip_serializing)]
    pub token_secret_previous: Option<Secret>,
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
    /// TCP connections (HTTP and WebSocket) each listener of a replica holds at most (the public and
    /// the internal one have a cap each).
    #[arg(long, env = "HERALD_MAX_CONNECTIONS", global = true)]
    pub max_connections: Option<usize>,
    /// Seconds a request's headers, an idle keep-alive connection's next request, and a request's
    /// body may take to arrive.
    #[arg(long, env = "HERALD_HTTP_TIMEOUT_SECONDS", global = true)]
    pub http_timeout_seconds: Option<u64>,
    /// Seconds a WebSocket session lives at most before it is told to reconnect.
    #[arg(long, env = "HERALD_MAX_SESSION_SECONDS", global = true)]
    pub max_session_seconds: Option<u64>,
    /// Comma-separated addresses or CIDR ranges of proxies whose `X-Forwarded-For` is believed.
    #[arg(long, env = "HERALD_TRUSTED_PROXIES", global = true)]
    pub trusted_proxies: Option<String>,
    /// Comma-separated web origins (`https://app.example.com`) allowed to open a WebSocket; any when
    /// unset. Upgrades without an `Origin` header (clients that are not browsers) are not concerned.
    #[arg(long, env = "HERALD_ALLOWED_ORIGINS", global = true)]
    pub allowed_origins: Option<String>,
    /// Comma-separated origins (`https://app.example.com`) an absolute `actionUrl` must have; any
    /// https URL when unset. Relative paths are always allowed.
    #[arg(long, env = "HERALD_ACTION_URL_ORIGINS", global = true)]
    pub action_url_origins: Option<String>,
    /// Comma-separated origins an `icon` URL must have; without any, icons are names only.
    #[arg(long, env = "HERALD_ICON_URL_ORIGINS", global = true)]
    pub icon_url_origins: Option<String>,
    /// Role that `adminOnly` channels require.
    #[arg(long, env = "HERALD_ADMIN_ROLE", global = true)]
    pub admin_role: Option<String>,
    /// Days notifications are kept for channels that set no retention of their own.
    #[arg(long, env = "HERALD_RETENTION_DAYS", global = true)]
    pub retention_days: Option<u32>,
    /// Channels (YAML only); without any, the default five channels covering the 14 types.
    #[arg(skip)]
    pub channels: Option<Vec<ChannelEntry>>,
    /// Publishers with the SHA-256 of their key and the types they may publish (YAML only).
    #[arg(skip)]
    pub publishers: Option<Vec<PublisherEntry>>,
    /// `name=key,name2=key2`: publishers allowed every type.
    #[arg(long, env = env::PUBLISHER_KEYS, global = true, hide_env_values = true)]
    #[serde(skip_serializing)]
    pub publisher_keys: Option<Secret>,
    /// Notifications (one per recipient) each publisher may have stored per second on one replica,
    /// unless its entry says otherwise.
    #[arg(long, env = "HERALD_PUBLISHER_NOTIFICATIONS_PER_SECOND", global = true)]
    pub publisher_notifications_per_second: Option<u32>,
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
    /// Fills every setting this set leaves empty from `file` (flags and environment win).
    pub fn or(self, file: Options) -> Options {
        macro_rules! merge {
            ($($field:ident),* $(,)?) => { Options { config: self.config, $($field: self.$field.or(file.$field)),* } };
        }
        merge!(
            listen,
            internal_listen,
            data_dir,
            database_url,
            redis_url,
            redis_cluster,
            redis_prefix,
            database_ca_file,
            redis_ca_file,
            database_max_connections,
            migrate_on_start,
            dev,
            log_format,
            otlp_endpoint,
            jwt_hs256_secret,
            jwt_jwks_url,
            jwt_issuer,
            jwt_audience,
            jwt_allow_any_issuer_and_audience,
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
            max_connections,
            http_timeout_seconds,
            max_session_seconds,
            trusted_proxies,
            allowed_origins,
            action_url_origins,
            icon_url_origins,
            admin_role,
            retention_days,
            channels,
            publishers,
            publisher_keys,
            publisher_notifications_per_second,
            ack_timeout_ms,
            max_delivery_attempts,
            max_subscription_changes_per_minute,
            shutdown_grace_seconds,
        )
    }

    /// Reads the YAML file format; unknown keys (typos) are refused.
    pub fn from_yaml(text: &str) -> Result<Options, serde_norway::Error> {
        serde_norway::from_str(text)
    }

    /// Writes the YAML file format with only the settings that are set, so that the gateway's own
    /// defaults apply to the rest. Secrets are never written: they travel in Secret-backed
    /// environment variables, never in a ConfigMap.
    pub fn to_yaml(&self) -> String {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            object.retain(|_, v| !v.is_null());
        }
        serde_norway::to_string(&value).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_format_round_trips_and_refuses_typos() {
        let options = Options {
            listen: Some(crate::defaults::LISTEN),
            heartbeat_interval_seconds: Some(15),
            channels: Some(vec![ChannelEntry {
                name: "social".into(),
                description: None,
                types: vec!["new_like".into()],
                admin_only: false,
                required_role: None,
                default_subscribed: true,
                retention_days: Some(3),
            }]),
            ..Options::default()
        };
        let yaml = options.to_yaml();
        assert!(yaml.contains("heartbeat_interval_seconds: 15"), "{yaml}");
        assert!(!yaml.contains("null"), "unset settings are left out: {yaml}");
        assert_eq!(Options::from_yaml(&yaml).expect("reads back"), options);
        assert!(Options::from_yaml("max_conections_per_user: 3\n").is_err());
    }

    #[test]
    fn the_file_format_never_carries_secrets() {
        let options = Options {
            jwt_hs256_secret: Some("jwt-plaintext".into()),
            token_secret: Some("token-plaintext".into()),
            token_secret_previous: Some("previous-plaintext".into()),
            database_url: Some("postgres://u:pw-plaintext@db/h".into()),
            redis_url: Some("redis://:redis-plaintext@cache".into()),
            publisher_keys: Some("svc=key-plaintext".into()),
            heartbeat_interval_seconds: Some(15),
            ..Options::default()
        };
        let yaml = options.to_yaml();
        assert!(!yaml.contains("plaintext"), "{yaml}");
        assert!(yaml.contains("heartbeat_interval_seconds: 15"), "{yaml}");
        // Reading them from a file still works (a team may keep a file with secrets outside Git).
        let read = Options::from_yaml("token_secret: from-a-file\n").expect("yaml");
        assert_eq!(
            read.token_secret.map(Secret::into_inner).as_deref(),
            Some("from-a-file")
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let options = Options {
            jwt_hs256_secret: Some("jwt-plaintext".into()),
            token_secret: Some("token-plaintext".into()),
            database_url: Some("postgres://u:pw-plaintext@db/h".into()),
            publisher_keys: Some("svc=key-plaintext".into()),
            ..Options::default()
        };
        let printed = format!("{options:?}");
        assert!(!printed.contains("plaintext"), "{printed}");
    }

    #[test]
    fn flags_and_environment_win_over_the_file() {
        let flags = Options {
            listen: Some("127.0.0.1:9100".parse().expect("addr")),
            ..Options::default()
        };
        let file =
            Options::from_yaml("listen: 127.0.0.1:9000\ninternal_listen: 0.0.0.0:9091\nmax_connections_per_user: 3\n")
                .expect("yaml");
        let merged = flags.or(file);
        assert_eq!(merged.listen.map(|a| a.port()), Some(9100));
        assert_eq!(merged.internal_listen, Some("0.0.0.0:9091".parse().expect("addr")));
        assert_eq!(merged.max_connections_per_user, Some(3));
    }
}
