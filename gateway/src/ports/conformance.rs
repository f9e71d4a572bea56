//! Conformance tests: one body per behaviour of a port, run against every adapter of that port
//! (`memory` and `sqlite` now; `postgres` and `redis` instantiate the same bodies).

use std::collections::HashMap;

use crate::domain::connection::ConnectionRecord;
use crate::domain::rate::{RateDecision, RateLimit};

use super::{
    BusEvent, ConnectionRegistry, EventBus, HistoryQuery, IdempotencyKey, NewNotification, NotificationStore,
    PreferenceStore, PublishOutcome, RateLimiter, RegisterOutcome, SubscriptionStore, TokenLedger,
};
use crate::domain::notification::{Notification, NotificationType, UnreadCount};
use crate::domain::preferences::{Preferences, SkipReason, Switches};
use crate::domain::publish::{CreatedNotification, PublishReceipt, SkippedRecipient};

pub async fn token_ledger(ledger: &dyn TokenLedger) {
    let token = uuid::Uuid::new_v4().to_string();
    assert!(
        ledger.claim(&token, 0, 60_000).await.expect("claim"),
        "first claim wins"
    );
    assert!(
        !ledger.claim(&token, 0, 60_000).await.expect("claim"),
        "second claim loses"
    );
    let other = uuid::Uuid::new_v4().to_string();
    assert!(
        ledger.claim(&other, 0, 60_000).await.expect("claim"),
        "claims are per token"
    );

    let user = format!("user-{}", uuid::Uuid::new_v4());
    assert_eq!(ledger.revoked_before(&user).await.expect("read"), None);
    ledger.revoke_before(&user, 1_000, 60_000).await.expect("revoke");
    assert_eq!(ledger.revoked_before(&user).await.expect("read"), Some(1_000));
    // A later revocation moves the mark forward, an older one never moves it back.
    ledger.revoke_before(&user, 2_000, 60_000).await.expect("revoke");
    ledger.revoke_before(&user, 1_500, 60_000).await.expect("revoke");
    assert_eq!(ledger.revoked_before(&user).await.expect("read"), Some(2_000));
}

pub async fn token_ledger_claims_are_atomic(ledger: std::sync::Arc<dyn TokenLedger>) {
    let token = uuid::Uuid::new_v4().to_string();
    let attempts: Vec<_> = (0..16)
        .map(|_| {
            let ledger = ledger.clone();
            let token = token.clone();
            tokio::spawn(async move { ledger.claim(&token, 0, 60_000).await.expect("claim") })
        })
        .collect();
    let mut winners = 0;
    for attempt in attempts {
        if attempt.await.expect("task") {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "exactly one concurrent claim wins");
}

fn record(connection_id: &str, user_id: &str, now: i64) -> ConnectionRecord {
    ConnectionRecord {
        connection_id: connection_id.into(),
        user_id: user_id.into(),
        token_id: format!("token-{connection_id}"),
        connected_at: now,
        last_ping_at: now,
        subscriptions: vec![],
        allowed_channels: vec![],
        user_agent: "test".into(),
        expires_at: now + 7_200_000,
    }
}

pub async fn connection_registry(registry: &dyn ConnectionRegistry) {
    let user = format!("user-{}", uuid::Uuid::new_v4());
    let now = 1_000;
    for i in 0..3 {
        let outcome = registry
            .register(&record(&format!("{user}-c{i}"), &user, now), 3, now, 0)
            .await;
        assert_eq!(outcome.expect("register"), RegisterOutcome::Registered);
    }
    let fourth = registry
        .register(&record(&format!("{user}-c3"), &user, now), 3, now, 0)
        .await;
    assert_eq!(fourth.expect("register"), RegisterOutcome::AtCapacity);
    assert_eq!(registry.list_for_user(&user, now).await.expect("list").len(), 3);

    // Same id, same user and token: idempotent, not counted twice.
    let again = registry
        .register(&record(&format!("{user}-c0"), &user, now), 5, now, 0)
        .await;
    assert_eq!(again.expect("register"), RegisterOutcome::AlreadyRegistered);
    // Same id and user with another token: refused.
    let mut other_token = record(&format!("{user}-c0"), &user, now);
    other_token.token_id = "another-token".into();
    let taken = registry.register(&other_token, 5, now, 0).await;
    assert_eq!(taken.expect("register"), RegisterOutcome::IdTaken);
    // Same id under another user: a connection is known by its user and id (ids are random, 122
    // bits), so a registry may refuse it or keep it apart; either way the owner keeps theirs.
    let thief = registry
        .register(&record(&format!("{user}-c0"), "someone-else", now), 5, now, 0)
        .await;
    assert!(thief.is_ok());
    let owner = registry
        .get(&user, &format!("{user}-c0"), now)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(owner.user_id, user);

    assert!(
        registry
            .touch(&user, &format!("{user}-c1"), 5_000, 5_000 + 7_200_000)
            .await
            .expect("touch")
    );
    let touched = registry
        .get(&user, &format!("{user}-c1"), 5_000)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(touched.last_ping_at, 5_000);
    assert!(!registry.touch(&user, "missing", 5_000, 6_000).await.expect("touch"));
    assert!(
        !registry
            .touch("someone-else-entirely", &format!("{user}-c1"), 5_000, 6_000)
            .await
            .expect("touch"),
        "a connection is known by its user and id"
    );

    registry
        .set_subscriptions(&user, &["social".into()])
        .await
        .expect("set subscriptions");
    for record in registry.list_for_user(&user, now).await.expect("list") {
        assert_eq!(record.subscriptions, ["social"], "every connection of the user changes");
    }

    let removed = registry.remove(&user, &format!("{user}-c2")).await.expect("remove");
    assert_eq!(removed.map(|r| r.connection_id), Some(format!("{user}-c2")));
    assert_eq!(
        registry.remove(&user, &format!("{user}-c2")).await.expect("remove"),
        None
    );
    assert_eq!(registry.list_for_user(&user, now).await.expect("list").len(), 2);
}

pub async fn connection_registry_ttl(registry: &dyn ConnectionRegistry) {
    let user = format!("user-{}", uuid::Uuid::new_v4());
    let mut stale = record(&format!("{user}-stale"), &user, 0);
    stale.expires_at = 10_000;
    registry.register(&stale, 1, 0, 0).await.expect("register");
    // Expired registrations neither count against the cap nor show up.
    assert!(
        registry
            .get(&user, &stale.connection_id, 10_000)
            .await
            .expect("get")
            .is_none()
    );
    assert!(registry.list_for_user(&user, 10_000).await.expect("list").is_empty());
    let fresh = record(&format!("{user}-fresh"), &user, 10_000);
    assert_eq!(
        registry.register(&fresh, 1, 10_000, 0).await.expect("register"),
        RegisterOutcome::Registered
    );
    // A heartbeat moves a connection's expiry: the purge keeps it, and purges it once that passed.
    let mut beating = record(&format!("{user}-beating"), &user, 0);
    beating.expires_at = 10_000;
    registry.register(&beating, 5, 0, 0).await.expect("register");
    assert!(
        registry
            .touch(&user, &beating.connection_id, 9_000, 20_000)
            .await
            .expect("touch")
    );
    assert!(registry.purge_expired(10_000).await.expect("purge") >= 1);
    assert!(
        registry
            .remove(&user, &stale.connection_id)
            .await
            .expect("remove")
            .is_none()
    );
    assert!(
        registry
            .get(&user, &beating.connection_id, 10_000)
            .await
            .expect("get")
            .is_some()
    );
    assert!(registry.purge_expired(20_000).await.expect("purge") >= 1);
    assert!(
        registry
            .get(&user, &beating.connection_id, 10_000)
            .await
            .expect("get")
            .is_none(),
        "purged"
    );
}

pub async fn connection_registry_ignores_silent_connections_in_the_cap(registry: &dyn ConnectionRegistry) {
    let user = format!("user-{}", uuid::Uuid::new_v4());
    // A registration that stopped pinging (its replica died) still exists until its TTL...
    let silent = record(&format!("{user}-silent"), &user, 1_000);
    assert_eq!(
        registry.register(&silent, 1, 1_000, 0).await.expect("register"),
        RegisterOutcome::Registered
    );
    let live = record(&format!("{user}-live"), &user, 200_000);
    assert_eq!(
        registry.register(&live, 1, 200_000, 0).await.expect("register"),
        RegisterOutcome::AtCapacity,
        "counted while it may still be alive"
    );
    // ...but once it is older than the liveness bound it no longer holds a place under the cap.
    assert_eq!(
        registry.register(&live, 1, 200_000, 100_000).await.expect("register"),
        RegisterOutcome::Registered
    );
    // A heartbeat keeps a connection counted.
    let other = format!("user-{}", uuid::Uuid::new_v4());
    let pinging = record(&format!("{other}-a"), &other, 1_000);
    registry.register(&pinging, 1, 1_000, 0).await.expect("register");
    assert!(
        registry
            .touch(&other, &pinging.connection_id, 150_000, 150_000 + 7_200_000)
            .await
            .expect("touch")
    );
    let second = record(&format!("{other}-b"), &other, 200_000);
    assert_eq!(
        registry.register(&second, 1, 200_000, 100_000).await.expect("register"),
        RegisterOutcome::AtCapacity
    );
}

pub async fn rate_limiter(limiter: &dyn RateLimiter) {
    let key = format!("test:{}", uuid::Uuid::new_v4());
    let limit = RateLimit::per_minute(3);
    for _ in 0..3 {
        assert_eq!(
            limiter.check(&key, limit, 0).await.expect("check"),
            RateDecision::Allowed
        );
    }
    match limiter.check(&key, limit, 0).await.expect("check") {
        RateDecision::Limited { retry_after_ms } => assert!((1..=20_000).contains(&retry_after_ms)),
        RateDecision::Allowed => panic!("fourth event within the minute must be limited"),
    }
    let other = format!("test:{}", uuid::Uuid::new_v4());
    assert!(
        limiter.check(&other, limit, 0).await.expect("check").is_allowed(),
        "keys are independent"
    );
    assert!(
        limiter.check(&key, limit, 60_000).await.expect("check").is_allowed(),
        "window refills"
    );
}

pub async fn preference_store(store: &dyn PreferenceStore) {
    let user = format!("user-{}", uuid::Uuid::new_v4());
    let other = format!("user-{}", uuid::Uuid::new_v4());
    assert_eq!(store.get(&user).await.expect("get"), None);
    let mut preferences = Preferences {
        in_app_enabled: false,
        ..Preferences::default()
    };
    preferences.overrides.types.insert(
        "new_like".into(),
        Switches {
            in_app: Some(false),
            ..Switches::default()
        },
    );
    store.put(&user, &preferences).await.expect("put");
    assert_eq!(store.get(&user).await.expect("get"), Some(preferences.clone()));
    preferences.in_app_enabled = true;
    store.put(&user, &preferences).await.expect("put again");
    assert_eq!(store.get(&user).await.expect("get"), Some(preferences.clone()));
    let many = store.get_many(&[user.clone(), other.clone()]).await.expect("get_many");
    assert_eq!(many.found.len(), 1, "only users with stored preferences");
    assert_eq!(many.found.get(&user), Some(&preferences));
}

pub async fn subscription_store(store: &dyn SubscriptionStore) {
    let user = format!("user-{}", uuid::Uuid::new_v4());
    assert!(store.choices(&user).await.expect("choices").is_empty());
    store
        .set(&user, &["social".into(), "uploads".into()], false, 1)
        .await
        .expect("set");
    store.set(&user, &["social".into()], true, 2).await.expect("set");
    let choices = store.choices(&user).await.expect("choices");
    assert_eq!(choices.get("social"), Some(&true));
    assert_eq!(choices.get("uploads"), Some(&false));
    assert_eq!(choices.len(), 2);
    assert!(
        store.choices("someone-else").await.expect("choices").is_empty(),
        "choices are per user"
    );
}

/// What `event` says to each user, in order: a bus may carry a publish to several users as one
/// event or as one per user, so events are compared by what each user hears.
fn per_user(event: &BusEvent) -> Vec<(String, String)> {
    match event {
        BusEvent::Published {
            notifications,
            unread,
            trace,
        } => notifications
            .iter()
            .map(|n| (n.user_id.clone(), format!("{n:?} traced {trace:?}")))
            .chain(
                unread
                    .iter()
                    .map(|(user, count)| (user.clone(), format!("unread {count:?}"))),
            )
            .collect(),
        BusEvent::UnreadCount { user_id, count } => vec![(user_id.clone(), format!("unread {count:?}"))],
        BusEvent::SubscriptionsChanged { user_id } => vec![(user_id.clone(), "subscriptions changed".into())],
        BusEvent::TokensRevoked { user_id } => vec![(user_id.clone(), "tokens revoked".into())],
        BusEvent::Resync | BusEvent::ResyncUser { .. } => Vec::new(),
    }
}

/// Reads `receiver` until it heard `expected` (by user, in order), or fails after 5 s of silence.
async fn hears(receiver: &mut tokio::sync::broadcast::Receiver<BusEvent>, expected: &[BusEvent]) {
    let mut wanted: HashMap<String, Vec<String>> = HashMap::new();
    for (user, said) in expected.iter().flat_map(per_user) {
        wanted.entry(user).or_default().push(said);
    }
    let total: usize = wanted.values().map(Vec::len).sum();
    let mut heard: HashMap<String, Vec<String>> = HashMap::new();
    while heard.values().map(Vec::len).sum::<usize>() < total {
        // `Resync` may come at any time (a bus that (re)subscribed); it is not an event of ours.
        match tokio::time::timeout(std::time::Duration::from_secs(5), receiver.recv()).await {
            Ok(Ok(event)) => {
                for (user, said) in per_user(&event) {
                    heard.entry(user).or_default().push(said);
                }
            }
            Ok(Err(err)) => panic!("the bus failed: {err}"),
            Err(_) => panic!("events never arrived; heard {heard:?}, wanted {wanted:?}"),
        }
    }
    assert_eq!(heard, wanted, "every event, each user's in the order published");
}

pub async fn event_bus(bus: &dyn EventBus) {
    let mut first = bus.subscribe();
    let mut second = bus.subscribe();
    let mut interests = Vec::new();
    for user in ["alice", "bob", "carol"] {
        interests.push(bus.follow(user).await.expect("follow"));
    }
    let published = |user_id: &str, seq| {
        let new = new_notification(user_id, "social", NotificationType::NewLike, 1_000);
        std::sync::Arc::new(Notification {
            id: new.id,
            user_id: new.user_id,
            seq,
            kind: new.kind,
            channel: new.channel,
            title: new.title,
            body: new.body,
            icon: new.icon,
            action_url: new.action_url,
            data: Some(serde_json::json!({"k": 7}).as_object().cloned().unwrap_or_default()),
            created_at: new.created_at,
            expires_at: Some(9_000),
            read_at: None,
            delivered_at: None,
            attempts: 0,
        })
    };
    let events = [
        BusEvent::Published {
            notifications: vec![published("alice", 1), published("carol", 4)],
            unread: vec![
                ("alice".into(), UnreadCount { count: 1, version: 1 }),
                ("carol".into(), UnreadCount { count: 2, version: 7 }),
            ],
            // A trace travels with the event, as it is.
            trace: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        },
        BusEvent::UnreadCount {
            user_id: "alice".into(),
            count: UnreadCount { count: 3, version: 9 },
        },
        BusEvent::SubscriptionsChanged { user_id: "bob".into() },
    ];
    for event in &events {
        bus.publish(event.clone()).await.expect("publish");
    }
    for receiver in [&mut first, &mut second] {
        hears(receiver, &events).await;
    }
    drop(interests);
}

pub(crate) fn new_notification(
    user_id: &str,
    channel: &str,
    kind: NotificationType,
    created_at: i64,
) -> NewNotification {
    NewNotification {
        id: uuid::Uuid::new_v4(),
        user_id: user_id.into(),
        kind,
        channel: channel.into(),
        title: format!("{kind} for {user_id}"),
        body: Some("body".into()),
        icon: None,
        action_url: Some("/x".into()),
        data: serde_json::json!({"k": 1}).as_object().cloned(),
        created_at,
        expires_at: None,
    }
}

/// Publishes `batch` and checks the unread counts the store returns with it: one per recipient,
/// each what `unread_count` says right after.
async fn created(store: &dyn NotificationStore, batch: &[NewNotification], now: i64) -> Vec<Notification> {
    match store.publish(batch, None, now).await.expect("publish") {
        PublishOutcome::Created(created, unread) => {
            for n in batch {
                let counted = store.unread_count(&n.user_id, now).await.expect("count");
                assert_eq!(unread.get(&n.user_id), Some(&counted), "unread count of {}", n.user_id);
            }
            created
        }
        other => panic!("expected created, got {other:?}"),
    }
}

pub async fn notification_store(store: &dyn NotificationStore) {
    let alice = format!("alice-{}", uuid::Uuid::new_v4());
    let bob = format!("bob-{}", uuid::Uuid::new_v4());
    let now = 1_000_000;
    let batch = vec![
        new_notification(&alice, "social", NotificationType::NewLike, now),
        new_notification(&bob, "social", NotificationType::NewLike, now),
        new_notification(&alice, "uploads", NotificationType::UploadComplete, now + 1),
    ];
    let stored = created(store, &batch, now).await;
    assert_eq!(
        stored.iter().map(|n| n.seq).collect::<Vec<_>>(),
        [1, 1, 2],
        "seq counts per user"
    );
    assert_eq!(store.max_seq(&alice).await.expect("max"), 2);
    assert_eq!(store.max_seq("nobody").await.expect("max"), 0);
    let fetched = store.get(&alice, stored[0].id).await.expect("get").expect("present");
    assert_eq!(fetched, stored[0]);
    assert!(
        store.get(&bob, stored[0].id).await.expect("get").is_none(),
        "another user's id is not found"
    );

    // History: newest first, keyset pages, filters.
    let page = store
        .list(
            &alice,
            &HistoryQuery {
                limit: 1,
                ..HistoryQuery::default()
            },
            now,
        )
        .await
        .expect("list");
    assert_eq!(page.iter().map(|n| n.seq).collect::<Vec<_>>(), [2]);
    let next = HistoryQuery {
        limit: 10,
        before_seq: Some(2),
        ..HistoryQuery::default()
    };
    assert_eq!(
        store
            .list(&alice, &next, now)
            .await
            .expect("list")
            .iter()
            .map(|n| n.seq)
            .collect::<Vec<_>>(),
        [1]
    );
    let social = HistoryQuery {
        limit: 10,
        channel: Some("social".into()),
        ..HistoryQuery::default()
    };
    assert_eq!(store.list(&alice, &social, now).await.expect("list").len(), 1);
    let likes = HistoryQuery {
        limit: 10,
        kind: Some(NotificationType::NewLike),
        ..HistoryQuery::default()
    };
    assert_eq!(store.list(&alice, &likes, now).await.expect("list").len(), 1);

    // Read state. Every change of the unread set is a newer version of it; nothing else is.
    let published = store.unread_count(&alice, now).await.expect("count");
    assert_eq!(published, UnreadCount { count: 2, version: 2 }, "two published");
    assert!(store.mark_read(&alice, stored[0].id, now + 5).await.expect("read"));
    assert!(
        !store.mark_read(&bob, stored[0].id, now + 5).await.expect("read"),
        "not bob's"
    );
    let read_one = store.unread_count(&alice, now).await.expect("count");
    assert_eq!(read_one.count, 1);
    assert!(read_one.version > published.version, "a read mark is a newer version");
    assert!(store.mark_read(&alice, stored[0].id, now + 8).await.expect("read"));
    assert_eq!(
        store.unread_count(&alice, now).await.expect("count"),
        read_one,
        "reading it again changes nothing"
    );
    let unread = HistoryQuery {
        limit: 10,
        unread_only: true,
        ..HistoryQuery::default()
    };
    assert_eq!(store.list(&alice, &unread, now).await.expect("list").len(), 1);
    assert_eq!(store.mark_all_read(&alice, now + 6).await.expect("all"), 1);
    let all_read = store.unread_count(&alice, now).await.expect("count");
    assert_eq!(all_read.count, 0);
    assert!(all_read.version > read_one.version, "reading all is a newer version");
    assert_eq!(
        store
            .get(&alice, stored[0].id)
            .await
            .expect("get")
            .and_then(|n| n.read_at),
        Some(now + 5)
    );

    // Acknowledgement and pending.
    let pending = store.pending(&alice, 0, 10, 0, now).await.expect("pending");
    assert_eq!(pending.iter().map(|n| n.seq).collect::<Vec<_>>(), [1, 2]);
    // Paged: `limit` rows from `after_seq` on, the next page after the last seq of this one.
    let first_page = store.pending(&alice, 0, 1, 0, now).await.expect("pending");
    assert_eq!(first_page.iter().map(|n| n.seq).collect::<Vec<_>>(), [1]);
    let second_page = store.pending(&alice, 1, 1, 0, now).await.expect("pending");
    assert_eq!(second_page.iter().map(|n| n.seq).collect::<Vec<_>>(), [2]);
    assert!(
        store
            .mark_delivered(&alice, stored[0].id, now + 7, 1)
            .await
            .expect("ack")
    );
    assert!(
        store
            .mark_delivered(&alice, stored[0].id, now + 9, 0)
            .await
            .expect("ack again"),
        "idempotent"
    );
    assert!(
        !store.mark_delivered(&bob, stored[0].id, now + 7, 0).await.expect("ack"),
        "not bob's"
    );
    assert_eq!(
        store
            .get(&alice, stored[0].id)
            .await
            .expect("get")
            .and_then(|n| n.delivered_at),
        Some(now + 7)
    );
    let pending = store.pending(&alice, 0, 10, 0, now).await.expect("pending");
    assert_eq!(pending.iter().map(|n| n.seq).collect::<Vec<_>>(), [2]);
    assert_eq!(
        store.unread_count(&alice, now).await.expect("count"),
        all_read,
        "an acknowledgement is no change of the unread set"
    );
    assert!(
        store.pending(&alice, 0, 0, 0, now).await.expect("pending").is_empty(),
        "limit bounds"
    );
    assert!(
        store.pending(&alice, 2, 10, 0, now).await.expect("pending").is_empty(),
        "after_seq bounds"
    );
    assert!(
        store
            .pending(&alice, 0, 10, now + 2, now)
            .await
            .expect("pending")
            .is_empty(),
        "created_since"
    );
    let acked = store
        .acknowledged(&[stored[0].id, stored[2].id])
        .await
        .expect("acknowledged");
    assert_eq!(acked, [stored[0].id].into_iter().collect());
    store.record_attempt(&[stored[2].id]).await.expect("attempt");
    store.record_attempt(&[stored[2].id]).await.expect("attempt");
    assert_eq!(
        store.get(&alice, stored[2].id).await.expect("get").map(|n| n.attempts),
        Some(2)
    );

    // Expired notifications are neither listed, counted nor pending.
    let mut expiring = new_notification(&alice, "quota", NotificationType::QuotaWarning, now);
    expiring.expires_at = Some(now + 100);
    created(store, &[expiring], now).await;
    assert_eq!(
        store
            .list(
                &alice,
                &HistoryQuery {
                    limit: 10,
                    ..HistoryQuery::default()
                },
                now
            )
            .await
            .expect("list")
            .len(),
        3
    );
    let later = now + 100;
    assert_eq!(
        store
            .list(
                &alice,
                &HistoryQuery {
                    limit: 10,
                    ..HistoryQuery::default()
                },
                later
            )
            .await
            .expect("list")
            .len(),
        2
    );
    assert_eq!(store.pending(&alice, 0, 10, 0, later).await.expect("pending").len(), 1);
    assert_eq!(store.unread_count(&alice, later).await.expect("count").count, 0);

    assert!(store.delete(&alice, stored[2].id).await.expect("delete"));
    assert!(
        !store.delete(&alice, stored[2].id).await.expect("delete"),
        "already gone"
    );
    assert!(!store.delete(&alice, stored[1].id).await.expect("delete"), "bob's");
    assert!(store.get(&bob, stored[1].id).await.expect("get").is_some());

    // Deleting an unread notification is a newer version too.
    let fresh = created(
        store,
        &[new_notification(&alice, "social", NotificationType::NewLike, later)],
        later,
    )
    .await;
    let with_fresh = store.unread_count(&alice, later).await.expect("count");
    assert_eq!(with_fresh.count, 1);
    assert!(store.delete(&alice, fresh[0].id).await.expect("delete"));
    let deleted = store.unread_count(&alice, later).await.expect("count");
    assert_eq!(deleted.count, 0);
    assert!(
        deleted.version > with_fresh.version,
        "deleting an unread one is a newer version"
    );
}

/// A receipt that names `user` as created and skipped (`why` tells receipts apart).
fn receipt(user: &str, why: &str) -> PublishReceipt {
    PublishReceipt {
        created: vec![CreatedNotification {
            user_id: user.to_owned(),
            id: uuid::Uuid::new_v4(),
        }],
        skipped: vec![SkippedRecipient {
            user_id: format!("{user}-{why}"),
            reason: SkipReason::TypeDisabled,
        }],
    }
}

pub async fn notification_store_idempotency(store: &dyn NotificationStore) {
    let user = format!("user-{}", uuid::Uuid::new_v4());
    let key = IdempotencyKey {
        publisher: "uploads".into(),
        key: "k1".into(),
        request_hash: "h1".into(),
    };
    let answer = receipt(&user, "k1");
    let first = new_notification(&user, "social", NotificationType::NewLike, 0);
    let outcome = store
        .publish(&[first], Some((&key, &answer)), 0)
        .await
        .expect("publish");
    assert!(matches!(outcome, PublishOutcome::Created(ref c, _) if c.len() == 1));
    let retry = new_notification(&user, "social", NotificationType::NewLike, 1);
    let outcome = store
        .publish(&[retry], Some((&key, &receipt(&user, "other"))), 1)
        .await
        .expect("retry");
    assert_eq!(outcome, PublishOutcome::Replayed(answer));
    assert_eq!(store.max_seq(&user).await.expect("max"), 1, "nothing new stored");
    let reused = IdempotencyKey {
        request_hash: "h2".into(),
        ..key.clone()
    };
    let outcome = store
        .publish(
            &[new_notification(&user, "social", NotificationType::NewLike, 2)],
            Some((&reused, &PublishReceipt::default())),
            2,
        )
        .await;
    assert_eq!(outcome.expect("reuse"), PublishOutcome::KeyReused);
    let other_publisher = IdempotencyKey {
        publisher: "social".into(),
        ..key
    };
    let outcome = store
        .publish(
            &[new_notification(&user, "social", NotificationType::NewLike, 3)],
            Some((&other_publisher, &PublishReceipt::default())),
            3,
        )
        .await;
    assert!(
        matches!(outcome.expect("scoped"), PublishOutcome::Created(..)),
        "keys are per publisher"
    );
}

pub async fn notification_store_purge(store: &dyn NotificationStore) {
    let user = format!("user-{}", uuid::Uuid::new_v4());
    let day = 86_400_000;
    let old_social = new_notification(&user, "social", NotificationType::NewLike, 0);
    let old_system = new_notification(&user, "system", NotificationType::SystemAnnouncement, 0);
    let fresh = new_notification(&user, "social", NotificationType::NewComment, 6 * day);
    let mut expired = new_notification(&user, "quota", NotificationType::QuotaWarning, 6 * day);
    expired.expires_at = Some(6 * day + 1);
    created(store, &[old_social, old_system, fresh.clone(), expired], 0).await;
    // social keeps 7 days, everything else 30: at day 8, the old social one and the expired one go.
    let deleted = store
        .purge(8 * day, &[("social".into(), 7 * day)], 30 * day, day)
        .await
        .expect("purge");
    assert_eq!(deleted, 2);
    let left = store
        .list(
            &user,
            &HistoryQuery {
                limit: 10,
                ..HistoryQuery::default()
            },
            8 * day,
        )
        .await
        .expect("list");
    let mut titles: Vec<_> = left.iter().map(|n| n.kind).collect();
    titles.sort();
    assert_eq!(
        titles,
        [NotificationType::NewComment, NotificationType::SystemAnnouncement]
    );
}
