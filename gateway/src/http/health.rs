//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: not draining and every
//! dependency answers).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::app::Gateway;

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(gateway): State<Arc<Gateway>>) -> (StatusCode, Json<Value>) {
    if gateway.lifecycle.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "draining"})));
    }
    let mut checks = serde_json::Map::new();
    let mut ready = true;
    for probe in &gateway.health {
        let outcome = match probe.check().await {
            Ok(()) => "ok".to_owned(),
            Err(err) => {
                ready = false;
                tracing::warn!(dependency = probe.name(), error = %err, "readiness check failed");
                "unavailable".to_owned()
            }
        };
        checks.insert(probe.name().to_owned(), outcome.into());
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"status": if ready { "ready" } else { "not_ready" }, "checks": checks})),
    )
}

/// Prometheus metrics of this replica.
pub async fn metrics(State(gateway): State<Arc<Gateway>>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(axum::http::header::CONTENT_TYPE, crate::app::metrics::CONTENT_TYPE)],
        gateway.metrics.render(gateway.sessions.len()),
    )
}
