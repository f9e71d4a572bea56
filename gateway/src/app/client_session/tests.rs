//! The protocol engine driven with messages and times, without a socket: a real gateway (SQLite in
//! memory, in-process registry and bus) behind it, a clock the test moves, and the session's
//! outbound queue read directly.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::adapters::clock::ManualClock;
use crate::app::ConnectRequest;
use crate::config::{Config, Options};
use crate::domain::user::AuthenticatedUser;

const START: UnixMs = 1_800_000_000_000;
const PUBLISHER_KEY: &str = "engine-tests-publisher-key-0123456789";

struct Fixture {
    gateway: Arc<Gateway>,
    clock: Arc<ManualClock>,
}

async fn fixture() -> Fixture {
    let options = Options {
        dev: Some(true),
        database_url: Some("sqlite::memory:".into()),
        publisher_keys: Some(format!("tests={PUBLISHER_KEY}").into()),
        max_connects_per_minute_per_ip: Some(1_000),
        ..Options::default()
    };
    let config = Config::resolve(options).expect("valid config");
    let clock = Arc::new(ManualClock::new(START));
    let gateway = crate::server::build(&config, clock.clone()).await.expect("gateway");
    Fixture { gateway, clock }
}

impl Fixture {
    /// A registered connection of `user`, as a successful upgrade leaves it.
    async fn session(&self, user: &str) -> (ClientSession, SessionInbox) {
        let token = self
            .gateway
            .tokens
            .issue(&AuthenticatedUser::new(user, vec![]))
            .await
            .expect("token");
        let record = self
            .gateway
            .connections
            .connect(ConnectRequest {
                client_ip: [127, 0, 0, 1].into(),
                token: &token.token,
                user_agent: "engine-test",
            })
            .await
            .expect("connects");
        ClientSession::open(self.gateway.clone(), record)
    }

    /// A session past its start sequence.
    async fn started(&self, user: &str) -> (ClientSession, SessionInbox) {
        let (mut session, inbox) = self.session(user).await;
        session.start().await.expect("starts");
        (session, inbox)
    }

    async fn publish(&self, user: &str, title: &str) -> uuid::Uuid {
        let publisher = self
            .gateway
            .notifications
            .authenticate(PUBLISHER_KEY)
            .expect("publisher");
        let body = serde_json::from_value(json!({
            "userIds": [user], "notification": {"type": "new_like", "title": title}
        }))
        .expect("body");
        let receipt = self
            .gateway
            .notifications
            .publish(&publisher, body, None)
            .await
            .expect("published");
        receipt.created[0].id
    }

    /// The notification as stored.
    async fn stored(&self, user: &str, id: uuid::Uuid) -> crate::domain::notification::Notification {
        self.gateway
            .notifications
            .store
            .get(user, id)
            .await
            .expect("get")
            .expect("stored")
    }
}

fn message(kind: &str, payload: Value) -> String {
    json!({"id": uuid::Uuid::new_v4(), "type": kind, "timestamp": 0, "payload": payload}).to_string()
}

fn ping() -> String {
    message("ping", json!({}))
}

/// The next message the transport would write, parsed.
async fn next(inbox: &mut SessionInbox) -> Value {
    let frame = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
        .await
        .expect("a message in time");
    serde_json::from_str(&frame).expect("json")
}

fn error_code(answer: &Answer) -> &str {
    match answer {
        Answer::Reply(ServerMessage::Error { code, .. }) => code,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

fn close_code_of(answer: &Answer) -> u16 {
    match answer {
        Answer::Close(closing) => closing.code,
        other => panic!("expected a close, got {other:?}"),
    }
}

#[tokio::test]
async fn start_sends_connected_first_then_replays_what_was_missed_in_order() {
    let f = fixture().await;
    let first = f.publish("alice", "one").await;
    let second = f.publish("alice", "two").await;
    let (mut session, mut inbox) = f.session("alice").await;
    session.start().await.expect("starts");

    let connected = next(&mut inbox).await;
    assert_eq!(connected["type"], "connected");
    assert_eq!(connected["payload"]["connectionId"], session.connection_id());
    assert_eq!(connected["payload"]["unreadCount"], 2);
    assert_eq!(connected["payload"]["heartbeatIntervalMs"], 30_000);
    let mut replayed = Vec::new();
    while replayed.len() < 2 {
        let message = next(&mut inbox).await;
        if message["type"] == "notification" {
            replayed.push(message["payload"]["id"].as_str().expect("id").to_owned());
        }
    }
    assert_eq!(replayed, [first.to_string(), second.to_string()]);
    session.finish("normal", "test over").await;
    assert!(f.gateway.sessions.is_empty(), "finish leaves this replica");
}

#[tokio::test]
async fn a_ping_is_answered_with_pong_proves_liveness_and_refreshes_last_ping_at() {
    let f = fixture().await;
    let (mut session, _inbox) = f.started("alice").await;
    f.clock.advance(5_000);
    let answer = session.handle(Inbound::Text(&ping()), START + 5_000).await;
    assert_eq!(answer, Answer::Reply(ServerMessage::Pong {}));
    assert!(answer.proves_liveness());
    let record = f
        .gateway
        .connections
        .get("alice", session.connection_id())
        .await
        .expect("get")
        .expect("registered");
    assert_eq!(record.last_ping_at, START + 5_000);
    let subscribed = session
        .handle(
            Inbound::Text(&message("subscribe", json!({"channels": ["social"]}))),
            START + 5_000,
        )
        .await;
    assert!(
        matches!(subscribed, Answer::Reply(ServerMessage::Subscribed { .. })),
        "{subscribed:?}"
    );
    assert!(!subscribed.proves_liveness(), "only a ping counts as a heartbeat");
}

#[tokio::test]
async fn the_message_rate_closes_the_session_past_its_budget_and_recovers_with_time() {
    let f = fixture().await;
    let (mut session, _inbox) = f.started("alice").await;
    for i in 0..10 {
        let answer = session.handle(Inbound::Text(&ping()), START).await;
        assert!(answer.proves_liveness(), "ping {i} is within 10 per second");
    }
    let answer = session.handle(Inbound::Text(&ping()), START).await;
    assert_eq!(close_code_of(&answer), close_code::RATE_LIMITED);

    let (mut later, _inbox) = f.started("bob").await;
    for second in 0..3 {
        for _ in 0..10 {
            let at = START + second * 1_000;
            assert!(later.handle(Inbound::Text(&ping()), at).await.proves_liveness());
        }
    }
}

#[tokio::test]
async fn acks_of_awaited_notifications_are_exempt_from_the_message_rate_and_other_acks_count() {
    let f = fixture().await;
    let ids = [f.publish("alice", "a").await, f.publish("alice", "b").await];
    let (mut session, _inbox) = f.started("alice").await;
    for _ in 0..10 {
        session.handle(Inbound::Text(&ping()), START).await;
    }
    for id in ids {
        let ack = message("notification:ack", json!({"notificationId": id}));
        assert_eq!(session.handle(Inbound::Text(&ack), START).await, Answer::Nothing);
    }
    // The same ack again is not awaited any more: it costs a message like any other, and the
    // budget was spent by the pings.
    let again = message("notification:ack", json!({"notificationId": ids[0]}));
    assert_eq!(
        close_code_of(&session.handle(Inbound::Text(&again), START).await),
        close_code::RATE_LIMITED,
        "a duplicate ack is not free"
    );
}

#[tokio::test]
async fn a_duplicate_ack_is_answered_without_writing_again() {
    use crate::app::metrics::AckOutcome;
    let f = fixture().await;
    let id = f.publish("alice", "a").await;
    // Acknowledged on another connection (or replica) first.
    f.gateway
        .notifications
        .acknowledge_stored("alice", id)
        .await
        .expect("recorded");
    let first = f.stored("alice", id).await.delivered_at;
    assert!(first.is_some(), "recorded");
    let (mut session, _inbox) = f.started("alice").await;
    let ack = message("notification:ack", json!({"notificationId": id}));
    for i in 1..=5 {
        let at = START + i * 1_000;
        f.clock.advance(1_000);
        assert_eq!(session.handle(Inbound::Text(&ack), at).await, Answer::Nothing);
    }
    let metrics = &f.gateway.metrics;
    assert_eq!(
        (metrics.acks(AckOutcome::Recorded), metrics.acks(AckOutcome::Duplicate)),
        (1, 5),
        "one write, five answers without one"
    );
    assert_eq!(
        f.stored("alice", id).await.delivered_at,
        first,
        "the first time is kept"
    );
}

#[tokio::test]
async fn websocket_control_frames_count_against_the_message_rate() {
    let f = fixture().await;
    let (mut session, _inbox) = f.started("alice").await;
    for i in 0..10 {
        assert_eq!(
            session.handle(Inbound::Control, START).await,
            Answer::Nothing,
            "control frame {i} is within 10 per second"
        );
    }
    assert_eq!(
        close_code_of(&session.handle(Inbound::Control, START).await),
        close_code::RATE_LIMITED
    );
}

#[tokio::test]
async fn invalid_messages_get_errors_until_the_violation_budget_is_spent() {
    let f = fixture().await;
    let (mut session, _inbox) = f.started("alice").await;
    let bad = [
        Inbound::Text("not json"),
        Inbound::Binary,
        Inbound::Text(r#"{"id":"x","type":"ping","timestamp":0,"payload":{}}"#),
        Inbound::Text(&message("teleport", json!({}))),
    ];
    let expected = ["invalid_json", "unsupported_frame", "invalid_message", "unknown_type"];
    for (inbound, code) in bad.into_iter().zip(expected) {
        assert_eq!(error_code(&session.handle(inbound, START).await), code);
    }
    // An ack of a notification that does not exist is a violation too (the fifth of five).
    let ack_of_nothing = message("notification:ack", json!({"notificationId": uuid::Uuid::new_v4()}));
    assert_eq!(
        error_code(&session.handle(Inbound::Text(&ack_of_nothing), START).await),
        "notification_not_found"
    );
    let answer = session.handle(Inbound::Text("still not json"), START).await;
    assert_eq!(close_code_of(&answer), close_code::PROTOCOL_VIOLATIONS);
}

#[tokio::test]
async fn subscription_changes_are_limited_per_minute_without_closing() {
    let f = fixture().await;
    let (mut session, _inbox) = f.started("alice").await;
    let change = |i: i64| {
        let kind = if i % 2 == 0 { "unsubscribe" } else { "subscribe" };
        message(kind, json!({"channels": ["social"]}))
    };
    // Ten a second, so that the message rate is never the limit.
    for i in 0..20 {
        let answer = session
            .handle(Inbound::Text(&change(i)), START + (i / 10) * 1_000)
            .await;
        assert!(
            matches!(
                answer,
                Answer::Reply(ServerMessage::Subscribed { .. } | ServerMessage::Unsubscribed { .. })
            ),
            "change {i}: {answer:?}"
        );
    }
    let limited = session.handle(Inbound::Text(&change(20)), START + 2_000).await;
    assert_eq!(error_code(&limited), "rate_limited");
    assert!(
        session
            .handle(Inbound::Text(&ping()), START + 2_000)
            .await
            .proves_liveness(),
        "still open"
    );
    let refilled = session.handle(Inbound::Text(&change(21)), START + 64_000).await;
    assert!(matches!(refilled, Answer::Reply(ServerMessage::Subscribed { .. })));
}

#[tokio::test]
async fn a_registration_that_vanished_closes_the_session_as_expired() {
    let f = fixture().await;
    let (mut session, _inbox) = f.started("alice").await;
    f.gateway
        .connections
        .disconnect("alice", session.connection_id(), "removed elsewhere")
        .await
        .expect("disconnect");
    let answer = session.handle(Inbound::Text(&ping()), START).await;
    assert_eq!(close_code_of(&answer), close_code::CONNECTION_EXPIRED);
}

#[tokio::test]
async fn a_full_queue_turns_a_reply_into_a_slow_consumer_close() {
    let f = fixture().await;
    let (session, _inbox) = f.started("alice").await;
    let queue = f.gateway.session_settings.outbound_queue;
    // `connected` is queued already and nobody drains: fill the rest.
    let outcome = (0..queue).try_for_each(|_| session.send(ServerMessage::Pong {}, START));
    assert_eq!(outcome.map_err(|c| c.code), Err(close_code::SLOW_CONSUMER));
}
