//! Signing keys as the gateway reads them (`{"keys": [{"kid", "secret", "notBefore"}]}`).

use base64::Engine;
use k8s_openapi::jiff::Timestamp;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::rotation::Key;

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

#[derive(Deserialize, Serialize)]
struct KeySet {
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct KeyEntry {
    kid: String,
    secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not_before: Option<String>,
}

/// The key set of a keys file (`notBefore` absent: in force since ever). An error says what is wrong,
/// without quoting the file (it holds secrets).
pub fn parse(keys_json: &[u8]) -> Result<Vec<Key>, String> {
    let set: KeySet = serde_json::from_slice(keys_json)
        .map_err(|err| format!("keys.json is not a key set ({} at line {})", kind(&err), err.line()))?;
    set.keys
        .into_iter()
        .map(|entry| {
            let not_before = match &entry.not_before {
                Some(text) => text
                    .parse::<Timestamp>()
                    .map_err(|_| format!("key `{}` has an invalid notBefore", entry.kid))?,
                None => Timestamp::UNIX_EPOCH,
            };
            Ok(Key {
                kid: entry.kid,
                secret: entry.secret,
                not_before,
            })
        })
        .collect()
}

fn kind(err: &serde_json::Error) -> &'static str {
    match err.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "invalid JSON",
        serde_json::error::Category::Data => "unexpected content",
    }
}

/// The keys file the gateway reads (`{"keys": [{"kid", "secret", "notBefore"}]}`).
pub fn to_json(keys: &[Key]) -> String {
    let set = KeySet {
        keys: keys
            .iter()
            .map(|key| KeyEntry {
                kid: key.kid.clone(),
                secret: key.secret.clone(),
                not_before: Some(rfc3339(key.not_before)),
            })
            .collect(),
    };
    serde_json::to_string(&set).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key that signs at `now`, as the operator reads a keys file.
    fn active_kid(keys_json: &[u8], now: Timestamp) -> Option<String> {
        let keys = parse(keys_json).ok()?;
        crate::rotation::active(&keys, now).map(|key| key.kid.clone())
    }

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
    fn a_key_set_survives_a_round_trip_and_errors_never_quote_the_file() {
        let keys = vec![Key {
            kid: "k1".into(),
            secret: "c2VjcmV0".into(),
            not_before: "2026-11-26T10:00:00Z".parse().expect("time"),
        }];
        assert_eq!(parse(to_json(&keys).as_bytes()), Ok(keys));
        let err = parse(br#"{"keys":[{"kid":"k","secret":"topsecret","notBefore":"soon"}]}"#).expect_err("bad time");
        assert!(err.contains("`k`") && !err.contains("topsecret"), "{err}");
        let err = parse(br#"{"keys": "topsecret"}"#).expect_err("not a set");
        assert!(!err.contains("topsecret"), "{err}");
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
