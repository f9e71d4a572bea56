//! Conformance tests: one body per behaviour of a port, run against every adapter of that port
//! (`memory` and `sqlite` now; `postgres` and `redis` instantiate the same bodies).

use crate::domain::connection::ConnectionRecord;
use crate::domain::rate::{RateDecision, RateLimit};

use super::{
    ConnectionRegistry, PreferenceRecord, PreferenceStore, RateLimiter, RegisterOutcome,
    TokenLedger,
};

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
    ledger
        .revoke_before(&user, 1_000, 60_000)
        .await
        .expect("revoke");
    assert_eq!(
        ledger.revoked_before(&user).await.expect("read"),
        Some(1_000)
    );
    // A later revocation moves the mark forward, an older one never moves it back.
    ledger
        .revoke_before(&user, 2_000, 60_000)
        .await
        .expect("revoke");
    ledger
        .revoke_before(&user, 1_500, 60_000)
        .await
        .expect("revoke");
    assert_eq!(
        ledger.revoked_before(&user).await.expect("read"),
        Some(2_000)
    );
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
        user_agent: "test".into(),
        expires_at: now + 7_200_000,
    }
}

pub async fn connection_registry(registry: &dyn ConnectionRegistry) {
    let user = format!("user-{}", uuid::Uuid::new_v4());
    let now = 1_000;
    for i in 0..3 {
        let outcome = registry
            .register(&record(&format!("{user}-c{i}"), &user, now), 3, now)
            .await;
        assert_eq!(outcome.expect("register"), RegisterOutcome::Registered);
    }
    let fourth = registry
        .register(&record(&format!("{user}-c3"), &user, now), 3, now)
        .await;
    assert_eq!(fourth.expect("register"), RegisterOutcome::AtCapacity);
    assert_eq!(
        registry
            .list_for_user(&user, now)
            .await
            .expect("list")
            .len(),
        3
    );

    // Same id, same user and token: idempotent, not counted twice.
    let again = registry
        .register(&record(&format!("{user}-c0"), &user, now), 5, now)
        .await;
    assert_eq!(again.expect("register"), RegisterOutcome::AlreadyRegistered);
    // Same id claimed by another user: refused, the owner keeps it.
    let thief = registry
        .register(&record(&format!("{user}-c0"), "someone-else", now), 5, now)
        .await;
    assert_eq!(thief.expect("register"), RegisterOutcome::IdTaken);
    let owner = registry
        .get(&format!("{user}-c0"), now)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(owner.user_id, user);

    assert!(
        registry
            .touch(&format!("{user}-c1"), 5_000, 5_000 + 7_200_000)
            .await
            .expect("touch")
    );
    let touched = registry
        .get(&format!("{user}-c1"), 5_000)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(touched.last_ping_at, 5_000);
    assert!(
        !registry
            .touch("missing", 5_000, 6_000)
            .await
            .expect("touch")
    );

    let removed = registry
        .remove(&format!("{user}-c2"))
        .await
        .expect("remove");
    assert_eq!(removed.map(|r| r.connection_id), Some(format!("{user}-c2")));
    assert_eq!(
        registry
            .remove(&format!("{user}-c2"))
            .await
            .expect("remove"),
        None
    );
    assert_eq!(
        registry
            .list_for_user(&user, now)
            .await
            .expect("list")
            .len(),
        2
    );
}

pub async fn connection_registry_ttl(registry: &dyn ConnectionRegistry) {
    let user = format!("user-{}", uuid::Uuid::new_v4());
    let mut stale = record(&format!("{user}-stale"), &user, 0);
    stale.expires_at = 10_000;
    registry.register(&stale, 1, 0).await.expect("register");
    // Expired registrations neither count against the cap nor show up.
    assert!(
        registry
            .get(&stale.connection_id, 10_000)
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        registry
            .list_for_user(&user, 10_000)
            .await
            .expect("list")
            .is_empty()
    );
    let fresh = record(&format!("{user}-fresh"), &user, 10_000);
    assert_eq!(
        registry
            .register(&fresh, 1, 10_000)
            .await
            .expect("register"),
        RegisterOutcome::Registered
    );
    assert!(registry.purge_expired(10_000).await.expect("purge") >= 1);
    assert!(
        registry
            .remove(&stale.connection_id)
            .await
            .expect("remove")
            .is_none()
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
        limiter
            .check(&other, limit, 0)
            .await
            .expect("check")
            .is_allowed(),
        "keys are independent"
    );
    assert!(
        limiter
            .check(&key, limit, 60_000)
            .await
            .expect("check")
            .is_allowed(),
        "window refills"
    );
}

pub async fn preference_store(store: &dyn PreferenceStore) {
    let user = format!("user-{}", uuid::Uuid::new_v4());
    assert_eq!(store.get(&user).await.expect("get"), None);
    let mut record = PreferenceRecord::defaults(&user);
    record.in_app_enabled = false;
    record.preferences = serde_json::json!({"types": {"new_like": {"inApp": false}}});
    store.put(&record).await.expect("put");
    assert_eq!(store.get(&user).await.expect("get"), Some(record.clone()));
    record.in_app_enabled = true;
    store.put(&record).await.expect("put again");
    assert_eq!(store.get(&user).await.expect("get"), Some(record));
}
