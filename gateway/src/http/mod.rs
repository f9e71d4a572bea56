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

/// The public listener's HTTP routes, without state: what browsers and apps call. The server adds the
/// WebSocket route, the fallback and the state (so `ws/`, which uses this module's error type, is not
/// imported back from here). `/api/publish` and `/metrics` are not here: they answer 404 on the
/// public port and live on the internal listener ([`internal_routes`]).
pub fn public_routes(dev_mode: bool) -> Router<Arc<Gateway>> {
    let router = health_routes()
        .route("/ws/token", post(tokens::issue).delete(tokens::revoke_all))
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

/// The internal listener's routes: publishing (other services) and metrics (Prometheus). A publisher
/// key is still required to publish; the port keeps the route and the metrics out of the public's
/// reach on top of that (a leaked key, key-guessing, what the metrics reveal about traffic).
pub fn internal_routes() -> Router<Arc<Gateway>> {
    health_routes()
        .route("/metrics", get(health::metrics))
        .route("/api/publish", post(publish::publish))
}

/// On both listeners, so that a probe or a check can use either port.
fn health_routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
}
