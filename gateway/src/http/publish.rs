//! `POST /api/publish`: other domains publish notifications with a publisher key (AC23, AC24).

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};

use crate::app::Gateway;
use crate::domain::publish::{PublishBody, PublishReceipt};
use crate::domain::publisher::Publisher;
use crate::error::Error;

use super::ApiError;
use super::error::ErrorBody;
use super::json::JsonBody;
use super::responses::{
    BodyTimeout, BodyTooLarge, InvalidRequest, PublisherForbidden, PublisherRateLimited, Unavailable,
};

/// Publishes one notification to each recipient (internal listener only). Answers once the
/// notifications are committed; delivery happens after the answer.
#[utoipa::path(post, path = "/api/publish", operation_id = "publishNotifications", tag = "internal", security(("publisherKey" = [])),
    params(("Idempotency-Key" = Option<String>, Header,
        description = "A retry with the same key (within 24 hours) answers the first receipt; with another body, 422")),
    request_body = PublishBody,
    responses(
        (status = 202, description = "Committed: who got a notification and who was skipped", body = PublishReceipt),
        (status = 400, response = InvalidRequest),
        (status = 401, description = "No valid publisher key", body = ErrorBody),
        (status = 403, response = PublisherForbidden),
        (status = 408, response = BodyTimeout),
        (status = 413, response = BodyTooLarge),
        (status = 422, description = "The `Idempotency-Key` was used for another request", body = ErrorBody),
        (status = 429, response = PublisherRateLimited),
        (status = 503, response = Unavailable),
    ))]
pub async fn publish(
    State(gateway): State<Arc<Gateway>>,
    // Extracted before the body: a caller without a valid key is refused before a byte of its body
    // is read.
    AuthenticatedPublisher(publisher): AuthenticatedPublisher,
    headers: HeaderMap,
    JsonBody(body): JsonBody<PublishBody>,
) -> Result<(StatusCode, Json<PublishReceipt>), ApiError> {
    let idempotency_key = match headers.get("idempotency-key") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| Error::invalid("Idempotency-Key", "must be ASCII"))?,
        ),
        None => None,
    };
    let receipt = gateway.notifications.publish(&publisher, body, idempotency_key).await?;
    Ok((StatusCode::ACCEPTED, Json(receipt)))
}

/// The publisher whose key is in `Authorization: Bearer`.
pub struct AuthenticatedPublisher(pub Arc<Publisher>);

impl FromRequestParts<Arc<Gateway>> for AuthenticatedPublisher {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gateway: &Arc<Gateway>) -> Result<Self, Self::Rejection> {
        let key = super::auth::bearer(&parts.headers).map_err(|_| Error::InvalidPublisherKey)?;
        Ok(AuthenticatedPublisher(gateway.notifications.authenticate(key)?))
    }
}
