//! Publish bodies: the bytes of `POST /api/publish` through the same extraction and validation the
//! handler and `NotificationService::publish` use (`http::json::JsonBody<PublishBody>`, then
//! `PublishRequest::parse`), and the idempotency fingerprint of what was accepted.
//!
//! Asserts, for any input:
//! - nothing panics, and a refused body is a 400 (never a 408, 413 or 500: the body is all there
//!   and far below the size limit);
//! - an accepted request respects every documented limit (docs/protocol.md, AC15): 1-1000 distinct
//!   recipients of 1-255 bytes without control characters, in the body's order; a known type; a
//!   trimmed title of 1-255 characters without control characters; a body of at most 4 KiB without
//!   control characters but newline and tab; an icon of at most 255 characters; an action URL that
//!   is a relative path or an https URL with a host and no credentials, of at most 2048 characters;
//!   `data` an object of at most 16 KiB of JSON; `expiresAt` after now; no unknown field anywhere.
//!   These are read back from the raw JSON, not from the code under test.

#![no_main]

use std::collections::HashSet;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use herald_fuzz::{NOW, block_on};
use herald_gateway::domain::link::{LinkPolicy, MAX_ACTION_URL_CHARS, MAX_ICON_CHARS};
use herald_gateway::domain::notification::{MAX_BODY_BYTES, MAX_DATA_BYTES, MAX_TITLE_CHARS, NotificationType};
use herald_gateway::domain::publish::{MAX_RECIPIENTS, PublishBody, PublishRequest};
use herald_gateway::http::JsonBody;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let request = Request::post("/api/publish")
        .body(Body::from(data.to_vec()))
        .expect("a request with a body");
    let body = match block_on(JsonBody::<PublishBody>::from_request(request, &())) {
        Ok(JsonBody(body)) => body,
        Err(rejection) => {
            let status = rejection.into_response().status();
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "a small body was refused with {status}"
            );
            return;
        }
    };
    let Ok(request) = PublishRequest::parse(body, NOW, &LinkPolicy::default()) else {
        return;
    };
    assert_eq!(request.fingerprint().len(), 64, "a SHA-256 in hex");

    // Accepted: check it against the raw JSON. The extractor read it, so it is a JSON object.
    let raw: Value = serde_json::from_slice(data).expect("accepted bodies are JSON");
    let raw = raw.as_object().expect("accepted bodies are objects");
    assert!(
        raw.keys().all(|k| k == "userIds" || k == "notification"),
        "accepted unknown fields: {raw:?}"
    );

    let ids = raw["userIds"].as_array().expect("userIds is an array");
    assert!((1..=MAX_RECIPIENTS).contains(&ids.len()), "{} recipients", ids.len());
    let mut seen = HashSet::new();
    let expected: Vec<&str> = ids
        .iter()
        .map(|id| id.as_str().expect("user ids are strings"))
        .filter(|id| seen.insert(*id))
        .collect();
    assert_eq!(
        request.user_ids, expected,
        "recipients are the body's, deduplicated in order"
    );
    for id in &request.user_ids {
        assert!((1..=255).contains(&id.len()), "user id of {} bytes", id.len());
        assert!(!id.chars().any(char::is_control), "control character in user id {id:?}");
    }

    let notification = raw["notification"].as_object().expect("notification is an object");
    const KNOWN: [&str; 8] = [
        "type",
        "title",
        "body",
        "icon",
        "actionUrl",
        "data",
        "expiresAt",
        "channel",
    ];
    assert!(
        notification.keys().all(|k| KNOWN.contains(&k.as_str())),
        "accepted unknown notification fields: {notification:?}"
    );
    let content = &request.content;
    assert_eq!(Some(content.kind.as_str()), notification["type"].as_str());
    assert!(NotificationType::ALL.contains(&content.kind));

    let title = &content.title;
    assert_eq!(Some(title.as_str()), notification["title"].as_str().map(str::trim));
    assert!(
        !title.is_empty() && title.chars().count() <= MAX_TITLE_CHARS,
        "title {title:?}"
    );
    assert!(
        !title.chars().any(char::is_control),
        "control character in title {title:?}"
    );

    if let Some(body) = &content.body {
        assert!(body.len() <= MAX_BODY_BYTES, "body of {} bytes", body.len());
        assert!(
            !body.chars().any(|c| c.is_control() && c != '\n' && c != '\t'),
            "control character in body {body:?}"
        );
    }
    if let Some(icon) = &content.icon {
        assert!(
            icon.chars().count() <= MAX_ICON_CHARS,
            "icon of {} characters",
            icon.chars().count()
        );
        assert!(
            !icon.chars().any(char::is_control),
            "control character in icon {icon:?}"
        );
    }
    if let Some(url) = &content.action_url {
        assert!(
            url.chars().count() <= MAX_ACTION_URL_CHARS,
            "action URL of {} characters",
            url.len()
        );
        assert!(safe_link(url), "unsafe action URL {url:?}");
    }
    if let Some(data) = &content.data {
        let size = serde_json::to_vec(data).expect("JSON").len();
        assert!(size <= MAX_DATA_BYTES, "data of {size} bytes");
    }
    if let Some(at) = content.expires_at {
        assert!(at > NOW, "expiresAt {at} is not after now");
    }
});

/// A relative path (not protocol-relative) or an https URL with a host and no user info, and
/// nothing a browser could be made to read otherwise: no whitespace, control characters or
/// backslashes.
fn safe_link(url: &str) -> bool {
    if url.chars().any(|c| c.is_whitespace() || c.is_control() || c == '\\') {
        return false;
    }
    match url.strip_prefix("https://") {
        Some(rest) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            !authority.is_empty() && !authority.contains('@')
        }
        None => url.starts_with('/') && !url.starts_with("//"),
    }
}
