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
    /// A dependency (identity provider, store) cannot be reached right now; retrying may succeed.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// A store, cache or identity provider failed; the detail is logged, never returned to clients.
    #[error("backend failure: {0}")]
    Backend(String),
}

impl Error {
    pub fn backend(err: impl std::fmt::Display) -> Self {
        Error::Backend(err.to_string())
    }

    /// The stable code clients see, in HTTP error bodies and WebSocket `error` messages.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Unauthenticated(_) => "unauthenticated",
            Error::JwtExpired => "jwt_expired",
            Error::JwtInvalid(_) => "jwt_invalid",
            Error::Token(TokenRejection::Invalid(_)) => "token_invalid",
            Error::Token(TokenRejection::Expired) => "token_expired",
            Error::Token(TokenRejection::Revoked) => "token_revoked",
            Error::Token(TokenRejection::Used) => "token_used",
            Error::RateLimited { .. } => "rate_limited",
            Error::TooManyConnections { .. } => "too_many_connections",
            Error::DuplicateConnection(_) => "duplicate_connection",
            Error::InAppDisabled => "in_app_disabled",
            Error::WebSocketDisabled => "websocket_disabled",
            Error::UnknownConnection(_) => "unknown_connection",
            Error::Unavailable(_) => "unavailable",
            Error::Backend(_) => "internal",
        }
    }
}
