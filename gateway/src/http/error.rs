//! `ApiError`: every failure an HTTP client sees, as `{"error":{"code","message"}}` with a stable code.
//! Internal details are logged, never returned.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::Error;

/// What a 503 for a missing dependency advises: soon, but not in a tight loop.
const UNAVAILABLE_RETRY_AFTER_SECS: i64 = 2;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_secs: Option<i64>,
    /// Per-field problems of a validation failure.
    fields: Option<crate::domain::notification::FieldErrors>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
            fields: None,
        }
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let status = match &err {
            Error::Unauthenticated(_) | Error::JwtExpired | Error::JwtInvalid(_) | Error::Token(_) => {
                StatusCode::UNAUTHORIZED
            }
            Error::RateLimited { .. } | Error::TooManyConnections { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::InAppDisabled | Error::ForbiddenChannel(_) | Error::TypeNotAllowed { .. } => StatusCode::FORBIDDEN,
            Error::InvalidPublisherKey => StatusCode::UNAUTHORIZED,
            Error::Validation(_) | Error::BadRequest(_) | Error::UnknownChannel(_) => StatusCode::BAD_REQUEST,
            Error::NotificationNotFound => StatusCode::NOT_FOUND,
            Error::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Error::DuplicateConnection(_) => StatusCode::CONFLICT,
            Error::UnknownConnection(_) => StatusCode::NOT_FOUND,
            Error::WebSocketDisabled | Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Backend(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = err.public_message();
        let retry_after_secs = match &err {
            // Whole seconds, rounded up: retrying at the advertised time must succeed.
            Error::RateLimited { retry_after_ms } => Some((retry_after_ms + 999) / 1_000),
            // A dependency is gone (PostgreSQL, Redis): nothing was done, try again shortly.
            Error::Unavailable(_) => Some(UNAVAILABLE_RETRY_AFTER_SECS),
            _ => None,
        };
        let fields = match &err {
            Error::Validation(fields) => Some(fields.clone()),
            _ => None,
        };
        Self {
            status,
            code: err.code(),
            message,
            retry_after_secs,
            fields,
        }
    }
}

/// The body of every refusal (4xx, 5xx) on every route.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable (`validation_failed`, `rate_limited`, ...).
    pub code: &'static str,
    /// For people; may change.
    pub message: String,
    /// Of a `validation_failed`: each field path (`notification.title`, `userIds[2]`) and what is
    /// wrong with it, every problem at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>)]
    pub fields: Option<crate::domain::notification::FieldErrors>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                fields: self.fields,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// axum keeps the `Allow` header it computed for the path.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}
