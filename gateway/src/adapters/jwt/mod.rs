//! User JWT verification for the HTTP API: an HS256 shared secret, a JWKS URL (RS256, ES256, EdDSA),
//! or both. The algorithm family is decided by where the key comes from, never by the token alone:
//! HS* only ever uses the shared secret and asymmetric algorithms only ever use JWKS keys, which is
//! what defeats algorithm confusion; `alg: none` does not parse at all.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::{Map, Value};

use crate::domain::user::AuthenticatedUser;
use crate::error::{Error, Result};
use crate::ports::UserVerifier;

/// How long a fetched key set is trusted before a background-free refresh on next use.
const JWKS_MAX_AGE: Duration = Duration::from_secs(600);
/// An unknown `kid` triggers a refetch at most this often by default, so forged tokens cannot hammer
/// the issuer.
pub const JWKS_MIN_REFETCH: Duration = Duration::from_secs(5);
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub hs256_secret: Option<herald_contract::Secret<Vec<u8>>>,
    pub jwks_url: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub roles_claim: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// Shortest time between two JWKS fetches ([`JWKS_MIN_REFETCH`] unless a test says otherwise).
    pub jwks_min_refetch: Duration,
}

pub struct JwtVerifier {
    settings: JwtSettings,
    hs256: Option<DecodingKey>,
    jwks: Option<JwksCache>,
}

impl JwtVerifier {
    pub fn new(settings: JwtSettings) -> Self {
        let hs256 = settings
            .hs256_secret
            .as_ref()
            .map(|s| DecodingKey::from_secret(s.expose()));
        let jwks = settings
            .jwks_url
            .clone()
            .map(|url| JwksCache::new(url, settings.jwks_min_refetch));
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
        let sub = match data.claims.get("sub") {
            Some(Value::String(sub)) if !sub.is_empty() && sub.len() <= 255 => sub.clone(),
            _ => {
                return Err(Error::JwtInvalid(
                    "`sub` must be a non-empty string of at most 255 characters".into(),
                ));
            }
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

/// The issuer's key set, fetched lazily, refreshed when stale or when a token names an unknown `kid`.
struct JwksCache {
    url: String,
    min_refetch: Duration,
    client: reqwest::Client,
    keys: RwLock<Option<(Arc<JwkSet>, Instant)>>,
    /// Serializes fetches and remembers when the last one started.
    fetch_gate: tokio::sync::Mutex<Option<Instant>>,
}

impl JwksCache {
    fn new(url: String, min_refetch: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(JWKS_FETCH_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            url,
            min_refetch,
            client,
            keys: RwLock::new(None),
            fetch_gate: tokio::sync::Mutex::new(None),
        }
    }

    fn cached(&self) -> Option<(Arc<JwkSet>, Instant)> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    async fn find(&self, alg: Algorithm, kid: Option<&str>) -> Result<Jwk> {
        let cached = self.cached();
        let fresh = cached.as_ref().is_some_and(|(_, at)| at.elapsed() < JWKS_MAX_AGE);
        if let Some((set, _)) = &cached {
            if let Some(jwk) = select(set, alg, kid) {
                if fresh {
                    return Ok(jwk);
                }
            }
        }
        match self.refresh().await {
            Ok(set) => select(&set, alg, kid),
            // Keep serving from a stale set while the issuer is unreachable.
            Err(err) => match cached.and_then(|(set, _)| select(&set, alg, kid)) {
                Some(jwk) => {
                    tracing::warn!(error = %err, "jwks:refresh-failed, using cached keys");
                    Some(jwk)
                }
                None => return Err(err),
            },
        }
        .ok_or_else(|| Error::JwtInvalid("no JWKS key matches the token's kid and algorithm".into()))
    }

    async fn refresh(&self) -> Result<Arc<JwkSet>> {
        let mut last = self.fetch_gate.lock().await;
        if let (Some(at), Some((set, _))) = (*last, self.cached()) {
            if at.elapsed() < self.min_refetch {
                return Ok(set);
            }
        }
        *last = Some(Instant::now());
        let set: JwkSet = async {
            self.client
                .get(&self.url)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await
        }
        .await
        .map_err(|e: reqwest::Error| Error::Unavailable(format!("cannot fetch JWKS from {}: {e}", self.url)))?;
        let set = Arc::new(set);
        tracing::info!(url = %self.url, keys = set.keys.len(), "jwks:fetched");
        *self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((set.clone(), Instant::now()));
        Ok(set)
    }
}

/// The key a token may be checked with: same `kid` (or the only candidate when the token names none),
/// a signing key, of the family the algorithm needs, and of the same `alg` when the JWK names one.
fn select(set: &JwkSet, alg: Algorithm, kid: Option<&str>) -> Option<Jwk> {
    let candidates: Vec<&Jwk> = set
        .keys
        .iter()
        .filter(|jwk| !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)))
        .filter(|jwk| family_matches(jwk, alg))
        .filter(|jwk| {
            jwk.common
                .key_algorithm
                .is_none_or(|named| format!("{named:?}") == format!("{alg:?}"))
        })
        .collect();
    match kid {
        Some(kid) => candidates
            .into_iter()
            .find(|jwk| jwk.common.key_id.as_deref() == Some(kid))
            .cloned(),
        None if candidates.len() == 1 => candidates.first().map(|jwk| (*jwk).clone()),
        None => None,
    }
}

fn family_matches(jwk: &Jwk, alg: Algorithm) -> bool {
    match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256) => true,
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => ec.curve == EllipticCurve::P256,
        (AlgorithmParameters::OctetKeyPair(_), Algorithm::EdDSA) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    const SECRET: &[u8] = b"an HS256 test secret that is long enough";

    fn verifier(issuer: Option<&str>, audience: Option<&str>) -> JwtVerifier {
        JwtVerifier::new(JwtSettings {
            hs256_secret: Some(herald_contract::Secret::new(SECRET.to_vec())),
            jwks_url: None,
            issuer: issuer.map(str::to_owned),
            audience: audience.map(str::to_owned),
            roles_claim: "roles".into(),
            leeway_secs: 5,
            jwks_min_refetch: JWKS_MIN_REFETCH,
        })
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
