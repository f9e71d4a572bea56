//! HTTP transport: parse, call one service method, map the result. No storage code here.

use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::Gateway;

mod auth;
mod channels;
pub mod client_ip;
mod demo;
mod dev;
pub mod error;
mod health;
mod json;
mod notifications;
pub mod params;
mod publish;
pub mod responses;
pub mod schemas;
mod tokens;

pub use error::ApiError;
/// Public for the fuzz targets (`fuzz/`), which read publish bodies exactly as the handler does.
pub use json::JsonBody;

/// The public listener's HTTP routes, without state: what browsers and apps call. The server adds the
/// WebSocket route, the fallback and the state (so `ws/`, which uses this module's error type, is not
/// imported back from here). `/api/publish` and `/metrics` are not here: they answer 404 on the
/// public port and live on the internal listener ([`internal_routes`]). Each route is registered
/// with its OpenAPI description, so the document lists exactly what is served.
pub fn public_routes(dev_mode: bool) -> OpenApiRouter<Arc<Gateway>> {
    let router = health_routes()
        .routes(routes!(tokens::issue, tokens::revoke_all))
        .routes(routes!(notifications::history))
        .routes(routes!(notifications::mark_all_read))
        .routes(routes!(
            notifications::get_preferences,
            notifications::patch_preferences
        ))
        .routes(routes!(notifications::delete))
        .routes(routes!(notifications::mark_read));
    if dev_mode {
        router
            .routes(routes!(dev::mint_jwt))
            .routes(routes!(dev::publish_test))
            .routes(routes!(demo::index))
            .routes(routes!(demo::app))
            .routes(routes!(demo::styles))
    } else {
        router
    }
}

/// The internal listener's routes: publishing (other services) and metrics (Prometheus). A publisher
/// key is still required to publish; the port keeps the route and the metrics out of the public's
/// reach on top of that (a leaked key, key-guessing, what the metrics reveal about traffic).
pub fn internal_routes() -> OpenApiRouter<Arc<Gateway>> {
    health_routes()
        .routes(routes!(health::metrics))
        .routes(routes!(channels::served))
        .routes(routes!(publish::publish))
}

/// On both listeners, so that a probe or a check can use either port.
fn health_routes() -> OpenApiRouter<Arc<Gateway>> {
    OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
}
