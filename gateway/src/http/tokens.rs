//! `POST /ws/token` and `DELETE /ws/token`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use crate::app::{Gateway, IssuedToken};

use super::ApiError;
use super::auth::CurrentUser;

pub async fn issue(
    State(gateway): State<Arc<Gateway>>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<IssuedToken>, ApiError> {
    Ok(Json(gateway.tokens.issue(&user).await?))
}

pub async fn revoke_all(
    State(gateway): State<Arc<Gateway>>,
    CurrentUser(user): CurrentUser,
) -> Result<StatusCode, ApiError> {
    gateway.tokens.revoke_all(&user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}
