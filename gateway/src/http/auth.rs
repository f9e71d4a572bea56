//! The `CurrentUser` extractor: a verified user JWT from `Authorization: Bearer`.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::app::Gateway;
use crate::domain::user::AuthenticatedUser;
use crate::error::Error;

use super::ApiError;

pub struct CurrentUser(pub AuthenticatedUser);

impl FromRequestParts<Arc<Gateway>> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gateway: &Arc<Gateway>) -> Result<Self, Self::Rejection> {
        let bearer = bearer(&parts.headers)?;
        Ok(CurrentUser(gateway.users.verify(bearer).await?))
    }
}

/// The credential of an `Authorization: Bearer <credential>` header.
pub fn bearer(headers: &HeaderMap) -> Result<&str, Error> {
    let value = headers
        .get(AUTHORIZATION)
        .ok_or(Error::Unauthenticated("missing Authorization header"))?;
    let value = value
        .to_str()
        .map_err(|_| Error::Unauthenticated("Authorization header is not ASCII"))?;
    match value.split_once(' ') {
        Some((scheme, credential)) if scheme.eq_ignore_ascii_case("bearer") && !credential.trim().is_empty() => {
            Ok(credential.trim())
        }
        _ => Err(Error::Unauthenticated("Authorization must be `Bearer <token>`")),
    }
}
