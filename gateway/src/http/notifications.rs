//! The user's notification API: history, read state, deletion, preferences.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use uuid::Uuid;

use crate::app::Gateway;
use crate::app::notifications::{HistoryPage, HistoryParams};
use crate::domain::preferences::{PreferencesPatchBody, PreferencesView};
use crate::error::Error;

use super::ApiError;
use super::auth::CurrentUser;
use super::json::JsonBody;
use super::params::{PathParam, QueryParams};
use super::responses::{
    BodyTimeout, BodyTooLarge, InvalidRequest, NotificationNotFound, Unavailable, UserUnauthenticated,
};

/// A path id that is not a UUID names no notification: 404, like another user's id.
fn notification_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| Error::NotificationNotFound.into())
}

/// The user's notifications, newest first, a page at a time.
#[utoipa::path(get, path = "/notifications", operation_id = "listNotifications", tag = "public", security(("userJwt" = [])), params(HistoryParams),
    responses(
        (status = 200, description = "A page", body = HistoryPage),
        (status = 400, response = InvalidRequest),
        (status = 401, response = UserUnauthenticated),
        (status = 503, response = Unavailable),
    ))]
pub async fn history(
    State(gateway): State<Arc<Gateway>>,
    CurrentUser(user): CurrentUser,
    QueryParams(params): QueryParams<HistoryParams>,
) -> Result<Json<HistoryPage>, ApiError> {
    Ok(Json(gateway.notifications.history(&user.id, &params).await?))
}

/// Marks one notification read.
#[utoipa::path(post, path = "/notifications/{id}/read", operation_id = "markNotificationRead", tag = "public", security(("userJwt" = [])),
    params(("id" = String, Path, description = "The notification's id (a UUID)")),
    responses(
        (status = 204, description = "Read (also when it already was)"),
        (status = 401, response = UserUnauthenticated),
        (status = 404, response = NotificationNotFound),
        (status = 503, response = Unavailable),
    ))]
pub async fn mark_read(
    State(gateway): State<Arc<Gateway>>,
    CurrentUser(user): CurrentUser,
    PathParam(id): PathParam,
) -> Result<StatusCode, ApiError> {
    gateway.notifications.mark_read(&user.id, notification_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Marks every notification of the user read.
#[utoipa::path(post, path = "/notifications/read-all", operation_id = "markAllNotificationsRead", tag = "public", security(("userJwt" = [])),
    responses(
        (status = 200, description = "How many were unread", body = MarkedRead),
        (status = 401, response = UserUnauthenticated),
        (status = 503, response = Unavailable),
    ))]
pub async fn mark_all_read(
    State(gateway): State<Arc<Gateway>>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<MarkedRead>, ApiError> {
    let updated = gateway.notifications.mark_all_read(&user.id).await?;
    Ok(Json(MarkedRead { updated }))
}

/// What `POST /notifications/read-all` answers.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct MarkedRead {
    /// How many notifications were unread before.
    pub updated: u64,
}

/// Deletes one notification.
#[utoipa::path(delete, path = "/notifications/{id}", operation_id = "deleteNotification", tag = "public", security(("userJwt" = [])),
    params(("id" = String, Path, description = "The notification's id (a UUID)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, response = UserUnauthenticated),
        (status = 404, response = NotificationNotFound),
        (status = 503, response = Unavailable),
    ))]
pub async fn delete(
    State(gateway): State<Arc<Gateway>>,
    CurrentUser(user): CurrentUser,
    PathParam(id): PathParam,
) -> Result<StatusCode, ApiError> {
    gateway.notifications.delete(&user.id, notification_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The user's effective preferences: every type and channel, defaults filled in.
#[utoipa::path(get, path = "/notifications/preferences", operation_id = "getPreferences", tag = "public", security(("userJwt" = [])),
    responses(
        (status = 200, description = "The preferences", body = PreferencesView),
        (status = 401, response = UserUnauthenticated),
        (status = 503, response = Unavailable),
    ))]
pub async fn get_preferences(
    State(gateway): State<Arc<Gateway>>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<PreferencesView>, ApiError> {
    Ok(Json(gateway.preferences.effective(&user.id).await?))
}

/// Changes some preferences; answers the effective preferences after the change.
#[utoipa::path(patch, path = "/notifications/preferences", operation_id = "updatePreferences", tag = "public", security(("userJwt" = [])),
    request_body = PreferencesPatchBody,
    responses(
        (status = 200, description = "The preferences after the change", body = PreferencesView),
        (status = 400, response = InvalidRequest),
        (status = 401, response = UserUnauthenticated),
        (status = 408, response = BodyTimeout),
        (status = 413, response = BodyTooLarge),
        (status = 503, response = Unavailable),
    ))]
pub async fn patch_preferences(
    State(gateway): State<Arc<Gateway>>,
    CurrentUser(user): CurrentUser,
    JsonBody(body): JsonBody<PreferencesPatchBody>,
) -> Result<Json<PreferencesView>, ApiError> {
    Ok(Json(gateway.preferences.patch(&user.id, body).await?))
}
