//! HTTP transport: parse, call one service method, map the result. No storage code here.

use std::sync::Arc;

use axum::Router;
use axum::routing::{delete, get, post};

use crate::app::Gateway;

mod auth;
pub mod client_ip;
mod dev;
pub mod error;
mod health;
mod json;
mod notifications;
mod publish;
mod tokens;

pub use error::ApiError;
/// Public for the fuzz targets (`fuzz/`), which read publish bodies exactly as the handler does.
pub use json::JsonBody;

/// Every HTTP route, without state: the server adds the WebSocket route, the fallback and the state
/// (so `ws/`, which uses this module's error type, is not imported back from here).
pub fn routes(dev_mode: bool) -> Router<Arc<Gateway>> {
    let router = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/ws/token", post(tokens::issue).delete(tokens::revoke_all))
        .route("/api/publish", post(publish::publish))
        .route("/notifications", get(notifications::history))
        .route("/notifications/read-all", post(notifications::mark_all_read))
        .route(
            "/notifications/preferences",
            get(notifications::get_preferences).patch(notifications::patch_preferences),
        )
        .route("/notifications/{id}", delete(notifications::delete))
        .route("/notifications/{id}/read", post(notifications::mark_read));
    if dev_mode {
        router.route("/dev/jwt", post(dev::mint_jwt))
    } else {
        router
    }
}
