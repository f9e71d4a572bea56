//! Signing keys as the gateway reads them (`{"keys": [{"kid", "secret", "notBefore"}]}`).

use base64::Engine;
use k8s_openapi::jiff::Timestamp;
use rand::RngCore;
use serde::Deserialize;

/// 32 random bytes, base64: the strength the gateway requires of a signing key.
pub fn random_secret_base64() -> String {
    let mut secret = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    base64::engine::general_purpose::STANDARD.encode(secret)
}

/// A fresh key id.
pub fn new_kid() -> String {
    let mut id = [0u8; 4];
    rand::thread_rng().fill_bytes(&mut id);
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!("k-{}-{hex}", Timestamp::now().as_second())
}

pub fn rfc3339(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[derive(Deserialize)]
struct KeySet {
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyEntry {
    kid: String,
    not_before: Option<String>,
}

/// The key that signs at `now`: the newest whose `notBefore` has passed (the gateway's rule).
pub fn active_kid(keys_json: &[u8], now: Timestamp) -> Option<String> {
    let set: KeySet = serde_json::from_slice(keys_json).ok()?;
    set.keys
        .into_iter()
        .filter_map(|key| {
            let not_before = match &key.not_before {
                Some(text) => text.parse::<Timestamp>().ok()?,
                None => Timestamp::UNIX_EPOCH,
            };
            (not_before <= now).then_some((not_before, key.kid))
        })
        .max_by_key(|(not_before, _)| *not_before)
        .map(|(_, kid)| kid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_key_in_force_is_active() {
        let json = br#"{"keys":[
            {"kid":"old","secret":"x","notBefore":"2026-01-01T00:00:00Z"},
            {"kid":"current","secret":"x","notBefore":"2026-06-01T00:00:00Z"},
            {"kid":"future","secret":"x","notBefore":"2030-01-01T00:00:00Z"}]}"#;
        let now: Timestamp = "2026-11-26T00:00:00Z".parse().expect("time");
        assert_eq!(active_kid(json, now).as_deref(), Some("current"));
        assert_eq!(active_kid(b"nope", now), None);
    }

    #[test]
    fn generated_secrets_are_strong_and_ids_differ() {
        let secret = base64::engine::general_purpose::STANDARD
            .decode(random_secret_base64())
            .expect("base64");
        assert_eq!(secret.len(), 32);
        assert_ne!(new_kid(), new_kid());
        assert!(rfc3339(Timestamp::UNIX_EPOCH).starts_with("1970-01-01T00:00:00"));
    }
}
