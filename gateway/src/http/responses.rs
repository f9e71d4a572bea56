//! The refusals many routes share, as named OpenAPI responses (`#/components/responses/...`): one
//! description each, referenced by every route that can answer it. Types for the document only; the
//! answers themselves are [`ApiError`](super::ApiError)s.

use super::error::ErrorBody;

/// No user JWT, or one that is invalid or expired (`WWW-Authenticate: Bearer`).
#[derive(utoipa::ToResponse)]
pub struct UserUnauthenticated(pub ErrorBody);

/// A bad field, parameter or body; every problem is listed in `error.fields`.
#[derive(utoipa::ToResponse)]
pub struct InvalidRequest(pub ErrorBody);

/// No such notification of this user (another user's answers the same).
#[derive(utoipa::ToResponse)]
pub struct NotificationNotFound(pub ErrorBody);

/// The request body did not arrive within the HTTP timeout.
#[derive(utoipa::ToResponse)]
pub struct BodyTimeout(pub ErrorBody);

/// The request body is larger than 2 MiB.
#[derive(utoipa::ToResponse)]
pub struct BodyTooLarge(pub ErrorBody);

/// A type or channel this publisher may not use.
#[derive(utoipa::ToResponse)]
pub struct PublisherForbidden(pub ErrorBody);

/// Over the publisher's notifications per second on this replica; see `Retry-After`.
#[derive(utoipa::ToResponse)]
#[response(headers(("Retry-After" = u32, description = "Seconds to wait")))]
pub struct PublisherRateLimited(pub ErrorBody);

/// A dependency (the database, Redis, the issuer's keys) is unavailable; nothing was done.
#[derive(utoipa::ToResponse)]
#[response(headers(("Retry-After" = u32, description = "Seconds to wait, when known")))]
pub struct Unavailable(pub ErrorBody);
