//! The plan's `NotificationService` tests, over the SQLite store and the in-process bus.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::adapters::clock::ManualClock;
use crate::adapters::memory::{
    MemoryConnectionRegistry, MemoryEventBus, MemoryPreferenceStore, MemorySubscriptionStore,
};
use crate::adapters::sqlite::{self, SqliteNotificationStore};
use crate::app::delivery::DeliverySettings;
use crate::app::sessions::{LocalSessions, SessionInbox};
use crate::app::subscriptions::SubscriptionService;
use crate::domain::preferences::{Preferences, Switches};
use crate::ports::PreferenceStore;

const KEY: &str = "test-publisher-key-0123456789";

struct Fixture {
    service: Arc<NotificationService>,
    subscription_store: Arc<MemorySubscriptionStore>,
    bus: Arc<MemoryEventBus>,
    delivery: Arc<DeliveryService>,
    sessions: Arc<LocalSessions>,
    store: Arc<SqliteNotificationStore>,
    preferences: Arc<MemoryPreferenceStore>,
    clock: Arc<ManualClock>,
    /// The delivery's.
    metrics: Arc<crate::app::metrics::Metrics>,
    _stop: tokio_util::sync::DropGuard,
}

async fn fixture(settings: DeliverySettings) -> Fixture {
    fixture_on(settings, MemoryEventBus::default()).await
}

async fn fixture_on(settings: DeliverySettings, bus: MemoryEventBus) -> Fixture {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let catalog = crate::app::catalog::LiveCatalog::fixed(crate::domain::channel::ChannelCatalog::default_set(7));
    let store = Arc::new(
        SqliteNotificationStore::new(sqlite::connect("sqlite::memory:").await.expect("sqlite")).expect("store"),
    );
    let preferences = Arc::new(MemoryPreferenceStore::default());
    let sessions = Arc::new(LocalSessions::default());
    let bus = Arc::new(bus);
    let subscription_store = Arc::new(MemorySubscriptionStore::default());
    let subscriptions = Arc::new(SubscriptionService::new(
        subscription_store.clone(),
        Arc::new(MemoryConnectionRegistry::default()),
        catalog.clone(),
        clock.clone(),
        bus.clone(),
    ));
    let metrics = Arc::new(crate::app::metrics::Metrics::default());
    let delivery = Arc::new(DeliveryService::new(
        store.clone(),
        subscriptions,
        sessions.clone(),
        catalog.clone(),
        bus.clone(),
        clock.clone(),
        settings,
        metrics.clone(),
    ));
    let stop = CancellationToken::new();
    tokio::spawn(delivery.clone().run(bus.subscribe(), stop.clone()));
    let publishers = Publishers::new(vec![Publisher::from_key("tests", KEY, None)]).expect("publishers");
    let service = Arc::new(NotificationService {
        store: store.clone(),
        preferences: Arc::new(PreferenceService::new(preferences.clone(), catalog.clone())),
        delivery: delivery.clone(),
        bus: bus.clone(),
        catalog,
        publishers,
        links: Default::default(),
        clock: clock.clone(),
        metrics: Arc::default(),
        tasks: tokio_util::task::TaskTracker::new(),
        acks_in_flight: Arc::new(tokio::sync::Semaphore::new(crate::app::notifications::ACKS_IN_FLIGHT)),
        publisher_budgets: std::sync::Mutex::default(),
    });
    Fixture {
        service,
        subscription_store,
        bus,
        delivery,
        sessions,
        store,
        preferences,
        clock,
        metrics,
        _stop: stop.drop_guard(),
    }
}

fn all_channels() -> Vec<String> {
    ["uploads", "social", "mocs", "quota", "system"]
        .iter()
        .map(|c| (*c).to_owned())
        .collect()
}

impl Fixture {
    async fn connect(&self, connection_id: &str, user_id: &str, capacity: usize) -> SessionInbox {
        let inbox = self.sessions.open(connection_id, user_id, capacity);
        let interest = self.delivery.follow(user_id).await.expect("follow");
        self.delivery
            .attach(connection_id, user_id, all_channels(), interest)
            .await
            .expect("attach");
        inbox
    }

    /// Publishes as the test publisher; the receipt as JSON, as the HTTP API answers it.
    async fn publish(&self, users: &[&str], kind: &str) -> Value {
        let body = json!({"userIds": users, "notification": {"type": kind, "title": format!("{kind}!")}});
        let publisher = self.service.authenticate(KEY).expect("publisher");
        let receipt = self
            .service
            .publish(&publisher, publish_body(body), None)
            .await
            .expect("published");
        serde_json::to_value(receipt).expect("json")
    }
}

/// A publish body as the JSON extractor reads it.
fn publish_body(value: Value) -> PublishBody {
    serde_json::from_value(value).expect("an object reads as a publish body")
}

/// The next `notification` message in an inbox (skipping unread-count updates).
async fn next_notification(inbox: &mut SessionInbox) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
            .await
            .expect("a message in time");
        let message: Value = serde_json::from_str(&frame).expect("json");
        if message["type"] == "notification" {
            return message;
        }
    }
}

/// Asserts no `notification` message arrives within a short window.
async fn no_notification(inbox: &mut SessionInbox) {
    let outcome = tokio::time::timeout(Duration::from_millis(200), async {
        loop {
            let frame = inbox.recv().await;
            let message: Value = serde_json::from_str(&frame).expect("json");
            if message["type"] == "notification" {
                return message;
            }
        }
    })
    .await;
    assert!(outcome.is_err(), "unexpected notification: {outcome:?}");
}

#[tokio::test]
async fn should_deliver_notification_to_all_user_connections() {
    let f = fixture(DeliverySettings::default()).await;
    let mut phone = f.connect("phone", "alice", 16).await;
    let mut laptop = f.connect("laptop", "alice", 16).await;
    let mut bob = f.connect("bob-1", "bob", 16).await;
    let answer = f.publish(&["alice"], "new_like").await;
    let id = answer["created"][0]["id"].clone();
    for inbox in [&mut phone, &mut laptop] {
        let message = next_notification(inbox).await;
        assert_eq!(message["payload"]["id"], id);
        assert_eq!(message["payload"]["type"], "new_like");
        assert_eq!(message["payload"]["channel"], "social");
        assert_eq!(message["payload"]["seq"], 1);
    }
    no_notification(&mut bob).await;
}

#[tokio::test]
async fn should_persist_notification_to_database() {
    let f = fixture(DeliverySettings::default()).await;
    let answer = f.publish(&["alice", "bob"], "upload_complete").await;
    assert_eq!(answer["created"].as_array().map(Vec::len), Some(2));
    for created in answer["created"].as_array().expect("created") {
        let user = created["userId"].as_str().expect("user");
        let id = Uuid::parse_str(created["id"].as_str().expect("id")).expect("uuid");
        let stored = f.store.get(user, id).await.expect("get").expect("stored");
        assert_eq!(stored.title, "upload_complete!");
        assert_eq!(stored.channel, "uploads");
        assert_eq!(stored.read_at, None);
    }
}

#[tokio::test]
async fn should_respect_user_notification_preferences() {
    let f = fixture(DeliverySettings::default()).await;
    f.preferences
        .put(
            "opted-out",
            &Preferences {
                in_app_enabled: false,
                ..Preferences::default()
            },
        )
        .await
        .expect("put");
    let mut quiet_social = Preferences::default();
    quiet_social.overrides.channels.insert(
        "social".into(),
        Switches {
            in_app: Some(false),
            ..Switches::default()
        },
    );
    f.preferences.put("no-social", &quiet_social).await.expect("put");
    let answer = f.publish(&["opted-out", "no-social", "alice"], "new_comment").await;
    assert_eq!(answer["created"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        answer["skipped"],
        json!([{"userId": "opted-out", "reason": "in_app_disabled"}, {"userId": "no-social", "reason": "channel_disabled"}])
    );
    assert_eq!(
        f.store.max_seq("opted-out").await.expect("seq"),
        0,
        "nothing stored for skipped users"
    );
}

#[tokio::test]
async fn should_skip_delivery_for_disabled_notification_types() {
    let f = fixture(DeliverySettings::default()).await;
    let mut no_likes = Preferences::default();
    no_likes.overrides.types.insert(
        "new_like".into(),
        Switches {
            in_app: Some(false),
            ..Switches::default()
        },
    );
    f.preferences.put("alice", &no_likes).await.expect("put");
    let mut inbox = f.connect("c1", "alice", 16).await;
    let answer = f.publish(&["alice"], "new_like").await;
    assert_eq!(
        answer["skipped"],
        json!([{"userId": "alice", "reason": "type_disabled"}])
    );
    no_notification(&mut inbox).await;
    // Other types still arrive.
    f.publish(&["alice"], "new_comment").await;
    assert_eq!(next_notification(&mut inbox).await["payload"]["type"], "new_comment");
}

#[tokio::test]
async fn should_handle_delivery_failures_gracefully() {
    let f = fixture(DeliverySettings::default()).await;
    // A connection that never reads: its queue holds one message.
    let mut stuck = f.connect("stuck", "alice", 1).await;
    let mut healthy = f.connect("healthy", "alice", 16).await;
    f.publish(&["alice"], "new_like").await;
    f.publish(&["alice"], "new_comment").await;
    // The healthy connection gets both; the stuck one is closed as slow, nothing else is disturbed.
    assert_eq!(next_notification(&mut healthy).await["payload"]["seq"], 1);
    assert_eq!(next_notification(&mut healthy).await["payload"]["seq"], 2);
    let close = tokio::time::timeout(Duration::from_secs(5), stuck.close_requested())
        .await
        .expect("closed");
    assert_eq!(close.code, crate::domain::protocol::close_code::SLOW_CONSUMER);
    // Both stay stored and unacknowledged: a reconnect replays them.
    f.sessions.remove("stuck");
    f.delivery.detach("stuck");
    let mut again = f.connect("stuck-again", "alice", 16).await;
    assert_eq!(next_notification(&mut again).await["payload"]["seq"], 1);
    assert_eq!(next_notification(&mut again).await["payload"]["seq"], 2);
}

#[tokio::test]
async fn should_track_delivery_status() {
    let f = fixture(DeliverySettings {
        ack_timeout_ms: 1_000,
        max_attempts: 2,
        ..DeliverySettings::default()
    })
    .await;
    let mut inbox = f.connect("c1", "alice", 16).await;
    let answer = f.publish(&["alice", "bob"], "moc_featured").await;
    let id = Uuid::parse_str(answer["created"][0]["id"].as_str().expect("id")).expect("uuid");
    next_notification(&mut inbox).await;
    f.delivery.flush_attempts().await.expect("attempts recorded");
    let stored = f.store.get("alice", id).await.expect("get").expect("stored");
    assert_eq!(
        (stored.attempts, stored.delivered_at),
        (1, None),
        "pushed once, not acknowledged"
    );

    // No ack within the timeout: sent again, attempt counted.
    f.clock.advance(1_000);
    f.delivery.retry_due().await.expect("retry");
    assert_eq!(next_notification(&mut inbox).await["payload"]["id"], json!(id));
    f.delivery.flush_attempts().await.expect("attempts recorded");
    assert_eq!(
        f.store.get("alice", id).await.expect("get").map(|n| n.attempts),
        Some(2)
    );

    // Acknowledged: recorded, and no further retries.
    f.service.acknowledge("alice", id).await.expect("ack");
    f.service.acknowledge("alice", id).await.expect("acks are idempotent");
    f.service.settle().await;
    let acked_at = f
        .store
        .get("alice", id)
        .await
        .expect("get")
        .and_then(|n| n.delivered_at);
    assert_eq!(acked_at, Some(f.clock.now_ms()));
    f.clock.advance(5_000);
    f.delivery.retry_due().await.expect("retry");
    no_notification(&mut inbox).await;

    // Acknowledged before the recorder wrote its round: the round rides on the acknowledgement,
    // counted once.
    let answer_again = f.publish(&["alice"], "moc_featured").await;
    let quick = Uuid::parse_str(answer_again["created"][0]["id"].as_str().expect("id")).expect("uuid");
    assert_eq!(next_notification(&mut inbox).await["payload"]["id"], json!(quick));
    f.service.acknowledge("alice", quick).await.expect("ack");
    f.service.settle().await;
    let stored = f.store.get("alice", quick).await.expect("get").expect("stored");
    assert_eq!(
        (stored.attempts, stored.delivered_at.is_some()),
        (1, true),
        "with the ack"
    );
    f.delivery.flush_attempts().await.expect("attempts recorded");
    let stored = f.store.get("alice", quick).await.expect("get").expect("stored");
    assert_eq!(stored.attempts, 1, "and not again");

    // Someone else's notification, or an unknown id, cannot be acknowledged.
    let bobs = Uuid::parse_str(answer["created"][1]["id"].as_str().expect("id")).expect("uuid");
    assert_eq!(
        f.service.acknowledge("alice", bobs).await.expect_err("not hers").code(),
        "notification_not_found"
    );
    assert_eq!(
        f.service
            .acknowledge("alice", Uuid::new_v4())
            .await
            .expect_err("unknown")
            .code(),
        "notification_not_found"
    );
    assert_eq!(
        f.store
            .get("bob", bobs)
            .await
            .expect("get")
            .and_then(|n| n.delivered_at),
        None
    );
}

#[tokio::test]
async fn unacknowledged_notifications_stop_after_max_attempts() {
    let f = fixture(DeliverySettings {
        ack_timeout_ms: 1_000,
        max_attempts: 2,
        ..DeliverySettings::default()
    })
    .await;
    let mut inbox = f.connect("c1", "alice", 16).await;
    f.publish(&["alice"], "quota_warning").await;
    next_notification(&mut inbox).await;
    f.clock.advance(1_000);
    f.delivery.retry_due().await.expect("retry");
    next_notification(&mut inbox).await;
    f.clock.advance(1_000);
    f.delivery.retry_due().await.expect("gives up");
    no_notification(&mut inbox).await;
}

#[tokio::test]
async fn publish_validation_and_authorization() {
    let f = fixture(DeliverySettings::default()).await;
    assert_eq!(
        f.service.authenticate("wrong").expect_err("unknown key").code(),
        "invalid_publisher_key"
    );
    let publisher = f.service.authenticate(KEY).expect("publisher");
    let invalid = json!({"userIds": [], "notification": {"type": "nope", "title": ""}, "extra": 1});
    match f.service.publish(&publisher, publish_body(invalid), None).await {
        Err(Error::Validation(fields)) => {
            for key in ["userIds", "notification.type", "notification.title", "extra"] {
                assert!(fields.contains_key(key), "{key} missing from {fields:?}");
            }
        }
        other => panic!("expected validation error, got {other:?}"),
    }
    let wrong_channel =
        json!({"userIds": ["a"], "notification": {"type": "new_like", "title": "t", "channel": "uploads"}});
    let err = f
        .service
        .publish(&publisher, publish_body(wrong_channel), None)
        .await
        .expect_err("channel");
    assert_eq!(err.code(), "validation_failed");
    let limited = Publisher::from_key(
        "uploads",
        "uploads-key-0123456789abc",
        Some([NotificationType::UploadComplete].into()),
    );
    let body = json!({"userIds": ["a"], "notification": {"type": "new_like", "title": "t"}});
    let err = f
        .service
        .publish(&limited, publish_body(body), None)
        .await
        .expect_err("type");
    assert_eq!(err.code(), "type_not_allowed");
}

#[tokio::test]
async fn idempotent_publish_returns_the_first_answer_and_stores_nothing_new() {
    let f = fixture(DeliverySettings::default()).await;
    let publisher = f.service.authenticate(KEY).expect("publisher");
    let body = json!({"userIds": ["alice"], "notification": {"type": "new_like", "title": "t"}});
    let first = f
        .service
        .publish(&publisher, publish_body(body.clone()), Some("req-1"))
        .await
        .expect("first");
    let again = f
        .service
        .publish(&publisher, publish_body(body), Some("req-1"))
        .await
        .expect("retry");
    assert_eq!(first, again);
    assert_eq!(f.store.max_seq("alice").await.expect("seq"), 1);
    let other = json!({"userIds": ["alice"], "notification": {"type": "new_like", "title": "different"}});
    let err = f
        .service
        .publish(&publisher, publish_body(other), Some("req-1"))
        .await
        .expect_err("reused");
    assert_eq!(err.code(), "idempotency_key_reused");
}

#[tokio::test]
async fn an_expired_notification_is_not_sent_again() {
    let f = fixture(DeliverySettings {
        ack_timeout_ms: 1_000,
        max_attempts: 3,
        ..DeliverySettings::default()
    })
    .await;
    let mut inbox = f.connect("c1", "alice", 16).await;
    let expires_at = f.clock.now_ms() + 500;
    let body = json!({"userIds": ["alice"], "notification": {"type": "system_announcement", "title": "t", "expiresAt": expires_at}});
    let publisher = f.service.authenticate(KEY).expect("publisher");
    f.service
        .publish(&publisher, publish_body(body), None)
        .await
        .expect("published");
    next_notification(&mut inbox).await;
    f.clock.advance(1_000);
    f.delivery.retry_due().await.expect("retry");
    no_notification(&mut inbox).await;
}

#[tokio::test]
async fn a_history_page_has_the_documented_shape() {
    let f = fixture(DeliverySettings::default()).await;
    f.publish(&["alice"], "new_like").await;
    f.publish(&["alice"], "new_comment").await;
    let params = HistoryParams {
        limit: Some("1".into()),
        ..HistoryParams::default()
    };
    let page = serde_json::to_value(f.service.history("alice", &params).await.expect("history")).expect("json");
    assert_eq!(page.as_object().map(|o| o.len()), Some(3), "{page}");
    assert_eq!(page["unreadCount"], 2);
    assert!(page["nextCursor"].is_string());
    let item = &page["items"][0];
    assert_eq!(item["type"], "new_comment");
    assert_eq!(item["seq"], 2);
    assert!(
        item["readAt"].is_null() && item.get("readAt").is_some(),
        "readAt is present: {item}"
    );
    assert!(item.get("body").is_none(), "absent optional fields stay absent: {item}");

    let last = HistoryParams {
        cursor: page["nextCursor"].as_str().map(str::to_owned),
        ..HistoryParams::default()
    };
    let page = serde_json::to_value(f.service.history("alice", &last).await.expect("history")).expect("json");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    assert!(page["nextCursor"].is_null() && page.get("nextCursor").is_some());
}

#[tokio::test]
async fn a_subscription_change_on_another_replica_applies_to_pushes_here() {
    let f = fixture(DeliverySettings::default()).await;
    let mut inbox = f.connect("c1", "alice", 16).await;
    f.publish(&["alice"], "new_like").await;
    next_notification(&mut inbox).await;
    // Another replica, sharing the store and the bus, unsubscribes alice from `social`.
    let elsewhere = SubscriptionService::new(
        f.subscription_store.clone(),
        Arc::new(MemoryConnectionRegistry::default()),
        crate::app::catalog::LiveCatalog::fixed(crate::domain::channel::ChannelCatalog::default_set(7)),
        f.clock.clone(),
        f.bus.clone(),
    );
    elsewhere
        .unsubscribe("alice", &["social".to_owned()])
        .await
        .expect("unsubscribe");
    f.publish(&["alice"], "new_comment").await;
    no_notification(&mut inbox).await;
    f.publish(&["alice"], "upload_complete").await;
    assert_eq!(
        next_notification(&mut inbox).await["payload"]["type"],
        "upload_complete"
    );
}

/// A notification message queued for `inbox` right now, skipping unread counts; `None` when none.
fn queued_notification(inbox: &mut SessionInbox) -> Option<Value> {
    use crate::app::sessions::Next;
    while let Some(next) = inbox.try_next() {
        let Next::Frame(frame) = next else {
            panic!("the session was asked to close: {next:?}");
        };
        let message: Value = serde_json::from_str(&frame).expect("json");
        if message["type"] == "notification" {
            return Some(message);
        }
    }
    None
}

/// Reads `total` notifications as a client does, acknowledging what it read whenever nothing more
/// is queued, and checks that no more than `window` were ever unacknowledged. Their seqs in order.
async fn receive_acknowledging(
    f: &Fixture,
    inbox: &mut SessionInbox,
    user: &str,
    total: usize,
    window: usize,
) -> Vec<i64> {
    let mut seqs = Vec::new();
    let mut unacked: Vec<Uuid> = Vec::new();
    while seqs.len() < total {
        let message = match queued_notification(inbox) {
            Some(message) => message,
            None if !unacked.is_empty() => {
                for id in unacked.drain(..) {
                    f.service.acknowledge(user, id).await.expect("ack");
                }
                continue;
            }
            None => next_notification(inbox).await,
        };
        let id = message["payload"]["id"].as_str().expect("id");
        unacked.push(Uuid::parse_str(id).expect("uuid"));
        seqs.push(message["payload"]["seq"].as_i64().expect("seq"));
        assert!(
            unacked.len() <= window,
            "{} unacknowledged, the window is {window}",
            unacked.len()
        );
    }
    seqs
}

fn windowed(notifications: usize, bytes: usize) -> DeliverySettings {
    DeliverySettings {
        window: crate::app::delivery::Window { notifications, bytes },
        ..DeliverySettings::default()
    }
}

#[tokio::test]
async fn a_replay_far_larger_than_the_queue_arrives_whole_as_it_is_acknowledged() {
    let f = fixture(windowed(4, crate::app::delivery::WINDOW_BYTES)).await;
    for _ in 0..50 {
        f.publish(&["alice"], "new_like").await;
    }
    // A queue of 8 frames; 50 to replay. Before flow control this closed the session as slow on
    // every connect.
    let mut inbox = f.connect("c1", "alice", 8).await;
    let seqs = receive_acknowledging(&f, &mut inbox, "alice", 50, 4).await;
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>(), "all of them, in order, once");
    assert!(queued_notification(&mut inbox).is_none(), "nothing twice");
    // Live ones follow the replay.
    f.publish(&["alice"], "new_comment").await;
    assert_eq!(next_notification(&mut inbox).await["payload"]["seq"], 51);
}

#[tokio::test]
async fn a_live_burst_beyond_the_window_waits_in_the_store_until_acknowledgements_drain_it() {
    let f = fixture(windowed(4, crate::app::delivery::WINDOW_BYTES)).await;
    let mut inbox = f.connect("c1", "alice", 8).await;
    for _ in 0..30 {
        f.publish(&["alice"], "new_like").await;
    }
    let seqs = receive_acknowledging(&f, &mut inbox, "alice", 30, 4).await;
    assert_eq!(seqs, (1..=30).collect::<Vec<_>>());
}

#[tokio::test]
async fn the_byte_window_lets_one_large_notification_through_at_a_time() {
    let f = fixture(windowed(32, 1)).await;
    for _ in 0..5 {
        f.publish(&["alice"], "new_like").await;
    }
    let mut inbox = f.connect("c1", "alice", 64).await;
    let seqs = receive_acknowledging(&f, &mut inbox, "alice", 5, 1).await;
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn a_window_of_unacknowledged_notifications_gives_way_once_they_fail() {
    let f = fixture(DeliverySettings {
        ack_timeout_ms: 1_000,
        max_attempts: 1,
        window: crate::app::delivery::Window {
            notifications: 2,
            bytes: crate::app::delivery::WINDOW_BYTES,
        },
        ..DeliverySettings::default()
    })
    .await;
    for _ in 0..4 {
        f.publish(&["alice"], "new_like").await;
    }
    let mut inbox = f.connect("c1", "alice", 8).await;
    let first: Vec<Value> = std::iter::from_fn(|| queued_notification(&mut inbox)).collect();
    assert_eq!(
        first.iter().map(|m| m["payload"]["seq"].clone()).collect::<Vec<_>>(),
        [1, 2]
    );
    // Never acknowledged: after their last attempt they fail, and the next two take their place.
    f.clock.advance(1_000);
    f.delivery.retry_due().await.expect("retry round");
    let next: Vec<Value> = std::iter::from_fn(|| queued_notification(&mut inbox)).collect();
    assert_eq!(
        next.iter().map(|m| m["payload"]["seq"].clone()).collect::<Vec<_>>(),
        [3, 4]
    );
}

/// Stores `count` notifications for `user` and puts none of them on the bus: the test puts them
/// there itself, in the order it wants.
async fn stored_quietly(f: &Fixture, user: &str, count: usize) -> Vec<Arc<crate::domain::notification::Notification>> {
    let kind = crate::domain::notification::NotificationType::parse("new_like").expect("a type");
    let batch: Vec<_> = (0..count)
        .map(|_| crate::ports::conformance::new_notification(user, "social", kind, f.clock.now_ms()))
        .collect();
    let mut stored = Vec::new();
    for one in batch.chunks(1) {
        match f.store.publish(one, None, f.clock.now_ms()).await.expect("stored") {
            crate::ports::PublishOutcome::Created(created, _) => stored.extend(created.into_iter().map(Arc::new)),
            other => panic!("not created: {other:?}"),
        }
    }
    stored
}

async fn on_the_bus(f: &Fixture, notifications: &[&Arc<crate::domain::notification::Notification>]) {
    for n in notifications {
        let event = crate::ports::BusEvent::Published {
            notifications: vec![Arc::clone(n)],
            unread: Vec::new(),
            trace: None,
        };
        f.bus.publish(event).await.expect("on the bus");
    }
}

fn seq_of(message: &Value) -> i64 {
    message["payload"]["seq"].as_i64().expect("seq")
}

fn waiting(gap_wait: Duration) -> DeliverySettings {
    DeliverySettings {
        gap_wait,
        ..DeliverySettings::default()
    }
}

fn held_and_read(f: &Fixture) -> (u64, u64) {
    (f.metrics.notifications_held.get(), f.metrics.gaps_read.get())
}

#[tokio::test]
async fn a_notification_ahead_of_its_turn_waits_for_the_one_before_it_and_the_store_is_not_read() {
    // Long enough that only the one before can release it within the test's patience.
    let f = fixture(waiting(Duration::from_secs(60))).await;
    let mut inbox = f.connect("c1", "alice", 16).await;
    let stored = stored_quietly(&f, "alice", 3).await;
    // Two publishes committed together reach the bus in the other order.
    on_the_bus(&f, &[&stored[2], &stored[1]]).await;
    on_the_bus(&f, &[&stored[0]]).await;
    let seqs: Vec<i64> = [
        next_notification(&mut inbox).await,
        next_notification(&mut inbox).await,
        next_notification(&mut inbox).await,
    ]
    .iter()
    .map(seq_of)
    .collect();
    assert_eq!(seqs, [1, 2, 3], "in order, once each");
    assert_eq!(held_and_read(&f), (2, 0), "two held, no gap read from the store");
    // Live ones follow on.
    f.publish(&["alice"], "new_comment").await;
    assert_eq!(seq_of(&next_notification(&mut inbox).await), 4);
}

#[tokio::test]
async fn a_gap_that_stays_open_is_read_from_the_store_after_the_wait() {
    let f = fixture(waiting(Duration::from_millis(20))).await;
    let mut inbox = f.connect("c1", "alice", 16).await;
    let stored = stored_quietly(&f, "alice", 2).await;
    // The first one's event is lost: the second reveals the gap, and nothing closes it.
    on_the_bus(&f, &[&stored[1]]).await;
    assert_eq!(seq_of(&next_notification(&mut inbox).await), 1, "read from the store");
    assert_eq!(seq_of(&next_notification(&mut inbox).await), 2);
    assert!(queued_notification(&mut inbox).is_none(), "nothing twice");
    assert_eq!(held_and_read(&f), (1, 1));
}

#[tokio::test]
async fn more_early_notifications_than_a_window_go_to_the_store_at_once() {
    let f = fixture(DeliverySettings {
        window: windowed(2, crate::app::delivery::WINDOW_BYTES).window,
        ..waiting(Duration::from_secs(60))
    })
    .await;
    let mut inbox = f.connect("c1", "alice", 8).await;
    let stored = stored_quietly(&f, "alice", 4).await;
    // The first is lost; two of the others are held, the third finds no room and the store is read.
    on_the_bus(&f, &[&stored[1], &stored[2], &stored[3]]).await;
    let seqs = receive_acknowledging(&f, &mut inbox, "alice", 4, 2).await;
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(held_and_read(&f), (2, 1));
}

#[tokio::test]
async fn a_replica_that_falls_behind_its_bus_counts_what_it_missed_and_catches_up_from_the_store() {
    let f = fixture_on(DeliverySettings::default(), MemoryEventBus::new(2)).await;
    let mut inbox = f.connect("c1", "alice", 16).await;
    let stored = stored_quietly(&f, "alice", 5).await;
    // Five events at once (nothing yields between them): the delivery loop, two behind at most,
    // misses three.
    on_the_bus(&f, &stored.iter().collect::<Vec<_>>()).await;
    let mut seqs = Vec::new();
    for _ in 0..5 {
        seqs.push(seq_of(&next_notification(&mut inbox).await));
    }
    assert_eq!(seqs, [1, 2, 3, 4, 5], "all of them, in order, once");
    assert!(queued_notification(&mut inbox).is_none(), "nothing twice");
    assert_eq!(f.metrics.bus_events_missed.get(), 3);
}

#[tokio::test]
async fn publishers_are_scoped_to_channels_and_budgeted_per_second() {
    use crate::domain::publisher::Publisher;
    let f = fixture(DeliverySettings::default()).await;
    let uploads_only = Publisher::from_key("uploads", "uploads-only-publisher-key-0123456789", None)
        .with_channels(Some(["uploads".to_owned()].into()))
        .with_notifications_per_second(1_000);
    let like = |users: Vec<String>| {
        publish_body(json!({"userIds": users, "notification": {"type": "new_like", "title": "t"}}))
    };
    let upload = |users: Vec<String>| {
        publish_body(json!({"userIds": users, "notification": {"type": "upload_complete", "title": "t"}}))
    };
    let err = f
        .service
        .publish(&uploads_only, like(vec!["alice".into()]), None)
        .await
        .expect_err("social is not its channel");
    assert_eq!(err.code(), "forbidden_channel");

    let thousand: Vec<String> = (0..1_000).map(|i| format!("u{i}")).collect();
    f.service
        .publish(&uploads_only, upload(thousand.clone()), None)
        .await
        .expect("a full second's budget at once");
    match f
        .service
        .publish(&uploads_only, upload(vec!["alice".into()]), None)
        .await
    {
        Err(Error::RateLimited { retry_after_ms }) => assert!((1..=1_000).contains(&retry_after_ms)),
        other => panic!("expected rate_limited, got {other:?}"),
    }
    f.clock.advance(1_000);
    f.service
        .publish(&uploads_only, upload(thousand), None)
        .await
        .expect("the budget refills");
}
