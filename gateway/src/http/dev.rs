//! `POST /dev/jwt?sub=alice&roles=admin,ops`: dev mode only (the route does not exist otherwise).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;

use crate::app::Gateway;
use crate::app::dev::DevJwt;

use super::ApiError;

#[derive(serde::Deserialize)]
pub struct MintQuery {
    sub: Option<String>,
    roles: Option<String>,
}

pub async fn mint_jwt(
    State(gateway): State<Arc<Gateway>>,
    Query(query): Query<MintQuery>,
) -> Result<Json<DevJwt>, ApiError> {
    let dev = gateway
        .dev
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route"))?;
    let sub = query.sub.unwrap_or_else(|| "dev-user".to_owned());
    if sub.is_empty() || sub.len() > 255 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_sub",
            "`sub` must be 1-255 characters",
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
