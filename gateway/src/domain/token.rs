//! Connection tokens (plan section 11): `base64url(payload).base64url(HMAC-SHA256(payload))`.
//!
//! The MAC covers the payload segment exactly as transmitted, so verification never depends on how
//! JSON is re-encoded. Keys form a set `{kid, secret, notBefore}`: the newest key whose `notBefore`
//! has passed signs, every key in the set verifies, so a rotation never rejects a token in flight.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::UnixMs;

type HmacSha256 = Hmac<Sha256>;

/// Shortest secret accepted outside dev mode: 256 bits, the HMAC-SHA256 block-size guidance.
pub const MIN_SECRET_BYTES: usize = 32;

/// Longest token accepted before any decoding work is done.
pub const MAX_TOKEN_CHARS: usize = 4_096;

/// The signed payload of a connection token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionClaims {
    pub kid: String,
    pub user_id: String,
    pub issued_at: UnixMs,
    pub expires_at: UnixMs,
    pub token_id: uuid::Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_channels: Option<Vec<String>>,
}

impl ConnectionClaims {
    /// The length of the token carrying these claims: the JSON payload in base64url, a dot, and an
    /// HMAC-SHA256 in base64url (43 characters). [`SigningKeys::sign`] produces exactly this.
    pub fn signed_len(&self) -> usize {
        let payload = serde_json::to_vec(self).map_or(0, |json| json.len());
        (payload * 4).div_ceil(3) + 1 + 43
    }
}

/// Why a presented token is refused. The order of checks is the order of the variants' use in
/// [`SigningKeys::verify`]; the service adds revocation and single use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    #[error("token is invalid: {0}")]
    Invalid(&'static str),
    /// Signed with a key this replica does not hold (yet: a key set being rolled out, or never).
    #[error("token is invalid: unknown key id")]
    UnknownKey,
    #[error("token has expired")]
    Expired,
    #[error("token was revoked")]
    Revoked,
    #[error("token was already used")]
    Used,
}

impl TokenRejection {
    /// Every [`TokenRejection::reason`].
    pub const REASONS: [&'static str; 5] = ["invalid", "unknown_key", "expired", "revoked", "used"];

    /// The `reason` label of `herald_connection_tokens_rejected_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenRejection::Invalid(_) => "invalid",
            TokenRejection::UnknownKey => "unknown_key",
            TokenRejection::Expired => "expired",
            TokenRejection::Revoked => "revoked",
            TokenRejection::Used => "used",
        }
    }
}

#[cfg(test)]
mod rejection_reasons {
    use super::*;

    #[test]
    fn every_reason_is_listed() {
        let all = [
            TokenRejection::Invalid("x"),
            TokenRejection::UnknownKey,
            TokenRejection::Expired,
            TokenRejection::Revoked,
            TokenRejection::Used,
        ];
        let reasons: Vec<&str> = all.iter().map(TokenRejection::reason).collect();
        assert_eq!(reasons, TokenRejection::REASONS);
    }
}

/// Why a signing key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("signing key `{kid}` is too short: {len} bytes, at least {MIN_SECRET_BYTES} are required")]
    TooShort { kid: String, len: usize },
    #[error("signing key `{kid}` is weak: it repeats too few distinct bytes")]
    LowEntropy { kid: String },
    #[error("signing key id must be 1-64 characters of [A-Za-z0-9._-], got `{0}`")]
    BadKid(String),
    #[error("signing key id `{0}` appears twice")]
    DuplicateKid(String),
    #[error("no signing key is configured")]
    Empty,
}

/// One HMAC key of the set. Equality compares secrets too (to tell a reloaded set from the one in
/// force), never a presented token: that is `verify`'s constant-time MAC check.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    kid: String,
    secret: Vec<u8>,
    not_before: UnixMs,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never reaches a log line.
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("not_before", &self.not_before)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A key that must meet the strength rules (every mode but dev).
    pub fn new(kid: impl Into<String>, secret: Vec<u8>, not_before: UnixMs) -> Result<Self, KeyError> {
        let kid = kid.into();
        validate_kid(&kid)?;
        check_strength(&kid, &secret)?;
        Ok(Self {
            kid,
            secret,
            not_before,
        })
    }

    /// A key id derived from the secret itself, for the plan's `WEBSOCKET_TOKEN_SECRET` shorthand: it
    /// stays the same when a secret moves from "current" to "previous" during a rotation.
    pub fn derived_kid(secret: &[u8]) -> String {
        let digest = Sha256::digest(secret);
        let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        format!("s-{hex}")
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn not_before(&self) -> UnixMs {
        self.not_before
    }

    fn mac(&self, data: &[u8]) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.secret).unwrap_or_else(|_| unreachable!());
        mac.update(data);
        mac
    }
}

fn validate_kid(kid: &str) -> Result<(), KeyError> {
    let ok = !kid.is_empty()
        && kid.len() <= 64
        && kid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(KeyError::BadKid(kid.to_owned()))
    }
}

fn check_strength(kid: &str, secret: &[u8]) -> Result<(), KeyError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(KeyError::TooShort {
            kid: kid.to_owned(),
            len: secret.len(),
        });
    }
    let mut seen = [false; 256];
    secret.iter().for_each(|b| seen[usize::from(*b)] = true);
    // "aaaa…" or "abababab…" pass a length check but not this one.
    if seen.iter().filter(|s| **s).count() < 8 {
        return Err(KeyError::LowEntropy { kid: kid.to_owned() });
    }
    Ok(())
}

/// The key set in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeys {
    keys: Vec<SigningKey>,
}

impl SigningKeys {
    pub fn new(keys: Vec<SigningKey>) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].iter().any(|k| k.kid == key.kid) {
                return Err(KeyError::DuplicateKid(key.kid.clone()));
            }
        }
        Ok(Self { keys })
    }

    pub fn keys(&self) -> &[SigningKey] {
        &self.keys
    }

    /// The newest key already in force at `now`; on a tie, the one listed last.
    pub fn active(&self, now: UnixMs) -> Option<&SigningKey> {
        self.keys
            .iter()
            .filter(|k| k.not_before <= now)
            .max_by_key(|k| k.not_before)
    }

    /// Signs `claims` with the active key, whose id is written into the claims.
    pub fn sign(&self, mut claims: ConnectionClaims, now: UnixMs) -> Result<(String, ConnectionClaims), KeyError> {
        let key = self.active(now).ok_or(KeyError::Empty)?;
        claims.kid = key.kid.clone();
        // Serializing a struct of strings and numbers cannot fail.
        let payload = serde_json::to_vec(&claims).unwrap_or_default();
        let payload = URL_SAFE_NO_PAD.encode(payload);
        let signature = URL_SAFE_NO_PAD.encode(key.mac(payload.as_bytes()).finalize().into_bytes());
        Ok((format!("{payload}.{signature}"), claims))
    }

    /// Size cap, decode, HMAC by `kid` in constant time, then expiry, in that order.
    pub fn verify(&self, token: &str, now: UnixMs) -> Result<ConnectionClaims, TokenRejection> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(TokenRejection::Invalid("too long"));
        }
        let (payload_b64, signature_b64) = token.split_once('.').ok_or(TokenRejection::Invalid("malformed"))?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload_b64)
            .map_err(|_| TokenRejection::Invalid("payload is not base64url"))?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| TokenRejection::Invalid("signature is not base64url"))?;
        let claims: ConnectionClaims =
            serde_json::from_slice(&payload).map_err(|_| TokenRejection::Invalid("payload is not a token"))?;
        let key = self
            .keys
            .iter()
            .find(|k| k.kid == claims.kid)
            .ok_or(TokenRejection::UnknownKey)?;
        key.mac(payload_b64.as_bytes())
            .verify_slice(&signature)
            .map_err(|_| TokenRejection::Invalid("bad signature"))?;
        if claims.expires_at <= now {
            return Err(TokenRejection::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str, fill: &str, not_before: UnixMs) -> SigningKey {
        SigningKey::new(kid, fill.repeat(4).into_bytes(), not_before).expect("valid key")
    }

    fn claims(now: UnixMs) -> ConnectionClaims {
        ConnectionClaims {
            kid: String::new(),
            user_id: "alice".into(),
            issued_at: now,
            expires_at: now + 60_000,
            token_id: uuid::Uuid::new_v4(),
            allowed_channels: None,
        }
    }

    #[test]
    fn signed_len_is_the_length_of_the_signed_token() {
        let keys = SigningKeys::new(vec![key("k1", "0123456789abcdef", 0)]).expect("set");
        for channels in [None, Some(vec!["social".to_owned(), "uploads".to_owned()])] {
            for user in ["a", "ab", "abc", "\"quoted\" and \\", "é ü"] {
                let mut c = claims(5_000);
                c.user_id = user.to_owned();
                c.allowed_channels = channels.clone();
                let (token, signed) = keys.sign(c, 5_000).expect("sign");
                assert_eq!(signed.signed_len(), token.len(), "{user:?}");
            }
        }
    }

    #[test]
    fn signs_with_newest_active_key_and_verifies_with_any() {
        let old = key("old", "0123456789abcdef", 0);
        let new = key("new", "fedcba9876543210", 1_000);
        let later = key("later", "zyxwvutsrqponmlk", 10_000);
        let keys = SigningKeys::new(vec![old.clone(), new, later]).expect("set");
        let (token, signed) = keys.sign(claims(5_000), 5_000).expect("sign");
        assert_eq!(signed.kid, "new");
        assert_eq!(keys.verify(&token, 5_001).expect("verify"), signed);

        let only_old = SigningKeys::new(vec![old]).expect("set");
        let (old_token, _) = only_old.sign(claims(5_000), 5_000).expect("sign");
        assert_eq!(keys.verify(&old_token, 5_001).expect("verify").kid, "old");
    }

    #[test]
    fn refuses_tampered_payload_and_unknown_kid() {
        let keys = SigningKeys::new(vec![key("k1", "0123456789abcdef", 0)]).expect("set");
        let (token, _) = keys.sign(claims(0), 0).expect("sign");
        let (_, signature) = token.split_once('.').expect("two parts");
        let mut forged = claims(0);
        forged.kid = "k1".into();
        forged.user_id = "mallory".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).expect("json"));
        assert_eq!(
            keys.verify(&format!("{forged_payload}.{signature}"), 1),
            Err(TokenRejection::Invalid("bad signature"))
        );
        let other = SigningKeys::new(vec![key("k2", "0123456789abcdef", 0)]).expect("set");
        assert_eq!(other.verify(&token, 1), Err(TokenRejection::UnknownKey));
    }

    #[test]
    fn refuses_expired_oversized_and_garbage_tokens() {
        let keys = SigningKeys::new(vec![key("k1", "0123456789abcdef", 0)]).expect("set");
        let (token, _) = keys.sign(claims(0), 0).expect("sign");
        assert_eq!(keys.verify(&token, 60_000), Err(TokenRejection::Expired));
        assert_eq!(
            keys.verify(&"a".repeat(MAX_TOKEN_CHARS + 1), 0),
            Err(TokenRejection::Invalid("too long"))
        );
        assert_eq!(keys.verify("no-dot", 0), Err(TokenRejection::Invalid("malformed")));
        assert!(matches!(keys.verify("!!.??", 0), Err(TokenRejection::Invalid(_))));
    }

    #[test]
    fn weak_keys_are_refused() {
        assert!(matches!(
            SigningKey::new("k", b"short".to_vec(), 0),
            Err(KeyError::TooShort { .. })
        ));
        assert!(matches!(
            SigningKey::new("k", vec![b'a'; 64], 0),
            Err(KeyError::LowEntropy { .. })
        ));
        assert!(matches!(
            SigningKey::new("bad kid", vec![0; 64], 0),
            Err(KeyError::BadKid(_))
        ));
        let a = key("same", "0123456789abcdef", 0);
        assert!(matches!(
            SigningKeys::new(vec![a.clone(), a]),
            Err(KeyError::DuplicateKid(_))
        ));
    }

    #[test]
    fn derived_kid_is_stable_and_does_not_reveal_the_secret() {
        let kid = SigningKey::derived_kid(b"a very secret value of some length");
        assert_eq!(kid, SigningKey::derived_kid(b"a very secret value of some length"));
        assert_ne!(kid, SigningKey::derived_kid(b"another secret value of some length"));
        assert!(!kid.contains("secret"));
    }
}
