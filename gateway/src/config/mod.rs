//! One typed configuration from CLI flags, environment variables and an optional YAML file
//! (`HERALD_CONFIG`), in that order of precedence, parsed once at start-up.
//!
//! The settings themselves (the flag, variable and YAML key of each) are `herald_contract::Options`,
//! shared with the operator that renders the file; their defaults are `herald_contract::defaults`.
//! This module turns them into a [`Config`]: `resolve` (precedence, defaults, validation), `store`
//! (where state is kept: all `migrate` needs), `keys` (signing keys and the keys file's reloader),
//! `links` (the origins notification links may point to).
//! docs/configuration.md lists every setting.

use std::net::SocketAddr;

use clap::{Parser, Subcommand};

pub use herald_contract::{ChannelEntry, LogFormat, Options, PublisherEntry, Secret};

use crate::adapters::jwt::JwtSettings;
use crate::app::delivery::DeliverySettings;
use crate::app::{ConnectionSettings, SessionSettings, TokenSettings};
use crate::domain::channel::ChannelCatalog;
use crate::domain::ip_range::IpRange;
use crate::domain::link::LinkPolicy;
use crate::domain::publisher::Publishers;
use crate::domain::token::SigningKeys;
use crate::listener::ListenerLimits;

mod channels;
mod keys;
mod links;
mod resolve;
mod store;
mod watch;

pub use channels::{ChannelReload, ChannelSource, catalog_of, read_channels, watch_channels};
pub use keys::{KeySource, RELOAD_INTERVAL, parse_keys, read_keys_file, watch_keys_file};
pub use store::StoreConfig;

/// A configuration that cannot be served with, and why, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError(message.into())
}

/// `value` (or `default` when unset), refused unless greater than zero.
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
    /// Apply the database migrations and exit (needs only the database settings).
    Migrate,
    /// Wait until the database has every migration this binary knows, then exit (0), or give up
    /// after 10 minutes (1): what a pod runs before serving, while a Job applies them with its own
    /// credentials. Reads only; needs only the database settings.
    AwaitMigrations,
    /// Print the OpenAPI 3.1 document of every route (docs/openapi.json) and exit.
    Openapi,
}

/// The resolved configuration a gateway serves with. `Debug` prints no secret: every secret is a
/// [`Secret`] or a type that redacts itself (signing keys, the store's URLs).
#[derive(Debug, Clone)]
pub struct Config {
    /// The public listener: WebSocket, tokens, a user's notifications.
    pub listen: SocketAddr,
    /// The internal listener: `/api/publish` and `/metrics` (docs/architecture.md, "Two listeners").
    pub internal_listen: SocketAddr,
    pub store: StoreConfig,
    pub dev: bool,
    pub log_format: LogFormat,
    /// The OTLP/HTTP collector traces go to; `None`: no traces.
    pub otlp_endpoint: Option<url::Url>,
    pub jwt: JwtSettings,
    /// In dev mode: the random HS256 secret generated for this run, which `POST /dev/jwt` signs with.
    pub dev_jwt_secret: Option<Secret<Vec<u8>>>,
    pub signing_keys: SigningKeys,
    pub key_source: KeySource,
    pub tokens: TokenSettings,
    pub connections: ConnectionSettings,
    pub session: SessionSettings,
    pub listener: ListenerLimits,
    pub trusted_proxies: Vec<IpRange>,
    pub allowed_origins: crate::domain::origin::AllowedOrigins,
    /// Origins of `actionUrl` and `icon` URLs (`config/links.rs`).
    pub links: LinkPolicy,
    pub catalog: ChannelCatalog,
    /// The checksum of the channel entries `catalog` was built from (`GET /channels`).
    pub channels_checksum: String,
    /// Where channels are re-read from while running: the settings file, if there is one.
    pub channel_source: Option<ChannelSource>,
    pub publishers: Publishers,
    /// In dev mode without configured publishers: the key generated for this run.
    pub dev_publisher_key: Option<Secret>,
    pub delivery: DeliverySettings,
    pub shutdown_grace_ms: u64,
}

impl Config {
    /// Flags and environment from `options`, then the YAML file it names, then defaults.
    pub fn load(options: Options) -> Result<Config, ConfigError> {
        Config::resolve(with_file(options)?)
    }
}

impl StoreConfig {
    /// The store settings alone (for `migrate`), with the same precedence as [`Config::load`].
    pub fn load(options: Options) -> Result<StoreConfig, ConfigError> {
        StoreConfig::resolve(&with_file(options)?)
    }
}

/// What the configuration tests start from: no setting but a private data directory.
#[cfg(test)]
fn test_options() -> Options {
    Options {
        data_dir: Some(std::env::temp_dir().join("herald-config-test")),
        ..Options::default()
    }
}

/// `options` with what they leave unset filled from the YAML file they name, if any.
fn with_file(options: Options) -> Result<Options, ConfigError> {
    let Some(path) = &options.config else {
        return Ok(options);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(format!("cannot read HERALD_CONFIG file {}: {e}", path.display())))?;
    let file = Options::from_yaml(&text)
        .map_err(|e| invalid(format!("invalid HERALD_CONFIG file {}: {e}", path.display())))?;
    Ok(options.or(file))
}
