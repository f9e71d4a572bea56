//! Connection-token signing keys: the plan's shorthand (current and previous secret), or a key-set
//! file (a mounted Kubernetes Secret) that is re-read when it changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use herald_contract::Secret;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::app::keys::SigningKeyRing;
use crate::domain::UnixMs;
use crate::domain::token::{SigningKey, SigningKeys};

use super::{ConfigError, invalid};

/// How often a signing-keys file is checked for changes (a rotated Kubernetes Secret).
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// Where the connection-token keys come from; a file is watched for changes.
#[derive(Debug, Clone)]
pub enum KeySource {
    Inline,
    File(PathBuf),
}

/// The plan's shorthand: the current secret and, during a rotation, the previous one. The current key
/// signs; both verify.
pub(super) fn inline_keys(current: &Secret, previous: Option<&Secret>) -> Result<SigningKeys, ConfigError> {
    let key = |secret: &Secret, not_before: UnixMs, name: &str| {
        let bytes = secret.expose().as_bytes();
        SigningKey::new(SigningKey::derived_kid(bytes), bytes.to_vec(), not_before)
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
    secret: Secret,
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
                    .decode(entry.secret.expose().trim())
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

/// Re-reads the keys file every `every` when its content changed, until `shutdown`; a bad file is
/// logged and the keys in force are kept. Content, not modification time: kubelet swaps a mounted
/// Secret by repointing a `..data` symlink, and the new file can carry the old one's mtime.
pub async fn watch_keys_file(path: PathBuf, ring: Arc<SigningKeyRing>, every: Duration, shutdown: CancellationToken) {
    super::watch::on_change(&path.clone(), every, shutdown, || {
        let before = ring.current();
        match read_keys_file(&path) {
            // The first read, or a rewrite with the same keys: nothing to do.
            Ok(set) if *before == set => true,
            // Installed unless a reload for an unknown key put a set in meanwhile (read no earlier
            // than this one); the next tick reads the file again either way.
            Ok(set) => {
                let kids: Vec<String> = set.keys().iter().map(|k| k.kid().to_owned()).collect();
                let installed = ring.replace_if_current(&before, set);
                if installed {
                    tracing::info!(?kids, "signing-keys:reloaded");
                }
                installed
            }
            Err(err) => {
                tracing::error!(error = %err, "signing-keys:reload-failed, keeping the keys in force");
                true
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "k9X2m4Q7p1Z8r5T3w6Y0u2I4o6P8a1S3";

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

    #[tokio::test]
    async fn a_changed_keys_file_replaces_the_keys_until_shutdown() {
        let dir = std::env::temp_dir().join(format!("herald-keys-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("keys.json");
        let write = |kid: &str| {
            let secret = base64::engine::general_purpose::STANDARD.encode(SECRET);
            std::fs::write(&path, format!(r#"{{"keys":[{{"kid":"{kid}","secret":"{secret}"}}]}}"#)).expect("write");
        };
        write("k1");
        let ring = Arc::new(SigningKeyRing::new(read_keys_file(&path).expect("first")));
        let stop = CancellationToken::new();
        let watcher = tokio::spawn(watch_keys_file(
            path.clone(),
            ring.clone(),
            Duration::from_millis(10),
            stop.clone(),
        ));
        let kid = |ring: &SigningKeyRing| ring.current().keys()[0].kid().to_owned();
        // Modification times may be coarse: rewrite until the watcher sees a new one.
        let reloaded = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                write("k2");
                if kid(&ring) == "k2" {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(reloaded.is_ok(), "the new key set was never loaded");
        stop.cancel();
        watcher.await.expect("watcher stops on shutdown");
        let _ = std::fs::remove_dir_all(dir);
    }
}
