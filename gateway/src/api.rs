//! Which routes each listener serves, and the OpenAPI 3.1 document they make together. The document
//! is built from the same routers the listeners serve (each handler carries its description), so it
//! cannot list a route that is not served or miss one that is. It is served at `/openapi.json` on both
//! listeners and committed as `docs/openapi.json` (a test fails when that copy is stale).

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi as _};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::Gateway;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Herald gateway",
        description = "Connection tokens, the notification WebSocket, a user's notifications and \
                       preferences (public listener), and publishing and metrics (internal listener). \
                       Every refusal is `{\"error\": {\"code\", \"message\"}}`."
    ),
    tags(
        (name = "public", description = "On the public listener (`HERALD_LISTEN`, default 127.0.0.1:8080): \
                                         browsers and apps."),
        (name = "internal", description = "On the internal listener only (`HERALD_INTERNAL_LISTEN`, default \
                                           127.0.0.1:9090): other services and Prometheus. 404 on the public one."),
        (name = "both", description = "On both listeners."),
    ),
    components(responses(
        crate::http::responses::UserUnauthenticated,
        crate::http::responses::InvalidRequest,
        crate::http::responses::NotificationNotFound,
        crate::http::responses::BodyTimeout,
        crate::http::responses::BodyTooLarge,
        crate::http::responses::Unavailable,
        crate::http::responses::PublisherForbidden,
        crate::http::responses::PublisherRateLimited,
    )),
    modifiers(&Credentials),
)]
struct ApiDoc;

/// The two bearer credentials: a user's JWT (public routes) and a publisher key (`/api/publish`).
struct Credentials;

impl Modify for Credentials {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |format: Option<&str>, description: &str| {
            let mut scheme = HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(description));
            if let Some(format) = format {
                scheme = scheme.bearer_format(format);
            }
            SecurityScheme::Http(scheme.build())
        };
        components.add_security_scheme(
            "userJwt",
            bearer(
                Some("JWT"),
                "A user's JWT from the identity provider (verified against its JWKS, issuer and audience).",
            ),
        );
        components.add_security_scheme(
            "publisherKey",
            bearer(None, "A publisher key (`HERALD_PUBLISHER_KEYS`)."),
        );
    }
}

/// The public listener's routes, documented.
pub fn public_api(dev_mode: bool) -> OpenApiRouter<Arc<Gateway>> {
    crate::http::public_routes(dev_mode)
        .routes(routes!(crate::ws::upgrade::upgrade))
        .routes(routes!(openapi_json))
}

/// The internal listener's routes, documented.
pub fn internal_api() -> OpenApiRouter<Arc<Gateway>> {
    crate::http::internal_routes().routes(routes!(openapi_json))
}

/// Every route of both listeners. `dev_mode` adds `/dev/jwt`, `/dev/publish` and the demo (`/`,
/// `/demo/app.js`, `/demo/styles.css`); the committed document has no dev routes.
pub fn document(dev_mode: bool) -> OpenApi {
    let mut document = ApiDoc::openapi();
    document.merge(public_api(dev_mode).into_openapi());
    document.merge(internal_api().into_openapi());
    document
}

/// [`document`] as pretty JSON with a final newline: what `/openapi.json` serves and
/// `herald-gateway openapi` prints.
pub fn render(dev_mode: bool) -> String {
    let mut json = document(dev_mode)
        .to_pretty_json()
        .expect("an OpenAPI document always serializes");
    json.push('\n');
    json
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi", tag = "both",
    responses((status = 200, description = "The OpenAPI 3.1 document of every route", content_type = "application/json")))]
async fn openapi_json(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    // Rendered once per process (per mode): the document never changes while it runs.
    static RENDERED: [OnceLock<String>; 2] = [const { OnceLock::new() }, const { OnceLock::new() }];
    let dev_mode = gateway.dev.is_some();
    let json = RENDERED[usize::from(dev_mode)].get_or_init(|| render(dev_mode));
    ([(header::CONTENT_TYPE, "application/json")], json.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMITTED: &str = include_str!("../../docs/openapi.json");

    #[test]
    fn the_committed_document_is_the_generated_one() {
        assert!(
            COMMITTED == render(false),
            "docs/openapi.json is stale: run `cargo run -p herald-gateway -- openapi > docs/openapi.json`"
        );
    }

    #[test]
    fn every_route_of_both_listeners_is_documented_and_dev_routes_only_in_dev_mode() {
        let paths = |dev| -> Vec<String> { document(dev).paths.paths.into_keys().collect() };
        let production = paths(false);
        for path in [
            "/healthz",
            "/readyz",
            "/ws/token",
            "/notifications",
            "/notifications/read-all",
            "/notifications/preferences",
            "/notifications/{id}",
            "/notifications/{id}/read",
            "/ws",
            "/openapi.json",
            "/metrics",
            "/api/publish",
        ] {
            assert!(
                production.contains(&path.to_owned()),
                "{path} missing from {production:?}"
            );
        }
        assert!(!production.contains(&"/dev/jwt".to_owned()));
        assert!(paths(true).contains(&"/dev/jwt".to_owned()));
        let json: serde_json::Value = serde_json::from_str(&render(false)).expect("JSON");
        assert_eq!(json["openapi"], "3.1.0");
    }
}
