//! `POST /ws/token` and `DELETE /ws/token`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use crate::app::{Gateway, IssuedToken};

use super::ApiError;
use super::auth::CurrentUser;
use super::error::ErrorBody;
use super::responses::{Unavailable, UserUnauthenticated};

/// A connection token for `GET /ws`, for the user of the JWT.
#[utoipa::path(post, path = "/ws/token", operation_id = "issueConnectionToken", tag = "public", security(("userJwt" = [])),
    responses(
        (status = 200, description = "A token, valid once, until `expiresAt`", body = IssuedToken),
        (status = 401, response = UserUnauthenticated),
        (status = 403, description = "The user turned in-app notifications off", body = ErrorBody),
        (status = 429, description = "Too many tokens for this user; see `Retry-After`", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
        (status = 503, description = "WebSocket delivery is switched off, or a dependency is unavailable", body = ErrorBody),
    ))]
pub async fn issue(
    State(gateway): State<Arc<Gateway>>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<IssuedToken>, ApiError> {
    Ok(Json(gateway.tokens.issue(&user).await?))
}

/// Revokes every connection token of the user and closes the user's live WebSockets on every replica
/// (close code 4004).
#[utoipa::path(delete, path = "/ws/token", operation_id = "revokeConnectionTokens", tag = "public", security(("userJwt" = [])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, response = UserUnauthenticated),
        (status = 503, response = Unavailable),
    ))]
pub async fn revoke_all(
    State(gateway): State<Arc<Gateway>>,
    CurrentUser(user): CurrentUser,
) -> Result<StatusCode, ApiError> {
    gateway.tokens.revoke_all(&user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}
