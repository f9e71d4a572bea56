//! User JWTs (`adapters::jwt`): the HS256 path of `JwtVerifier`, the bearer check in front of every
//! user-facing HTTP route. The verifier has a fixed secret, issuer and audience and no JWKS URL.
//!
//! Asserts, for any input:
//! - the bytes as a bearer token never make the verifier panic, and a token it accepts is signed
//!   (HMAC-SHA256 over `header.payload` under the secret, checked independently), names the
//!   configured issuer and audience, and its `sub` is the accepted user's id, which follows the
//!   user-id rule (1-255 bytes, no control, separator or bidirectional character);
//! - claims built from the input, signed with the secret, verify as their `sub` with their roles
//!   when the `sub` follows that rule, and are refused when it does not;
//! - a single-byte change of such a token never verifies as anyone.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use herald_fuzz::{
    JWT_AUDIENCE, JWT_ISSUER, JWT_ROLES_CLAIM, JWT_SECRET, block_on, jwt_is_signed, jwt_verifier, unix_secs,
};
use herald_gateway::ports::UserVerifier;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

#[derive(Debug, Arbitrary)]
struct RoundTrip {
    sub: String,
    roles: Vec<String>,
    lifetime_secs: u16,
    position: usize,
    flip: u8,
}

fuzz_target!(|data: &[u8]| {
    let verifier = jwt_verifier();

    let bearer = String::from_utf8_lossy(data);
    if let Ok(user) = block_on(verifier.verify(&bearer)) {
        assert!(
            jwt_is_signed(&bearer),
            "accepted a token without a valid HS256 MAC: {bearer:?}"
        );
        let claims = payload(&bearer).expect("an accepted token has a JSON payload");
        assert_eq!(claims["iss"], JWT_ISSUER, "accepted a foreign issuer: {claims}");
        let audience_ok = match &claims["aud"] {
            Value::String(aud) => aud == JWT_AUDIENCE,
            Value::Array(auds) => auds.iter().any(|aud| aud == JWT_AUDIENCE),
            _ => false,
        };
        assert!(audience_ok, "accepted a foreign audience: {claims}");
        assert_eq!(claims["sub"], user.id.as_str(), "the user is not the token's subject");
        assert!(
            acceptable_user_id(&user.id),
            "a subject the user-id rule refuses: {:?}",
            user.id
        );
    }

    let Ok(case) = RoundTrip::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let claims = json!({
        "sub": case.sub,
        "iss": JWT_ISSUER,
        "aud": JWT_AUDIENCE,
        // Past the leeway, so that a slow run never sees it expire.
        "exp": unix_secs() + 60 + u64::from(case.lifetime_secs),
        JWT_ROLES_CLAIM: case.roles,
    });
    let token = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(JWT_SECRET),
    )
    .expect("JSON claims encode");
    let verdict = block_on(verifier.verify(&token));
    if !acceptable_user_id(&case.sub) {
        assert!(verdict.is_err(), "accepted the subject {:?}", case.sub);
    } else {
        let user = verdict.expect("a token signed with the secret verifies");
        assert_eq!(user.id, case.sub);
        assert_eq!(user.roles, case.roles);
    }

    let mut mutated = token.into_bytes();
    let at = case.position % mutated.len();
    // XOR with a non-zero mask: the byte always changes.
    mutated[at] ^= case.flip.max(1);
    if let Ok(mutated) = std::str::from_utf8(&mutated) {
        let verdict = block_on(verifier.verify(mutated));
        assert!(
            verdict.is_err(),
            "a token with byte {at} changed verified: {mutated:?} -> {verdict:?}"
        );
    }
});

/// The claims of a `header.payload.signature` token, decoded without the code under test.
fn payload(token: &str) -> Option<Value> {
    use base64::Engine;
    let mut parts = token.rsplitn(3, '.');
    let (_signature, payload) = (parts.next()?, parts.next()?);
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The user-id rule of docs/security.md, written again here rather than borrowed from the code under
/// test: 1-255 bytes, no control character, no line or paragraph separator, no bidirectional
/// embedding, override or isolate.
fn acceptable_user_id(id: &str) -> bool {
    (1..=255).contains(&id.len())
        && !id.chars().any(|c| {
            c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
}
