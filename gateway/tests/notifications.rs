//! Notifications end to end over real sockets: publish, live delivery, subscriptions, ack, replay,
//! retries, history and preferences (the plan's integration tests and the issue's list).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{PUBLISHER_KEY, ack, assert_no_message, client_message, recv_type, send, start, start_with, user_jwt};
use herald_gateway::adapters::clock::ManualClock;
use herald_gateway::domain::notification::UnreadCount;
use reqwest::Method;
use serde_json::{Value, json};

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn should_receive_notification_after_publish() {
    let gw = start().await;
    let (mut ws, connected) = gw.connect_user("alice").await;
    assert_eq!(connected["payload"]["unreadCount"], 0);
    assert_eq!(
        connected["payload"]["subscriptions"],
        json!(["uploads", "social", "mocs", "quota", "system"])
    );
    let response = gw
        .publish(&json!({"userIds": ["alice"], "notification": {
            "type": "upload_complete", "title": "Your upload is ready", "body": "instructions.pdf",
            "icon": "upload", "actionUrl": "/mocs/42", "data": {"mocId": 42}}}))
        .await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.expect("json");
    let id = answer["created"][0]["id"].clone();
    let message = recv_type(&mut ws, "notification").await;
    assert!(uuid::Uuid::parse_str(message["id"].as_str().expect("envelope id")).is_ok());
    let payload = &message["payload"];
    assert_eq!(payload["id"], id);
    assert_eq!(payload["type"], "upload_complete");
    assert_eq!(payload["title"], "Your upload is ready");
    assert_eq!(payload["body"], "instructions.pdf");
    assert_eq!(payload["actionUrl"], "/mocs/42");
    assert_eq!(payload["data"], json!({"mocId": 42}));
    assert_eq!(payload["channel"], "uploads");
    assert_eq!(payload["seq"], 1);
    assert!(payload["createdAt"].as_i64().is_some());
    // The unread badge follows.
    assert_eq!(recv_type(&mut ws, "unread_count").await["payload"]["unreadCount"], 1);
}

#[tokio::test]
async fn two_connections_of_one_user_both_receive() {
    let gw = start().await;
    let (mut phone, _) = gw.connect_user("alice").await;
    let (mut laptop, _) = gw.connect_user("alice").await;
    let (mut bob, _) = gw.connect_user("bob").await;
    let ids = gw.publish_to(&["alice"], "new_follower", "Bob follows you").await;
    for ws in [&mut phone, &mut laptop] {
        assert_eq!(recv_type(ws, "notification").await["payload"]["id"], ids[0]);
    }
    assert_no_message(&mut bob, "notification", QUIET).await;
}

#[tokio::test]
async fn unsubscribed_channel_is_not_pushed_but_kept_in_history() {
    let gw = start().await;
    let (mut ws, _) = gw.connect_user("alice").await;
    let (mut other, _) = gw.connect_user("alice").await;
    send(&mut ws, client_message("unsubscribe", json!({"channels": ["social"]}))).await;
    assert_eq!(
        recv_type(&mut ws, "unsubscribed").await["payload"]["channels"],
        json!(["social"])
    );
    gw.publish_to(&["alice"], "new_like", "A like").await;
    gw.publish_to(&["alice"], "upload_complete", "Upload done").await;
    // Subscriptions are the user's: both connections skip social at once.
    for ws in [&mut ws, &mut other] {
        assert_eq!(
            recv_type(ws, "notification").await["payload"]["type"],
            "upload_complete"
        );
    }
    let history: Value = gw.get_json("/notifications", "alice").await;
    let types: Vec<&str> = history["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["type"].as_str())
        .collect();
    assert_eq!(types, ["upload_complete", "new_like"]);
    // Subscribing again brings social back, and the choice survives a reconnect.
    send(&mut ws, client_message("subscribe", json!({"channels": ["social"]}))).await;
    assert_eq!(
        recv_type(&mut ws, "subscribed").await["payload"]["channels"],
        json!(["social"])
    );
    let (_, connected) = gw.connect_user("alice").await;
    assert!(
        connected["payload"]["subscriptions"]
            .as_array()
            .expect("list")
            .contains(&json!("social"))
    );
}

#[tokio::test]
async fn subscription_errors_and_limits() {
    let gw = start_with(|o| {
        o.channels = serde_norway::from_str(
            "- name: social\n  types: [new_like, new_comment, new_follower]\n\
             - name: ops\n  types: [maintenance_scheduled, system_announcement]\n  adminOnly: true\n",
        )
        .ok();
        o.max_subscription_changes_per_minute = Some(3);
    })
    .await;
    let (mut ws, connected) = gw.connect_user("alice").await;
    assert_eq!(connected["payload"]["allowedChannels"], json!(["social"]));
    assert_eq!(connected["payload"]["subscriptions"], json!(["social"]));
    send(&mut ws, client_message("subscribe", json!({"channels": ["nope"]}))).await;
    assert_eq!(recv_type(&mut ws, "error").await["payload"]["code"], "unknown_channel");
    send(&mut ws, client_message("subscribe", json!({"channels": ["ops"]}))).await;
    assert_eq!(
        recv_type(&mut ws, "error").await["payload"]["code"],
        "forbidden_channel"
    );
    send(&mut ws, client_message("subscribe", json!({"channels": ["social"]}))).await;
    assert_eq!(
        recv_type(&mut ws, "subscribed").await["payload"]["channels"],
        json!(["social"])
    );
    send(&mut ws, client_message("unsubscribe", json!({"channels": ["social"]}))).await;
    assert_eq!(recv_type(&mut ws, "error").await["payload"]["code"], "rate_limited");
    // An admin's token allows the admin-only channel.
    let admin_jwt = common::user_jwt_with_roles("root", 300, &["admin"]);
    let token: Value = gw.post_token(Some(&admin_jwt)).await.json().await.expect("json");
    let mut admin = gw
        .connect(token["token"].as_str().expect("token"))
        .await
        .expect("connects");
    let connected = recv_type(&mut admin, "connected").await;
    assert_eq!(connected["payload"]["allowedChannels"], json!(["social", "ops"]));
    gw.publish_to(&["root", "alice"], "maintenance_scheduled", "Downtime tonight")
        .await;
    assert_eq!(recv_type(&mut admin, "notification").await["payload"]["channel"], "ops");
    assert_no_message(&mut ws, "notification", QUIET).await;
}

#[tokio::test]
async fn acked_notifications_are_not_replayed_on_reconnect() {
    let gw = start().await;
    let (mut ws, _) = gw.connect_user("alice").await;
    let ids = gw.publish_to(&["alice"], "new_comment", "A comment").await;
    let message = recv_type(&mut ws, "notification").await;
    ack(&mut ws, message["payload"]["id"].as_str().expect("id")).await;
    // The ack is processed in order: a ping after it proves it was handled.
    common::ping(&mut ws).await;
    drop(ws);
    let (mut again, _) = gw.connect_user("alice").await;
    assert_no_message(&mut again, "notification", QUIET).await;
    assert_eq!(ids.len(), 1);
}

#[tokio::test]
async fn should_handle_reconnection_with_pending_notifications() {
    let gw = start().await;
    let (ws, _) = gw.connect_user("alice").await;
    drop(ws);
    gw.await_connection_count("alice", 0).await;
    let first = gw.publish_to(&["alice"], "upload_started", "1").await;
    let second = gw.publish_to(&["alice"], "upload_complete", "2").await;
    let third = gw.publish_to(&["alice"], "new_like", "3").await;
    let (mut ws, connected) = gw.connect_user("alice").await;
    assert_eq!(connected["payload"]["unreadCount"], 3);
    // Replayed in seq order, each once, before anything new.
    for expected in [&first[0], &second[0], &third[0]] {
        assert_eq!(&recv_type(&mut ws, "notification").await["payload"]["id"], expected);
    }
    let fourth = gw.publish_to(&["alice"], "new_comment", "4").await;
    assert_eq!(recv_type(&mut ws, "notification").await["payload"]["id"], fourth[0]);
    assert_no_message(&mut ws, "notification", QUIET).await;
}

#[tokio::test]
async fn unacked_notification_is_sent_again_after_the_ack_timeout() {
    let gw = start_with(|o| {
        o.ack_timeout_ms = Some(300);
        o.max_delivery_attempts = Some(2);
    })
    .await;
    let (mut ws, _) = gw.connect_user("alice").await;
    let ids = gw.publish_to(&["alice"], "quota_warning", "80% used").await;
    assert_eq!(recv_type(&mut ws, "notification").await["payload"]["id"], ids[0]);
    // Not acknowledged: the same notification comes again, once more (max 2 attempts), then stops.
    assert_eq!(recv_type(&mut ws, "notification").await["payload"]["id"], ids[0]);
    assert_no_message(&mut ws, "notification", Duration::from_millis(900)).await;
}

#[tokio::test]
async fn idempotent_publish_over_http() {
    let gw = start().await;
    let body = json!({"userIds": ["alice", "alice", "bob"], "notification": {"type": "new_like", "title": "t"}});
    let send = || {
        gw.http
            .post(gw.internal_url("/api/publish"))
            .bearer_auth(PUBLISHER_KEY)
            .header("Idempotency-Key", "like-123")
            .json(&body)
            .send()
    };
    let first: Value = send().await.expect("first").json().await.expect("json");
    assert_eq!(
        first["created"].as_array().map(Vec::len),
        Some(2),
        "duplicate recipients collapse"
    );
    let retry = send().await.expect("retry");
    assert_eq!(retry.status(), 202);
    assert_eq!(retry.json::<Value>().await.expect("json"), first);
    let history: Value = gw.get_json("/notifications", "alice").await;
    assert_eq!(
        history["items"].as_array().map(Vec::len),
        Some(1),
        "nothing created twice"
    );
    let changed = gw
        .http
        .post(gw.internal_url("/api/publish"))
        .bearer_auth(PUBLISHER_KEY)
        .header("Idempotency-Key", "like-123")
        .json(&json!({"userIds": ["carol"], "notification": {"type": "new_like", "title": "t"}}))
        .send()
        .await
        .expect("send");
    assert_eq!(changed.status(), 422);
}

#[tokio::test]
async fn publish_refuses_bad_keys_types_and_payloads() {
    let gw = start_with(|o| {
        o.publishers = serde_norway::from_str(&format!(
            "- name: uploads\n  key_sha256: {}\n  types: [upload_complete]\n",
            sha256_hex("uploads-service-key-0123456789")
        ))
        .ok();
    })
    .await;
    let body = json!({"userIds": ["alice"], "notification": {"type": "new_like", "title": "t"}});
    let unknown = gw.publish_as(Some("nope"), &body).await;
    assert_eq!(unknown.status(), 401);
    let anonymous = gw.publish_as(None, &body).await;
    assert_eq!(anonymous.status(), 401);
    let limited = gw.publish_as(Some("uploads-service-key-0123456789"), &body).await;
    assert_eq!(limited.status(), 403);
    assert_eq!(
        limited.json::<Value>().await.expect("json")["error"]["code"],
        "type_not_allowed"
    );
    let invalid = gw
        .publish(
            &json!({"userIds": ["alice"], "notification": {"type": "new_like", "title": "",
            "actionUrl": "javascript:alert(1)", "data": "x", "body": "bell\u{7}"}}),
        )
        .await;
    assert_eq!(invalid.status(), 400);
    let error: Value = invalid.json().await.expect("json");
    assert_eq!(error["error"]["code"], "validation_failed");
    for field in [
        "notification.title",
        "notification.actionUrl",
        "notification.data",
        "notification.body",
    ] {
        assert!(error["error"]["fields"][field].is_string(), "{field} missing: {error}");
    }
    let not_json = gw
        .http
        .post(gw.internal_url("/api/publish"))
        .bearer_auth(PUBLISHER_KEY)
        .body("{")
        .send()
        .await
        .expect("send");
    assert_eq!(not_json.status(), 400);
}

/// Publishes racing each other announce their counts by separate paths that may overtake each
/// other (found by the SDK's tests); the session keeps only counts newer than the one it sent, so
/// the badge only ever moves forward.
#[tokio::test]
async fn unread_counts_never_go_back() {
    const PUBLISHES: u64 = 40;
    let gw = start().await;
    let (mut ws, connected) = gw.connect_user("alice").await;
    assert_eq!(connected["payload"]["unreadCount"], 0);
    let gw_ref = &gw;
    let publishes =
        (0..PUBLISHES).map(|i| async move { gw_ref.publish_to(&["alice"], "new_like", &format!("like {i}")).await });
    let published = futures_util::future::join_all(publishes).await;
    assert_eq!(published.len() as u64, PUBLISHES);

    let (mut delivered, mut counts) = (0, Vec::new());
    while delivered < PUBLISHES || counts.last() != Some(&PUBLISHES) {
        let message = common::recv_json(&mut ws).await;
        match message["type"].as_str() {
            Some("notification") => {
                delivered += 1;
                ack(&mut ws, message["payload"]["id"].as_str().expect("id")).await;
            }
            Some("unread_count") => {
                let count = message["payload"]["unreadCount"].as_u64().expect("count");
                assert!(
                    counts.last().is_none_or(|last| *last <= count),
                    "the count went back: {counts:?} then {count}"
                );
                counts.push(count);
            }
            _ => {}
        }
    }
    // A publish's count that comes late (its fan-out overtaken, or from a slow replica) is older
    // than what the client was given: dropped. The next count the client sees is the read mark's.
    gw.running
        .gateway
        .delivery
        .push_unread("alice", UnreadCount { count: 7, version: 7 });
    let read = gw
        .as_user(Method::POST, "/notifications/read-all", "alice")
        .send()
        .await
        .expect("read-all");
    assert_eq!(read.status(), 200);
    assert_eq!(recv_type(&mut ws, "unread_count").await["payload"]["unreadCount"], 0);
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn other_users_notifications_cannot_be_acked_read_or_deleted() {
    let gw = start().await;
    let bobs = gw.publish_to(&["bob"], "new_like", "for bob").await;
    let (mut alice, _) = gw.connect_user("alice").await;
    ack(&mut alice, &bobs[0]).await;
    assert_eq!(
        recv_type(&mut alice, "error").await["payload"]["code"],
        "notification_not_found"
    );
    let read = gw
        .as_user(Method::POST, &format!("/notifications/{}/read", bobs[0]), "alice")
        .send()
        .await
        .expect("read");
    assert_eq!(read.status(), 404);
    let delete = gw
        .as_user(Method::DELETE, &format!("/notifications/{}", bobs[0]), "alice")
        .send()
        .await
        .expect("delete");
    assert_eq!(delete.status(), 404);
    let garbage = gw
        .as_user(Method::DELETE, "/notifications/not-a-uuid", "alice")
        .send()
        .await
        .expect("delete");
    assert_eq!(garbage.status(), 404);
    // Bob's notification is untouched: still unread, still pending for him.
    let (mut bob, connected) = gw.connect_user("bob").await;
    assert_eq!(connected["payload"]["unreadCount"], 1);
    assert_eq!(recv_type(&mut bob, "notification").await["payload"]["id"], bobs[0]);
}

#[tokio::test]
async fn disabled_type_is_skipped_and_the_answer_says_so() {
    let gw = start().await;
    let patch = gw
        .as_user(Method::PATCH, "/notifications/preferences", "alice")
        .json(&json!({"types": {"new_like": {"inApp": false}}}))
        .send()
        .await
        .expect("patch");
    assert_eq!(patch.status(), 200);
    let (mut ws, _) = gw.connect_user("alice").await;
    let answer: Value = gw
        .publish(&json!({"userIds": ["alice", "bob"], "notification": {"type": "new_like", "title": "t"}}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        answer["skipped"],
        json!([{"userId": "alice", "reason": "type_disabled"}])
    );
    assert_eq!(answer["created"].as_array().map(Vec::len), Some(1));
    assert_no_message(&mut ws, "notification", QUIET).await;
}

#[tokio::test]
async fn in_app_disabled_user_is_refused_a_token() {
    let gw = start().await;
    let patch = gw
        .as_user(Method::PATCH, "/notifications/preferences", "alice")
        .json(&json!({"inAppEnabled": false}))
        .send()
        .await
        .expect("patch");
    assert_eq!(patch.json::<Value>().await.expect("json")["inAppEnabled"], false);
    let refused = gw.post_token(Some(&user_jwt("alice", 300))).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(
        refused.json::<Value>().await.expect("json")["error"]["code"],
        "in_app_disabled"
    );
    let answer: Value = gw
        .publish(&json!({"userIds": ["alice"], "notification": {"type": "new_like", "title": "t"}}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        answer["skipped"],
        json!([{"userId": "alice", "reason": "in_app_disabled"}])
    );
}

#[tokio::test]
async fn expired_notification_is_never_delivered_nor_listed() {
    let now_ms = common::system_now_ms();
    let clock = Arc::new(ManualClock::new(now_ms));
    let gw = common::start_at(clock.clone()).await;
    let response = gw
        .publish(
            &json!({"userIds": ["alice"], "notification": {"type": "system_announcement", "title": "soon gone",
            "expiresAt": now_ms + 200}}),
        )
        .await;
    assert_eq!(response.status(), 202);
    // It expires before the user connects.
    clock.advance(300);
    let (mut ws, connected) = gw.connect_user("alice").await;
    assert_eq!(connected["payload"]["unreadCount"], 0);
    assert_no_message(&mut ws, "notification", QUIET).await;
    let history: Value = gw.get_json("/notifications", "alice").await;
    assert_eq!(history["items"], json!([]));
    let past = gw
        .publish(
            &json!({"userIds": ["alice"], "notification": {"type": "system_announcement", "title": "x",
            "expiresAt": now_ms - 1}}),
        )
        .await;
    assert_eq!(past.status(), 400, "already expired at publish");
}

#[tokio::test]
async fn get_notifications_returns_paginated_history() {
    let gw = start().await;
    for i in 1..=5 {
        gw.publish_to(&["alice"], "new_like", &format!("like {i}")).await;
    }
    gw.publish_to(&["alice"], "upload_complete", "upload").await;
    let page: Value = gw.get_json("/notifications?limit=4", "alice").await;
    let titles: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["title"].as_str())
        .collect();
    assert_eq!(titles, ["upload", "like 5", "like 4", "like 3"]);
    assert_eq!(page["unreadCount"], 6);
    assert!(page["items"][0]["readAt"].is_null());
    let cursor = page["nextCursor"].as_str().expect("more pages");
    let next: Value = gw
        .get_json(&format!("/notifications?limit=4&cursor={cursor}"), "alice")
        .await;
    let titles: Vec<&str> = next["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["title"].as_str())
        .collect();
    assert_eq!(titles, ["like 2", "like 1"]);
    assert!(next["nextCursor"].is_null());
    let filtered: Value = gw.get_json("/notifications?channel=uploads", "alice").await;
    assert_eq!(filtered["items"].as_array().map(Vec::len), Some(1));
    let by_type: Value = gw.get_json("/notifications?type=new_like&limit=100", "alice").await;
    assert_eq!(by_type["items"].as_array().map(Vec::len), Some(5));
    for bad in [
        "limit=0",
        "limit=101",
        "cursor=zzz",
        "type=nope",
        "channel=nope",
        "unread=maybe",
    ] {
        let response = gw
            .as_user(Method::GET, &format!("/notifications?{bad}"), "alice")
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), 400, "{bad}");
    }
    let bob: Value = gw.get_json("/notifications", "bob").await;
    assert_eq!(bob["items"], json!([]), "history is per user");
    let anonymous = gw.http.get(gw.url("/notifications")).send().await.expect("get");
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn post_notifications_id_read_marks_as_read_and_pushes_the_count() {
    let gw = start().await;
    let ids = gw.publish_to(&["alice"], "new_like", "one").await;
    gw.publish_to(&["alice"], "new_like", "two").await;
    let (mut ws, connected) = gw.connect_user("alice").await;
    assert_eq!(connected["payload"]["unreadCount"], 2);
    let read = gw
        .as_user(Method::POST, &format!("/notifications/{}/read", ids[0]), "alice")
        .send()
        .await
        .expect("read");
    assert_eq!(read.status(), 204);
    // Counts announced by the earlier publishes may still be on their way, but they are older than
    // the one `connected` carried: the next count is the read mark's.
    assert_eq!(recv_type(&mut ws, "unread_count").await["payload"]["unreadCount"], 1);
    let unread: Value = gw.get_json("/notifications?unread=true", "alice").await;
    assert_eq!(unread["items"].as_array().map(Vec::len), Some(1));
    let all: Value = gw
        .as_user(Method::POST, "/notifications/read-all", "alice")
        .send()
        .await
        .expect("read-all")
        .json()
        .await
        .expect("json");
    assert_eq!(all["updated"], 1);
    assert_eq!(recv_type(&mut ws, "unread_count").await["payload"]["unreadCount"], 0);
    let history: Value = gw.get_json("/notifications", "alice").await;
    assert!(
        history["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|i| i["readAt"].is_i64())
    );
    let delete = gw
        .as_user(Method::DELETE, &format!("/notifications/{}", ids[0]), "alice")
        .send()
        .await
        .expect("delete");
    assert_eq!(delete.status(), 204);
    let history: Value = gw.get_json("/notifications", "alice").await;
    assert_eq!(history["items"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn patch_notifications_preferences_updates_settings() {
    let gw = start().await;
    let defaults: Value = gw.get_json("/notifications/preferences", "alice").await;
    assert_eq!(defaults["inAppEnabled"], true);
    assert_eq!(defaults["emailEnabled"], true);
    assert_eq!(defaults["types"].as_object().map(|t| t.len()), Some(14));
    assert_eq!(
        defaults["channels"]["social"],
        json!({"inApp": true, "email": true, "push": true})
    );
    let patched: Value = gw
        .as_user(Method::PATCH, "/notifications/preferences", "alice")
        .json(&json!({"emailEnabled": false, "channels": {"social": {"push": false}}}))
        .send()
        .await
        .expect("patch")
        .json()
        .await
        .expect("json");
    assert_eq!(patched["emailEnabled"], false);
    assert_eq!(patched["pushEnabled"], true);
    assert_eq!(
        patched["channels"]["social"],
        json!({"inApp": true, "email": true, "push": false})
    );
    let again: Value = gw.get_json("/notifications/preferences", "alice").await;
    assert_eq!(again, patched);
    let invalid = gw
        .as_user(Method::PATCH, "/notifications/preferences", "alice")
        .json(&json!({"types": {"nope": {"inApp": false}}, "pushEnabled": "yes"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(invalid.status(), 400);
    let error: Value = invalid.json().await.expect("json");
    assert!(error["error"]["fields"]["types.nope"].is_string() && error["error"]["fields"]["pushEnabled"].is_string());
}

#[tokio::test]
async fn acks_of_a_burst_are_not_rate_limited_but_acks_of_nothing_are_violations() {
    let gw = start().await;
    for i in 0..30 {
        gw.publish_to(&["alice"], "new_like", &format!("like {i}")).await;
    }
    let (mut ws, _) = gw.connect_user("alice").await;
    // The replay pushes 30 at once; acknowledging each right away must not trip the 10/s limit.
    for _ in 0..30 {
        let message = recv_type(&mut ws, "notification").await;
        ack(&mut ws, message["payload"]["id"].as_str().expect("id")).await;
    }
    common::ping(&mut ws).await;
    // Acks of notifications that do not exist are errors, and repeated, a closed connection.
    for _ in 0..6 {
        ack(&mut ws, &uuid::Uuid::new_v4().to_string()).await;
    }
    let (code, _) = common::await_close(&mut ws).await.expect("close frame");
    assert_eq!(code, 4000);
}

#[tokio::test]
async fn metrics_count_connections_publishes_and_deliveries() {
    let gw = start().await;
    let refused = gw.connect("garbage").await;
    assert!(refused.is_err());
    let (mut ws, _) = gw.connect_user("alice").await;
    gw.publish_to(&["alice"], "new_like", "counted").await;
    recv_type(&mut ws, "notification").await;
    let text = gw.metrics().await;
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
    };
    assert_eq!(value("herald_connections_active"), 1.0);
    assert_eq!(value("herald_connections_opened_total"), 1.0);
    assert_eq!(
        value(r#"herald_connections_rejected_total{reason="token_invalid"}"#),
        1.0,
        "refusals by the code the client got"
    );
    assert_eq!(
        value(r#"herald_connections_rejected_total{reason="draining"}"#),
        0.0,
        "every reason starts at zero"
    );
    assert_eq!(value("herald_notifications_published_total"), 1.0);
    assert_eq!(value("herald_messages_delivered_total"), 1.0);
    assert_eq!(value("herald_delivery_latency_seconds_count"), 1.0);
}
