//! Fixtures the fuzz targets share: the fixed keys, secret, issuer and clock they run against, and
//! independent checks of a signature (computed here with `hmac`, not by the code under test), so a
//! target can tell "accepted" from "accepted and genuinely signed".
//!
//! `examples/make_seeds.rs` signs the seed corpora with the same fixtures: change a key here and
//! the seeds of `connection_token` and `user_jwt` must be made again.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_gateway::adapters::jwt::{JWKS_MIN_REFETCH, JwtSettings, JwtVerifier};
use herald_gateway::domain::UnixMs;
use herald_gateway::domain::token::{SigningKey, SigningKeys};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The fixed "now" of every connection-token check (2023-11-14), so runs are reproducible.
pub const NOW: UnixMs = 1_700_000_000_000;

/// Two keys, as during a rotation: `old` verifies, `new` (newer `notBefore`) signs.
pub const TOKEN_KEYS: [(&str, &[u8], UnixMs); 2] = [
    ("old", b"fuzz-old-key-0123456789abcdefghijklmnop", 0),
    ("new", b"fuzz-new-key-ABCDEFGHIJKLMNOP0123456789", 1_000),
];

pub const JWT_SECRET: &[u8] = b"fuzz HS256 secret, long enough for anyone";
pub const JWT_ISSUER: &str = "https://issuer.fuzz.example";
pub const JWT_AUDIENCE: &str = "herald";
pub const JWT_ROLES_CLAIM: &str = "roles";
pub const JWT_LEEWAY_SECS: u64 = 5;

pub fn signing_keys() -> &'static SigningKeys {
    static KEYS: OnceLock<SigningKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let keys = TOKEN_KEYS
            .iter()
            .map(|(kid, secret, not_before)| SigningKey::new(*kid, secret.to_vec(), *not_before).expect("strong key"))
            .collect();
        SigningKeys::new(keys).expect("distinct kids")
    })
}

/// The HS256-only verifier: no JWKS URL, so no path of it can reach the network.
pub fn jwt_verifier() -> &'static Arc<JwtVerifier> {
    static VERIFIER: OnceLock<Arc<JwtVerifier>> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        Arc::new(JwtVerifier::new(
            JwtSettings {
                hs256_secret: Some(herald_contract::Secret::new(JWT_SECRET.to_vec())),
                jwks_url: None,
                issuer: Some(JWT_ISSUER.into()),
                audience: Some(JWT_AUDIENCE.into()),
                roles_claim: JWT_ROLES_CLAIM.into(),
                leeway_secs: JWT_LEEWAY_SECS,
                jwks_min_refetch: JWKS_MIN_REFETCH,
            },
            Arc::new(herald_gateway::adapters::clock::SystemClock),
        ))
    })
}

/// Runs a future of the code under test to completion. The paths fuzzed never wait on I/O, but a
/// real runtime keeps a target honest if one ever does (it would hang and be reported as a timeout,
/// not silently skipped). Timers are on: `JsonBody` reads a body under the listener's deadline.
pub fn block_on<F: Future>(future: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("current-thread runtime")
        })
        .block_on(future)
}

/// HMAC-SHA256 of `message` under `secret`, base64url without padding.
pub fn hs256(secret: &[u8], message: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(message);
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// Whether `token` (`payload.signature`) carries the MAC of its payload segment under key `kid`.
pub fn connection_token_is_signed(token: &str, kid: &str) -> bool {
    let Some((payload, signature)) = token.split_once('.') else {
        return false;
    };
    TOKEN_KEYS
        .iter()
        .find(|(k, _, _)| *k == kid)
        .is_some_and(|(_, secret, _)| hs256(secret, payload.as_bytes()) == signature)
}

/// Whether `jwt` (`header.payload.signature`) carries the HS256 MAC of `header.payload`.
pub fn jwt_is_signed(jwt: &str) -> bool {
    match jwt.rsplit_once('.') {
        Some((message, signature)) => hs256(JWT_SECRET, message.as_bytes()) == signature,
        None => false,
    }
}

/// Seconds since the epoch: `jsonwebtoken` checks `exp` and `nbf` against the system clock.
pub fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
