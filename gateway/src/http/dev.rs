//! Dev mode only (the routes do not exist otherwise): `POST /dev/jwt?sub=alice&roles=admin,ops` mints
//! a user JWT; `POST /dev/publish` publishes as the dev publisher, for the demo page's test form.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use crate::app::Gateway;
use crate::app::dev::DevJwt;
use crate::domain::user::validate_user_id;

use crate::domain::publish::{PublishBody, PublishReceipt};

use super::ApiError;
use super::error::ErrorBody;
use super::json::JsonBody;
use super::params::QueryParams;
use super::responses::{
    BodyTimeout, BodyTooLarge, InvalidRequest, PublisherForbidden, PublisherRateLimited, Unavailable,
};

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MintQuery {
    /// The user id (`sub`); `dev-user` when absent.
    sub: Option<String>,
    /// Comma-separated roles.
    roles: Option<String>,
}

/// Mints a user JWT the gateway accepts (only with `--dev`; the route does not exist otherwise).
#[utoipa::path(post, path = "/dev/jwt", operation_id = "mintDevJwt", tag = "public", params(MintQuery),
    responses(
        (status = 200, description = "A JWT, valid for an hour", body = DevJwt),
        (status = 400, description = "A `sub` no JWT may carry", body = ErrorBody),
    ))]
pub async fn mint_jwt(
    State(gateway): State<Arc<Gateway>>,
    QueryParams(query): QueryParams<MintQuery>,
) -> Result<Json<DevJwt>, ApiError> {
    let dev = gateway
        .dev
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route"))?;
    let sub = query.sub.unwrap_or_else(|| "dev-user".to_owned());
    // A JWT the gateway itself would refuse is of no use: the same rule as every user id.
    if let Err(invalid) = validate_user_id(&sub) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_sub",
            format!("`sub`: {invalid}"),
        ));
    }
    let roles: Vec<String> = query
        .roles
        .unwrap_or_default()
        .split(',')
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect();
    Ok(Json(dev.mint(&sub, &roles, gateway.clock.now_ms())?))
}

/// Publishes as the generated dev publisher, from the public listener: what the demo page's "send a
/// test notification" form calls (a browser cannot reach the internal listener). Same body, rules and
/// answer as `POST /api/publish`, and `Content-Type: application/json` is required: a page of another
/// site can send a form or `text/plain` POST without asking, but not a JSON one (the preflight is
/// never answered), so no other site can publish through a developer's browser.
#[utoipa::path(post, path = "/dev/publish", operation_id = "devPublish", tag = "public",
    request_body(content = PublishBody, content_type = "application/json"),
    responses(
        (status = 202, description = "Committed", body = PublishReceipt),
        (status = 400, response = InvalidRequest),
        (status = 403, response = PublisherForbidden),
        (status = 404, description = "Publishers are configured, so there is no dev publisher", body = ErrorBody),
        (status = 408, response = BodyTimeout),
        (status = 413, response = BodyTooLarge),
        (status = 415, description = "The body is not declared `application/json`", body = ErrorBody),
        (status = 429, response = PublisherRateLimited),
        (status = 503, response = Unavailable),
    ))]
pub async fn publish_test(
    State(gateway): State<Arc<Gateway>>,
    headers: axum::http::HeaderMap,
    JsonBody(body): JsonBody<PublishBody>,
) -> Result<(StatusCode, Json<PublishReceipt>), ApiError> {
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
        ));
    }
    let key = gateway
        .dev
        .as_ref()
        .and_then(|dev| dev.publisher_key())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_dev_publisher",
                "publishers are configured, so there is no dev publisher: publish on the internal listener",
            )
        })?;
    let publisher = gateway.notifications.authenticate(key)?;
    let receipt = gateway.notifications.publish(&publisher, body, None).await?;
    Ok((StatusCode::ACCEPTED, Json(receipt)))
}
