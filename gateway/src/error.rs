//! The gateway's one error type. Every error a client can cause has a stable machine code
//! ([`Error::code`]); transports map it to an HTTP status or a WebSocket `error` message.

use crate::domain::token::TokenRejection;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("authentication required: {0}")]
    Unauthenticated(&'static str),
    #[error("the user token has expired")]
    JwtExpired,
    #[error("the user token is invalid: {0}")]
    JwtInvalid(String),
    #[error(transparent)]
    Token(#[from] TokenRejection),
    #[error("rate limit exceeded, retry in {retry_after_ms} ms")]
    RateLimited { retry_after_ms: i64 },
    #[error("this user already has {max} open connections")]
    TooManyConnections { max: u32 },
    #[error("connection id `{0}` is already registered to another user")]
    DuplicateConnection(String),
    #[error("in-app notifications are disabled for this user")]
    InAppDisabled,
    #[error("WebSocket notifications are disabled on this gateway")]
    WebSocketDisabled,
    #[error("connection `{0}` is not registered")]
    UnknownConnection(String),
    #[error("the request is invalid")]
    Validation(crate::domain::notification::FieldErrors),
    #[error("{0}")]
    BadRequest(String),
    #[error("no such notification")]
    NotificationNotFound,
    #[error("unknown channel `{0}`")]
    UnknownChannel(String),
    #[error("channel `{0}` needs a role this user does not have")]
    ForbiddenChannel(String),
    #[error("the publisher key is missing or unknown")]
    InvalidPublisherKey,
    #[error("publisher `{publisher}` may not publish `{kind}` notifications")]
    TypeNotAllowed { publisher: String, kind: String },
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyKeyReused,
    /// A dependency (identity provider, store) cannot be reached right now; retrying may succeed.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// A store, cache or identity provider failed; the detail is logged, never returned to clients.
    #[error("backend failure: {0}")]
    Backend(String),
}

impl Error {
    /// One invalid field.
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::Validation([(field.into(), problem.into())].into_iter().collect())
    }

    pub fn backend(err: impl std::fmt::Display) -> Self {
        Error::Backend(err.to_string())
    }

    /// The message clients see: the error itself, except for failures inside the gateway, whose
    /// details are logged here and never returned.
    pub fn public_message(&self) -> String {
        match self {
            Error::Backend(detail) => {
                tracing::error!(error = %detail, "request failed");
                "internal error".to_owned()
            }
            Error::Unavailable(detail) => {
                tracing::warn!(error = %detail, "dependency unavailable");
                "a dependency is unavailable, retry shortly".to_owned()
            }
            other => other.to_string(),
        }
    }

    /// The stable code clients see, in HTTP error bodies and WebSocket `error` messages.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Unauthenticated(_) => "unauthenticated",
            Error::JwtExpired => "jwt_expired",
            Error::JwtInvalid(_) => "jwt_invalid",
            // An unknown key is not told apart to clients: it is the answer a forger gets too.
            Error::Token(TokenRejection::Invalid(_) | TokenRejection::UnknownKey) => "token_invalid",
            Error::Token(TokenRejection::Expired) => "token_expired",
            Error::Token(TokenRejection::Revoked) => "token_revoked",
            Error::Token(TokenRejection::Used) => "token_used",
            Error::RateLimited { .. } => "rate_limited",
            Error::TooManyConnections { .. } => "too_many_connections",
            Error::DuplicateConnection(_) => "duplicate_connection",
            Error::InAppDisabled => "in_app_disabled",
            Error::WebSocketDisabled => "websocket_disabled",
            Error::UnknownConnection(_) => "unknown_connection",
            Error::Validation(_) => "validation_failed",
            Error::BadRequest(_) => "bad_request",
            Error::NotificationNotFound => "notification_not_found",
            Error::UnknownChannel(_) => "unknown_channel",
            Error::ForbiddenChannel(_) => "forbidden_channel",
            Error::InvalidPublisherKey => "invalid_publisher_key",
            Error::TypeNotAllowed { .. } => "type_not_allowed",
            Error::IdempotencyKeyReused => "idempotency_key_reused",
            Error::Unavailable(_) => "unavailable",
            Error::Backend(_) => "internal",
        }
    }
}
