//! Dev mode only: mints HS256 user JWTs with the gateway's own dev secret, so that a newcomer can try
//! the gateway with curl and no identity provider, and holds the dev publisher's key, so that the
//! demo page can publish a test notification. Never constructed outside dev mode.

use jsonwebtoken::{EncodingKey, Header, encode};

use crate::domain::UnixMs;
use crate::error::{Error, Result};

pub struct DevTokens {
    key: EncodingKey,
    roles_claim: String,
    issuer: Option<String>,
    audience: Option<String>,
    /// The generated dev publisher's key; `None` when publishers were configured.
    publisher_key: Option<String>,
}

/// A minted user JWT and when it expires.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DevJwt {
    pub jwt: String,
    #[schema(value_type = i64, format = Int64)]
    pub expires_at: UnixMs,
}

const DEV_JWT_TTL_MS: i64 = 60 * 60 * 1_000;

impl DevTokens {
    /// Mints tokens that the gateway's own verifier accepts: same secret, issuer, audience, roles claim.
    pub fn new(secret: &[u8], roles_claim: &str, issuer: Option<String>, audience: Option<String>) -> Self {
        Self {
            key: EncodingKey::from_secret(secret),
            roles_claim: roles_claim.to_owned(),
            issuer,
            audience,
            publisher_key: None,
        }
    }

    /// With the dev publisher's key, which `POST /dev/publish` publishes with.
    pub fn with_publisher_key(mut self, key: Option<String>) -> Self {
        self.publisher_key = key;
        self
    }

    pub fn publisher_key(&self) -> Option<&str> {
        self.publisher_key.as_deref()
    }

    pub fn mint(&self, sub: &str, roles: &[String], now: UnixMs) -> Result<DevJwt> {
        let expires_at = now + DEV_JWT_TTL_MS;
        let mut claims = serde_json::Map::new();
        claims.insert("sub".into(), sub.into());
        claims.insert("iat".into(), (now / 1_000).into());
        claims.insert("exp".into(), (expires_at / 1_000).into());
        claims.insert(self.roles_claim.clone(), roles.into());
        if let Some(issuer) = &self.issuer {
            claims.insert("iss".into(), issuer.as_str().into());
        }
        if let Some(audience) = &self.audience {
            claims.insert("aud".into(), audience.as_str().into());
        }
        let jwt = encode(&Header::default(), &claims, &self.key).map_err(Error::backend)?;
        Ok(DevJwt { jwt, expires_at })
    }
}
