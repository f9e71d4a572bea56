//! Connection tokens (`domain::token`): what `TokenService::authorize` does to a presented token
//! before the ledger is asked.
//!
//! Asserts, for any input:
//! - the bytes as a token never make `SigningKeys::verify` panic, and a token it accepts carries the
//!   MAC of its payload segment under the key its claims name (checked independently) and has not
//!   expired;
//! - claims built from the input, signed by the key set, verify to exactly those claims;
//! - a single-byte change of such a token never verifies: base64url is decoded canonically and the
//!   MAC covers the payload as transmitted, so a token cannot be re-encoded into another that passes
//!   (it would verify as another token, or another user).

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use herald_fuzz::{NOW, connection_token_is_signed, signing_keys};
use herald_gateway::domain::token::{ConnectionClaims, MAX_TOKEN_CHARS};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct RoundTrip {
    user_id: String,
    allowed_channels: Option<Vec<String>>,
    token_id: u128,
    ttl_ms: u32,
    position: usize,
    flip: u8,
}

fuzz_target!(|data: &[u8]| {
    let keys = signing_keys();

    let presented = String::from_utf8_lossy(data);
    if let Ok(claims) = keys.verify(&presented, NOW) {
        assert!(
            connection_token_is_signed(&presented, &claims.kid),
            "accepted a token not signed by key `{}`: {presented:?}",
            claims.kid
        );
        assert!(claims.expires_at > NOW, "accepted an expired token: {claims:?}");
    }

    let Ok(case) = RoundTrip::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let claims = ConnectionClaims {
        kid: String::new(),
        user_id: case.user_id,
        issued_at: NOW,
        expires_at: NOW + 1 + i64::from(case.ttl_ms),
        token_id: uuid::Uuid::from_u128(case.token_id),
        allowed_channels: case.allowed_channels,
    };
    let (token, signed) = keys.sign(claims, NOW).expect("a key is active at NOW");
    // The signer does not enforce the verifier's size cap; claims this large (a user id of
    // kilobytes) are never built by `TokenService::issue`, whose user ids are at most 255 bytes.
    if token.len() > MAX_TOKEN_CHARS {
        return;
    }
    assert_eq!(
        keys.verify(&token, NOW),
        Ok(signed.clone()),
        "a signed token must verify"
    );

    let mut mutated = token.into_bytes();
    let at = case.position % mutated.len();
    // XOR with a non-zero mask: the byte always changes.
    mutated[at] ^= case.flip.max(1);
    if let Ok(mutated) = std::str::from_utf8(&mutated) {
        let verdict = keys.verify(mutated, NOW);
        assert!(
            verdict.is_err(),
            "a token with byte {at} changed verified: {mutated:?} -> {verdict:?} (signed: {signed:?})"
        );
    }
});
