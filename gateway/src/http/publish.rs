//! `POST /api/publish`: other domains publish notifications with a publisher key (AC23, AC24).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

use crate::app::Gateway;
use crate::domain::publish::{PublishBody, PublishReceipt};
use crate::error::Error;

use super::ApiError;
use super::json::JsonBody;

/// Answers 202 once the notifications are committed; delivery happens after the answer.
pub async fn publish(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    // A `Result`, so that the publisher key is checked first: a caller without a valid key learns
    // nothing about how its body was read.
    body: Result<JsonBody<PublishBody>, ApiError>,
) -> Result<(StatusCode, Json<PublishReceipt>), ApiError> {
    let key = super::auth::bearer(&headers).map_err(|_| Error::InvalidPublisherKey)?;
    let publisher = gateway.notifications.authenticate(key)?;
    let idempotency_key = match headers.get("idempotency-key") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| Error::invalid("Idempotency-Key", "must be ASCII"))?,
        ),
        None => None,
    };
    let JsonBody(body) = body?;
    let receipt = gateway.notifications.publish(publisher, body, idempotency_key).await?;
    Ok((StatusCode::ACCEPTED, Json(receipt)))
}
