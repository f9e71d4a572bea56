//! `GET /channels` (internal listener): the channel set this replica serves now, named by the
//! checksum the operator also computes, so that it can tell when a channel edit is live on every
//! replica (the channel's `Programmed` condition).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use crate::app::Gateway;

/// What `/channels` answers.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ServedChannels {
    /// SHA-256 (hex) of the channel entries as configured; the empty list's when none are (the
    /// default set is served).
    pub checksum: String,
    /// The channels served, in configured order.
    pub channels: Vec<String>,
}

/// The channels this replica serves now (they follow the settings file without a restart).
#[utoipa::path(get, path = "/channels", operation_id = "servedChannels", tag = "internal",
    responses((status = 200, description = "The channel set in force", body = ServedChannels)))]
pub async fn served(State(gateway): State<Arc<Gateway>>) -> Json<ServedChannels> {
    let served = gateway.catalog.served();
    Json(ServedChannels {
        checksum: served.checksum.clone(),
        channels: served.catalog.channels().iter().map(|c| c.name.clone()).collect(),
    })
}
