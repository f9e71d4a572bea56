//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: not draining and every
//! dependency answers).

use std::sync::Arc;

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use crate::app::Gateway;

/// What `/healthz` answers.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Liveness {
    /// Always `ok`.
    pub status: &'static str,
}

/// What `/readyz` answers.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready`, `not_ready` (a dependency does not answer) or `draining` (shutting down).
    pub status: &'static str,
    /// Each dependency (`database`, `redis`, ...) and `ok` or `unavailable`; absent while draining.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<BTreeMap<&'static str, &'static str>>,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", operation_id = "liveness", tag = "both",
    responses((status = 200, description = "Alive", body = Liveness)))]
pub async fn healthz() -> Json<Liveness> {
    Json(Liveness { status: "ok" })
}

/// Readiness: not draining, and every dependency answers.
#[utoipa::path(get, path = "/readyz", operation_id = "readiness", tag = "both",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready, or draining", body = Readiness),
    ))]
pub async fn readyz(State(gateway): State<Arc<Gateway>>) -> (StatusCode, Json<Readiness>) {
    if gateway.lifecycle.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Readiness {
                status: "draining",
                checks: None,
            }),
        );
    }
    let mut checks = BTreeMap::new();
    let mut ready = true;
    for probe in &gateway.health {
        let outcome = match probe.check().await {
            Ok(()) => "ok",
            Err(err) => {
                ready = false;
                tracing::warn!(dependency = probe.name(), error = %err, "readiness check failed");
                "unavailable"
            }
        };
        checks.insert(probe.name(), outcome);
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let readiness = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        checks: Some(checks),
    };
    (status, Json(readiness))
}

/// This replica's metrics, in the Prometheus text format (internal listener only).
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "internal",
    responses((status = 200, description = "Every metric", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String)))]
pub async fn metrics(State(gateway): State<Arc<Gateway>>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(axum::http::header::CONTENT_TYPE, crate::app::metrics::CONTENT_TYPE)],
        gateway.render_metrics(),
    )
}
