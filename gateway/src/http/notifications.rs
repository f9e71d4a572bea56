//! The user's notification API: history, read state, deletion, preferences.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::app::Gateway;
use crate::app::notifications::{HistoryPage, HistoryParams};
use crate::domain::preferences::{PreferencesPatchBody, PreferencesView};
use crate::error::Error;

use super::ApiError;
use super::auth::CurrentUser;
use super::json::JsonBody;

/// A path id that is not a UUID names no notification: 404, like another user's id.
fn notification_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| Error::NotificationNotFound.into())
}

pub async fn history(
    State(gateway): State<Arc<Gateway>>,
    CurrentUser(user): CurrentUser,
    Query(params): Query<HistoryParams>,
) -> Result<Json<HistoryPage>, ApiError> {
    Ok(Json(gateway.notifications.history(&user.id, &params).await?))
}

pub async fn mark_read(
    State(gateway): State<Arc<Gateway>>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    gateway.notifications.mark_read(&user.id, notification_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn mark_all_read(
    State(gateway): State<Arc<Gateway>>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<Value>, ApiError> {
    let updated = gateway.notifications.mark_all_read(&user.id).await?;
    Ok(Json(json!({ "updated": updated })))
}

pub async fn delete(
    State(gateway): State<Arc<Gateway>>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    gateway.notifications.delete(&user.id, notification_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn get_preferences(
    State(gateway): State<Arc<Gateway>>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<PreferencesView>, ApiError> {
    Ok(Json(gateway.preferences.effective(&user.id).await?))
}

pub async fn patch_preferences(
    State(gateway): State<Arc<Gateway>>,
    CurrentUser(user): CurrentUser,
    JsonBody(body): JsonBody<PreferencesPatchBody>,
) -> Result<Json<PreferencesView>, ApiError> {
    Ok(Json(gateway.preferences.patch(&user.id, body).await?))
}
