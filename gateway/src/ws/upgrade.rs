//! `GET /ws`: every check happens before the upgrade, so a refused client gets an HTTP status with a
//! JSON error and no WebSocket is ever opened.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::app::{ConnectRequest, Gateway};
use crate::http::ApiError;
use crate::http::client_ip::client_ip;
use crate::http::params::QueryParams;

use super::{SUBPROTOCOL, TOKEN_PROTOCOL_PREFIX, session};

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UpgradeQuery {
    /// A connection token from `POST /ws/token`. Better sent as the subprotocol
    /// `token.<token>` beside `herald.v1`, which keeps it out of URLs and access logs.
    token: Option<String>,
}

/// Opens the notification WebSocket (subprotocol `herald.v1`; messages in docs/protocol.md). Every
/// check happens before the upgrade: a refused client gets a status and a JSON error.
#[utoipa::path(get, path = "/ws", operation_id = "openWebSocket", tag = "public", params(UpgradeQuery),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol"),
        (status = 400, description = "A malformed query string (a repeated `token`)", body = crate::http::error::ErrorBody),
        (status = 401, description = "A missing, invalid, used or expired connection token", body = crate::http::error::ErrorBody),
        (status = 403, description = "The page's origin may not connect here (`HERALD_ALLOWED_ORIGINS`)", body = crate::http::error::ErrorBody),
        (status = 426, description = "Not a WebSocket upgrade request", body = crate::http::error::ErrorBody),
        (status = 429, description = "Too many connections for this user", body = crate::http::error::ErrorBody),
        (status = 503, description = "WebSocket delivery is switched off, the replica is draining, or a dependency is unavailable", body = crate::http::error::ErrorBody),
    ))]
pub async fn upgrade(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    QueryParams(query): QueryParams<UpgradeQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // Asked first, as before any other check (the decision itself is the token service's).
    if let Err(err) = gateway.tokens.ensure_websocket_enabled() {
        gateway.metrics.count_rejection(err.code());
        return ApiError::from(err).into_response();
    }
    if gateway.lifecycle.is_draining() {
        gateway.metrics.count_rejection("draining");
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this replica is shutting down, reconnect",
        )
        .into_response();
    }
    // Before the token is looked at: a page of another site gets nothing, not even a token check.
    let origin = headers.get(header::ORIGIN).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    if !gateway.allowed_origins.allows(origin) {
        gateway.metrics.count_rejection("origin_not_allowed");
        tracing::info!(origin = ?origin, "websocket:rejected (origin not allowed)");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this page's origin may not open a WebSocket here",
        )
        .into_response();
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return ApiError::new(StatusCode::UPGRADE_REQUIRED, "upgrade_required", rejection.body_text())
                .into_response();
        }
    };
    // The subprotocol form keeps the token out of URLs and so out of access logs.
    let token = query
        .token
        .or_else(|| token_from_protocols(&headers))
        .unwrap_or_default();
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let request = ConnectRequest {
        client_ip: client_ip(peer.ip(), &headers, &gateway.trusted_proxies),
        token: &token,
        user_agent,
    };
    let record = match gateway.connections.connect(request).await {
        Ok(record) => record,
        Err(err) => return ApiError::from(err).into_response(),
    };
    let settings = gateway.session_settings;
    let (connection_id, user_id) = (record.connection_id.clone(), record.user_id.clone());
    // Boxed until the upgrade completes: axum keeps the callback's captures for the whole session,
    // so a record captured inline would be held twice by every idle connection.
    let record = Box::new(record);
    let on_failure = gateway.clone();
    let tasks = gateway.lifecycle.tasks.clone();
    upgrade
        .protocols([SUBPROTOCOL])
        .max_message_size(settings.max_message_bytes)
        .max_frame_size(settings.max_message_bytes)
        .read_buffer_size(settings.read_buffer_bytes)
        // Frames go out as soon as they are written; no per-connection write buffer is kept.
        .write_buffer_size(0)
        .on_failed_upgrade(move |err| {
            tracing::warn!(connection_id = %connection_id, error = %err, "websocket:upgrade-failed");
            let tasks = on_failure.lifecycle.tasks.clone();
            tasks.spawn(async move {
                let _ = on_failure
                    .connections
                    .disconnect(&user_id, &connection_id, "upgrade failed")
                    .await;
            });
        })
        .on_upgrade(move |socket| tasks.track_future(session::run(gateway, *record, socket)))
}

fn token_from_protocols(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| p.strip_prefix(TOKEN_PROTOCOL_PREFIX))
        .map(str::to_owned)
}
