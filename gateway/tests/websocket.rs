//! The plan's "WebSocket Integration" tests and the connection lifecycle, over real sockets.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TOKEN_SECRET, await_close, client_message, connect_request, ping, recv_json, send, start, start_with};
use futures_util::{SinkExt, StreamExt};
use herald_gateway::adapters::clock::ManualClock;
use herald_gateway::domain::token::{ConnectionClaims, SigningKey, SigningKeys};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn claims(user_id: &str, issued_at: i64) -> ConnectionClaims {
    ConnectionClaims {
        kid: String::new(),
        user_id: user_id.into(),
        issued_at,
        expires_at: issued_at + 60_000,
        token_id: uuid::Uuid::new_v4(),
        allowed_channels: None,
    }
}

/// A token signed with the gateway's real secret but with the claims a test chooses.
fn signed_token(claims: ConnectionClaims) -> String {
    let secret = TOKEN_SECRET.as_bytes();
    let key = SigningKey::new(SigningKey::derived_kid(secret), secret.to_vec(), 0).expect("key");
    let keys = SigningKeys::new(vec![key]).expect("keys");
    keys.sign(claims, now_ms()).expect("sign").0
}

#[tokio::test]
async fn should_establish_connection_with_valid_connection_token() {
    let gw = start().await;
    let (mut ws, connected) = gw.connect_user("alice").await;
    let connection_id = connected["payload"]["connectionId"].as_str().expect("id").to_owned();
    assert_eq!(connected["payload"]["userId"], "alice");
    assert_eq!(connected["payload"]["heartbeatIntervalMs"], 30_000);
    let record = gw
        .running
        .gateway
        .connections
        .get("alice", &connection_id)
        .await
        .expect("get")
        .expect("registered");
    assert_eq!(record.user_id, "alice");
    assert!(uuid::Uuid::parse_str(&record.token_id).is_ok());
    ping(&mut ws).await;
}

#[tokio::test]
async fn token_in_sec_websocket_protocol_is_accepted_and_herald_v1_is_answered() {
    let gw = start().await;
    let token = gw.token("alice").await;
    let mut request = format!("ws://{}/ws", gw.addr).into_client_request().expect("request");
    let protocols = HeaderValue::from_str(&format!("herald.v1, token.{token}")).expect("header");
    request.headers_mut().insert("sec-websocket-protocol", protocols);
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.expect("connects");
    assert_eq!(response.headers()["sec-websocket-protocol"], "herald.v1");
    assert_eq!(recv_json(&mut ws).await["type"], "connected");
}

#[tokio::test]
async fn should_reject_connection_with_expired_token() {
    let gw = start().await;
    let expired = signed_token(claims("alice", now_ms() - 120_000));
    let refusal = gw.connect(&expired).await.expect_err("expired");
    assert_eq!((refusal.status, refusal.code()), (401, "token_expired"));
    gw.await_connection_count("alice", 0).await;
}

#[tokio::test]
async fn should_reject_reuse_of_same_token() {
    let gw = start().await;
    let token = gw.token("alice").await;
    let _first = gw.connect(&token).await.expect("first use");
    let refusal = gw.connect(&token).await.expect_err("second use");
    assert_eq!((refusal.status, refusal.code()), (401, "token_used"));
    gw.await_connection_count("alice", 1).await;
}

#[tokio::test]
async fn rejects_forged_signature_and_garbage_tokens() {
    let gw = start().await;
    let token = gw.token("alice").await;
    let (payload, _) = token.split_once('.').expect("two parts");
    let forged = format!("{payload}.{}", "A".repeat(43));
    let refusal = gw.connect(&forged).await.expect_err("forged");
    assert_eq!((refusal.status, refusal.code()), (401, "token_invalid"));
    let refusal = gw.connect("not-a-token").await.expect_err("garbage");
    assert_eq!((refusal.status, refusal.code()), (401, "token_invalid"));
    let refusal = gw.connect(&"x".repeat(5_000)).await.expect_err("oversized");
    assert_eq!((refusal.status, refusal.code()), (401, "token_invalid"));
    let missing = connect_request(format!("ws://{}/ws", gw.addr).into_client_request().expect("req")).await;
    assert_eq!(missing.expect_err("no token").code(), "token_invalid");
    // A token signed with another secret, same claims shape: refused.
    let other_key = SigningKey::new("k-other", b"0123456789abcdefghijklmnopqrstuv".to_vec(), 0).expect("key");
    let (other, _) = SigningKeys::new(vec![other_key])
        .expect("keys")
        .sign(claims("alice", now_ms()), now_ms())
        .expect("sign");
    assert_eq!(
        gw.connect(&other).await.expect_err("unknown key").code(),
        "token_invalid"
    );
    // The real token was not consumed by any of these.
    assert!(gw.connect(&token).await.is_ok());
}

#[tokio::test]
async fn sixth_connection_of_a_user_is_refused() {
    let gw = start().await;
    let mut open = Vec::new();
    for _ in 0..5 {
        open.push(gw.connect_user("alice").await.0);
    }
    let token = gw.token("alice").await;
    let refusal = gw.connect(&token).await.expect_err("sixth");
    assert_eq!((refusal.status, refusal.code()), (429, "too_many_connections"));
    // Closing one frees a slot.
    let mut first = open.remove(0);
    first.close(None).await.expect("close");
    gw.await_connection_count("alice", 4).await;
    let token = gw.token("alice").await;
    assert!(gw.connect(&token).await.is_ok());
}

#[tokio::test]
async fn connection_attempts_are_limited_per_ip() {
    let gw = start_with(|o| o.max_connects_per_minute_per_ip = None).await;
    for _ in 0..5 {
        let _ = gw.connect("garbage").await;
    }
    let token = gw.token("alice").await;
    let refusal = gw.connect(&token).await.expect_err("sixth attempt");
    assert_eq!((refusal.status, refusal.code()), (429, "rate_limited"));
}

#[tokio::test]
async fn heartbeat_updates_last_ping_at() {
    let clock = Arc::new(ManualClock::new(common::system_now_ms()));
    let gw = common::start_at(clock.clone()).await;
    let (mut ws, connected) = gw.connect_user("alice").await;
    let id = connected["payload"]["connectionId"].as_str().expect("id").to_owned();
    let before = gw
        .running
        .gateway
        .connections
        .get("alice", &id)
        .await
        .expect("get")
        .expect("registered");
    clock.advance(20);
    let pong = ping(&mut ws).await;
    assert!(uuid::Uuid::parse_str(pong["id"].as_str().expect("id")).is_ok());
    assert_eq!(pong["payload"], json!({}));
    let after = gw
        .running
        .gateway
        .connections
        .get("alice", &id)
        .await
        .expect("get")
        .expect("registered");
    assert!(
        after.last_ping_at == before.last_ping_at + 20,
        "{} == {} + 20",
        after.last_ping_at,
        before.last_ping_at
    );
    assert!(after.expires_at > before.expires_at, "the TTL moves with the heartbeat");
}

#[tokio::test]
async fn silent_client_is_closed_after_the_heartbeat_timeout() {
    let gw = start_with(|o| {
        o.heartbeat_interval_seconds = Some(1);
        o.heartbeat_timeout_seconds = Some(1);
    })
    .await;
    let (mut ws, _) = gw.connect_user("alice").await;
    let (code, _) = await_close(&mut ws).await.expect("close frame");
    assert_eq!(code, 4001);
    gw.await_connection_count("alice", 0).await;
}

#[tokio::test]
async fn malformed_frames_get_error_messages_and_the_connection_survives() {
    let gw = start().await;
    let (mut ws, _) = gw.connect_user("alice").await;
    let cases = [
        (Message::text("{not json"), "invalid_json"),
        (Message::text(r#"{"type":"ping"}"#), "invalid_message"),
        (client_message("teleport", json!({})), "unknown_type"),
        (
            client_message("subscribe", json!({"channels": "uploads"})),
            "invalid_payload",
        ),
    ];
    for (frame, code) in cases {
        send(&mut ws, frame).await;
        let error = recv_json(&mut ws).await;
        assert_eq!(error["type"], "error");
        assert_eq!(error["payload"]["code"], code);
        assert!(error["payload"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    ping(&mut ws).await;
}

#[tokio::test]
async fn repeated_violations_close_the_connection() {
    let gw = start().await;
    let (mut ws, _) = gw.connect_user("alice").await;
    for _ in 0..6 {
        send(&mut ws, Message::text("nope")).await;
    }
    let (code, _) = await_close(&mut ws).await.expect("close frame");
    assert_eq!(code, 4000);
}

#[tokio::test]
async fn more_than_ten_messages_per_second_closes_the_connection() {
    let gw = start().await;
    let (mut ws, _) = gw.connect_user("alice").await;
    for _ in 0..15 {
        send(&mut ws, client_message("ping", json!({}))).await;
    }
    let (code, _) = await_close(&mut ws).await.expect("close frame");
    assert_eq!(code, 4002);
}

#[tokio::test]
async fn a_message_larger_than_the_read_buffer_but_under_the_cap_is_read_whole() {
    let gw = start().await;
    let (mut ws, _) = gw.connect_user("alice").await;
    // About 40 KiB: many times the 1 KiB read buffer, under the 64 KiB cap.
    let channels: Vec<String> = (0..2_000).map(|i| format!("channel-{i:08}")).collect();
    send(&mut ws, client_message("subscribe", json!({"channels": channels}))).await;
    let reply = recv_json(&mut ws).await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["payload"]["code"], "unknown_channel");
    ping(&mut ws).await;
}

#[tokio::test]
async fn oversize_frame_closes_only_that_connection() {
    let gw = start().await;
    let (mut big, _) = gw.connect_user("alice").await;
    let (mut other, _) = gw.connect_user("alice").await;
    send(&mut big, Message::text("x".repeat(70 * 1024))).await;
    let (code, _) = await_close(&mut big).await.expect("close frame");
    assert_eq!(code, 1009);
    gw.await_connection_count("alice", 1).await;
    ping(&mut other).await;
}

#[tokio::test]
async fn should_clean_up_on_disconnect() {
    let gw = start().await;
    let (mut ws, connected) = gw.connect_user("alice").await;
    let id = connected["payload"]["connectionId"].as_str().expect("id").to_owned();
    ws.close(None).await.expect("close");
    gw.await_connection_count("alice", 0).await;
    assert!(
        gw.running
            .gateway
            .connections
            .get("alice", &id)
            .await
            .expect("get")
            .is_none()
    );
    assert!(gw.running.gateway.sessions.is_empty());
    // A dropped TCP connection (no close frame) is cleaned up too.
    let (ws, _) = gw.connect_user("bob").await;
    drop(ws);
    gw.await_connection_count("bob", 0).await;
}

#[tokio::test]
async fn a_client_that_does_not_read_is_closed_as_a_slow_consumer() {
    let gw = start_with(|o| {
        o.max_messages_per_second = Some(1_000_000);
        o.max_violations_per_minute = Some(1_000_000);
        o.write_timeout_ms = Some(300);
    })
    .await;
    // A client socket with a tiny receive buffer, so the server's writes stall quickly.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4 * 1024).expect("buffer size");
    let stream = socket.connect(gw.addr).await.expect("tcp connect");
    let token = gw.token("alice").await;
    let (ws, _) = tokio_tungstenite::client_async(gw.ws_url(&token), stream)
        .await
        .expect("upgrade");
    gw.await_connection_count("alice", 1).await;
    let (mut sink, _unread) = ws.split();
    // Every ping asks for a pong the client never reads; once the buffers are full the server's
    // writes stall, and it must give up on this client instead of waiting for it forever.
    let flood = async {
        for _ in 0..200_000 {
            if sink.send(client_message("ping", json!({}))).await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(60), flood).await;
    gw.await_connection_count("alice", 0).await;
    // Counted by its reason (the session counts its end before it leaves the registry), for the
    // HeraldSlowConsumers alert.
    let metrics = gw.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|line| line == r#"herald_connections_closed_total{reason="slow_consumer"} 1"#),
        "one slow consumer closed:\n{metrics}"
    );
}

#[tokio::test]
async fn graceful_shutdown_tells_clients_to_reconnect() {
    let gw = start().await;
    let (mut ws, _) = gw.connect_user("alice").await;
    let running = gw.running;
    let shutdown = tokio::spawn(running.shutdown());
    let (code, reason) = await_close(&mut ws).await.expect("close frame");
    assert_eq!(code, 1001);
    assert!(reason.contains("reconnect"), "{reason}");
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("exits within the deadline")
        .expect("task")
        .expect("clean shutdown");
    assert!(
        tokio::net::TcpStream::connect(gw.addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_ip_is_limited() {
    let gw = start_with(|o| {
        o.max_connects_per_minute_per_ip = None;
        o.trusted_proxies = Some("127.0.0.1/32".into());
    })
    .await;
    let attempt = |client: &'static str, token: String| {
        let mut request = gw.ws_url(&token).into_client_request().expect("request");
        request
            .headers_mut()
            .insert("x-forwarded-for", HeaderValue::from_static(client));
        connect_request(request)
    };
    for _ in 0..5 {
        let _ = attempt("203.0.113.1", "garbage".into()).await;
    }
    let limited = attempt("203.0.113.1", gw.token("alice").await)
        .await
        .expect_err("sixth from this client");
    assert_eq!(limited.code(), "rate_limited");
    assert!(
        attempt("203.0.113.2", gw.token("alice").await).await.is_ok(),
        "another client behind the proxy"
    );
}
