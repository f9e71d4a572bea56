//! User JWT verification for the HTTP API: an HS256 shared secret, a JWKS URL (RS256, ES256, EdDSA),
//! or both. The algorithm family is decided by where the key comes from, never by the token alone:
//! HS* only ever uses the shared secret and asymmetric algorithms only ever use JWKS keys, which is
//! what defeats algorithm confusion; `alg: none` does not parse at all. `jwks` owns fetching the
//! issuer's keys; this module owns the claims.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use reqwest::Url;
use serde_json::{Map, Value};

use crate::domain::user::{AuthenticatedUser, validate_user_id};
use crate::error::{Error, Result};
use crate::ports::{Clock, UserVerifier};

mod jwks;

pub use jwks::{
    HttpJwks, JWKS_FETCH_TIMEOUT, JWKS_MAX_AGE, JWKS_MIN_REFETCH, JwksCache, JwksSource, MAX_JWKS_BYTES, MAX_JWKS_KEYS,
    is_allowed_jwks_url,
};

#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub hs256_secret: Option<herald_contract::Secret<Vec<u8>>>,
    /// Checked by the configuration: `https://`, or `http://` to loopback ([`is_allowed_jwks_url`]).
    pub jwks_url: Option<Url>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub roles_claim: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// Shortest time between two JWKS fetches, whatever asked for them ([`JWKS_MIN_REFETCH`] unless
    /// a test says otherwise).
    pub jwks_min_refetch: Duration,
}

pub struct JwtVerifier {
    settings: JwtSettings,
    hs256: Option<DecodingKey>,
    jwks: Option<JwksCache>,
}

impl JwtVerifier {
    /// `clock` times the JWKS cache (its age, the interval between fetches); token `exp` and `nbf`
    /// are checked against the system time by `jsonwebtoken`.
    pub fn new(settings: JwtSettings, clock: Arc<dyn Clock>) -> Self {
        let hs256 = settings
            .hs256_secret
            .as_ref()
            .map(|s| DecodingKey::from_secret(s.expose()));
        let jwks = settings.jwks_url.clone().map(|url| {
            JwksCache::new(
                Arc::new(HttpJwks::new(url)),
                clock,
                settings.jwks_min_refetch,
                JWKS_FETCH_TIMEOUT,
            )
        });
        Self { settings, hs256, jwks }
    }

    async fn key_for(&self, alg: Algorithm, kid: Option<&str>) -> Result<DecodingKey> {
        match alg {
            Algorithm::HS256 => self
                .hs256
                .clone()
                .ok_or_else(|| Error::JwtInvalid("HS256 tokens are not accepted by this gateway".into())),
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA => {
                let jwks = self
                    .jwks
                    .as_ref()
                    .ok_or_else(|| Error::JwtInvalid(format!("{alg:?} tokens need a JWKS URL, none is configured")))?;
                let jwk = jwks.find(alg, kid).await?;
                DecodingKey::from_jwk(&jwk).map_err(|e| Error::JwtInvalid(format!("unusable JWKS key: {e}")))
            }
            other => Err(Error::JwtInvalid(format!("algorithm {other:?} is not accepted"))),
        }
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.leeway = self.settings.leeway_secs;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.settings.issuer {
            Some(issuer) => validation.set_issuer(&[issuer]),
            None => validation.iss = None,
        }
        match &self.settings.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        validation
    }
}

#[async_trait]
impl UserVerifier for JwtVerifier {
    async fn verify(&self, bearer: &str) -> Result<AuthenticatedUser> {
        let header = decode_header(bearer).map_err(|_| Error::JwtInvalid("malformed token or header".into()))?;
        let key = self.key_for(header.alg, header.kid.as_deref()).await?;
        let data = decode::<Map<String, Value>>(bearer, &key, &self.validation(header.alg)).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => Error::JwtExpired,
                ErrorKind::ImmatureSignature => Error::JwtInvalid("token is not valid yet (nbf)".into()),
                ErrorKind::InvalidIssuer => Error::JwtInvalid("wrong issuer".into()),
                ErrorKind::InvalidAudience => Error::JwtInvalid("wrong audience".into()),
                ErrorKind::InvalidSignature => Error::JwtInvalid("bad signature".into()),
                ErrorKind::MissingRequiredClaim(claim) => Error::JwtInvalid(format!("missing claim `{claim}`")),
                _ => Error::JwtInvalid("token rejected".into()),
            }
        })?;
        // `sub` becomes the user id: in every log line, every row, every admin's screen.
        let sub = match data.claims.get("sub") {
            Some(Value::String(sub)) => match validate_user_id(sub) {
                Ok(()) => sub.clone(),
                Err(invalid) => return Err(Error::JwtInvalid(format!("`sub`: {invalid}"))),
            },
            _ => return Err(Error::JwtInvalid("`sub` must be a string".into())),
        };
        Ok(AuthenticatedUser::new(
            sub,
            roles(&data.claims, &self.settings.roles_claim),
        ))
    }
}

/// Roles from the configured claim: a literal key first (`cognito:groups` contains no path), then a
/// dotted path (`realm_access.roles`). An array of strings, or one space- or comma-separated string.
pub fn roles(claims: &Map<String, Value>, claim: &str) -> Vec<String> {
    let value = claims.get(claim).or_else(|| {
        let mut parts = claim.split('.');
        let first = claims.get(parts.next()?)?;
        parts.try_fold(first, |v, part| v.get(part))
    });
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        Some(Value::String(s)) => s
            .split([' ', ','])
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &[u8] = b"an HS256 test secret that is long enough";

    fn verifier(issuer: Option<&str>, audience: Option<&str>) -> JwtVerifier {
        let settings = JwtSettings {
            hs256_secret: Some(herald_contract::Secret::new(SECRET.to_vec())),
            jwks_url: None,
            issuer: issuer.map(str::to_owned),
            audience: audience.map(str::to_owned),
            roles_claim: "roles".into(),
            leeway_secs: 5,
            jwks_min_refetch: JWKS_MIN_REFETCH,
        };
        JwtVerifier::new(settings, Arc::new(crate::adapters::clock::SystemClock))
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default()
    }

    fn hs256(claims: Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .expect("encode")
    }

    #[tokio::test]
    async fn accepts_valid_hs256_and_reads_roles() {
        let token = hs256(serde_json::json!({"sub": "alice", "exp": now() + 60, "roles": ["admin", "ops"]}));
        let user = verifier(None, None).verify(&token).await.expect("valid");
        assert_eq!(
            user,
            AuthenticatedUser::new("alice", vec!["admin".into(), "ops".into()])
        );
    }

    #[tokio::test]
    async fn refuses_expired_immature_and_wrong_issuer_or_audience() {
        let v = verifier(Some("https://issuer"), Some("herald"));
        let base = |extra: Value| {
            let mut claims =
                serde_json::json!({"sub": "a", "exp": now() + 60, "iss": "https://issuer", "aud": "herald"});
            if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
                c.extend(e.clone());
            }
            hs256(claims)
        };
        assert!(v.verify(&base(serde_json::json!({}))).await.is_ok());
        assert!(matches!(
            v.verify(&base(serde_json::json!({"exp": now() - 60}))).await,
            Err(Error::JwtExpired)
        ));
        assert!(matches!(
            v.verify(&base(serde_json::json!({"nbf": now() + 600}))).await,
            Err(Error::JwtInvalid(_))
        ));
        assert!(matches!(
            v.verify(&base(serde_json::json!({"iss": "https://evil"}))).await,
            Err(Error::JwtInvalid(_))
        ));
        assert!(matches!(
            v.verify(&base(serde_json::json!({"aud": "other"}))).await,
            Err(Error::JwtInvalid(_))
        ));
        assert!(matches!(
            v.verify(&base(serde_json::json!({"sub": ""}))).await,
            Err(Error::JwtInvalid(_))
        ));
    }

    #[tokio::test]
    async fn refuses_a_sub_that_is_not_a_valid_user_id() {
        let v = verifier(None, None);
        for sub in [
            json!(""),
            json!("x".repeat(256)),
            json!("alice\nINFO forged log line"),
            json!("alice\r"),
            json!("bob\u{202e}nimda"),
            json!(42),
        ] {
            let token = hs256(json!({"sub": sub, "exp": now() + 60}));
            match v.verify(&token).await {
                Err(Error::JwtInvalid(message)) => assert!(message.contains("`sub`"), "{message}"),
                other => panic!("{sub} accepted or wrongly refused: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn small_clock_skew_is_tolerated() {
        let token = hs256(serde_json::json!({"sub": "a", "exp": now() - 2}));
        assert!(verifier(None, None).verify(&token).await.is_ok());
    }

    #[tokio::test]
    async fn refuses_alg_none_and_asymmetric_without_jwks() {
        use base64::Engine;
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let unsigned = format!(
            "{}.{}.",
            b64(serde_json::json!({"alg": "none", "typ": "JWT"})),
            b64(serde_json::json!({"sub": "a", "exp": now() + 60}))
        );
        assert!(matches!(
            verifier(None, None).verify(&unsigned).await,
            Err(Error::JwtInvalid(_))
        ));
        // An RS256 header with an HMAC over the shared secret: the classic confusion attempt.
        let confused = encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "a", "exp": now() + 60}),
            &EncodingKey::from_secret(SECRET),
        )
        .expect("encode");
        let (_, rest) = confused.split_once('.').expect("parts");
        let forged = format!("{}.{rest}", b64(serde_json::json!({"alg": "RS256", "typ": "JWT"})));
        assert!(matches!(
            verifier(None, None).verify(&forged).await,
            Err(Error::JwtInvalid(_))
        ));
    }

    #[test]
    fn roles_come_from_literal_keys_paths_and_strings() {
        let claims: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "cognito:groups": ["admin"],
            "realm_access": {"roles": ["ops"]},
            "scope": "a b,c"
        }))
        .expect("map");
        assert_eq!(roles(&claims, "cognito:groups"), vec!["admin"]);
        assert_eq!(roles(&claims, "realm_access.roles"), vec!["ops"]);
        assert_eq!(roles(&claims, "scope"), vec!["a", "b", "c"]);
        assert!(roles(&claims, "missing").is_empty());
    }
}
