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
use super::json::JsonBody;

/// Answers 202 once the notifications are committed; delivery happens after the answer.
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
