//! The channel catalog from the settings, and its reload: channels are the one setting a running
//! gateway takes from its settings file again when the file changes (a `NotificationChannel` edit
//! rewrites the operator's ConfigMap; kubelet swaps the mounted file), so that a channel edit drops
//! no connection. Every other setting is read once, at start; the operator rolls the pods for those.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use herald_contract::{ChannelEntry, Options, channels_checksum};
use tokio_util::sync::CancellationToken;

use crate::app::catalog::LiveCatalog;
use crate::app::keys::SigningKeyRing;
use crate::app::metrics::Metrics;
use crate::domain::channel::ChannelCatalog;
use crate::domain::token::SigningKeys;
use crate::ports::Clock;

use super::{ConfigError, invalid};

/// Where channels are re-read from, and the start-up settings they are built with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSource {
    /// The settings file (`HERALD_CONFIG`).
    pub file: PathBuf,
    /// The role of `adminOnly` channels.
    pub admin_role: String,
    /// Retention of channels that set none.
    pub retention_days: u32,
}

/// The catalog of `entries` (none or empty: the plan's default set) and the checksum that names
/// it; refused when a user allowed every channel would get a token longer than tokens may be.
pub fn catalog_of(
    entries: Option<&[ChannelEntry]>,
    admin_role: &str,
    retention_days: u32,
    keys: &SigningKeys,
) -> Result<(ChannelCatalog, String), ConfigError> {
    let entries = entries.unwrap_or_default();
    let catalog = if entries.is_empty() {
        ChannelCatalog::default_set(retention_days)
    } else {
        ChannelCatalog::from_entries(entries.to_vec(), admin_role, retention_days)
            .map_err(|e| invalid(format!("channels: {e}")))?
    };
    super::resolve::fits_in_a_token(&catalog, keys)?;
    Ok((catalog, channels_checksum(entries)))
}

/// The channels of the settings file now.
pub fn read_channels(source: &ChannelSource, keys: &SigningKeys) -> Result<(ChannelCatalog, String), ConfigError> {
    let text = std::fs::read_to_string(&source.file)
        .map_err(|e| invalid(format!("cannot read {}: {e}", source.file.display())))?;
    let options = Options::from_yaml(&text).map_err(|e| invalid(format!("invalid {}: {e}", source.file.display())))?;
    catalog_of(
        options.channels.as_deref(),
        &source.admin_role,
        source.retention_days,
        keys,
    )
}

/// Called with the channels whose access a reload tightened: connections holding tokens issued
/// under the looser rule must reconnect with fresh tokens.
pub type OnTightened = Box<dyn Fn(&[String]) + Send + Sync>;

/// What a channel reload works with: the catalog it replaces, the keys a token is checked against,
/// the metrics it counts in, the clock that dates a tightening, and who renews connections then.
pub struct ChannelReload {
    pub live: Arc<LiveCatalog>,
    pub keys: Arc<SigningKeyRing>,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub on_tightened: OnTightened,
}

/// Polls the settings file every `every` until `shutdown`; when its content changes, installs its
/// channels. A file that does not parse, or channels the gateway refuses, leave the catalog in
/// force (logged, and counted as a failed reload).
pub async fn watch_channels(
    source: ChannelSource,
    reload: ChannelReload,
    every: Duration,
    shutdown: CancellationToken,
) {
    let ChannelReload {
        live,
        keys,
        metrics,
        clock,
        on_tightened,
    } = reload;
    let file = source.file.clone();
    super::watch::on_change(&file, every, shutdown, || {
        match read_channels(&source, &keys.current()) {
            Ok((_, checksum)) if checksum == live.served().checksum => {}
            Ok((catalog, checksum)) => {
                let names: Vec<String> = catalog.channels().iter().map(|c| c.name.clone()).collect();
                let before = live.current();
                let tightened = catalog.tightened_since(&before);
                // Sessions hold channels only of the catalog they started under: only the channels
                // that existed and got stricter need them renewed. Tokens not used yet stop granting
                // every tightened channel (`LiveCatalog::still_granted`).
                let renew: Vec<String> = tightened
                    .iter()
                    .filter(|name| before.get(name).is_some())
                    .cloned()
                    .collect();
                live.replace(catalog, checksum, &tightened, clock.now_ms());
                metrics.channel_reload(true);
                tracing::info!(channels = ?names, "channels:reloaded");
                if !renew.is_empty() {
                    tracing::info!(channels = ?renew, "channels:access-tightened, connections renew their tokens");
                    on_tightened(&renew);
                }
            }
            Err(err) => {
                metrics.channel_reload(false);
                tracing::error!(error = %err, "channels:reload-failed, keeping the channels in force");
            }
        }
        true
    })
    .await;
}
