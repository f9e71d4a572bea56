//! Dev mode only: the notification center demo (clients/js/demo) at `/`, so that the first command
//! of the README shows notifications arriving in a browser. The built demo is committed and embedded
//! in the binary: no npm is needed to see it.

use axum::http::{HeaderName, header};

/// Scripts and styles from this origin only, connections to it only (HTTP and WebSocket), no
/// frames: the demo needs nothing else, and a notification's text could not run even if a bug
/// rendered it as HTML.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const INDEX: &str = include_str!("../../../clients/js/demo/dist/index.html");
const APP: &str = include_str!("../../../clients/js/demo/dist/app.js");
const STYLES: &str = include_str!("../../../clients/js/demo/dist/styles.css");

type Page = ([(HeaderName, &'static str); 3], &'static str);

/// The demo page.
#[utoipa::path(get, path = "/", operation_id = "demo", tag = "public",
    responses((status = 200, description = "The demo page (dev mode only)", content_type = "text/html")))]
pub async fn index() -> Page {
    asset("text/html; charset=utf-8", INDEX)
}

/// The demo's script.
#[utoipa::path(get, path = "/demo/app.js", operation_id = "demoScript", tag = "public",
    responses((status = 200, description = "The demo's script (dev mode only)", content_type = "text/javascript")))]
pub async fn app() -> Page {
    asset("text/javascript; charset=utf-8", APP)
}

/// The demo's styles.
#[utoipa::path(get, path = "/demo/styles.css", operation_id = "demoStyles", tag = "public",
    responses((status = 200, description = "The demo's styles (dev mode only)", content_type = "text/css")))]
pub async fn styles() -> Page {
    asset("text/css; charset=utf-8", STYLES)
}

fn asset(content_type: &'static str, body: &'static str) -> Page {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}
