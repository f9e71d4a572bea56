//! End-to-end tests of the real `herald-gateway` binary: start-up, configuration by environment and
//! files, logs, the token -> WebSocket path, and shutdown on SIGTERM.

use std::time::Duration;

use futures_util::SinkExt;
use herald_e2e::{GatewayProcess, JWT_ISSUER_AND_AUDIENCE, TempDir, await_close, ping_message, recv_json, run_to_exit};
use serde_json::Value;

const JWT_SECRET: &str = "e2e-user-jwt-secret-0123456789-abcdefghij";
const TOKEN_SECRET: &str = "e2e-token-secret-0123456789-ABCDEFGHIJKL";

fn user_jwt(sub: &str) -> String {
    herald_e2e::hs256_jwt(JWT_SECRET, sub, 300, &[])
}

fn production_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("HERALD_JWT_HS256_SECRET", JWT_SECRET),
        JWT_ISSUER_AND_AUDIENCE[0],
        JWT_ISSUER_AND_AUDIENCE[1],
        ("WEBSOCKET_TOKEN_SECRET", TOKEN_SECRET),
    ]
}

async fn issue(gateway: &GatewayProcess, jwt: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(gateway.url("/ws/token"))
        .bearer_auth(jwt)
        .send()
        .await
        .expect("POST /ws/token")
}

async fn token(gateway: &GatewayProcess, jwt: &str) -> Value {
    let response = issue(gateway, jwt).await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

async fn connect(gateway: &GatewayProcess, token: &str) -> herald_e2e::Ws {
    gateway.open_ws(token).await.expect("websocket opens").0
}

fn payload_kid(token: &str) -> String {
    use base64::Engine;
    let payload = token.split('.').next().expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    let claims: Value = serde_json::from_slice(&bytes).expect("json");
    claims["kid"].as_str().expect("kid").to_owned()
}

#[tokio::test]
async fn dev_mode_starts_on_the_embedded_default_and_serves_the_whole_path() {
    let gateway = GatewayProcess::start(&["--dev"], &[]);
    let listening = gateway.wait_for_line(|l| l.contains("gateway:listening"));
    assert!(
        listening.contains(&format!("internal=http://{}", gateway.internal_addr)),
        "{listening}"
    );
    gateway.wait_for_line(|l| l.contains("/dev/jwt"));
    let issued = token(&gateway, &gateway.dev_jwt("alice").await).await;
    let mut ws = connect(&gateway, issued["token"].as_str().expect("token")).await;
    ws.send(ping_message()).await.expect("ping");
    assert_eq!(recv_json(&mut ws).await["type"], "pong");
    // The banner also prints a dev publisher key: publish with it and receive the notification live.
    let line = gateway.wait_for_line(|l| l.contains("publish: curl"));
    assert!(
        line.contains(&gateway.internal_url("/api/publish")),
        "the hint publishes on the internal listener: {line}"
    );
    let key = line
        .split("Bearer ")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("publisher key");
    let published = reqwest::Client::new()
        .post(gateway.internal_url("/api/publish"))
        .bearer_auth(key)
        .json(&serde_json::json!({"userIds": ["alice"], "notification": {"type": "new_like", "title": "Hello"}}))
        .send()
        .await
        .expect("publish");
    assert_eq!(published.status(), 202);
    let notification = loop {
        let message = recv_json(&mut ws).await;
        if message["type"] == "notification" {
            break message;
        }
    };
    assert_eq!(notification["payload"]["title"], "Hello");
    let readiness: Value = reqwest::get(gateway.url("/readyz"))
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(readiness["checks"]["sqlite"], "ok");
}

#[tokio::test]
async fn without_dev_mode_missing_or_weak_secrets_refuse_to_start() {
    let (status, output) = run_to_exit(&[], &[]);
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(
        output.contains("HERALD_JWT_JWKS_URL") && output.contains("--dev"),
        "{output}"
    );

    let jwt_only = [
        ("HERALD_JWT_HS256_SECRET", JWT_SECRET),
        JWT_ISSUER_AND_AUDIENCE[0],
        JWT_ISSUER_AND_AUDIENCE[1],
    ];
    let (status, output) = run_to_exit(&[], &jwt_only);
    assert_eq!(status.code(), Some(2));
    assert!(output.contains("WEBSOCKET_TOKEN_SECRET"), "{output}");

    let weak = [
        ("HERALD_JWT_HS256_SECRET", JWT_SECRET),
        JWT_ISSUER_AND_AUDIENCE[0],
        JWT_ISSUER_AND_AUDIENCE[1],
        ("WEBSOCKET_TOKEN_SECRET", "changeme"),
    ];
    let (status, output) = run_to_exit(&[], &weak);
    assert_eq!(status.code(), Some(2));
    assert!(output.contains("too short"), "{output}");

    let cluster = [("HERALD_DEV", "true"), ("REDIS_URL", "redis://127.0.0.1:6379")];
    let (status, output) = run_to_exit(&[], &cluster);
    assert_eq!(status.code(), Some(2));
    assert!(output.contains("REDIS_URL"), "{output}");
}

#[tokio::test]
async fn sigterm_closes_connections_with_going_away_and_exits_within_the_grace_period() {
    let mut gateway = GatewayProcess::start(&[], &production_env());
    let issued = token(&gateway, &user_jwt("alice")).await;
    let mut ws = connect(&gateway, issued["token"].as_str().expect("token")).await;
    gateway.terminate();
    let (code, reason) = await_close(&mut ws).await.expect("close frame");
    assert_eq!(code, 1001);
    assert!(reason.contains("reconnect"), "{reason}");
    let status = gateway.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    gateway.wait_for_line(|l| l.contains("gateway:stopped"));
}

#[tokio::test]
async fn json_logs_carry_the_plan_events() {
    let mut env = production_env();
    env.push(("HERALD_LOG_FORMAT", "json"));
    let gateway = GatewayProcess::start(&[], &env);
    let listening: Value =
        serde_json::from_str(&gateway.wait_for_line(|l| l.contains("gateway:listening"))).expect("JSON log line");
    assert_eq!(listening["address"], format!("http://{}", gateway.addr));
    assert_eq!(listening["internal"], format!("http://{}", gateway.internal_addr));
    let issued = token(&gateway, &user_jwt("alice")).await;
    let mut ws = connect(&gateway, issued["token"].as_str().expect("token")).await;
    ws.close(None).await.expect("close");
    let disconnected = gateway.wait_for_line(|l| l.contains("websocket:disconnected"));
    let connected = gateway.wait_for_line(|l| l.contains("websocket:connected"));
    let connected: Value = serde_json::from_str(&connected).expect("JSON log line");
    let disconnected: Value = serde_json::from_str(&disconnected).expect("JSON log line");
    assert_eq!(connected["user_id"], "alice");
    assert_eq!(connected["connection_id"], disconnected["connection_id"]);
    assert!(
        disconnected["reason"].as_str().is_some_and(|r| r.contains("client")),
        "{disconnected}"
    );
    // A refused connection is logged with its reason.
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws?token=bogus", gateway.addr)).await;
    assert!(refused.is_err());
    let rejected: Value =
        serde_json::from_str(&gateway.wait_for_line(|l| l.contains("websocket:rejected"))).expect("JSON log line");
    assert_eq!(rejected["code"], "token_invalid");
    for line in gateway.lines() {
        assert!(serde_json::from_str::<Value>(&line).is_ok(), "not JSON: {line}");
        assert!(
            !line.contains(TOKEN_SECRET) && !line.contains(JWT_SECRET),
            "secret in logs: {line}"
        );
    }
}

#[tokio::test]
async fn plan_environment_variables_and_the_yaml_file_configure_limits() {
    let dir = TempDir::new();
    let config = dir.path("herald.yaml");
    std::fs::write(&config, "max_connections_per_user: 1\nmax_tokens_per_minute: 2\n").expect("write");
    let mut env = production_env();
    let config_path = config.to_string_lossy().into_owned();
    env.push(("HERALD_CONFIG", &config_path));
    // The environment wins over the file.
    env.push(("WEBSOCKET_MAX_TOKENS_PER_MINUTE", "3"));
    let gateway = GatewayProcess::start(&[], &env);
    let jwt = user_jwt("alice");
    let first = token(&gateway, &jwt).await;
    let second = token(&gateway, &jwt).await;
    let _third = token(&gateway, &jwt).await;
    assert_eq!(
        issue(&gateway, &jwt).await.status(),
        429,
        "three per minute from the environment"
    );
    let _ws = connect(&gateway, first["token"].as_str().expect("token")).await;
    let refused = tokio_tungstenite::connect_async(format!(
        "ws://{}/ws?token={}",
        gateway.addr,
        second["token"].as_str().expect("token")
    ))
    .await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429)
        }
        other => panic!("second connection must be refused by the YAML cap of 1, got {other:?}"),
    }
}

/// An RFC 3339 instant `hours` before now.
fn hours_ago(hours: i64) -> String {
    let at = time::OffsetDateTime::now_utc() - time::Duration::hours(hours);
    at.format(&time::format_description::well_known::Rfc3339)
        .expect("RFC 3339")
}

#[tokio::test]
async fn signing_keys_file_is_used_and_reloaded_when_it_changes() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let dir = TempDir::new();
    let keys = dir.path("keys.json");
    // Both keys are already in force whatever the date the test runs on.
    let k1_since = hours_ago(2);
    let k2_since = hours_ago(1);
    let k1 = format!(
        r#"{{"keys":[{{"kid":"k1","secret":"{}","notBefore":"{k1_since}"}}]}}"#,
        b64(TOKEN_SECRET)
    );
    std::fs::write(&keys, &k1).expect("write keys");
    let keys_path = keys.to_string_lossy().into_owned();
    let env = [
        ("HERALD_JWT_HS256_SECRET", JWT_SECRET),
        JWT_ISSUER_AND_AUDIENCE[0],
        JWT_ISSUER_AND_AUDIENCE[1],
        ("HERALD_SIGNING_KEYS_FILE", keys_path.as_str()),
    ];
    let gateway = GatewayProcess::start(&[], &env);
    let jwt = user_jwt("alice");
    let before = token(&gateway, &jwt).await;
    let before = before["token"].as_str().expect("token").to_owned();
    assert_eq!(payload_kid(&before), "k1");

    // Rotation: a second key, already in force, is added; the first stays for the grace period.
    let k2 = format!(
        r#"{{"keys":[{{"kid":"k1","secret":"{}","notBefore":"{k1_since}"}},{{"kid":"k2","secret":"{}","notBefore":"{k2_since}"}}]}}"#,
        b64(TOKEN_SECRET),
        b64("a-brand-new-rotated-secret-0123456789-xyz")
    );
    std::fs::write(&keys, &k2).expect("rewrite keys");
    gateway.wait_for_line(|l| l.contains("signing-keys:reloaded"));
    let after = token(&gateway, &jwt).await;
    assert_eq!(payload_kid(after["token"].as_str().expect("token")), "k2");
    // The token signed before the rotation still connects.
    let _ws = connect(&gateway, &before).await;
}

#[tokio::test]
async fn migrate_needs_only_the_database_settings() {
    let dir = TempDir::new();
    let database = format!("sqlite://{}", dir.path("migrated.db").display());
    // No user JWT, signing key or publisher settings at all.
    let (status, output) = run_to_exit(&["migrate"], &[("DATABASE_URL", database.as_str())]);
    assert!(status.success(), "{output}");
    assert!(output.contains("migrations:applied"), "{output}");
    assert!(
        dir.path("migrated.db").exists(),
        "the database was created and migrated"
    );
    let (status, output) = run_to_exit(&["migrate"], &[("DATABASE_URL", "mysql://root:pw@db/x")]);
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("DATABASE_URL must be"), "{output}");
    assert!(!output.contains(":pw@"), "no password in the message: {output}");
}

#[tokio::test]
async fn check_config_prints_the_effective_configuration_without_secrets() {
    let (status, output) = run_to_exit(&["check-config"], &production_env());
    assert!(status.success(), "{output}");
    assert!(!output.contains(TOKEN_SECRET) && !output.contains(JWT_SECRET));
    let start = output.find('{').expect("json");
    let config: Value = serde_json::from_str(&output[start..]).expect("json");
    assert_eq!(config["maxConnectionsPerUser"], 5);
    assert_eq!(config["tokenTtlMs"], 60_000);
}

/// The OpenAPI document as committed (docs/openapi.json).
const COMMITTED_OPENAPI: &str = include_str!("../../docs/openapi.json");

#[tokio::test]
async fn the_openapi_document_is_served_on_both_listeners_and_printed_as_committed() {
    let gateway = GatewayProcess::start(&[], &production_env());
    let http = reqwest::Client::new();
    for url in [gateway.url("/openapi.json"), gateway.internal_url("/openapi.json")] {
        let response = http.get(&url).send().await.expect("GET /openapi.json");
        assert_eq!(response.status(), 200, "{url}");
        assert_eq!(response.headers()["content-type"], "application/json", "{url}");
        assert_eq!(response.text().await.expect("body"), COMMITTED_OPENAPI, "{url}");
    }
    let (status, printed) = run_to_exit(&["openapi"], &[]);
    assert!(status.success(), "{printed}");
    assert_eq!(printed.trim_end(), COMMITTED_OPENAPI.trim_end());

    // Dev mode serves its extra route, and documents it.
    let dev = GatewayProcess::start(&["--dev"], &[]);
    let document: Value = http
        .get(dev.url("/openapi.json"))
        .send()
        .await
        .expect("GET /openapi.json")
        .json()
        .await
        .expect("json");
    assert!(document["paths"]["/dev/jwt"]["post"].is_object());
    assert!(serde_json::from_str::<Value>(COMMITTED_OPENAPI).expect("json")["paths"]["/dev/jwt"].is_null());
}

#[tokio::test]
async fn refusals_from_the_router_and_the_extractors_are_json_errors_too() {
    let gateway = GatewayProcess::start(&["--dev"], &[]);
    let http = reqwest::Client::new();
    let code = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        let allow = response
            .headers()
            .get("allow")
            .map(|v| v.to_str().expect("ascii").to_owned());
        let body: Value = response.json().await.expect("a JSON body");
        (
            status,
            body["error"]["code"].as_str().expect("error.code").to_owned(),
            allow,
        )
    };
    // A known path with another method: 405 with `Allow`.
    let (status, error, allow) = code(http.put(gateway.url("/healthz")).send().await.expect("PUT")).await;
    assert_eq!((status, error.as_str()), (405, "method_not_allowed"));
    assert!(allow.is_some_and(|a| a.contains("GET")));
    // A query string axum cannot read (a repeated field): 400 like every validation failure.
    let jwt: Value = http
        .post(gateway.url("/dev/jwt?sub=alice"))
        .send()
        .await
        .expect("mint")
        .json()
        .await
        .expect("json");
    let jwt = jwt["jwt"].as_str().expect("jwt");
    let repeated = http
        .get(gateway.url("/notifications?unread=true&unread=false"))
        .bearer_auth(jwt)
        .send()
        .await
        .expect("GET");
    assert_eq!(code(repeated).await.0, 400);
    let (status, error, _) = code(
        http.get(gateway.url("/ws?token=a&token=b"))
            .send()
            .await
            .expect("GET /ws"),
    )
    .await;
    assert_eq!((status, error.as_str()), (400, "validation_failed"));
    // An id that is not UTF-8 once percent-decoded.
    let (status, error, _) = code(
        http.post(gateway.url("/notifications/%FF/read"))
            .bearer_auth(jwt)
            .send()
            .await
            .expect("POST"),
    )
    .await;
    assert_eq!((status, error.as_str()), (400, "validation_failed"));
}

#[tokio::test]
async fn dev_mode_serves_the_demo_and_publishes_as_the_dev_publisher_and_production_does_neither() {
    let dev = GatewayProcess::start(&["--dev"], &[]);
    let http = reqwest::Client::new();
    let page = http.get(dev.url("/")).send().await.expect("GET /");
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        policy.contains("script-src 'self'") && policy.contains("connect-src 'self'"),
        "{policy}"
    );
    assert!(page.text().await.expect("body").contains("/demo/app.js"));
    for (path, content_type) in [
        ("/demo/app.js", "text/javascript; charset=utf-8"),
        ("/demo/styles.css", "text/css; charset=utf-8"),
    ] {
        let asset = http.get(dev.url(path)).send().await.expect("GET");
        assert_eq!(asset.status(), 200, "{path}");
        assert_eq!(asset.headers()["content-type"], content_type, "{path}");
    }
    let published = http
        .post(dev.url("/dev/publish"))
        .json(&serde_json::json!({"userIds": ["alice"], "notification": {"type": "new_like", "title": "Hi"}}))
        .send()
        .await
        .expect("POST /dev/publish");
    assert_eq!(published.status(), 202);
    let receipt: Value = published.json().await.expect("json");
    assert_eq!(receipt["created"][0]["userId"], "alice");
    let refused = http
        .post(dev.url("/dev/publish"))
        .json(&serde_json::json!({"userIds": [], "notification": {}}))
        .send()
        .await
        .expect("POST /dev/publish");
    assert_eq!(refused.status(), 400, "the same validation as /api/publish");
    // What a page of another site could send without a preflight is refused.
    let plain = http
        .post(dev.url("/dev/publish"))
        .header("content-type", "text/plain")
        .body(r#"{"userIds": ["alice"], "notification": {"type": "new_like", "title": "Hi"}}"#)
        .send()
        .await
        .expect("POST /dev/publish");
    assert_eq!(plain.status(), 415);

    let production = GatewayProcess::start(&[], &production_env());
    for path in ["/", "/demo/app.js"] {
        let response = http.get(production.url(path)).send().await.expect("GET");
        assert_eq!(response.status(), 404, "{path}");
    }
    let response = http
        .post(production.url("/dev/publish"))
        .json(&serde_json::json!({"userIds": ["alice"], "notification": {"type": "new_like", "title": "Hi"}}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 404);
}
