//! The plan's "Token Issuance API" integration tests, over real sockets.

mod common;

use common::{start, start_with, user_jwt};
use herald_gateway::adapters::sqlite::{self, SqlitePreferenceStore};
use herald_gateway::domain::preferences::Preferences;
use herald_gateway::ports::PreferenceStore;
use serde_json::Value;

#[tokio::test]
async fn post_ws_token_issues_valid_token_with_user_jwt() {
    let gw = start().await;
    let response = gw.post_token(Some(&user_jwt("alice", 300))).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let token = body["token"].as_str().expect("token");
    assert_eq!(token.split('.').count(), 2, "base64url(payload).base64url(signature)");
    assert!(uuid::Uuid::parse_str(body["tokenId"].as_str().expect("tokenId")).is_ok());
    let expires_at = body["expiresAt"].as_i64().expect("expiresAt");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    assert!((now + 55_000..=now + 61_000).contains(&expires_at), "60 s TTL");
    // And it opens a WebSocket.
    assert!(gw.connect(token).await.is_ok());
}

#[tokio::test]
async fn post_ws_token_rejects_request_without_authorization_header() {
    let gw = start().await;
    let response = gw.post_token(None).await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unauthenticated");
    let basic = gw
        .http
        .post(gw.url("/ws/token"))
        .basic_auth("alice", Some("pw"))
        .send()
        .await
        .expect("send");
    assert_eq!(basic.status(), 401);
}

#[tokio::test]
async fn post_ws_token_rejects_bad_and_expired_jwts() {
    let gw = start().await;
    let expired = gw.post_token(Some(&user_jwt("alice", -120))).await;
    assert_eq!(expired.status(), 401);
    assert_eq!(
        expired.json::<Value>().await.expect("json")["error"]["code"],
        "jwt_expired"
    );

    let forged = {
        let claims = serde_json::json!({"sub": "alice", "exp": 4_000_000_000_i64});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"not-the-gateway-secret-at-all-0123456789"),
        )
        .expect("encode")
    };
    for bad in [forged.as_str(), "garbage", "a.b.c"] {
        let response = gw.post_token(Some(bad)).await;
        assert_eq!(response.status(), 401, "{bad}");
        assert_eq!(
            response.json::<Value>().await.expect("json")["error"]["code"],
            "jwt_invalid"
        );
    }
}

#[tokio::test]
async fn post_ws_token_rejects_if_user_has_opted_out() {
    let gw = start().await;
    let pool = sqlite::connect(&gw.database_url).await.expect("same database");
    let preferences = Preferences {
        in_app_enabled: false,
        ..Preferences::default()
    };
    SqlitePreferenceStore::new(pool)
        .put("opted-out", &preferences)
        .await
        .expect("store preference");

    let response = gw.post_token(Some(&user_jwt("opted-out", 300))).await;
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.json::<Value>().await.expect("json")["error"]["code"],
        "in_app_disabled"
    );
    assert_eq!(gw.post_token(Some(&user_jwt("opted-in", 300))).await.status(), 200);
}

#[tokio::test]
async fn post_ws_token_is_rate_limited_per_user_with_retry_after() {
    let gw = start().await;
    let jwt = user_jwt("alice", 300);
    for _ in 0..10 {
        assert_eq!(gw.post_token(Some(&jwt)).await.status(), 200);
    }
    let limited = gw.post_token(Some(&jwt)).await;
    assert_eq!(limited.status(), 429);
    let retry_after: i64 = limited.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(
        limited.json::<Value>().await.expect("json")["error"]["code"],
        "rate_limited"
    );
    assert_eq!(
        gw.post_token(Some(&user_jwt("bob", 300))).await.status(),
        200,
        "per user"
    );
}

#[tokio::test]
async fn delete_ws_token_revokes_all_tokens_for_user() {
    let gw = start().await;
    let older = [gw.token("alice").await, gw.token("alice").await];
    let bobs = gw.token("bob").await;
    let response = gw
        .http
        .delete(gw.url("/ws/token"))
        .bearer_auth(user_jwt("alice", 300))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(response.status(), 204);
    for token in &older {
        let refusal = gw.connect(token).await.expect_err("revoked");
        assert_eq!((refusal.status, refusal.code()), (401, "token_revoked"));
    }
    assert!(gw.connect(&bobs).await.is_ok(), "other users keep their tokens");
    let newer = gw.token("alice").await;
    assert!(
        gw.connect(&newer).await.is_ok(),
        "tokens issued after the revocation work"
    );
    let anonymous = gw.http.delete(gw.url("/ws/token")).send().await.expect("DELETE");
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn websocket_disabled_refuses_tokens_and_connections() {
    let gw = start_with(|o| o.websocket_enabled = Some(false)).await;
    let response = gw.post_token(Some(&user_jwt("alice", 300))).await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.json::<Value>().await.expect("json")["error"]["code"],
        "websocket_disabled"
    );
    let refusal = gw.connect("any-token").await.expect_err("no WebSocket while disabled");
    assert_eq!((refusal.status, refusal.code()), (503, "websocket_disabled"));
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let gw = start().await;
    let health = gw.http.get(gw.url("/healthz")).send().await.expect("healthz");
    assert_eq!(health.status(), 200);
    let ready = gw.http.get(gw.url("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.expect("json")["checks"]["sqlite"], "ok");
    gw.running.gateway.lifecycle.begin_drain();
    let draining = gw.http.get(gw.url("/readyz")).send().await.expect("readyz");
    assert_eq!(draining.status(), 503);
}
